"""Resolve `package://<pkg>/<path>` resource URLs (as ROS's resource_retriever spells them) to files.

Parameters such as the model path default to files shipped in this package's share folder; a URL keeps the
params file valid on any install prefix. Plain paths are returned unchanged (with `~` expanded).
"""

from __future__ import annotations

import os
from pathlib import Path

from tofc_ros.ament_index import PackageNotFoundError, package_share

_SCHEME = "package://"


def resolve_resource(value: str) -> Path:
    """The filesystem path `value` names.

    Raises:
        FileNotFoundError: the package is not installed in any prefix of AMENT_PREFIX_PATH (or this venv), or the
            path does not exist.
    """
    if value.startswith(_SCHEME):
        package, _, rest = value[len(_SCHEME) :].partition("/")
        if not package or not rest:
            raise FileNotFoundError(f"'{value}': expected package://<package>/<path>")
        try:
            share = package_share(package, os.environ)
        except PackageNotFoundError as exc:
            raise FileNotFoundError(f"'{value}': {exc}") from None
        path = Path(share) / rest
    else:
        path = Path(value).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"'{value}' does not exist ({path})")
    return path
