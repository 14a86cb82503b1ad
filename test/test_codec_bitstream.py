"""The frame container (version 2): every corruption raises a typed BitstreamError saying what was wrong."""

import pathlib
import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tofc_ros.codec import FrameContext, load_codec, peek_header
from tofc_ros.codec import bitstream as bs

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "codec_d64_e4.safetensors"
CONTEXT = FrameContext(bytes(range(16)), (480, 640), (2, 2), 26)


def _features(t=2, c=8, d=64, seed=0):
    return torch.from_numpy((np.random.default_rng(seed).standard_normal((t, c, d)) * 3).astype(np.float32))


@pytest.fixture(scope="module")
def tofc():
    return load_codec(FIXTURE)


@pytest.fixture(scope="module")
def payloads(tofc):
    x = _features()
    img = (np.random.default_rng(0).random((16, 24, 3)) * 255).astype(np.uint8)
    out = {"tofc/1": (tofc, tofc.encode(x, CONTEXT))}
    for name in ("fp16/1", "fp16-zstd/1", "quant-zstd/1"):
        codec = load_codec(name)
        out[name] = (codec, codec.encode(x, CONTEXT))
    for name in ("jpeg/1", "webp/1", "rgb8/1", "placeholder-zstd/1"):
        codec = load_codec(name)
        out[name] = (codec, codec.encode(img))
    return out


NAMES = ["tofc/1", "fp16/1", "fp16-zstd/1", "quant-zstd/1", "jpeg/1", "webp/1", "rgb8/1", "placeholder-zstd/1"]


def _recrc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def _with_header(p: bytes, **fields) -> bytes:
    """The payload with fixed-header fields replaced (offsets of the documented layout) and a valid CRC."""
    offsets = {
        "image": (40, "<II"),
        "grid": (48, "<HH"),
        "shape": (52, "<HHI"),
        "layers": (60, "<H"),
        "backbone": (24, "16s"),
        "codec_fp": (8, "16s"),
    }
    out = bytearray(p[:-4])
    for name, values in fields.items():
        pos, fmt = offsets[name]
        struct.pack_into(fmt, out, pos, *values)
    return _recrc(bytes(out))


def test_header_is_64_bytes_and_documents_every_field():
    assert bs.HEADER_SIZE == 64
    doc = bs.__doc__
    for field in (
        "codec fingerprint",
        "backbone fingerprint",
        "image height",
        "grid rows",
        "tiles T",
        "tokens per tile",
        "feature dim",
        "vision layers",
        "CRC32",
    ):
        assert field in doc


def test_pack_parse_round_trip():
    p = bs.pack("fp16/1", b"\x01" * 16, CONTEXT, (1, 2, 3), [b"abc", b"", b"\x00" * 5])
    header, sections = bs.parse(p)
    assert (header.format, header.codec_fingerprint, header.backbone_fingerprint) == (
        "fp16/1",
        b"\x01" * 16,
        bytes(range(16)),
    )
    assert header.image_size == (480, 640) and header.grid == (2, 2) and header.vision_layers == 26
    assert header.feature_shape == (1, 2, 3) and header.kind == "features" and header.size == len(p)
    assert sections == [b"abc", b"", b"\x00" * 5]
    assert peek_header(p) == header


@pytest.mark.parametrize("name", NAMES)
def test_peek_header_describes_the_frame_without_decoding(payloads, name):
    codec, p = payloads[name]
    h = peek_header(p)
    assert h.format == name and h.codec_fingerprint == codec.fingerprint and h.size == len(p)
    if codec.kind == "features":
        assert h.feature_shape == (2, 8, 64) and h.image_size == (480, 640) and h.grid == (2, 2)
        assert h.backbone_fingerprint == CONTEXT.backbone_fingerprint and h.vision_layers == 26
    else:
        assert h.feature_shape == (0, 0, 0) and h.image_size == (16, 24) and h.kind == "image"


def test_version_1_payloads_are_refused_naming_both_versions(payloads):
    _, p = payloads["fp16/1"]
    v1 = p[:4] + b"\x01" + p[5:]
    with pytest.raises(bs.UnsupportedVersionError, match="container version 1, this decoder reads version 2"):
        load_codec("fp16/1").decode(v1)
    with pytest.raises(bs.UnsupportedVersionError, match="version 1 payloads"):
        peek_header(v1[:20])  # even a short one says why


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
    with pytest.raises(bs.UnsupportedVersionError, match="version 3"):
        codec.decode(_recrc(p[:4] + b"\x03" + p[5:-4]))
    with pytest.raises(bs.BadMagicError, match="bad magic"):
        codec.decode(b"XOFC" + p[4:])
    with pytest.raises(bs.UnknownCodecError, match="unknown codec id 99"):
        codec.decode(_recrc(p[:5] + b"\x63" + p[6:-4]))


def test_codec_mismatch(payloads):
    _, p = payloads["fp16/1"]
    with pytest.raises(bs.CodecMismatchError, match="payload is 'fp16/1'"):
        payloads["fp16-zstd/1"][0].decode(p)


def test_wrong_fingerprint(payloads):
    codec, p = payloads["tofc/1"]
    with pytest.raises(bs.FingerprintMismatch, match="other weights"):
        codec.decode(_with_header(p, codec_fp=(b"\xff" * 16,)))


def test_shape_limits_and_model_dim(payloads):
    codec, p = payloads["tofc/1"]
    with pytest.raises(bs.LimitError, match="exceeds limits"):
        codec.decode(_with_header(p, shape=(4095, 8192, 64)))
    with pytest.raises(bs.LimitError, match="all zero"):
        codec.decode(_with_header(p, shape=(0, 8, 64)))
    with pytest.raises(bs.LimitError, match="image size"):
        codec.decode(_with_header(p, image=(20000, 640)))
    with pytest.raises(bs.LimitError, match="feature dim 32"):
        codec.decode(_with_header(p, shape=(2, 8, 32)))
    with pytest.raises(bs.MalformedPayloadError, match="expert index section"):
        codec.decode(_with_header(p, shape=(3, 8, 64)))


def test_a_feature_payload_is_not_an_image(payloads):
    _, p = payloads["rgb8/1"]
    with pytest.raises(bs.LimitError, match="hold image"):
        load_codec("rgb8/1").decode(_with_header(p, shape=(1, 1, 1)))


def test_zstd_bomb_refused():
    codec = load_codec("fp16-zstd/1")
    import zstandard

    bomb = zstandard.ZstdCompressor().compress(b"\x00" * 10**6)
    forged = bs.pack("fp16-zstd/1", codec.fingerprint, FrameContext(), (1, 1, 4), [bomb])
    with pytest.raises(bs.MalformedPayloadError, match="declares 1000000 bytes"):
        codec.decode(forged)
    placeholder = bs.pack(
        "placeholder-zstd/1",
        load_codec("placeholder-zstd").fingerprint,
        FrameContext(image_size=(4, 4)),
        (0, 0, 0),
        [bomb],
    )
    with pytest.raises(bs.MalformedPayloadError, match="declares 1000000 bytes"):
        load_codec("placeholder-zstd").decode(placeholder)


@pytest.mark.parametrize("name", ["jpeg/1", "webp/1", "rgb8/1", "placeholder-zstd/1"])
def test_image_size_mismatch_refused(payloads, name):
    codec, p = payloads[name]
    h, w = peek_header(p).image_size
    with pytest.raises(bs.MalformedPayloadError):
        codec.decode(_with_header(p, image=(h + 1, w)))


@pytest.mark.parametrize("name", NAMES)
def test_not_bytes(payloads, name):
    with pytest.raises(TypeError):
        payloads[name][0].decode("not bytes")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
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
    x = _features()
    header, (experts, z, y) = bs.parse(tofc.encode(x, CONTEXT))
    forged = bs.pack("tofc/1", tofc.fingerprint, CONTEXT, header.feature_shape, [experts, z, y[:cut]])
    try:
        a = tofc.decode(forged)
    except bs.BitstreamError:
        return
    assert torch.equal(a, tofc.decode(forged)) and a.shape == x.shape
