"""The ROS user's path: `colcon build` of this repository into a standard workspace layout, then source it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COLCON = Path(sys.prefix) / "bin" / "colcon"


def test_colcon_build_then_source_finds_messages_launch_files_and_nodes(tmp_path):
    # Build from a copy, as a user's workspace would: nothing written into this checkout.
    src = tmp_path / "src" / "tofc_ros"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".venv", "build", "install", "log", ".git", "__pycache__", ".pytest_cache", ".hypothesis"
        ),
    )
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    build = subprocess.run(
        [
            str(COLCON),
            "build",
            "--base-paths",
            "src",
            "src/tofc_ros/tofc_msgs",
            "--cmake-args",
            f"-DPython3_EXECUTABLE={sys.executable}",
            "-DBUILD_TESTING=OFF",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    assert "2 packages finished" in build.stdout

    install = tmp_path / "install"
    assert (install / "tofc_ros" / "share" / "tofc_ros" / "launch" / "graph.launch.xml").is_file()
    assert (install / "tofc_ros" / "lib" / "tofc_ros" / "device_node").is_file()
    probe = (
        f"source {install}/setup.bash && cd / && {sys.executable} -c '"
        "import tofc_msgs.msg, tofc_ros, ament_index_python as a;"
        "print(tofc_msgs.msg.__file__); print(tofc_ros.__file__);"
        'print(a.get_package_share_directory("tofc_ros"))\''
    )
    # A clean environment apart from the venv's interpreter: only setup.bash may make the packages findable.
    clean = {k: v for k, v in env.items() if k not in ("AMENT_PREFIX_PATH", "PYTHONPATH")}
    shown = subprocess.run(["bash", "-c", probe], env=clean, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    msg_file, pkg_file, share = shown.stdout.split()
    assert msg_file.startswith(str(install / "tofc_msgs")) and pkg_file.startswith(str(install / "tofc_ros"))
    assert share == str(install / "tofc_ros" / "share" / "tofc_ros")
