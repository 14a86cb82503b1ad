"""The one place that decides the order of image tokens in the prompt (training and serving both call it).

Input: the projected per-tile embeddings ``tiles`` [T, n, D] (projector already applied, tile order as the image
processor emits it: OneVision tile 0 = the 384² thumbnail of the whole image, tiles 1..rows·cols = the anyres grid
row-major, left to right then top to bottom), plus the tile grid, the original image size and OneVision's learned
``image_newline`` embedding [D].

Two regimes, chosen by n:

1. n == n_v (merging off; 729 for OneVision, 576 for LLaVA-1.5): **the reference model's own packing**, so the split
   reproduces the reference logits exactly.
   - OneVision (``LlavaOnevisionModel.pack_image_features``): thumbnail tokens (27×27, row-major, no newline), then the
     grid tiles stitched into one (rows·27)×(cols·27) feature map, the padding that anyres added removed
     (``unpad_image``), bilinearly downsampled if it is larger than anyres_max_K tiles' worth (ratio > 1.1), and an
     ``image_newline`` appended after every feature-map row; flattened row-major.
   - LLaVA-1.5: the 576 tokens as they are.

2. n < n_v (merged by FMM/DPC-KNN; n = n_c, typically 8–32): the 27×27 geometry is gone, so the grid packing cannot
   apply. **Our order** (OneVision):

       [thumbnail: n tokens]
       [tile(0,0): n][tile(0,1): n] … [tile(0,cols-1): n] [newline]
       [tile(1,0): n] …                                    [newline]
       …                                                   (one newline per tile row, rows in total)

   i.e. M = T·n + rows. It mirrors the reference's structure at tile granularity: global view first, then the grid
   read like text with a newline at the end of each row. Within a tile the n merged tokens keep the order the
   merger emitted (the codec's cluster order); the server never reorders them.
   LLaVA-1.5 (one tile, no newline embedding): the n tokens as they are, M = n.

3. Two views of one frame (two-stage answering: the first pass's tokens, then the robot's detailed crop of where the
   model looked, each arranged on its own by 1. or 2.):

       [view 0: M_0 tokens] [newline] [view 1: M_1 tokens]          (OneVision; LLaVA-1.5: no newline between)

   The global view comes first, as the thumbnail does within a view, and the newline ends it as it ends a tile row.
   Training (``TrainableLlava`` through ``ServerHalf.prepare_inputs(detail=...)``) and serving build it here alike.

``num_image_tokens`` gives M without any tensors; the prompt gets exactly M image placeholder tokens.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .spec import BackboneSpec

__all__ = ["arrange_image_tokens", "arrange_views", "num_image_tokens", "check_tile_features"]


def check_tile_features(spec: BackboneSpec, n_tiles: int, n_per_tile: int, grid, image_size) -> None:
    """Validate (T, n, grid, image size) against the spec; raise ValueError naming the mismatch."""
    rows, cols = _pair(grid, "grid")
    _pair(image_size, "image_size")
    if rows < 1 or cols < 1:
        raise ValueError(f"grid must be positive, got {(rows, cols)}")
    expected_grid = spec.tile_grid(image_size)
    if (rows, cols) != expected_grid:
        raise ValueError(f"grid {(rows, cols)} does not match image_size {tuple(image_size)}: expected {expected_grid}")
    if n_tiles != spec.num_tiles((rows, cols)):
        raise ValueError(f"{n_tiles} tiles given; grid {(rows, cols)} needs {spec.num_tiles((rows, cols))}")
    if not 1 <= n_per_tile <= spec.tokens_per_tile:
        raise ValueError(f"tokens per tile must be in [1, {spec.tokens_per_tile}], got {n_per_tile}")


def num_image_tokens(spec: BackboneSpec, n_per_tile: int, grid, image_size) -> int:
    """M, the number of image tokens ``arrange_image_tokens`` produces (no tensors of size D involved)."""
    rows, cols = _pair(grid, "grid")
    n_tiles = spec.num_tiles((rows, cols))
    check_tile_features(spec, n_tiles, n_per_tile, grid, image_size)
    if spec.family == "llava":
        return n_tiles * n_per_tile
    if n_per_tile < spec.tokens_per_tile:
        return n_tiles * n_per_tile + rows
    # Full packing: the unpadded/downsampled map's size is data-independent, so arrange a width-1 dummy.
    dummy = torch.zeros(n_tiles, n_per_tile, 1)
    return int(arrange_image_tokens(spec, dummy, grid, image_size, torch.zeros(1)).shape[0])


def arrange_image_tokens(
    spec: BackboneSpec,
    tiles: torch.Tensor,
    grid,
    image_size,
    image_newline: torch.Tensor | None,
) -> torch.Tensor:
    """Arrange projected per-tile embeddings into the prompt's image-token sequence (see module docstring).

    Args:
        spec: the checkpoint's BackboneSpec.
        tiles: [T, n, D] projected embeddings, T = spec.num_tiles(grid), 1 ≤ n ≤ n_v.
        grid: (rows, cols) of the anyres grid ((1, 1) for LLaVA-1.5).
        image_size: (height, width) of the original image in pixels.
        image_newline: [D] OneVision newline embedding (required for OneVision, ignored for LLaVA-1.5).

    Returns:
        [M, D] embeddings to scatter into the M image placeholder positions, in prompt order. Differentiable with
        respect to ``tiles`` (the trainer back-propagates through it).
    """
    if tiles.dim() != 3:
        raise ValueError(f"tiles must be [T, n, D], got shape {tuple(tiles.shape)}")
    n_tiles, n, dim = tiles.shape
    check_tile_features(spec, n_tiles, n, grid, image_size)
    if spec.family == "llava":
        return tiles.reshape(n_tiles * n, dim)
    if image_newline is None or image_newline.shape != (dim,):
        raise ValueError(f"OneVision needs image_newline of shape ({dim},)")
    newline = image_newline.to(tiles.device, tiles.dtype)
    rows, cols = (int(v) for v in grid)
    if n < spec.tokens_per_tile:
        return _merged_order(tiles, rows, cols, newline)
    return _reference_packing(spec, tiles, rows, cols, image_size, newline)


def arrange_views(spec: BackboneSpec, views, image_newline: torch.Tensor | None) -> torch.Tensor:
    """Arrange one or two views (regime 3 of the module docstring): ``views`` is a sequence of (tiles [T, n, D], grid,
    image_size), each arranged by ``arrange_image_tokens``; returns [M_0 (+ 1 + M_1), D]."""
    if not 1 <= len(views) <= 2:
        raise ValueError(f"one or two views, got {len(views)}")
    parts = [arrange_image_tokens(spec, tiles, grid, size, image_newline) for tiles, grid, size in views]
    if len(parts) == 2 and spec.family == "onevision":
        parts.insert(1, image_newline.to(parts[0].device, parts[0].dtype)[None])
    return torch.cat(parts, dim=0)


def _merged_order(tiles: torch.Tensor, rows: int, cols: int, newline: torch.Tensor) -> torch.Tensor:
    """[thumbnail] + per tile row: [tiles of the row] + [newline]. Shapes: [T, n, D] → [T·n + rows, D]."""
    n_tiles, n, dim = tiles.shape
    thumb = tiles[0]  # [n, D]
    grid_rows = tiles[1:].reshape(rows, cols * n, dim)  # row-major tiles → one token run per tile row
    with_nl = torch.cat([grid_rows, newline.expand(rows, 1, dim)], dim=1)  # [rows, cols·n + 1, D]
    return torch.cat([thumb, with_nl.reshape(rows * (cols * n + 1), dim)], dim=0)


def _reference_packing(
    spec: BackboneSpec, tiles: torch.Tensor, rows: int, cols: int, image_size, newline: torch.Tensor
) -> torch.Tensor:
    """LLaVA-OneVision's own packing of full 27×27 tiles (matches ``pack_image_features`` for one image)."""
    from transformers.models.llava_onevision.modeling_llava_onevision import unpad_image

    side = spec.patches_per_side
    _, _, dim = tiles.shape
    thumb = tiles[0]  # [side², D]
    fmap = tiles[1:].view(rows, cols, side, side, dim)
    fmap = fmap.permute(4, 0, 2, 1, 3).reshape(dim, rows * side, cols * side)  # [D, H', W'] stitched map
    fmap = unpad_image(fmap, [int(v) for v in image_size])  # drop what anyres padding added
    max_tiles = int(spec.vision_aspect_ratio.removeprefix("anyres_max_")) if spec.vision_aspect_ratio else None
    _, h, w = fmap.shape
    if max_tiles is not None:
        ratio = math.sqrt(h * w / (max_tiles * side**2))
        if ratio > 1.1:  # the reference caps the token budget by bilinear downsampling
            fmap = F.interpolate(fmap[None], [int(h // ratio), int(w // ratio)], mode="bilinear")[0]
    _, h, w = fmap.shape
    fmap = torch.cat([fmap, newline[:, None, None].expand(dim, h, 1)], dim=-1)  # newline after each map row
    return torch.cat([thumb, fmap.flatten(1, 2).transpose(0, 1)], dim=0)


def _pair(value, name: str) -> tuple[int, int]:
    try:
        a, b = (int(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a pair of ints, got {value!r}") from None
    return a, b
