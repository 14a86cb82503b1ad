"""Selective Laplacian hyperprior entropy model: CompressAI contract, training pass, exact coding, rate estimate."""

import math

import pytest
import torch

from tofc_ros.codec import HyperpriorConfig, SelectiveEntropyModel
from tofc_ros.codec.fitting import fit_rate
from tofc_ros.codec.laplacian import LaplacianConditional, log_scale_table


def make_model(seed=0, d=64, n_e=4, update=True, **kw):
    torch.manual_seed(seed)
    model = SelectiveEntropyModel(HyperpriorConfig(d=d, n_e=n_e, **kw))
    if update:
        model.update()
    return model.eval()


@pytest.fixture(scope="module")
def fitted():
    """A briefly fitted model (rate only) on Gaussian data with per-dimension scales, plus held-out data."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add contention
    g = torch.Generator().manual_seed(1)
    scale = torch.rand(32, generator=g) * 6 + 0.5
    train = torch.randn(4096, 32, generator=g) * scale
    test = torch.randn(64, 48, 32, generator=g) * scale
    model = make_model(d=32, n_e=2, update=False)
    fit_rate(model, train, steps=120, batch=256, lr=1e-2)
    model.update()
    torch.set_num_threads(threads)
    return model, test


def test_compress_before_update_raises():
    model = make_model(update=False)
    with pytest.raises(ValueError, match=r"Uninitialized CDFs. Run update\(\) first"):
        model.compress(torch.randn(1, 2, 64))
    with pytest.raises(ValueError, match=r"Run update\(\) first"):
        model.decompress([b"", b""], torch.zeros(2, dtype=torch.long), (1, 2, 64))


def test_forward_contract_and_gradients():
    model = make_model(update=False).train()
    x = torch.randn(2, 8, 64) * 3
    out = model(x, temperature=0.5)
    m = 16
    assert out["x_hat"].shape == x.shape
    assert out["likelihoods"]["y"].shape == (m, 4, 64) and out["likelihoods"]["z"].shape == (m, 4, 4)
    assert out["weights"].shape == (m, 4) and torch.allclose(out["weights"].sum(-1), torch.ones(m))
    assert out["bits"].shape == (m,) and bool((out["bits"] > 0).all())
    # STE (eqs. 7-8): each expert's decode is within half a step of y; the weighted decode too.
    assert float((out["x_hat"].detach() - x).abs().max()) <= 0.5 + 1e-4
    loss = out["bits"].mean() + out["balance_loss"]
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if "quantiles" not in n}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert float(model.router.weights[0].grad.abs().sum()) > 0  # router learns through eqs. 16-17
    assert float(model.aux_loss().detach()) >= 0


def test_balance_loss_uniform_is_zero_and_collapse_is_max():
    model = make_model(update=False).train()
    with torch.no_grad():
        model.router.weights[0].zero_()
        model.router.biases[0].zero_()
    out = model(torch.randn(4, 64))
    assert float(out["balance_loss"].detach()) == pytest.approx(0.0, abs=1e-9)
    with torch.no_grad():
        model.router.biases[0][0, 0] = 100.0
    out = model(torch.randn(4, 64))
    assert float(out["balance_loss"].detach()) == pytest.approx(4 - 1, rel=1e-4)  # E * ((1-1/E)^2 + (E-1)/E^2) = E-1


def test_eval_forward_uses_argmax_expert():
    model = make_model(update=False).eval()
    out = model(torch.randn(10, 64))
    assert torch.equal(out["weights"].argmax(-1), out["router_logits"].argmax(-1))
    assert torch.equal(out["weights"].sum(-1), torch.ones(10))


def test_laplacian_table_matches_analytic():
    lc = LaplacianConditional(log_scale_table(0.11, 64.0, 64))
    lc.update()
    for row in (0, 20, 63):
        scale = lc.scale_table[row].item()
        cdf = lc._quantized_cdf[row, : lc._cdf_length[row]].double() / 2**16
        pmf = (cdf[1:] - cdf[:-1])[:-1]  # drop the tail-mass bin
        offset = int(lc._offset[row])
        v = torch.arange(pmf.numel(), dtype=torch.float64) + offset
        analytic = LaplacianConditional._standardized_cumulative(
            (v + 0.5) / scale
        ) - LaplacianConditional._standardized_cumulative((v - 0.5) / scale)
        # 16-bit tables give every symbol >= 2^-16, taken from the mode: small, bounded deviation.
        assert float((pmf - analytic).abs().max()) < 5e-4


def test_exact_symbol_round_trip():
    model = make_model()
    x = torch.randn(3, 20, 64) * 4
    c = model.compress(x)
    x_hat = model.decompress(c["strings"], c["experts"], c["shape"])["x_hat"]
    s = model._symbols(x.reshape(-1, 64))
    # decoded = symbols + exact mean, times the step: every symbol round-tripped exactly
    expected = ((s["y_sym"] + s["mu"]) * model.cfg.y_step).float().reshape(x.shape)
    assert torch.equal(x_hat, expected)
    assert float((x_hat - x).abs().max()) <= 0.5 * model.cfg.y_step + 1e-5
    assert torch.equal(c["experts"], s["experts"])


@pytest.mark.parametrize("shape", [(0, 5, 64), (2, 0, 64), (1, 1, 64)])
def test_empty_and_single(shape):
    model = make_model()
    x = torch.randn(*shape)
    c = model.compress(x)
    assert model.decompress(c["strings"], c["experts"], c["shape"])["x_hat"].shape == shape


def test_constant_input_and_clipping():
    model = make_model(y_clip=100.0)
    x = torch.full((2, 3, 64), 7.25)
    c = model.compress(x)
    torch.testing.assert_close(model.decompress(c["strings"], c["experts"], c["shape"])["x_hat"], x, atol=0.5, rtol=0)
    big = torch.full((1, 2, 64), 1e6)
    c = model.compress(big)
    out = model.decompress(c["strings"], c["experts"], c["shape"])["x_hat"]
    assert float((out - 100.0).abs().max()) <= 0.5  # clamped to y_clip steps, documented


@pytest.mark.parametrize(
    "bad,exc",
    [
        (torch.randn(2, 64), ValueError),
        (torch.randn(1, 2, 63), ValueError),
        (torch.ones(1, 2, 64, dtype=torch.int32), TypeError),
        (torch.full((1, 1, 64), float("inf")), ValueError),
    ],
)
def test_compress_validates_input(bad, exc):
    with pytest.raises(exc):
        make_model().compress(bad)


def test_coded_size_within_one_percent_of_estimate(fitted):
    model, x = fitted
    c = model.compress(x)
    est = model.estimate_bits(x)
    coded_bits = 8 * sum(len(s) for s in c["strings"]) + math.ceil(est["index"] / 8) * 8
    assert est["total"] > 10_000 * 8  # large enough for the 1 % to be meaningful
    assert abs(coded_bits / est["total"] - 1.0) < 0.01, (coded_bits, est)


def test_fitted_model_uses_fewer_bits_than_fp16(fitted):
    model, x = fitted
    c = model.compress(x)
    assert sum(len(s) for s in c["strings"]) < x.numel() * 2 / 2  # at least 2x under raw float16
