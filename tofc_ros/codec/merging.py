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

Cost: the Gram product dominates. It is computed from its lower block triangle (~63 % of the flops for 729 rows);
delta needs a full-row scan only for local density peaks (no denser feature among the K+1 smallest distances of
their row, the ones the density already found); for every other feature the nearest denser one is among those.

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


def _symmetric_gram(x: Tensor, block: int = 192) -> Tensor:
    """Gram matrices x x^T [T, N, N] from the lower block triangle, mirrored (a syrk done with gemms).

    Column block c computes the rows from c's first row down, x[lo:] x[lo:hi]^T, straight into the matrix (beta=0:
    no temporary), then copies its part below the diagonal block to the transposed place above it. A 729-row tile
    costs ~63 % of the full product's flops. Measured inside the whole merge (bench/bench_codec.py and BENCHMARKS.md),
    192-wide column blocks beat 128-row blocks by ~0.1 Gram and every other width tried (96-256); widths that are
    not multiples of 64 run slower.

    Off-diagonal blocks are symmetric bit for bit by construction. A diagonal block is one gemm's x_b x_b^T, which
    is symmetric when the BLAS accumulates every dot product in the same order (MKL and OpenBLAS do; the tests check).
    """
    t, n, _ = x.shape
    gram = torch.empty(t, n, n, dtype=x.dtype, device=x.device)
    for lo in range(0, n, block):
        hi = min(lo + block, n)
        gram[:, lo:, lo:hi].baddbmm_(x[:, lo:], x[:, lo:hi].transpose(1, 2), beta=0.0)  # ignores empty()
        gram[:, lo:hi, hi:] = gram[:, hi:, lo:hi].transpose(1, 2)
    return gram


def _pairwise_sq_dists(x: Tensor) -> Tensor:
    """Squared Euclidean distances d2[T, N, N] = (|x_i|^2 + |x_j|^2) - 2 x_i.x_j from one Gram matmul, in place.

    |x_i|^2 is read off the Gram's own diagonal, so the self-distance is exactly 0 (2a - 2a), and d2 is symmetric
    bit for bit (the Gram is): mutual neighbours get exactly equal densities, as in the paper's equations
    (d(i, j) = d(j, i)), and the tie rules then apply.

    The outer sum is a K=2 matmul [sq_i, 1] . [1, sq_j] accumulated onto beta * G with beta = -2: one pass over the
    N x N matrix instead of three. The products by 1 and the scaling by -2 are exact, so the result is
    round(round(sq_i + sq_j) - 2 G_ij), equal to the two-step form (checked in test_codec_merging.py).

    Not clamped: near-duplicates can come out as tiny negatives. Clamping is monotone, so callers clamp only the
    few values they read (order statistics and minima of the clamped matrix are the clamped ones of this one).
    """
    gram = _symmetric_gram(x)  # [T, N, N]
    sq = gram.diagonal(dim1=1, dim2=2).contiguous()  # [T, N] (a strided view would make the stacks slow)
    # NaN/Inf in x shows up on the diagonal (amax propagates NaN); 4 max|x|^2 bounds every term of d2
    # (Cauchy-Schwarz), so when it is finite nothing below overflows.
    if not float(sq.amax()) * 4 <= torch.finfo(x.dtype).max:  # False for NaN too
        raise ValueError(f"x of shape {tuple(x.shape)} contains NaN/Inf or values too large for {x.dtype}")
    ones = torch.ones_like(sq)
    return gram.baddbmm_(torch.stack([sq, ones], 2), torch.stack([ones, sq], 1), beta=-2.0)


@torch.no_grad()
def dpc_knn_merge(x: Tensor, n_c: int, k: int = 5) -> MergeResult:
    """Merge the N features of every tile into n_c cluster means with DPC-KNN (TOFC, Yuan et al., sec. IV-A).

    Fully vectorized over tiles: one batched symmetric Gram product gives all pairwise squared distances; after it,
    one in-place pass, one top-(K+1) and O(N * (K + n_c)) work, plus a row scan per local density peak. No Python
    loops over N or T.

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

    d2 = _pairwise_sq_dists(x)  # [T, N, N], unclamped: every value read from it is clamped at 0 below

    # Local density: rho = exp(-mean of the K smallest non-self squared distances). Work with m = -log(rho).
    # Self is always among the K+1 smallest, so their sum equals the sum of the K smallest non-self distances.
    knn_d2, knn = d2.topk(k + 1, dim=-1, largest=False)  # [T, N, K+1] ascending: equal multisets, equal sums
    knn_d2.clamp_min_(0.0)
    m = knn_d2.sum(-1) / k  # [T, N]; lower m = higher rho

    # Density rank under the strict order (rho descending, then lower index): stable sort of m ascending.
    by_density = torch.sort(m, dim=-1, stable=True).indices  # [T, N], densest first
    rank = torch.empty(t, n, dtype=torch.long, device=x.device)
    rank.scatter_(1, by_density, idx.expand(t, n))  # rank[t, i]
    densest = by_density[:, :1]  # [T, 1]; no denser feature: delta = its maximum distance

    # delta^2 = min of d2 over the denser features. Most features have a denser one among their K+1 nearest, and
    # then the nearest of those is the answer exactly: every feature outside that set is at least as far. Only the
    # rest (local density peaks, typically a few per tile) need a scan of their whole row, O(peaks * N) instead of
    # an N x N mask.
    knn_denser = rank.gather(1, knn.view(t, -1)).view(t, n, k + 1) < rank.unsqueeze(2)  # self is never denser
    delta2 = knn_d2.masked_fill_(~knn_denser, float("inf")).amin(-1)  # [T, N]
    peak = ~knn_denser.any(-1)
    peak.scatter_(1, densest, False)
    pt, pi = peak.nonzero(as_tuple=True)  # [P] tile and feature of every local peak
    if pt.numel():
        rows = d2[pt, pi]  # [P, N] copy
        rows.masked_fill_(rank[pt] >= rank[pt, pi].unsqueeze(1), float("inf"))  # keep only denser features
        delta2[pt, pi] = rows.amin(-1)
    delta2.scatter_(1, densest, torch.gather(d2, 1, densest.unsqueeze(2).expand(t, 1, n)).amax(-1))
    delta2.clamp_min_(0.0)

    # log(rho * delta) = -m + 0.5 * log(delta^2); log(0) = -inf is fine (duplicates rank last, then by index).
    score = torch.log(delta2).mul_(0.5).sub_(m)
    order = torch.sort(score, dim=-1, descending=True, stable=True).indices  # stable: ties -> lower index first
    centres = order[:, :n_c].sort(dim=-1).values  # [T, C], ascending feature index

    # Nearest centre, from the same distances that chose the centres (no second matmul): the centres' rows of d2
    # (contiguous, cheaper to gather than its columns; d2 is symmetric). min over the centre axis returns the first
    # minimum: the centre with the lower feature index.
    assignment = torch.gather(d2, 1, centres.unsqueeze(2).expand(t, n_c, n)).clamp_min_(0.0).min(1).indices  # [T, N]
    del d2
    # A centre always belongs to its own cluster (matters only for duplicated centres).
    assignment.scatter_(1, centres, torch.arange(n_c, device=x.device).expand(t, n_c))

    # Average pooling per cluster as one batched matmul with the one-hot assignment. index_add_ was no faster in the
    # whole merge once measured without position bias, and on CUDA it adds atomically (run-to-run rounding changes).
    one_hot = (assignment.unsqueeze(1) == torch.arange(n_c, device=x.device).view(1, n_c, 1)).to(x.dtype)
    merged = torch.bmm(one_hot, x) / one_hot.sum(-1, keepdim=True)  # every cluster holds at least its centre
    return MergeResult(merged, assignment, centres)
