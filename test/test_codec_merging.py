"""DPC-KNN merging (TOFC sec. IV-A) against a direct loop transcription of the paper's equations."""

import math

import pytest
import torch

from tofc_ros.codec.merging import _pairwise_sq_dists, _symmetric_gram, dpc_knn_merge


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
    x = (torch.randn(2, 12, 3, generator=g, dtype=torch.float64) * 0.4)
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
    """The straightforward vectorised DPC-KNN on the same distances: delta from a full N x N "denser" mask.

    dpc_knn_merge finds delta from the K+1 nearest neighbours and scans whole rows only for local density peaks;
    the two must agree exactly (same d2, min over a subset that provably holds the minimum).
    """
    t, n, _ = x.shape
    d2 = _pairwise_sq_dists(x).clamp_min(0.0)
    m = d2.topk(k + 1, dim=-1, largest=False).values.sum(-1) / k
    by_density = torch.sort(m, dim=-1, stable=True).indices
    rank = torch.empty(t, n, dtype=torch.long).scatter_(1, by_density, torch.arange(n).expand(t, n))
    denser = rank.unsqueeze(1) < rank.unsqueeze(2)  # [t, i, j]: j denser than i
    delta2 = d2.masked_fill(~denser, float("inf")).amin(-1)
    densest = by_density[:, :1]
    delta2.scatter_(1, densest, torch.gather(d2, 1, densest.unsqueeze(2).expand(t, 1, n)).amax(-1))
    score = -m + 0.5 * torch.log(delta2)
    centres = torch.sort(score, dim=-1, descending=True, stable=True).indices[:, :n_c].sort(-1).values
    assignment = torch.gather(d2, 2, centres.unsqueeze(1).expand(t, n, n_c)).argmin(-1)
    assignment.scatter_(1, centres, torch.arange(n_c).expand(t, n_c))
    merged = torch.stack([torch.stack([x[b][assignment[b] == c].mean(0) for c in range(n_c)]) for b in range(t)])
    return centres, assignment, merged


@pytest.mark.parametrize("shape,clusters,n_c", [
    ((1, 729, 1152), None, 16), ((2, 576, 1024), None, 64),
    ((1, 729, 1152), 60, 16), ((3, 200, 8), 25, 7), ((2, 300, 3), 150, 1), ((4, 64, 2), 4, 32),
])
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


def test_negative_rounding_in_distances_is_clamped_like_the_dense_reference():
    # Duplicated features far from the origin: (|a|^2 + |b|^2) - 2 a.b cancels catastrophically and many distances
    # come out slightly negative; every value the merge reads must behave as if the matrix were clamped at 0.
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 300, 64, generator=g) * 0.01 + 30)[:, torch.randint(0, 40, (300,), generator=g)]
    assert bool((_pairwise_sq_dists(x) < 0).any())
    for n_c in (1, 16, 40, 64):
        res = dpc_knn_merge(x, n_c)
        centres, assignment, merged = dense_delta_merge(x, n_c)
        assert torch.equal(res.centres, centres) and torch.equal(res.assignment, assignment)
        torch.testing.assert_close(res.merged, merged)


@pytest.mark.parametrize("shape,block,dtype", [
    ((1, 729, 64), 192, torch.float32), ((3, 300, 16), 128, torch.float32), ((2, 11, 5), 3, torch.float64),
    ((1, 5, 4), 1, torch.float32), ((2, 9, 4), 9, torch.float32),
])
def test_symmetric_gram(shape, block, dtype):
    x = torch.randn(*shape, dtype=dtype)
    gram = _symmetric_gram(x, block)
    assert torch.equal(gram, gram.transpose(1, 2))  # off-diagonal blocks by construction, diagonal ones by the BLAS
    torch.testing.assert_close(gram, x @ x.transpose(1, 2))


@pytest.mark.parametrize("shape", [(1, 729, 1152), (2, 200, 7), (3, 4, 1)])
def test_pairwise_sq_dists_one_pass_equals_two_step(shape):
    x = torch.randn(*shape)
    d2 = _pairwise_sq_dists(x)
    gram = _symmetric_gram(x)
    sq = gram.diagonal(dim1=1, dim2=2)
    two_step = (sq.unsqueeze(2) + sq.unsqueeze(1)).sub_(2 * gram)
    assert torch.equal(d2, two_step)  # the K=2 matmul form is exactly round(round(sq_i + sq_j) - 2 G)
    assert torch.equal(d2, d2.transpose(1, 2))
    assert not d2.diagonal(dim1=1, dim2=2).any()  # self-distance exactly 0
    torch.testing.assert_close(d2.clamp_min(0.0), torch.cdist(x, x) ** 2, atol=2e-3 * shape[2], rtol=1e-4)


@pytest.mark.parametrize("bad,n_c,k,exc,match", [
    (torch.randn(5, 4), 2, 1, ValueError, r"shape \[T, N, D\].*\(5, 4\)"),
    (torch.randn(1, 5, 4), 0, 1, ValueError, "n_c"),
    (torch.randn(1, 5, 4), 6, 1, ValueError, "n_c"),
    (torch.randn(1, 5, 4), 2, 5, ValueError, "k must"),
    (torch.randn(1, 1, 4), 1, 1, ValueError, "N >= 2"),
    (torch.ones(1, 5, 4, dtype=torch.int64), 2, 1, TypeError, "float32"),
    (torch.full((1, 5, 4), float("nan")), 2, 1, ValueError, "NaN"),
    (torch.tensor([[[0.0], [float("inf")], [1.0]]]), 2, 1, ValueError, "NaN/Inf"),
    (torch.tensor([[[1e19], [-1e19], [0.0]]]), 2, 1, ValueError, "too large"),  # |x|^2 fits, d2 would overflow
    ([[1.0]], 1, 1, TypeError, "torch.Tensor"),
])
def test_validation(bad, n_c, k, exc, match):
    with pytest.raises(exc, match=match):
        dpc_knn_merge(bad, n_c, k)
