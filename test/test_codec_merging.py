"""DPC-KNN merging (TOFC sec. IV-A) against a direct loop transcription of the paper's equations."""

import math

import numpy as np
import pytest
import torch

from tofc_ros.codec.merging import (
    _exact_log,
    _fixed_point,
    _gram_bits,
    _pairwise_sq_dists,
    _pool_bits,
    _symmetric_gram,
    dpc_knn_merge,
)


def paper_dpc_knn(x, n_c, k=5):
    """Loop transcription for ONE tile x[N, D] (lists of floats), with the documented deterministic ties.

    rho_i = exp(-1/K sum_{j in KNN(i)} d_ij^2); delta_i = min_{j denser} d_ij (densest: max_j d_ij);
    centres = top-n_c of rho_i * delta_i; nearest-centre assignment; average pooling.
    """
    n = len(x)
    dist = [[math.sqrt(sum((a - b) ** 2 for a, b in zip(x[i], x[j]))) for j in range(n)] for i in range(n)]
    rho = []
    for i in range(n):
        others = sorted(dist[i][j] ** 2 for j in range(n) if j != i)
        rho.append(math.exp(-sum(others[:k]) / k))

    def denser(j, i):  # j denser than i: higher rho, ties -> lower index
        return rho[j] > rho[i] or (rho[j] == rho[i] and j < i)

    delta = []
    for i in range(n):
        cand = [dist[i][j] for j in range(n) if j != i and denser(j, i)]
        delta.append(min(cand) if cand else max(dist[i]))
    score = [rho[i] * delta[i] for i in range(n)]
    ranked = sorted(range(n), key=lambda i: (-score[i], i))
    centres = sorted(ranked[:n_c])
    assign = []
    for i in range(n):
        if i in centres:
            assign.append(centres.index(i))
        else:
            best = min(range(n_c), key=lambda c: (dist[i][centres[c]], c))
            assign.append(best)
    merged = []
    for c in range(n_c):
        members = [x[i] for i in range(n) if assign[i] == c]
        merged.append([sum(col) / len(members) for col in zip(*members)])
    return merged, assign, centres


def _check_against_paper(x, n_c, k):
    res = dpc_knn_merge(x, n_c, k)
    for t in range(x.shape[0]):
        merged, assign, centres = paper_dpc_knn(x[t].tolist(), n_c, k)
        assert res.centres[t].tolist() == centres
        assert res.assignment[t].tolist() == assign
        torch.testing.assert_close(res.merged[t], torch.tensor(merged, dtype=x.dtype))


@pytest.mark.parametrize("seed", range(6))
def test_matches_loop_transcription_random(seed):
    g = torch.Generator().manual_seed(seed)
    # Small spread keeps exp(-mean d^2) away from underflow in the float64 transcription.
    x = torch.randn(2, 12, 3, generator=g, dtype=torch.float64) * 0.4
    n_c = 1 + seed % 6
    _check_against_paper(x, n_c, k=1 + seed % 4)


def test_matches_loop_transcription_float32_random():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(3, 20, 8, generator=g) * 0.3
    _check_against_paper(x, 5, 5)


@pytest.mark.parametrize("n_c", [1, 2, 3, 5, 7])
def test_exact_ties_and_duplicates(n_c):
    # Integer coordinates: exact distances in float32; duplicates and symmetric points create exact ties in
    # density, delta and score, and equidistant centres.
    pts = [[0, 0], [0, 0], [1, 0], [0, 1], [-1, 0], [0, -1], [3, 3], [3, 3], [3, 3], [-3, 3]]
    x = torch.tensor([pts], dtype=torch.float32) * 0.5
    _check_against_paper(x, n_c, k=2)


def test_all_identical_features():
    x = torch.ones(2, 7, 4)
    res = dpc_knn_merge(x, 3, 2)
    assert res.centres.tolist() == [[0, 1, 2]] * 2
    assert res.assignment[0].tolist() == [0, 1, 2, 0, 0, 0, 0]  # centres to themselves, ties -> lowest centre
    torch.testing.assert_close(res.merged, torch.ones(2, 3, 4))


def test_n_c_equal_n_is_identity_permutation():
    x = torch.randn(2, 9, 5)
    res = dpc_knn_merge(x, 9, 3)
    assert res.centres.tolist() == [list(range(9))] * 2
    torch.testing.assert_close(res.merged, x)


@pytest.mark.parametrize("shape,n_c", [((1, 729, 1152), 16), ((2, 576, 1024), 32)])
def test_full_size_tiles(shape, n_c):
    x = torch.randn(*shape)
    res = dpc_knn_merge(x, n_c)
    t, n, d = shape
    assert res.merged.shape == (t, n_c, d) and res.merged.dtype == torch.float32
    assert res.assignment.shape == (t, n) and int(res.assignment.max()) < n_c
    assert torch.equal(torch.bincount(res.assignment[0], minlength=n_c) > 0, torch.ones(n_c, dtype=torch.bool))
    # merged = mean of assigned features
    c0 = res.assignment[0] == 0
    torch.testing.assert_close(res.merged[0, 0], x[0][c0].mean(0))


def test_deterministic_repeat():
    x = torch.randn(3, 50, 16)
    a, b = dpc_knn_merge(x, 8), dpc_knn_merge(x.clone(), 8)
    assert all(torch.equal(u, v) for u, v in zip(a, b))


def dense_delta_merge(x, n_c, k=5):
    """The straightforward vectorised DPC-KNN on the same exact distances: delta from a full N x N "denser" mask.

    dpc_knn_merge finds delta from the K+1 nearest neighbours and scans whole rows only for local density peaks;
    the two must agree exactly (same d2, min over a subset that provably holds the minimum).
    """
    t, n, d = x.shape
    x_int, shift = _fixed_point(x, _gram_bits(d, k))
    d2 = _pairwise_sq_dists(x_int)
    s = d2.topk(k + 1, dim=-1, largest=False).values.sum(-1)
    by_density = torch.sort(s, dim=-1, stable=True).indices
    rank = torch.empty(t, n, dtype=torch.long).scatter_(1, by_density, torch.arange(n).expand(t, n))
    denser = rank.unsqueeze(1) < rank.unsqueeze(2)  # [t, i, j]: j denser than i
    delta2 = d2.masked_fill(~denser, float("inf")).amin(-1)
    densest = by_density[:, :1]
    delta2.scatter_(1, densest, torch.gather(d2, 1, densest.unsqueeze(2).expand(t, 1, n)).amax(-1))
    unit = torch.tensor([2.0 ** (-2 * int(v)) / k for v in shift], dtype=torch.float64)
    score = 0.5 * _exact_log(delta2) - s * unit[:, None]
    centres = torch.sort(score, dim=-1, descending=True, stable=True).indices[:, :n_c].sort(-1).values
    assignment = torch.gather(d2, 2, centres.unsqueeze(1).expand(t, n, n_c)).argmin(-1)
    assignment.scatter_(1, centres, torch.arange(n_c).expand(t, n_c))
    merged = torch.stack(
        [torch.stack([x[b][assignment[b] == c].double().mean(0) for c in range(n_c)]) for b in range(t)]
    ).to(x.dtype)
    return centres, assignment, merged


@pytest.mark.parametrize(
    "shape,clusters,n_c",
    [
        ((1, 729, 1152), None, 16),
        ((2, 576, 1024), None, 64),
        ((1, 729, 1152), 60, 16),
        ((3, 200, 8), 25, 7),
        ((2, 300, 3), 150, 1),
        ((4, 64, 2), 4, 32),
    ],
)
def test_knn_delta_shortcut_equals_dense_mask(shape, clusters, n_c):
    g = torch.Generator().manual_seed(sum(shape) + n_c)
    x = torch.randn(*shape, generator=g)
    if clusters:  # tight clusters: many local density peaks take the full-row path
        x = x[:, torch.randint(0, clusters, (shape[1],), generator=g)] + 0.01 * torch.randn(*shape, generator=g)
    res = dpc_knn_merge(x, n_c)
    centres, assignment, merged = dense_delta_merge(x, n_c)
    assert torch.equal(res.centres, centres)
    assert torch.equal(res.assignment, assignment)
    torch.testing.assert_close(res.merged, merged)


def test_near_duplicates_far_from_the_origin_have_exact_distances():
    # (|a|^2 + |b|^2) - 2 a.b cancels catastrophically in floating point here (a float32 Gram gave negative
    # distances); on the fixed point it is exact: never negative, symmetric, equal to the direct integer sum.
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 300, 64, generator=g) * 0.01 + 30)[:, torch.randint(0, 40, (300,), generator=g)]
    x_int, _ = _fixed_point(x, _gram_bits(64, 5))
    d2 = _pairwise_sq_dists(x_int)
    direct = ((x_int.long().unsqueeze(2) - x_int.long().unsqueeze(1)) ** 2).sum(-1)  # int64, exact
    assert torch.equal(d2, direct.double())
    for n_c in (1, 16, 40, 64):
        res = dpc_knn_merge(x, n_c)
        centres, assignment, merged = dense_delta_merge(x, n_c)
        assert torch.equal(res.centres, centres) and torch.equal(res.assignment, assignment)
        torch.testing.assert_close(res.merged, merged)


@pytest.mark.parametrize(
    "shape,block", [((1, 729, 64), 192), ((3, 300, 16), 128), ((2, 11, 5), 3), ((1, 5, 4), 1), ((2, 9, 4), 9)]
)
def test_symmetric_gram_is_exact_on_the_fixed_point(shape, block):
    x_int, _ = _fixed_point(torch.randn(*shape), _gram_bits(shape[2], 5))
    gram = _symmetric_gram(x_int, block)
    exact = (x_int.long().unsqueeze(2) * x_int.long().unsqueeze(1)).sum(-1)  # int64
    assert torch.equal(gram, exact.double()) and torch.equal(gram, gram.transpose(1, 2))


@pytest.mark.parametrize("shape", [(1, 729, 1152), (2, 200, 7), (3, 4, 1)])
def test_pairwise_sq_dists_are_exact_and_symmetric(shape):
    x_int, _ = _fixed_point(torch.randn(*shape), _gram_bits(shape[2], 5))
    d2 = _pairwise_sq_dists(x_int)
    assert torch.equal(d2, d2.transpose(1, 2))
    assert not d2.diagonal(dim1=1, dim2=2).any() and bool((d2 >= 0).all())
    if shape[1] * shape[1] * shape[2] < 5e6:  # the int64 check is memory-hungry at full size
        direct = ((x_int.long().unsqueeze(2) - x_int.long().unsqueeze(1)) ** 2).sum(-1)
        assert torch.equal(d2, direct.double())


@pytest.mark.parametrize("d,k", [(1, 1), (7, 5), (64, 5), (1152, 5), (1024, 64), (4096, 5)])
def test_fixed_point_bounds_keep_every_sum_exact(d, k):
    b = _gram_bits(d, k)
    assert (k + 1) * 4 * d * 2 ** (2 * b) < 2**53  # K+1 distances of at most (2 * 2^b)^2 * D each
    assert b >= 13
    for n in (2, 729, 8192):
        assert n * 2 ** _pool_bits(n) <= 2**53


def test_exact_log_matches_the_real_log():
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.random(2000) * 10.0 ** rng.integers(-30, 30, 2000), [1.0, 2.0, 0.5, 1e-300, 3e300]])
    got = _exact_log(torch.from_numpy(values)).numpy()
    np.testing.assert_allclose(got, np.log(values), rtol=3e-16, atol=1e-300)
    assert _exact_log(torch.zeros(1, dtype=torch.float64)).item() == -math.inf


def test_batch_equals_tiles_one_by_one():
    x = torch.from_numpy(np.random.default_rng(4).standard_normal((3, 120, 24)).astype(np.float32))
    x[1] *= 1000.0  # another scale per tile: each tile has its own fixed point
    batch = dpc_knn_merge(x, 6)
    for t in range(3):
        one = dpc_knn_merge(x[t : t + 1], 6)
        assert all(torch.equal(a[t : t + 1], b) for a, b in zip(batch, one))


@pytest.mark.parametrize("scale", [2.0**200, 2.0**-200, 1e-310])
def test_huge_tiny_and_subnormal_values_do_not_overflow(scale):
    # rho = exp(-mean d^2) is not scale invariant, so the centres may change with the scale; what must hold is that
    # nothing overflows and the shortcut still equals the dense reference on the same exact distances.
    x = torch.from_numpy(np.random.default_rng(5).standard_normal((1, 60, 8))) * scale
    res = dpc_knn_merge(x, 5)
    centres, assignment, merged = dense_delta_merge(x, 5)
    assert torch.equal(res.centres, centres) and torch.equal(res.assignment, assignment)
    assert bool(torch.isfinite(res.merged).all())
    torch.testing.assert_close(res.merged, merged, rtol=1e-12, atol=1e-300)  # subnormal tiles merge as zeros


@pytest.mark.parametrize(
    "bad,n_c,k,exc,match",
    [
        (torch.randn(5, 4), 2, 1, ValueError, r"shape \[T, N, D\].*\(5, 4\)"),
        (torch.randn(1, 5, 4), 0, 1, ValueError, "n_c"),
        (torch.randn(1, 5, 4), 6, 1, ValueError, "n_c"),
        (torch.randn(1, 5, 4), 2, 5, ValueError, "k must"),
        (torch.randn(1, 1, 4), 1, 1, ValueError, "N >= 2"),
        (torch.ones(1, 5, 4, dtype=torch.int64), 2, 1, TypeError, "float32"),
        (torch.full((1, 5, 4), float("nan")), 2, 1, ValueError, "NaN"),
        (torch.tensor([[[0.0], [float("inf")], [1.0]]]), 2, 1, ValueError, "NaN/Inf"),
        ([[1.0]], 1, 1, TypeError, "torch.Tensor"),
    ],
)
def test_validation(bad, n_c, k, exc, match):
    with pytest.raises(exc, match=match):
        dpc_knn_merge(bad, n_c, k)
