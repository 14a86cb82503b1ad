"""House rule 1: the codec layer never imports rclpy or ROS message packages."""

import ast
import pathlib
import subprocess
import sys

CODEC_DIR = pathlib.Path(__file__).resolve().parents[1] / "tofc_ros" / "codec"
FORBIDDEN = ("rclpy", "rosidl", "builtin_interfaces", "std_msgs", "sensor_msgs")


def test_no_ros_imports_in_source():
    files = sorted(CODEC_DIR.glob("*.py"))
    assert files
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mods = [node.module or ""]
            else:
                continue
            for mod in mods:
                top = mod.split(".")[0]
                assert top not in FORBIDDEN and not top.endswith("_msgs"), f"{path.name} imports {mod}"


def test_importing_codec_loads_no_ros_module():
    code = (
        "import sys, tofc_ros.codec, tofc_ros.codec.fitting; "
        f"bad = [m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r} or m.split('.')[0].endswith('_msgs')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=CODEC_DIR.parents[1], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
