"""Shared pieces of the trainers: YAML → dataclass configs, seeding, the pixel path, schedules, JSONL logs.

Nothing here is specific to one training stage. The pixel path reproduces the model's own image processor (checked
against it at start-up; a mismatch falls back to the processor) because the PIL processor costs ~35 ms per 64×64
image here, more than the whole forward pass of the tiny model.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import time
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "load_config",
    "config_from_cli",
    "config_to_dict",
    "seed_everything",
    "PixelPath",
    "JsonlLog",
    "cosine_lr",
    "exp_temperature",
    "set_threads",
]


# --------------------------------------------------------------------------------------------------- configs
def _coerce(tp, value, where: str):
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return _from_dict(tp, value, where)
    if origin in (tuple, list) and isinstance(value, (list, tuple)):
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        items = [_coerce(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        for arg in typing.get_args(tp):
            if arg is not type(None):
                return _coerce(arg, value, where)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads "2e-3" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            raise TypeError(f"{where} must be a number, got {value!r}") from None
    return value


def _from_dict(cls, data: dict, where: str = "config"):
    if not isinstance(data, dict):
        raise TypeError(f"{where} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(names)}")
    return cls(**{k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()})


def load_config(cls, path: str | os.PathLike | None = None, overrides: Sequence[str] = ()):
    """Build a config dataclass from a YAML file plus ``key.sub=value`` overrides (values parsed as YAML).

    Raises:
        ValueError: unknown keys (a typo must not be silently ignored).
    """
    import yaml

    data: dict = {}
    if path is not None:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"override must be key=value, got {item!r}")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return _from_dict(cls, data)


def config_from_cli(cls, prog: str, description: str, argv: Sequence[str] | None):
    """(config, parsed args) of a trainer's command line: ``--config`` YAML, ``--set key=value`` overrides and
    ``--no-progress``, the options every config-driven trainer takes."""
    import argparse

    ap = argparse.ArgumentParser(prog=prog, description=description)
    ap.add_argument("--config", help=f"YAML config (keys of {cls.__name__})")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    return load_config(cls, args.config, args.set), args


def config_to_dict(cfg) -> dict:
    """A JSON-able dict of a config dataclass (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


# --------------------------------------------------------------------------------------------------- runtime
def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_threads(n: int) -> None:
    """Torch intra-op threads (0: leave torch's default)."""
    if n > 0:
        torch.set_num_threads(n)


def cosine_lr(step: int, total: int, warmup: int, base: float, final_ratio: float = 0.05) -> float:
    """Linear warm-up to ``base`` over ``warmup`` steps, then cosine decay to ``base * final_ratio`` at ``total``."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def exp_temperature(step: int, total: int, t_start: float, t_end: float) -> float:
    """Router temperature decaying exponentially from ``t_start`` (step 0) to ``t_end`` (step total-1 and after)."""
    if not (t_start > 0 and t_end > 0):
        raise ValueError(f"temperatures must be > 0, got {t_start}, {t_end}")
    if total <= 1:
        return t_end
    frac = min(1.0, max(0.0, step / (total - 1)))
    return t_start * (t_end / t_start) ** frac


class JsonlLog:
    """Append-only JSONL log (one dict per line); a resumed run appends to the same file."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path else None
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, **record: Any) -> None:
        """Append one record (floats rounded to 6 significant digits)."""
        if not self.path:
            return
        rec = {k: (float(f"{v:.6g}") if isinstance(v, float) else v) for k, v in record.items()}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")


# --------------------------------------------------------------------------------------------------- pixels
class PixelPath:
    """Image → tiles, as the model's image processor does it, fast for single-tile images.

    For an image whose anyres grid is 1×1 and whose sides are ≤ the tile size with a square aspect (every easy-vqa
    image), the OneVision processor's grid tile and thumbnail are the same bicubic resize to S×S, rescaled and
    normalised. ``tiles`` returns that one S×S tile and the number of times it repeats; the vision tower then runs
    once per image, not twice (identical inputs give identical features). Anything else goes through the processor.

    The fast path is verified against the processor on the first images it sees (max abs difference ≤ 1e-5);
    if it disagrees, the processor is used for everything.
    """

    def __init__(self, device_half, check_images: int = 4):
        self.dh = device_half
        self.spec = device_half.spec
        ip = device_half.image_processor
        self._mean = np.asarray(ip.image_mean, np.float32)
        self._std = np.asarray(ip.image_std, np.float32)
        self._scale = np.float32(ip.rescale_factor)
        self._to_check = check_images
        self._fast_ok = self.spec.family == "onevision"

    def _fast_eligible(self, rgb: np.ndarray) -> bool:
        h, w = rgb.shape[:2]
        return self._fast_ok and h == w and self.spec.tile_grid((h, w)) == (1, 1)

    def _fast(self, rgb: np.ndarray) -> torch.Tensor:
        from PIL import Image

        s = self.spec.tile_size
        r = np.asarray(Image.fromarray(rgb).resize((s, s), Image.Resampling.BICUBIC), dtype=np.float32)
        x = (r * self._scale - self._mean) / self._std
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))

    def tiles(self, rgb: np.ndarray) -> tuple[torch.Tensor, int, tuple[int, int], tuple[int, int]]:
        """(pixels [U, 3, S, S] of the U distinct tiles, repeat: the real tile count is U·repeat, grid, size)."""
        image_size = (int(rgb.shape[0]), int(rgb.shape[1]))
        if self._fast_eligible(rgb):
            fast = self._fast(rgb)
            if self._to_check > 0:
                ref, grid, _ = self.dh.preprocess(rgb)
                ref = ref.float().cpu()
                ok = ref.shape[0] == 2 and all(float((ref[i] - fast).abs().max()) <= 1e-5 for i in range(2))
                self._to_check -= 1
                if not ok:
                    self._fast_ok = False
                    return ref, 1, grid, image_size
            return fast[None], 2, (1, 1), image_size
        pixels, grid, _ = self.dh.preprocess(rgb)
        return pixels.float().cpu(), 1, grid, image_size


def timer() -> float:
    """Monotonic seconds."""
    return time.perf_counter()
