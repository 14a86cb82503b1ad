"""The layers import one way: pure code (codec, backbones, pipeline, train, eval helpers) never imports rclpy."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tofc_ros"
PURE = ["codec", "backbones", "pipeline", "train", "eval", "data", "launcher", "config.py", "resources.py",
        "zstd_frames.py"]
ROS_MODULES = ("rclpy", "rcl_interfaces", "sensor_msgs", "std_msgs", "tofc_msgs", "diagnostic_msgs")


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("part", PURE)
def test_pure_layers_do_not_import_ros(part):
    target = PACKAGE / part
    files = [target] if target.is_file() else sorted(target.rglob("*.py"))
    offenders = {str(f.relative_to(PACKAGE)): sorted(i for i in _imports(f) if i.split(".")[0] in ROS_MODULES)
                 for f in files}
    assert not {k: v for k, v in offenders.items() if v}


def test_lower_layers_do_not_import_nodes():
    for part in ("codec", "backbones", "pipeline", "data"):
        for f in (PACKAGE / part).rglob("*.py"):
            assert not any(i.startswith("tofc_ros.nodes") for i in _imports(f)), f
