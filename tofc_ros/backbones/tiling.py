"""Where each vision token of each tile comes from in the camera frame: the image processor's geometry, inverted.

LLaVA-OneVision (anyres, PIL processor): tile 0 is the whole frame resized to S x S (aspect not kept); the grid tiles
come from the frame resized to fit the best pinpoint resolution (aspect kept, ``get_patch_output_size``), centred in
it with zero padding, then cut into S x S tiles row by row. LLaVA-1.5: the frame padded to a square (centred), then
resized to S x S: one tile. Each tile has P x P patches of p pixels (P = S // p; the last S - P p pixels are never
seen), and token k of a tile is patch (k // P, k % P).

``patch_boxes`` gives every token's box in frame pixels (y0, x0, y1, x1; NaN for tokens that cover only padding).
Training uses it to label patches with the objects they cover; the device's debug overlay and the two-stage mode's
region of interest use it to map tokens back to pixels. ``test_backbone_tiling.py`` checks it against the processor.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from .spec import BackboneSpec

__all__ = ["patch_boxes"]


def _fit(image_size: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    """The resized size the processor gives an image fitted into ``target`` keeping its aspect (transformers'
    ``get_patch_output_size``)."""
    (h, w), (th, tw) = image_size, target
    scale_w, scale_h = tw / w, th / h
    if scale_w < scale_h:
        return min(math.ceil(h * scale_w), th), tw
    return th, min(math.ceil(w * scale_h), tw)


def _tile_patch_edges(spec: BackboneSpec) -> np.ndarray:
    """Edges of the patches along one side of a tile, in tile pixels: [P + 1]."""
    return np.arange(spec.patches_per_side + 1, dtype=np.float64) * spec.patch_size


@functools.lru_cache(maxsize=64)
def _boxes(spec: BackboneSpec, image_size: tuple[int, int]) -> np.ndarray:
    h, w = image_size
    edges = _tile_patch_edges(spec)
    lo, hi = edges[:-1], edges[1:]  # [P]
    s = spec.tile_size

    def grid_boxes(y_lo, y_hi, x_lo, x_hi):  # per-axis intervals -> [P*P, 4] (row-major tokens)
        ys0, xs0 = np.meshgrid(y_lo, x_lo, indexing="ij")
        ys1, xs1 = np.meshgrid(y_hi, x_hi, indexing="ij")
        return np.stack([ys0, xs0, ys1, xs1], -1).reshape(-1, 4)

    if spec.family == "llava":  # pad to a square (centred), resize to S x S
        side = max(h, w)
        f = side / s
        top, left = (side - h) / 2, (side - w) / 2
        boxes = grid_boxes(lo * f - top, hi * f - top, lo * f - left, hi * f - left)
        return _clip([boxes], h, w)
    tiles = [grid_boxes(lo * h / s, hi * h / s, lo * w / s, hi * w / s)]  # the thumbnail: S x S, aspect not kept
    rows, cols = spec.tile_grid(image_size)
    nh, nw = _fit(image_size, (rows * s, cols * s))
    top, left = (rows * s - nh) // 2, (cols * s - nw) // 2  # the processor's padding before the image
    fy, fx = h / nh, w / nw
    for r in range(rows):
        for c in range(cols):
            y_lo, y_hi = (r * s + lo - top) * fy, (r * s + hi - top) * fy
            x_lo, x_hi = (c * s + lo - left) * fx, (c * s + hi - left) * fx
            tiles.append(grid_boxes(y_lo, y_hi, x_lo, x_hi))
    return _clip(tiles, h, w)


def _clip(tiles: list[np.ndarray], h: int, w: int) -> np.ndarray:
    out = np.stack(tiles)  # [T, P*P, 4]
    out[..., 0::2] = out[..., 0::2].clip(0, h)
    out[..., 1::2] = out[..., 1::2].clip(0, w)
    empty = (out[..., 2] <= out[..., 0]) | (out[..., 3] <= out[..., 1])
    out[empty] = np.nan
    out.setflags(write=False)
    return out


def patch_boxes(spec: BackboneSpec, image_size: tuple[int, int]) -> np.ndarray:
    """Every vision token's source box in the frame.

    Args:
        spec: the checkpoint's BackboneSpec.
        image_size: (height, width) of the frame.

    Returns:
        float64 array [T, n_v, 4] of (y0, x0, y1, x1) frame pixel edges (read-only, cached per size), T tiles in the
        processor's order, NaN rows for tokens that see only padding. For LLaVA-1.5 n_v excludes CLS.
    """
    h, w = int(image_size[0]), int(image_size[1])
    if h < 1 or w < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    return _boxes(spec, (h, w))
