"""Differentiable merging for training matches the codec's DPC-KNN and the ablation variants keep n_c tokens."""

import pytest
import torch

from tofc_ros.codec.merging import dpc_knn_merge
from tofc_ros.train.differentiable_merge import merge_features, uniform_grid


def _x(t=2, n=729, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(t, n, d, generator=g)


def test_dpc_knn_means_equal_the_codec_and_carry_gradients():
    x = _x().requires_grad_(True)
    merged = merge_features(x, 16, "dpc_knn")
    ref = dpc_knn_merge(x.detach(), 16).merged
    torch.testing.assert_close(merged.detach(), ref, rtol=1e-5, atol=1e-6)
    merged.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    # Every feature belongs to exactly one cluster: gradient of sum of means = 1/|cluster| per feature.
    assert float(x.grad.abs().sum()) > 0


@pytest.mark.parametrize("method", ["dpc_knn", "centres", "uniform"])
@pytest.mark.parametrize("n_c", [8, 16, 32])
def test_equal_token_count(method, n_c):
    assert merge_features(_x(), n_c, method).shape == (2, n_c, 16)


def test_centres_are_features_and_uniform_is_grid_pooling():
    x = _x(t=1)
    res = dpc_knn_merge(x, 16)
    torch.testing.assert_close(merge_features(x, 16, "centres"), x[:, res.centres[0]])
    pooled = merge_features(x, 1, "uniform")
    torch.testing.assert_close(pooled[0, 0], x[0].mean(0), rtol=1e-5, atol=1e-6)
    assert uniform_grid(16) == (4, 4) and uniform_grid(8) == (2, 4) and uniform_grid(32) == (4, 8)
    assert merge_features(x, 16, "none") is x
    with pytest.raises(ValueError):
        merge_features(x, 16, "bogus")
