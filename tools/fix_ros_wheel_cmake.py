"""Re-point the CMake exports of ROS 2 PyPI wheels at this venv's Python and NumPy headers.

The ros-jazzy-* wheels are built in a manylinux container, and their exported *.cmake files name that
container's `/opt/python/cp3XX-cp3XX/...` include folders. A CMake build of our interface package against them
(rosidl's Python generator links `<pkg>__rosidl_generator_py`) fails unless those paths exist here.
Idempotent: a second run finds nothing to change.
"""

from __future__ import annotations

import re
import sys
import sysconfig
from pathlib import Path

import numpy

_CONTAINER_PY_INCLUDE = re.compile(r"/opt/python/cp3\d+-cp3\d+/include/python3\.\d+")
_CONTAINER_NP_INCLUDE = re.compile(
    r"/opt/python/cp3\d+-cp3\d+/lib/python3\.\d+/site-packages/numpy/(_core|core)/include"
)


def fix(prefix: Path) -> list[Path]:
    """Rewrite every *.cmake file under `prefix/share`; return the files changed."""
    py_include = sysconfig.get_paths()["include"]
    np_include = numpy.get_include()
    changed = []
    for path in sorted((prefix / "share").rglob("*.cmake")):
        text = path.read_text()
        if "/opt/python/" not in text:
            continue
        new = _CONTAINER_NP_INCLUDE.sub(np_include, text)
        new = _CONTAINER_PY_INCLUDE.sub(py_include, new)
        if new != text:
            path.write_text(new)
            changed.append(path)
    return changed


def main() -> int:
    prefix = Path(sys.argv[1] if len(sys.argv) > 1 else sys.prefix)
    changed = fix(prefix)
    print(f"fix_ros_wheel_cmake: {len(changed)} CMake file(s) re-pointed under {prefix}/share")
    leftover = [p for p in (prefix / "share").rglob("*.cmake") if "/opt/python/" in p.read_text()]
    if leftover:
        print("fix_ros_wheel_cmake: unexpected /opt/python paths remain in:", *leftover, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
