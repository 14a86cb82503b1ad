"""Import CompressAI's entropy models without running ``compressai/__init__.py``.

Why this module exists: ``import compressai`` imports ``compressai.datasets``, which imports torchvision and
requests. torchvision cannot be installed next to the CPU torch used here (see notes/platform.md), so the package
``__init__`` fails. The entropy models themselves only need ``compressai.ops``, the compiled ``compressai._CXX``
and ``compressai.ans`` modules, and two helpers (``get_entropy_coder``, ``available_entropy_coders``) that
``entropy_models.py`` imports lazily from the package.

We therefore register a lightweight stand-in package object under the name ``compressai`` whose ``__path__`` is
the real package directory, so submodule imports resolve to the real files while the package ``__init__`` never
runs. If a working ``compressai`` is already imported, it is used unchanged.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

__all__ = ["EntropyBottleneck", "GaussianConditional", "ans"]


def _install_stand_in() -> None:
    if "compressai" in sys.modules:
        return
    spec = importlib.util.find_spec("compressai")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("compressai is not installed (pip install --no-deps compressai==1.2.8)")
    package = types.ModuleType("compressai")
    package.__path__ = list(spec.submodule_search_locations)
    package.__file__ = spec.origin
    package.__package__ = "compressai"
    # Only the rANS coder is compiled into the wheel; range_coder is an optional extra we do not use.
    package.get_entropy_coder = lambda: "ans"
    package.available_entropy_coders = lambda: ["ans"]
    sys.modules["compressai"] = package


_install_stand_in()

ans = importlib.import_module("compressai.ans")
_entropy_models = importlib.import_module("compressai.entropy_models")
EntropyBottleneck = _entropy_models.EntropyBottleneck
GaussianConditional = _entropy_models.GaussianConditional
