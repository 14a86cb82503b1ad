"""What the robot sends, drawn on the camera frame: every patch tinted by its DPC-KNN cluster, centres marked.

    left panel:  the grid tiles (anyres), each patch where it came from in the frame
    right panel: the thumbnail tile (the whole frame at low resolution)            (OneVision only)

A merged token is the mean of one cluster's patches, so the tints show what each token covers. Colours repeat
between tiles (clusters are per tile); a centre is the patch DPC-KNN picked as its cluster's density peak, drawn as a
white square with a black border. The device node publishes this on ``debug/image`` when ``debug_image`` is on, and
the replay report shows a few beside the questions they answered.
"""

from __future__ import annotations

import numpy as np

from tofc_ros.backbones.tiling import patch_boxes

__all__ = ["cluster_overlay"]

# 16 distinguishable colours (cluster index modulo 16).
_PALETTE = np.array(
    [
        (230, 25, 75),
        (60, 180, 75),
        (255, 225, 25),
        (0, 130, 200),
        (245, 130, 48),
        (145, 30, 180),
        (70, 240, 240),
        (240, 50, 230),
        (210, 245, 60),
        (250, 190, 212),
        (0, 128, 128),
        (220, 190, 255),
        (170, 110, 40),
        (255, 250, 200),
        (128, 0, 0),
        (170, 255, 195),
    ],
    dtype=np.float32,
)
_ALPHA = 0.45
_GAP = 8


def _paint(canvas: np.ndarray, boxes: np.ndarray, assignment: np.ndarray, centres: np.ndarray) -> None:
    """Tint each patch box of one tile by its cluster and outline the centres, in place (float32 canvas)."""
    h, w = canvas.shape[:2]
    for k in np.flatnonzero(~np.isnan(boxes[:, 0])):
        y0, x0, y1, x1 = (int(round(v)) for v in boxes[k])
        if y1 > y0 and x1 > x0:
            region = canvas[y0:y1, x0:x1]
            region *= 1 - _ALPHA
            region += _ALPHA * _PALETTE[assignment[k] % len(_PALETTE)]
    for k in centres:
        if np.isnan(boxes[k, 0]):
            continue
        y0, x0, y1, x1 = boxes[k]
        cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
        r = max(2, int(min(y1 - y0, x1 - x0) / 3))
        a, b = max(int(cy) - r, 0), min(int(cy) + r + 1, h)
        c, d = max(int(cx) - r, 0), min(int(cx) + r + 1, w)
        canvas[a:b, c:d] = 0.0
        canvas[a + 1 : b - 1, c + 1 : d - 1] = 255.0


def cluster_overlay(rgb: np.ndarray, spec, assignment: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """The overlay image of one frame.

    Args:
        rgb: uint8 [H, W, 3], the frame the encoder saw.
        spec: the backbone's BackboneSpec.
        assignment: int [T, n_v], each token's cluster (``MergeResult.assignment``).
        centres: int [T, C], each cluster's centre token (``MergeResult.centres``).

    Returns:
        uint8 [H, W, 3] (one tile) or [H, 2 W + 8, 3] (grid tiles left, thumbnail right).
    """
    h, w = rgb.shape[:2]
    boxes = patch_boxes(spec, (h, w))
    if boxes.shape[:2] != tuple(assignment.shape):
        raise ValueError(f"assignment {tuple(assignment.shape)} does not fit a {w}x{h} frame's tiles {boxes.shape[:2]}")
    grid = rgb.astype(np.float32)
    tiles = range(1, len(boxes)) if spec.family == "onevision" else range(len(boxes))
    for t in tiles:
        _paint(grid, boxes[t], assignment[t], centres[t])
    if spec.family != "onevision":
        return grid.clip(0, 255).astype(np.uint8)
    thumb = rgb.astype(np.float32)
    _paint(thumb, boxes[0], assignment[0], centres[0])
    out = np.full((h, 2 * w + _GAP, 3), 255.0, dtype=np.float32)
    out[:, :w], out[:, w + _GAP :] = grid, thumb
    return out.clip(0, 255).astype(np.uint8)
