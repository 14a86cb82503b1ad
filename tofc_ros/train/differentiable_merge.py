"""Token merging with gradients, for training and ablations (the codec's ``dpc_knn_merge`` is the reference).

``dpc_knn_merge`` decides clusters under no_grad (the decision is discrete). Training needs gradients of the merged
features with respect to the vision features, so the cluster *means* are recomputed here from its assignment with a
differentiable one-hot matmul; the values equal ``dpc_knn_merge(x).merged`` (tested).

Methods (paper Table I ablation, equal token count n_c per tile):
    "dpc_knn"  DPC-KNN clusters, average pooling per cluster (TOFC's FMM)
    "centres"  the DPC-KNN cluster centres only (no pooling)
    "uniform"  average pooling of the 27×27 patch grid to an h×w grid, h·w = n_c
    "none"     no merging (all n_v tokens)

Dimension legend: T tiles, N tokens per tile, D feature dim, C = n_c.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from tofc_ros.codec.merging import dpc_knn_merge

__all__ = ["MERGE_METHODS", "merge_features", "uniform_grid"]

MERGE_METHODS = ("dpc_knn", "centres", "uniform", "none")


def uniform_grid(n_c: int) -> tuple[int, int]:
    """(h, w) with h·w = n_c and h ≤ w as close as possible (16 → 4×4, 8 → 2×4, 32 → 4×8)."""
    h = int(math.isqrt(n_c))
    while n_c % h:
        h -= 1
    return h, n_c // h


def merge_features(x: Tensor, n_c: int, method: str = "dpc_knn", k: int = 5) -> Tensor:
    """Merge per-tile features: Tensor[T, N, D] → Tensor[T, C, D] (differentiable in x).

    Args:
        x: per-tile vision features (N must be a square number for "uniform").
        n_c: tokens kept per tile (ignored by "none").
        method: one of MERGE_METHODS.
        k: DPC-KNN neighbours.
    """
    if method == "none":
        return x
    t, n, d = x.shape
    if method == "uniform":
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f"uniform pooling needs a square token grid, got N={n}")
        h, w = uniform_grid(n_c)
        grid = x.transpose(1, 2).reshape(t, d, side, side)
        return F.adaptive_avg_pool2d(grid, (h, w)).reshape(t, d, h * w).transpose(1, 2)
    res = dpc_knn_merge(x.detach().float(), n_c, k=k)
    if method == "centres":
        return torch.gather(x, 1, res.centres.unsqueeze(-1).expand(t, n_c, d))
    if method != "dpc_knn":
        raise ValueError(f"method must be one of {MERGE_METHODS}, got {method!r}")
    one_hot = (res.assignment.unsqueeze(1) == torch.arange(n_c, device=x.device).view(1, n_c, 1)).to(x.dtype)
    return torch.bmm(one_hot, x) / one_hot.sum(-1, keepdim=True)
