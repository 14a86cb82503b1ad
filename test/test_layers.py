"""The layers import one way: pure code (codec, backbones, pipeline, train, eval helpers) never imports rclpy."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tofc_ros"
PURE = [
    "codec",
    "backbones",
    "pipeline",
    "train",
    "eval",
    "data",
    "launcher",
    "config.py",
    "resources.py",
    "zstd_frames.py",
    "cli.py",
]
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
    offenders = {
        str(f.relative_to(PACKAGE)): sorted(i for i in _imports(f) if i.split(".")[0] in ROS_MODULES) for f in files
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_lower_layers_do_not_import_nodes():
    for part in ("codec", "backbones", "pipeline", "data"):
        for f in (PACKAGE / part).rglob("*.py"):
            assert not any(i.startswith("tofc_ros.nodes") for i in _imports(f)), f


# What each part of the package may import from the others: imports go one way, from top to bottom.
#   nodes -> eval -> train -> (backbones, codec, data);   eval -> pipeline -> (backbones, codec, resources)
#   train -> pipeline: the two-view trainer makes its crops with the deployed objects (pipeline.two_pass)
#   eval -> config (offline re-answering builds its server from the server node's parameter schema)
#   cli -> (data, train, eval, backbones, launcher): the tofc tool on top, beside the nodes
ALLOWED = {
    "ament_index": set(),
    "zstd_frames": set(),
    "config": set(),
    "resources": {"ament_index"},
    "codec": {"zstd_frames"},
    "data": set(),
    "backbones": set(),
    "pipeline": {"codec", "backbones", "resources", "zstd_frames"},
    "train": {"codec", "backbones", "data", "pipeline"},
    "eval": {"config", "codec", "backbones", "data", "pipeline", "train", "resources"},
    "launcher": {"ament_index"},
    "nodes": {"config", "pipeline", "eval", "codec", "resources"},
    # The command-line tool dispatches to the pure parts' mains. From the nodes it takes only the rclpy-free image
    # conversion (nodes.images: recorded frames → RGB, as the device converts them live; checked below).
    "cli": {"data", "train", "eval", "backbones", "launcher", "nodes"},
    "__main__": {"cli"},
}


def _module_graph() -> dict[str, set[str]]:
    """Static imports between the package's modules (lazy ones inside functions included)."""
    mods = {}
    for f in PACKAGE.rglob("*.py"):
        rel = f.relative_to(PACKAGE.parent).with_suffix("")
        mods[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = f
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, f in mods.items():
        base = name if f.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level:
                    parts = base.split(".")
                    prefix = ".".join(parts[: len(parts) - (node.level - 1)])
                    module = f"{prefix}.{module}" if module else prefix
                targets = [module] + [f"{module}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), ignoring a package and its own children."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            packages = [m for m in component if (PACKAGE.parent / m.replace(".", "/") / "__init__.py").is_file()]
            if len(component) - len(packages) >= 2:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_cli_takes_only_the_image_conversion_from_the_nodes():
    targets = {t for t in _module_graph()["tofc_ros.cli"] if t.startswith("tofc_ros.nodes")}
    assert targets <= {"tofc_ros.nodes", "tofc_ros.nodes.images"}
    assert not {i for i in _imports(PACKAGE / "nodes" / "images.py") if i.split(".")[0] in ROS_MODULES}


def test_no_import_cycles_inside_the_package():
    assert _cycles(_module_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"tofc_ros.a": {"tofc_ros.b"}, "tofc_ros.b": {"tofc_ros.a"}, "tofc_ros.c": set()}) == [
        ["tofc_ros.a", "tofc_ros.b"]
    ]


def test_each_part_imports_only_the_parts_below_it():
    def part(module: str) -> str:
        return module.split(".")[1] if "." in module else ""

    wrong = sorted(
        {
            (part(a), part(b))
            for a, targets in _module_graph().items()
            for b in targets
            if part(a) != part(b) and part(b) and part(b) not in ALLOWED[part(a)]
        }
    )
    assert wrong == []
