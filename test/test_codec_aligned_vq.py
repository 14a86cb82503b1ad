"""AlignedVQ ("alignedvq/1"): the codec's maths, container, weights file and refusals.

Codecs here are built from numpy's PCG64 only (codebooks, levels, priors), never from torch's RNG or a BLAS product,
so the same codec exists on every machine; ``build_codec`` is also what the golden and cross-CPU tests use.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tofc_ros.codec import FrameContext, load_codec
from tofc_ros.codec.aligned_vq import (
    AlignedVQ,
    AlignedVQCodec,
    AlignedVQConfig,
    aligned_vq_from_bytes,
    aligned_vq_to_bytes,
    save_aligned_vq,
)
from tofc_ros.codec.bitstream import ChecksumError, CodecMismatchError, LimitError, MalformedPayloadError, parse
from tofc_ros.codec.entropy_coding import TableCoder
from tofc_ros.codec.registry import codec_for_header, weights_format

CONTEXT = FrameContext(bytes(16), (480, 640), (1, 2), 1)
FIXTURE = __import__("pathlib").Path(__file__).parent / "fixtures" / "alignedvq_d64_g4r2k16.safetensors"


def build_codec(stats: str = "scalar", seed: int = 3) -> AlignedVQCodec:
    """A d=64, G=4, R=2, K=16 codec from PCG64: codebooks, statistics levels, and priors from PCG64 counts."""
    rng = np.random.default_rng(seed)
    cfg = AlignedVQConfig(d=64, split_layer=1, groups=4, stages=2, codebook_size=16, stats=stats, stat_levels=8)
    model = AlignedVQ(cfg)
    books = rng.standard_normal((4, 2, 16, 16)) * np.array([1.0, 0.3])[None, :, None, None]
    model.codebooks.data.copy_(torch.from_numpy(books.astype(np.float32)))
    if stats == "scalar":
        model.mean_levels.copy_(torch.from_numpy(np.linspace(-2.0, 2.0, 8).astype(np.float32)))
        model.std_levels.copy_(torch.from_numpy(np.exp(np.linspace(-1.0, 2.0, 8)).astype(np.float32)))
    model.index_cdf.copy_(torch.tensor([_cdf(rng.integers(1, 50, 16)) for _ in range(8)], dtype=torch.int32))
    model.stat_cdf.copy_(torch.tensor([_cdf(rng.integers(1, 50, model.mean_levels.numel())) for _ in range(2)]))
    return AlignedVQCodec(model=model)


def _cdf(counts) -> list[int]:
    from tofc_ros.codec.aligned_vq import _quantized_cdf

    return _quantized_cdf(np.asarray(counts))


def hidden_state(shape=(3, 50, 64), seed: int = 5) -> torch.Tensor:
    """PCG64 features with per-token offsets and scales, like a residual stream."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * np.exp(rng.uniform(-0.8, 1.8, shape[:2]))[..., None]
    return torch.from_numpy((x + rng.uniform(-1.5, 1.5, shape[:2])[..., None]).astype(np.float32))


def _direct(codec: AlignedVQCodec, h: torch.Tensor) -> torch.Tensor:
    """What decoding must give: the model's own assignment, codewords and levels, without any bitstream."""
    m = codec.model
    flat = h.reshape(-1, 64)
    z, mean, std = m.normalise(flat)
    q_mean, q_std = m.stat_levels(mean, std)
    return m.denormalise(m.reconstruct(m.assign(z)), q_mean, q_std).reshape(h.shape)


@pytest.mark.parametrize("stats", ["scalar", "none"])
def test_round_trip_equals_the_quantiser(stats):
    codec = build_codec(stats)
    h = hidden_state()
    payload = codec.encode(h, CONTEXT)
    header, sections = parse(payload)
    assert header.format == "alignedvq/1" and header.vision_layers == 1 and header.feature_shape == (3, 50, 64)
    assert (sections[0] == b"") == (stats == "none")
    decoded = codec.decode(payload)
    assert torch.equal(decoded, _direct(codec, h))


def test_statistics_bring_back_each_tokens_scale_and_offset():
    codec = build_codec("scalar")
    m = codec.model
    h = hidden_state()
    mean, std = h.mean(-1).reshape(-1), h.std(-1, unbiased=False).reshape(-1)
    q_mean, q_std = m.stat_levels(mean, std)
    # The nearest level: within half a step (4/7 in μ, 3/7 in log σ) wherever the value is inside the levels' span.
    inside = (mean.abs() <= 2) & (std >= np.exp(-1)) & (std <= np.exp(2))
    assert inside.sum() > 100
    assert float((m.mean_levels[q_mean] - mean)[inside].abs().max()) <= 2 / 7 + 1e-6
    assert float((torch.log(m.std_levels[q_std]) - torch.log(std))[inside].abs().max()) <= 1.5 / 7 + 1e-6
    # Decoding applies them: with every codeword zero, each token decodes to its μ level exactly.
    m.codebooks.data.zero_()
    m.refresh_fingerprint()
    decoded = codec.decode(codec.encode(h, CONTEXT)).reshape(-1, 64)
    assert torch.equal(decoded, m.mean_levels[q_mean][:, None].expand(-1, 64))


def test_nearest_codeword_is_chosen():
    codec = build_codec()
    m = codec.model
    # Inputs built from codewords exactly: stage 0 codeword + a small stage-1 codeword is recovered.
    idx = torch.tensor([[[3, 5], [0, 1], [15, 2], [7, 7]]])
    z = m.reconstruct(idx)
    assert torch.equal(m.assign(z), idx)


def test_index_bits_follow_the_fitted_prior():
    codec = build_codec("none")
    m = codec.model
    h = hidden_state((1, 400, 64))
    uniform = _cdf(np.ones(16))
    m.index_cdf.copy_(torch.tensor([uniform] * 8, dtype=torch.int32))
    m.refresh_fingerprint()
    n_uniform = len(parse(codec.encode(h, CONTEXT))[1][1])
    assert abs(n_uniform - 400 * 8 * 4 / 8) <= 8  # 4 bits per index under a uniform prior
    ideal = m.fit_priors(h.reshape(-1, 64))["index_bits"]  # entropy of the empirical index frequencies
    n_fitted = len(parse(codec.encode(h, CONTEXT))[1][1])
    assert n_fitted < n_uniform
    assert abs(n_fitted - 400 * ideal / 8) <= 0.02 * n_fitted + 8  # rANS is within a few % of the entropy


def test_config_is_validated():
    with pytest.raises(ValueError, match="multiple of groups"):
        AlignedVQConfig(d=64, split_layer=1, groups=5)
    with pytest.raises(ValueError, match="codebook_size"):
        AlignedVQConfig(d=64, split_layer=1, codebook_size=1)
    with pytest.raises(ValueError, match="stats"):
        AlignedVQConfig(d=64, split_layer=1, stats="both")
    with pytest.raises(ValueError, match="split_layer"):
        AlignedVQConfig(d=64, split_layer=-1)


def test_bad_input_is_refused():
    codec = build_codec()
    with pytest.raises(ValueError, match="64"):
        codec.encode(torch.zeros(1, 5, 32), CONTEXT)
    with pytest.raises(ValueError, match="NaN"):
        codec.encode(torch.full((1, 5, 64), float("nan")), CONTEXT)
    with pytest.raises(ValueError, match="after layer 1"):
        codec.encode(hidden_state(), FrameContext(bytes(16), (480, 640), (1, 2), 2))
    with pytest.raises(TypeError):
        codec.encode(np.zeros((1, 5, 64), np.float32), CONTEXT)


def test_corrupt_and_forged_payloads_are_refused():
    codec = build_codec()
    payload = bytearray(codec.encode(hidden_state(), CONTEXT))
    payload[70] ^= 0xFF
    with pytest.raises(ChecksumError):
        codec.decode(bytes(payload))
    # A payload whose index string codes a symbol past the codebook (the coder's escape path): refused.
    from tofc_ros.codec.bitstream import pack

    m = codec.model
    coder = TableCoder.from_tables(m.index_cdf.tolist(), [18] * 8, [0] * 8)
    symbols = torch.zeros(2, 8, dtype=torch.int64)
    symbols[1, 3] = 40
    forged = pack(
        "alignedvq/1",
        codec.fingerprint,
        FrameContext(bytes(16), (480, 640), (1, 1), 1),
        (1, 2, 64),
        [
            TableCoder.from_tables(m.stat_cdf.tolist(), [10, 10], [0, 0]).encode(
                torch.zeros(2, 2, dtype=torch.int64), torch.arange(2).expand(2, 2)
            ),
            coder.encode(symbols, torch.arange(8).expand(2, 8)),
        ],
    )
    with pytest.raises(MalformedPayloadError, match="codebook index"):
        codec.decode(forged)
    # A truncated index string decodes to something (zero padding), never reads out of bounds or hangs.
    short = pack("alignedvq/1", codec.fingerprint, CONTEXT, (1, 3, 64), [b"\x00" * 4, b"\x01"])
    try:
        codec.decode(short)
    except MalformedPayloadError:
        pass
    # Another split point in the header: refused before decoding.
    other = pack(
        "alignedvq/1", codec.fingerprint, FrameContext(bytes(16), (480, 640), (1, 1), 2), (1, 2, 64), [b"", b""]
    )
    with pytest.raises(CodecMismatchError, match="after 2 vision layers"):
        codec.decode(other)
    wide = pack("alignedvq/1", codec.fingerprint, CONTEXT, (1, 2, 32), [b"", b""])
    with pytest.raises(LimitError, match="d=64"):
        codec.decode(wide)


def test_statistics_section_must_be_empty_without_statistics():
    codec = build_codec("none")
    header, sections = parse(codec.encode(hidden_state(), CONTEXT))
    from tofc_ros.codec.bitstream import pack

    forged = pack("alignedvq/1", codec.fingerprint, CONTEXT, header.feature_shape, [b"\x00\x01", sections[1]])
    with pytest.raises(MalformedPayloadError, match="empty"):
        codec.decode(forged)


def test_weights_file_round_trip_and_dispatch(tmp_path):
    codec = build_codec()
    path = tmp_path / "avq.safetensors"
    fp = save_aligned_vq(codec.model, path)
    assert fp == codec.fingerprint
    assert weights_format(path) == "alignedvq/1"
    loaded = load_codec(path)
    assert isinstance(loaded, AlignedVQCodec) and loaded.fingerprint == codec.fingerprint
    h = hidden_state()
    payload = codec.encode(h, CONTEXT)
    assert loaded.encode(h, CONTEXT) == payload
    assert torch.equal(loaded.decode(payload), codec.decode(payload))
    header, _ = parse(payload)
    assert codec_for_header(header, [loaded]) is loaded
    # Another codec (other weights) has another fingerprint: its payloads are refused by fingerprint.
    assert build_codec(seed=4).fingerprint != codec.fingerprint


def test_weights_file_refusals(tmp_path):
    from safetensors.torch import load, save

    data = aligned_vq_to_bytes(build_codec().model)
    tensors = load(data)
    from tofc_ros.codec.weights import safetensors_metadata

    meta = safetensors_metadata(data)
    tampered = dict(tensors)
    tampered["codebooks"] = tensors["codebooks"] + 1
    with pytest.raises(ValueError, match="fingerprint"):
        aligned_vq_from_bytes(save(tampered, metadata=meta))
    with pytest.raises(ValueError, match="format"):
        aligned_vq_from_bytes(save(tensors, metadata={**meta, "format": "tofc/1"}))
    levels = dict(tensors)
    levels["std_levels"] = tensors["std_levels"].flip(0)
    with pytest.raises(ValueError, match="increasing"):
        aligned_vq_from_bytes(save(levels, metadata=meta))
    cdf = dict(tensors)
    cdf["index_cdf"] = tensors["index_cdf"].clone()
    cdf["index_cdf"][0, 3] = cdf["index_cdf"][0, 2]
    with pytest.raises(ValueError, match="rise strictly"):
        aligned_vq_from_bytes(save(cdf, metadata=meta))
    missing = {k: v for k, v in tensors.items() if k != "stat_cdf"}
    with pytest.raises(ValueError, match="do not match"):
        aligned_vq_from_bytes(save(missing, metadata=meta))
    with pytest.raises(ValueError, match="not an AlignedVQ codec"):
        aligned_vq_from_bytes(b"\xff" * 16)
    path = tmp_path / "weird.safetensors"
    path.write_bytes(save(tensors, metadata={**meta, "format": "fp16/1"}))
    with pytest.raises(ValueError, match="learned codecs are"):
        load_codec(path)


def test_kmeans_init_and_priors_fit_real_structure():
    """On features with a few clusters, k-means finds them and the fitted priors make the stream short."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((6, 64)) * 3
    h = centres[rng.integers(0, 6, 3000)] + 0.05 * rng.standard_normal((3000, 64))
    h = torch.from_numpy(h.astype(np.float32))
    model = AlignedVQ(AlignedVQConfig(d=64, split_layer=0, groups=2, stages=1, codebook_size=8, stat_levels=16))
    model.init_from(h, iters=10, seed=0)
    stats = model.fit_priors(h)
    codec = AlignedVQCodec(model=model)
    decoded = codec.decode(codec.encode(h[None], FrameContext(bytes(16), (1, 1), (1, 1), 0)))[0]
    assert float(((decoded - h) ** 2).mean() / h.var()) < 0.05
    assert stats["index_bits"] < 2 * np.log2(8)  # six clusters in eight codewords: below the 6 raw bits


def test_committed_fixture_is_build_codec():
    """test/fixtures/alignedvq_d64_g4r2k16.safetensors (used by the golden and cross-CPU tests) is exactly
    ``build_codec()``: PCG64 values and integer CDFs, the same on every machine (the fingerprint covers every
    tensor and the config; the file's JSON header order is the writer's own)."""
    built = build_codec()
    fixture = load_codec(FIXTURE)
    assert fixture.fingerprint == built.fingerprint
    for name, value in built.model.state_dict().items():
        assert torch.equal(fixture.model.state_dict()[name], value), name
