"""Ament index look-ups without ament_index_python (which needs no ROS either, but keeps this standalone); used by
the launch runner and by ``resources`` (package:// paths).

A package is installed in a prefix when ``<prefix>/share/ament_index/resource_index/packages/<pkg>``
exists; its share folder is ``<prefix>/share/<pkg>`` and ament_python puts its console scripts in
``<prefix>/lib/<pkg>/`` (what ``ros2 run`` and launch_ros execute).
"""

import os
import sys
from collections.abc import Mapping


class PackageNotFoundError(LookupError):
    """A package or one of its executables is not in the ament index of any prefix."""


def prefixes(environ: Mapping[str, str]) -> list[str]:
    """AMENT_PREFIX_PATH in order, or this interpreter's prefix (a pip-installed venv) when unset."""
    value = environ.get("AMENT_PREFIX_PATH")
    if not value:
        return [sys.prefix]
    return [p for p in value.split(os.pathsep) if p]


def package_prefix(package: str, environ: Mapping[str, str]) -> str | None:
    for prefix in prefixes(environ):
        if os.path.isfile(os.path.join(prefix, "share", "ament_index", "resource_index", "packages", package)):
            return prefix
    return None


def require_package_prefix(package: str, environ: Mapping[str, str]) -> str:
    prefix = package_prefix(package, environ)
    if prefix is None:
        raise PackageNotFoundError(f"package '{package}' not found in the ament index of {_searched(environ)}")
    return prefix


def package_share(package: str, environ: Mapping[str, str]) -> str:
    return os.path.join(require_package_prefix(package, environ), "share", package)


def find_executable(package: str, executable: str, environ: Mapping[str, str]) -> str:
    """``<prefix>/lib/<pkg>/<exec>``: the package's own prefix first, then any prefix that has it.

    The second step covers an install whose ament index marker is missing (for example a
    ``pip install -e``, which skips data_files) but whose scripts are in place.
    """
    candidates = []
    own = package_prefix(package, environ)
    if own is not None:
        candidates.append(own)
    candidates += [p for p in prefixes(environ) if p != own]
    for prefix in candidates:
        path = os.path.join(prefix, "lib", package, executable)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise PackageNotFoundError(
        f"executable '{executable}' of package '{package}' not found: no executable "
        f"lib/{package}/{executable} in {_searched(environ)}"
    )


def _searched(environ: Mapping[str, str]) -> str:
    where = "AMENT_PREFIX_PATH" if environ.get("AMENT_PREFIX_PATH") else "sys.prefix"
    return f"{where} ({os.pathsep.join(prefixes(environ))})"
