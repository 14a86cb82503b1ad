"""Baseline codecs and the registry: lossless/lossy round trips (constant, empty, random) through one interface."""

import numpy as np
import pytest
import torch

from tofc_ros.codec import available_codecs, codec_for_header, load_codec, peek_header

FEATURE_CODECS = ["fp16/1", "fp16-zstd/1", "quant-zstd/1"]


def test_registry_lists_all_formats():
    assert set(available_codecs()) == {
        "tofc/1",
        "alignedvq/1",
        "fp16/1",
        "fp16-zstd/1",
        "quant-zstd/1",
        "jpeg/1",
        "webp/1",
        "rgb8/1",
        "placeholder-zstd/1",
    }
    assert load_codec("fp16-zstd").format == "fp16-zstd/1"  # version optional
    with pytest.raises(ValueError, match="unknown codec 'nope'"):
        load_codec("nope")
    with pytest.raises(TypeError):
        load_codec("quant-zstd/1", quality=3)
    with pytest.raises(ValueError, match="bits"):
        load_codec("quant-zstd/1", bits=0)
    with pytest.raises(ValueError, match="exactly one of model= or path="):
        load_codec("tofc/1")


@pytest.mark.parametrize("name", FEATURE_CODECS)
@pytest.mark.parametrize("kind", ["constant", "one", "random", "fp16-exact"])
def test_feature_round_trip(name, kind):
    x = {
        "constant": torch.full((2, 3, 8), 1.5),
        "one": torch.full((1, 1, 1), -2.0),
        "random": torch.randn(3, 16, 32) * 4,
        "fp16-exact": torch.randn(2, 5, 8).half().float(),
    }[kind]
    codec = load_codec(name)
    payload = codec.encode(x)
    y = codec.decode(payload)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert peek_header(payload).feature_shape == tuple(x.shape)
    if name.startswith("fp16") and kind in ("constant", "one", "fp16-exact"):
        assert torch.equal(y, x)  # bit-exact where float16 represents the input
    elif name.startswith("fp16"):
        torch.testing.assert_close(y, x, rtol=1e-3, atol=1e-3)
    else:
        span = float(x.max() - x.min()) if x.numel() else 0.0
        assert float((y - x).abs().max()) <= span / 255 / 2 + 1e-5
    assert codec.encode(x) == payload  # deterministic bytes
    assert codec_for_header(peek_header(payload)).decode(payload).shape == x.shape


@pytest.mark.parametrize("bits", [1, 4, 8, 12, 16])
def test_quant_bits(bits):
    x = torch.randn(2, 4, 16)
    codec = load_codec("quant-zstd/1", bits=bits)
    y = codec.decode(codec.encode(x))
    span = float(x.max() - x.min())
    assert float((y - x).abs().max()) <= span / (2**bits - 1) / 2 * 1.001 + 1e-6


def test_zstd_smaller_than_raw_on_redundant_data():
    x = torch.zeros(4, 16, 64)
    assert len(load_codec("fp16-zstd/1").encode(x)) < len(load_codec("fp16/1").encode(x)) / 10


@pytest.mark.parametrize(
    "bad,exc",
    [
        (torch.randn(4, 4), ValueError),
        (torch.ones(1, 2, 2, dtype=torch.int64), TypeError),
        (torch.full((1, 1, 2), float("nan")), ValueError),
        (torch.full((1, 1, 2), 1e6), ValueError),
        (torch.zeros(0, 4, 8), ValueError),
        (torch.zeros(1, 0, 8), ValueError),
    ],
)
def test_feature_input_validation(bad, exc):
    with pytest.raises(exc):
        load_codec("fp16/1").encode(bad)


@pytest.mark.parametrize("name", ["jpeg/1", "webp/1"])
def test_image_codecs(name):
    yy, xx = np.mgrid[0:48, 0:64]
    img = np.stack([xx * 4, yy * 5, (xx + yy) * 2], -1).astype(np.uint8)  # smooth image
    hi, lo = load_codec(name, quality=95), load_codec(name, quality=20)
    p_hi, p_lo = hi.encode(img), lo.encode(img)
    out = hi.decode(p_hi)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - img).mean() < 3
    assert len(p_lo) < len(p_hi)
    assert lo.decode(p_hi).shape == img.shape  # quality is not needed to decode
    assert peek_header(p_hi).image_size == (48, 64) and peek_header(p_hi).format == name
    with pytest.raises(TypeError):
        hi.encode(img.astype(np.float32))
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        hi.encode(img[..., :2])


@pytest.mark.parametrize("name", ["rgb8/1", "placeholder-zstd/1"])
def test_lossless_image_codecs(name):
    img = (np.random.default_rng(3).random((7, 9, 3)) * 255).astype(np.uint8)
    codec = load_codec(name)
    payload = codec.encode(img)
    assert np.array_equal(codec.decode(payload), img) and peek_header(payload).image_size == (7, 9)
    if name == "rgb8/1":
        assert len(payload) == 7 * 9 * 3 + 64 + 4 + 4  # header, section length, CRC
