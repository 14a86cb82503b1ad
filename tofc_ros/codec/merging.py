"""Feature merging module (FMM): DPC-KNN clustering and average pooling per tile, exact on every CPU.

Yuan et al., TOFC (token/feature compression for split VLM inference), section IV-A. The features of one tile are
clustered with density-peak clustering using K nearest neighbours (DPC-KNN) and each cluster is average-pooled::

    x[T, N, D] --fixed point--> Gram (exact) --> d2[T, N, N] --KNN--> rho[T, N] --+--> delta[T, N] --> rho * delta
                                                                                  |                       |
                                                                                  +--- top-n_c centres <--+
    assign every feature to its nearest centre --> average pooling (exact) --> merged[T, C, D]

Dimension legend: T tiles, N = n_v features per tile, D feature dimension, C = n_c clusters, K neighbours.

Definitions (paper's equations):
    d(i, j)   = ||x_i - x_j||_2
    rho_i     = exp(-1/K * sum_{j in KNN(i)} d(i, j)^2)          (KNN excludes i itself)
    delta_i   = min_{j: rho_j > rho_i} d(i, j), or max_j d(i, j) for the densest feature
    centres   = the n_c features with the largest rho_i * delta_i
    cluster   = nearest centre (a centre belongs to its own cluster); merged = mean of the cluster's features

Why exact: a float32 Gram product rounds differently on every BLAS code path (AVX-512, AVX2, SSE, another thread
count), and so does ``torch.log`` (SLEEF vectors against scalar libm). Near-ties then flip a neighbour, a centre or an
assignment, so the same frame merged on two robots (or in CI on another CPU) would give other tokens. Here every
decision is computed exactly, so centres and assignment are the same on every machine:

    * Distances: each tile is scaled by a power of two and rounded to integers of ``_gram_bits(D, K)`` bits
      (18 for D = 1152, K = 5). The Gram and d2 are then integer-valued float64 whose every partial sum stays
      below 2^53, hence exact in any summation order; d2 is exactly symmetric, >= 0, and 0 on the diagonal.
    * Ranking: rho * delta is ranked by log(delta^2) / 2 - mean_knn_d2 (same order, no underflow), with a log
      built from IEEE-exact elementwise operations (``_exact_log``) instead of the platform's.
    * Pooling: the cluster sums are integer-valued float64 (a finer fixed point, ``_pool_bits(N)`` >= 39 bits), so
      exact; mean = sum / count is one correctly rounded division. Merged values differ from the float mean by at
      most one float32 rounding.

Cost: the Gram is a float64 product (about twice a float32 one); it is computed from its lower block triangle
(~63 % of the flops for 729 rows). delta needs a full-row scan only for local density peaks (no denser feature among
the K+1 smallest distances of their row); for every other feature the nearest denser one is among those.

Tie-breaking (deterministic; the reference implementations add random noise instead):
    * "Denser than" is a strict total order: j is denser than i iff rho_j > rho_i, or rho_j == rho_i and j < i.
    * Centres: sort by score descending with ties broken by the lower feature index; returned centres are then
      sorted by ascending feature index so merged tokens keep the tiles' spatial order.
    * Assignment ties (equidistant centres) go to the centre with the lower feature index; every centre is
      assigned to itself even when it duplicates another centre.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["MergeResult", "dpc_knn_merge"]

_LN2 = math.log(2.0)
_SQRT_HALF = math.sqrt(0.5)


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
    if t and not bool(torch.isfinite(x).all()):
        raise ValueError(f"x of shape {tuple(x.shape)} contains NaN/Inf")


def _gram_bits(d: int, k: int) -> int:
    """Integer bits b of the distance fixed point: every d2 <= 4 D 2^(2b), and K+1 of them summed, stay < 2^53."""
    return min(24, (51 - math.ceil(math.log2(d)) - math.ceil(math.log2(k + 1))) // 2)


def _pool_bits(n: int) -> int:
    """Integer bits of the pooling fixed point: a sum of n values of magnitude < 2^b stays < 2^53."""
    return 53 - max(1, math.ceil(math.log2(n)))


def _fixed_point(x: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """Per tile, x * 2^s rounded to integer-valued float64 with |values| < 2^bits; returns (values, s[T]).

    Scaling by a power of two is exact and round-half-even is one IEEE operation: identical on every machine.
    """
    amax = x.detach().abs().amax(dim=(1, 2)).to(torch.float64)  # [T]
    _, exponent = torch.frexp(amax)  # amax = m * 2^e, m in [0.5, 1): amax * 2^(bits - e) < 2^bits
    # Clamped so 2^shift stays finite for subnormal float64 tiles (they round to zeros: all ties, still exact).
    shift = torch.where(amax > 0, bits - exponent, torch.zeros_like(exponent)).clamp_max(1000)
    scale = torch.ldexp(torch.ones_like(amax), shift)
    return torch.round(x.detach().to(torch.float64) * scale.view(-1, 1, 1)), shift


def _exact_log(x: Tensor) -> Tensor:
    """Natural log of float64 x >= 0 (log 0 = -inf) from elementwise IEEE operations only.

    ``torch.log`` is SLEEF on vector units and libm on others, with different last bits; this one is the same on
    every machine: x = m 2^e with m in [sqrt(1/2), sqrt(2)), log m = 2 atanh(z), z = (m-1)/(m+1), |z| < 0.172,
    summed to z^23 (error < 1e-17 relative).
    """
    mant, exponent = torch.frexp(x)
    low = mant < _SQRT_HALF
    mant = torch.where(low, mant * 2.0, mant)
    exponent = exponent - low.to(exponent.dtype)
    z = (mant - 1.0) / (mant + 1.0)
    z2 = z * z
    acc = torch.full_like(z, 1.0 / 23.0)
    for odd in range(21, 0, -2):
        acc = acc * z2 + 1.0 / odd
    out = (2.0 * z) * acc + exponent.to(torch.float64) * _LN2
    return torch.where(x > 0, out, torch.full_like(out, -math.inf))


def _symmetric_gram(x: Tensor, block: int = 192) -> Tensor:
    """Gram matrices x x^T [T, N, N] from the lower block triangle, mirrored (a syrk done with gemms).

    Column block c computes the rows from c's first row down, x[lo:] x[lo:hi]^T, straight into the matrix (beta=0:
    no temporary), then copies its part below the diagonal block to the transposed place above it. A 729-row tile
    costs ~63 % of the full product's flops; 192-wide column blocks measured fastest (BENCHMARKS.md, issue 3).
    With the integer-valued float64 input of :func:`dpc_knn_merge` every entry is exact, so the matrix is
    symmetric whatever the BLAS does inside a block.
    """
    t, n, _ = x.shape
    gram = torch.empty(t, n, n, dtype=x.dtype, device=x.device)
    for lo in range(0, n, block):
        hi = min(lo + block, n)
        gram[:, lo:, lo:hi].baddbmm_(x[:, lo:], x[:, lo:hi].transpose(1, 2), beta=0.0)  # ignores empty()
        gram[:, lo:hi, hi:] = gram[:, hi:, lo:hi].transpose(1, 2)
    return gram


def _pairwise_sq_dists(x_int: Tensor) -> Tensor:
    """Exact squared distances d2[T, N, N] = (|x_i|^2 + |x_j|^2) - 2 x_i.x_j of integer-valued float64 features.

    |x_i|^2 is read off the Gram's diagonal. The outer sum is a K=2 matmul [sq_i, 1] . [1, sq_j] accumulated onto
    beta * G with beta = -2: one pass over the N x N matrix instead of three. All values are integers below 2^53
    (``_gram_bits``), so the result is exact: symmetric, never negative, 0 on the diagonal.
    """
    gram = _symmetric_gram(x_int)  # [T, N, N]
    sq = gram.diagonal(dim1=1, dim2=2).contiguous()  # [T, N] (a strided view would make the stacks slow)
    ones = torch.ones_like(sq)
    return gram.baddbmm_(torch.stack([sq, ones], 2), torch.stack([ones, sq], 1), beta=-2.0)


@torch.no_grad()
def dpc_knn_merge(x: Tensor, n_c: int, k: int = 5) -> MergeResult:
    """Merge the N features of every tile into n_c cluster means with DPC-KNN (TOFC, Yuan et al., sec. IV-A).

    Fully vectorized over tiles: one batched exact Gram product gives all pairwise squared distances; after it,
    one in-place pass, one top-(K+1) and O(N * (K + n_c)) work, plus a row scan per local density peak. No Python
    loops over N or T. Tiles are independent: merging a batch equals merging its tiles one by one, and the result
    is the same on every CPU, thread count and BLAS (see the module docstring).

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

    x_int, shift = _fixed_point(x, _gram_bits(d, k))
    d2 = _pairwise_sq_dists(x_int)  # [T, N, N] exact, in units of 2^(-2 shift)

    # Local density: rho = exp(-mean of the K smallest non-self squared distances). Work with the sum S (exact).
    # Self (0) is always among the K+1 smallest, so their sum equals the sum of the K smallest non-self distances;
    # which of several equal values topk returns does not change the sum, nor any value read below.
    knn_d2, knn = d2.topk(k + 1, dim=-1, largest=False)  # [T, N, K+1]
    s = knn_d2.sum(-1)  # [T, N] exact integers; lower sum = higher rho

    # Density rank under the strict order (rho descending, then lower index): stable sort of S ascending.
    by_density = torch.sort(s, dim=-1, stable=True).indices  # [T, N], densest first
    rank = torch.empty(t, n, dtype=torch.long, device=x.device)
    rank.scatter_(1, by_density, idx.expand(t, n))  # rank[t, i]
    densest = by_density[:, :1]  # [T, 1]; no denser feature: delta = its maximum distance

    # delta^2 = min of d2 over the denser features. Most features have a denser one among their K+1 nearest, and
    # then the nearest of those is the answer exactly: every feature outside that set is at least as far. Only the
    # rest (local density peaks, typically a few per tile) need a scan of their whole row, O(peaks * N) instead of
    # an N x N mask.
    knn_denser = rank.gather(1, knn.view(t, -1)).view(t, n, k + 1) < rank.unsqueeze(2)  # self is never denser
    delta2 = knn_d2.masked_fill_(~knn_denser, math.inf).amin(-1)  # [T, N]
    peak = ~knn_denser.any(-1)
    peak.scatter_(1, densest, False)
    pt, pi = peak.nonzero(as_tuple=True)  # [P] tile and feature of every local peak
    if pt.numel():
        rows = d2[pt, pi]  # [P, N] copy
        rows.masked_fill_(rank[pt] >= rank[pt, pi].unsqueeze(1), math.inf)  # keep only denser features
        delta2[pt, pi] = rows.amin(-1)
    delta2.scatter_(1, densest, torch.gather(d2, 1, densest.unsqueeze(2).expand(t, 1, n)).amax(-1))

    # log(rho * delta) = log(delta^2) / 2 - S / K (real units); the tile's scale adds a constant per tile, which does
    # not change the order within it. log(0) = -inf: duplicates rank last, then by index.
    unit = torch.ldexp(torch.ones(t, dtype=torch.float64, device=x.device), -2 * shift) / k  # [T]
    score = _exact_log(delta2).mul_(0.5).sub_(s * unit.unsqueeze(1))
    order = torch.sort(score, dim=-1, descending=True, stable=True).indices  # stable: ties -> lower index first
    centres = order[:, :n_c].sort(dim=-1).values  # [T, C], ascending feature index

    # Nearest centre, from the same distances that chose the centres: the centres' rows of d2 (d2 is symmetric;
    # rows are contiguous, cheaper to gather than columns). min over the centre axis returns the first minimum: the
    # centre with the lower feature index.
    assignment = torch.gather(d2, 1, centres.unsqueeze(2).expand(t, n_c, n)).min(1).indices  # [T, N]
    del d2
    # A centre always belongs to its own cluster (matters only for duplicated centres).
    assignment.scatter_(1, centres, torch.arange(n_c, device=x.device).expand(t, n_c))

    # Average pooling per cluster: one batched matmul of the one-hot assignment with a fine fixed point of x, whose
    # sums are exact; the mean is one correctly rounded division, then back to the input's scale and dtype.
    x_pool, pool_shift = _fixed_point(x, _pool_bits(n))
    one_hot = (assignment.unsqueeze(1) == torch.arange(n_c, device=x.device).view(1, n_c, 1)).to(torch.float64)
    sums = torch.bmm(one_hot, x_pool)  # [T, C, D] exact
    means = sums / one_hot.sum(-1, keepdim=True)  # every cluster holds at least its centre
    merged = torch.ldexp(means, -pool_shift.view(-1, 1, 1)).to(x.dtype)
    return MergeResult(merged, assignment, centres)


def merge_keeping_first(x: Tensor, n_c: int, k: int = 5, keep: int = 0) -> Tensor:
    """DPC-KNN over every token of each tile but the first ``keep``, which pass unmerged in front.

    For a split inside the vision tower (AlignedVQ + merging): CLIP's CLS token must reach the server's remaining
    layers as itself, since LLaVA-1.5's selection drops exactly the first token after them.

    Args:
        x: Tensor[T, N, D]; n_c, k: as :func:`dpc_knn_merge` (over the N - keep mergeable tokens); keep: 0 or 1.

    Returns:
        Tensor[T, keep + n_c, D].
    """
    if keep not in (0, 1):
        raise ValueError(f"keep must be 0 or 1, got {keep}")
    merged = dpc_knn_merge(x[:, keep:], n_c, k).merged
    return torch.cat([x[:, :keep], merged], dim=1) if keep else merged
