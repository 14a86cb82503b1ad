"""Feature merging module (FMM): DPC-KNN clustering and average pooling per tile.

Yuan et al., TOFC (token/feature compression for split VLM inference), section IV-A. The features of one tile are
clustered with density-peak clustering using K nearest neighbours (DPC-KNN) and each cluster is average-pooled::

    x[T, N, D] --Gram--> d2[T, N, N] --KNN--> rho[T, N] --+--> delta[T, N] --> score = rho * delta
                                                          |                            |
                                                          +------ top-n_c centres <----+
    assign every feature to its nearest centre --> average pooling --> merged[T, C, D]

Dimension legend: T tiles, N = n_v features per tile, D feature dimension, C = n_c clusters, K neighbours.

Definitions (paper's equations):
    d(i, j)   = ||x_i - x_j||_2
    rho_i     = exp(-1/K * sum_{j in KNN(i)} d(i, j)^2)          (KNN excludes i itself)
    delta_i   = min_{j: rho_j > rho_i} d(i, j), or max_j d(i, j) for the densest feature
    centres   = the n_c features with the largest rho_i * delta_i
    cluster   = nearest centre (a centre belongs to its own cluster); merged = mean of the cluster's features

Numerics and tie-breaking (deterministic; the reference implementations add random noise instead):
    * Ranking uses log(rho * delta) = -mean_knn_d2 + log(delta), which orders exactly like rho * delta but does not
      underflow: for 1152-dim features mean_knn_d2 is in the hundreds and exp(-mean) is 0.0 in float32.
    * "Denser than" is a strict total order: j is denser than i iff rho_j > rho_i, or rho_j == rho_i and j < i
      (ties in density broken by the lower index). Exactly one feature is the densest.
    * Centres: sort by score descending with ties broken by the lower feature index; returned centres are then
      sorted by ascending feature index so merged tokens keep the tiles' spatial order.
    * Assignment ties (equidistant centres) go to the centre with the lower feature index; every centre is
      assigned to itself even when it duplicates another centre.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["MergeResult", "dpc_knn_merge"]


class MergeResult(NamedTuple):
    """Output of :func:`dpc_knn_merge`.

    Attributes:
        merged: Tensor[T, C, D], cluster means (same dtype as the input).
        assignment: LongTensor[T, N], cluster index in 0..C-1 of every feature.
        centres: LongTensor[T, C], feature index of every cluster centre, ascending per tile.
    """

    merged: Tensor
    assignment: Tensor
    centres: Tensor


def _validate(x: Tensor, n_c: int, k: int) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor[T, N, D], got {type(x).__name__}")
    if x.dim() != 3:
        raise ValueError(f"x must have shape [T, N, D], got shape {tuple(x.shape)}")
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"x must be float32 or float64, got {x.dtype} (shape {tuple(x.shape)})")
    t, n, d = x.shape
    if n < 2 or d < 1:
        raise ValueError(f"x must have N >= 2 features of D >= 1 dims per tile, got shape {tuple(x.shape)}")
    if isinstance(n_c, bool) or not isinstance(n_c, int) or not 1 <= n_c <= n:
        raise ValueError(f"n_c must be an int in 1..N={n} for x of shape {tuple(x.shape)}, got {n_c!r}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n - 1:
        raise ValueError(f"k must be an int in 1..N-1={n - 1} for x of shape {tuple(x.shape)}, got {k!r}")


@torch.no_grad()
def dpc_knn_merge(x: Tensor, n_c: int, k: int = 5) -> MergeResult:
    """Merge the N features of every tile into n_c cluster means with DPC-KNN (TOFC, Yuan et al., sec. IV-A).

    Fully vectorized over tiles: one batched Gram matmul gives all pairwise squared distances; everything else
    is O(N^2) elementwise work. No Python loops over N or T.

    Args:
        x: Tensor[T, N, D], float32 (or float64), the vision features of T tiles (e.g. 729x1152 or 576x1024).
        n_c: number of clusters C per tile, 1 <= n_c <= N.
        k: number of nearest neighbours K for the density (self excluded), 1 <= k <= N-1.

    Returns:
        MergeResult(merged Tensor[T, C, D], assignment LongTensor[T, N], centres LongTensor[T, C]).

    Raises:
        TypeError: x is not a float32/float64 tensor.
        ValueError: bad shape, n_c or k out of range, or non-finite values.
    """
    _validate(x, n_c, k)
    t, n, d = x.shape
    idx = torch.arange(n, device=x.device)

    # Squared Euclidean distances from one fused Gram matmul: d2 = (|x_i|^2 + |x_j|^2) - 2 x_i.x_j. This form is
    # symmetric bit for bit whenever the Gram matrix is (as BLAS gives here), so mutual neighbours get exactly
    # equal densities, as in the paper's equations (d(i, j) = d(j, i)); the tie rules then apply.
    sq = torch.linalg.vecdot(x, x)  # [T, N]
    if not bool(torch.isfinite(sq).all()):  # NaN/Inf in x (or overflow of |x|^2) shows up here, O(T*N)
        raise ValueError(f"x of shape {tuple(x.shape)} contains NaN/Inf or values too large for {x.dtype}")
    d2 = torch.baddbmm(sq.unsqueeze(2) + sq.unsqueeze(1), x, x.transpose(1, 2), alpha=-2.0).clamp_min_(0.0)
    d2.diagonal(dim1=1, dim2=2).zero_()  # exact zero self-distance (always a row minimum)

    # Local density: rho = exp(-mean of the K smallest non-self squared distances). Work with m = -log(rho).
    # Self is always among the K+1 smallest, so their sum equals the sum of the K smallest non-self distances.
    m = d2.topk(k + 1, dim=-1, largest=False).values.sum(-1) / k  # [T, N]; lower m = higher rho

    # Density rank under the strict order (rho descending, then lower index): stable sort of m ascending.
    by_density = torch.sort(m, dim=-1, stable=True).indices  # [T, N], densest first
    rank = torch.empty(t, n, dtype=torch.int32, device=x.device)
    rank.scatter_(1, by_density, idx.to(torch.int32).expand(t, n))  # rank[t, i]
    densest = by_density[:, :1]  # [T, 1]; no denser feature: delta = its maximum distance
    max_d2 = torch.gather(d2, 1, densest.unsqueeze(2).expand(t, 1, n)).amax(-1)  # [T, 1]
    # d2 is not needed after this point, so mask it in place (saves an N x N allocation).
    not_denser = rank.unsqueeze(1) >= rank.unsqueeze(2)  # [t, i, j]: j is NOT denser than i
    delta2 = d2.masked_fill_(not_denser, float("inf")).amin(-1)  # [T, N] squared delta; +inf for the densest
    delta2.scatter_(1, densest, max_d2)
    del d2

    # log(rho * delta) = -m + 0.5 * log(delta^2); log(0) = -inf is fine (duplicates rank last, then by index).
    score = -m + 0.5 * torch.log(delta2)
    order = torch.sort(score, dim=-1, descending=True, stable=True).indices  # stable: ties -> lower index first
    centres = order[:, :n_c].sort(dim=-1).values  # [T, C], ascending feature index

    # Nearest centre. Distances to the centres come from a small [N, C] matmul (|x_i|^2 is constant per row and
    # dropped: argmin is unchanged). argmin returns the first minimum: the centre with the lower feature index.
    x_c = torch.gather(x, 1, centres.unsqueeze(2).expand(t, n_c, d))  # [T, C, D]
    sq_c = torch.gather(sq, 1, centres)  # [T, C]
    assignment = torch.baddbmm(sq_c.unsqueeze(1), x, x_c.transpose(1, 2), alpha=-2.0).argmin(-1)  # [T, N]
    # A centre always belongs to its own cluster (matters only for duplicated centres).
    assignment.scatter_(1, centres, torch.arange(n_c, device=x.device).expand(t, n_c))

    # Average pooling per cluster as one batched matmul with the one-hot assignment (cheaper than index_add here).
    one_hot = (assignment.unsqueeze(1) == torch.arange(n_c, device=x.device).view(1, n_c, 1)).to(x.dtype)
    merged = torch.bmm(one_hot, x) / one_hot.sum(-1, keepdim=True)  # every cluster holds at least its centre
    return MergeResult(merged, assignment, centres)
