"""Container parsing: every corruption raises a typed BitstreamError with a message saying what was wrong."""

import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tofc_ros.codec import HyperpriorConfig, SelectiveEntropyModel, TofcCodec, load_codec, peek_header
from tofc_ros.codec import bitstream as bs


@pytest.fixture(scope="module")
def tofc():
    torch.manual_seed(0)
    model = SelectiveEntropyModel(HyperpriorConfig(d=64, n_e=4))
    model.update()
    return TofcCodec(model=model)


@pytest.fixture(scope="module")
def payloads(tofc):
    x = torch.randn(2, 8, 64) * 3
    img = (np.random.default_rng(0).random((16, 24, 3)) * 255).astype(np.uint8)
    out = {"tofc/1": (tofc, tofc.encode(x))}
    for name in ("fp16/1", "fp16-zstd/1", "quant-zstd/1"):
        codec = load_codec(name)
        out[name] = (codec, codec.encode(x))
    for name in ("jpeg/1", "webp/1"):
        codec = load_codec(name, quality=70)
        out[name] = (codec, codec.encode(img))
    return out


NAMES = ["tofc/1", "fp16/1", "fp16-zstd/1", "quant-zstd/1", "jpeg/1", "webp/1"]


def _recrc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_pack_parse_round_trip():
    p = bs.pack("fp16/1", b"\x01" * 16, (1, 2, 3), [b"abc", b"", b"\x00" * 5])
    header, sections = bs.parse(p)
    assert header.format == "fp16/1" and header.shape == (1, 2, 3) and header.fingerprint == b"\x01" * 16
    assert sections == [b"abc", b"", b"\x00" * 5]
    assert peek_header(p) == header


@pytest.mark.parametrize("name", NAMES)
def test_peek_header_without_decoding(payloads, name):
    codec, p = payloads[name]
    h = peek_header(p)
    assert h.format == name and h.fingerprint == codec.fingerprint and h.size == len(p)


@pytest.mark.parametrize("name", NAMES)
def test_truncated(payloads, name):
    codec, p = payloads[name]
    for cut in (0, 3, bs.HEADER_SIZE, len(p) // 2, len(p) - 1):
        with pytest.raises(bs.BitstreamError):
            codec.decode(p[:cut])
    with pytest.raises(bs.TruncatedError, match="shorter than"):
        codec.decode(p[:10])


@pytest.mark.parametrize("name", NAMES)
def test_extended(payloads, name):
    codec, p = payloads[name]
    with pytest.raises(bs.TrailingDataError, match="unexpected bytes"):
        codec.decode(p[:-4] + b"\x00" + p[-4:])
    with pytest.raises(bs.BitstreamError):
        codec.decode(p + b"\x00")


@pytest.mark.parametrize("name", NAMES)
def test_wrong_version_magic_codec(payloads, name):
    codec, p = payloads[name]
    with pytest.raises(bs.UnsupportedVersionError, match="version 2"):
        codec.decode(_recrc(p[:4] + b"\x02" + p[5:-4]))
    with pytest.raises(bs.BadMagicError, match="bad magic"):
        codec.decode(b"XOFC" + p[4:])
    with pytest.raises(bs.UnknownCodecError, match="unknown codec id 99"):
        codec.decode(_recrc(p[:5] + b"\x63" + p[6:-4]))


def test_codec_mismatch(payloads):
    fp16, p = payloads["fp16/1"]
    with pytest.raises(bs.CodecMismatchError, match="payload is 'fp16/1'"):
        payloads["fp16-zstd/1"][0].decode(p)


def test_wrong_fingerprint(payloads):
    codec, p = payloads["tofc/1"]
    torch.manual_seed(1)
    other = SelectiveEntropyModel(HyperpriorConfig(d=64, n_e=4))
    other.update()
    with pytest.raises(bs.FingerprintMismatch, match="other weights"):
        TofcCodec(model=other).decode(p)
    forged = _recrc(p[:8] + b"\xff" * 16 + p[24:-4])
    with pytest.raises(bs.FingerprintMismatch):
        codec.decode(forged)


def test_shape_limits_and_model_dim(payloads):
    codec, p = payloads["tofc/1"]
    huge = _recrc(p[:24] + struct.pack("<3I", 10**6, 8, 64) + p[36:-4])
    with pytest.raises(bs.LimitError, match="exceeds limits"):
        codec.decode(huge)
    wrong_d = _recrc(p[:24] + struct.pack("<3I", 2, 8, 32) + p[36:-4])
    with pytest.raises(bs.LimitError, match="feature dim 32"):
        codec.decode(wrong_d)
    wrong_t = _recrc(p[:24] + struct.pack("<3I", 3, 8, 64) + p[36:-4])
    with pytest.raises(bs.MalformedPayloadError, match="expert index section"):
        codec.decode(wrong_t)


def test_zstd_bomb_refused():
    codec = load_codec("fp16-zstd/1")
    p = codec.encode(torch.zeros(1, 1, 4))
    import zstandard

    bomb = zstandard.ZstdCompressor().compress(b"\x00" * 10**6)
    forged = bs.pack("fp16-zstd/1", codec.fingerprint, (1, 1, 4), [bomb])
    with pytest.raises(bs.MalformedPayloadError, match="declares 1000000 bytes"):
        codec.decode(forged)
    assert codec.decode(p).shape == (1, 1, 4)


def test_image_size_mismatch_refused(payloads):
    codec, p = payloads["jpeg/1"]
    h = peek_header(p)
    forged = _recrc(p[:24] + struct.pack("<3I", h.shape[0] + 1, h.shape[1], 3) + p[36:-4])
    with pytest.raises(bs.MalformedPayloadError, match="header says"):
        codec.decode(forged)


@pytest.mark.parametrize("name", NAMES)
def test_not_bytes(payloads, name):
    with pytest.raises(TypeError):
        payloads[name][0].decode("not bytes")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_property_any_bit_flip_raises(payloads, data):
    name = data.draw(st.sampled_from(NAMES))
    codec, p = payloads[name]
    pos = data.draw(st.integers(0, len(p) * 8 - 1))
    flipped = bytearray(p)
    flipped[pos // 8] ^= 1 << (pos % 8)
    with pytest.raises(bs.BitstreamError):
        codec.decode(bytes(flipped))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_property_truncate_or_extend_raises(payloads, data):
    name = data.draw(st.sampled_from(NAMES))
    codec, p = payloads[name]
    if data.draw(st.booleans()):
        bad = p[: data.draw(st.integers(0, len(p) - 1))]
    else:
        bad = p + data.draw(st.binary(min_size=1, max_size=64))
    with pytest.raises(bs.BitstreamError):
        codec.decode(bad)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_property_random_bytes_raise_typed_error(blob):
    with pytest.raises(bs.BitstreamError):
        load_codec("fp16/1").decode(blob)


@pytest.mark.parametrize("cut", [0, 1, 7, 100])
def test_forged_short_rans_string_is_safe(tofc, cut):
    """A payload re-packed with a valid CRC but a cut y string: typed error or deterministic output, never a crash."""
    x = torch.randn(2, 8, 64) * 3
    header, (experts, z, y) = bs.parse(tofc.encode(x))
    forged = bs.pack("tofc/1", tofc.fingerprint, header.shape, [experts, z, y[:cut]])
    try:
        a = tofc.decode(forged)
    except bs.BitstreamError:
        return
    assert torch.equal(a, tofc.decode(forged)) and a.shape == x.shape
