"""sensor_msgs images to RGB: every encoding against OpenCV, padding, endianness, subsampling, refusals before
allocation, the cv_bridge/OpenCV backend choice, and compressed images."""

from __future__ import annotations

import io
import sys
import tracemalloc
import types

import cv2
import numpy as np
import pytest
from PIL import Image as PILImage
from sensor_msgs.msg import CompressedImage, Image

from tofc_ros.nodes import images
from tofc_ros.nodes.images import ImageError, compressed_msg_to_rgb, image_msg_to_rgb

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)

# The reference, written down from cv_bridge's getConversionCodes (src/cv_bridge.cpp) and sensor_msgs'
# image_encodings.hpp, independently of the module's table. Packed: encoding → (stored channels, bits, the cv2 code
# towards RGB; None: the samples already are RGB). Semi-planar: encoding → the cv2 code (nv24 has none: see _case).
PACKED = {
    "rgb8": (3, 8, None),
    "bgr8": (3, 8, cv2.COLOR_BGR2RGB),
    "rgba8": (4, 8, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, 8, cv2.COLOR_BGRA2RGB),
    "mono8": (1, 8, cv2.COLOR_GRAY2RGB),
    "rgb16": (3, 16, None),
    "bgr16": (3, 16, cv2.COLOR_BGR2RGB),
    "rgba16": (4, 16, cv2.COLOR_RGBA2RGB),
    "bgra16": (4, 16, cv2.COLOR_BGRA2RGB),
    "mono16": (1, 16, cv2.COLOR_GRAY2RGB),
    "bayer_rggb8": (1, 8, cv2.COLOR_BayerBG2RGB),
    "bayer_bggr8": (1, 8, cv2.COLOR_BayerRG2RGB),
    "bayer_gbrg8": (1, 8, cv2.COLOR_BayerGR2RGB),
    "bayer_grbg8": (1, 8, cv2.COLOR_BayerGB2RGB),
    "bayer_rggb16": (1, 16, cv2.COLOR_BayerBG2RGB),
    "bayer_bggr16": (1, 16, cv2.COLOR_BayerRG2RGB),
    "bayer_gbrg16": (1, 16, cv2.COLOR_BayerGR2RGB),
    "bayer_grbg16": (1, 16, cv2.COLOR_BayerGB2RGB),
    "yuv422": (2, 8, cv2.COLOR_YUV2RGB_UYVY),
    "uyvy": (2, 8, cv2.COLOR_YUV2RGB_UYVY),
    "yuv422_yuy2": (2, 8, cv2.COLOR_YUV2RGB_YUY2),
    "yuyv": (2, 8, cv2.COLOR_YUV2RGB_YUY2),
}
SEMI_PLANAR = {"nv12": cv2.COLOR_YUV2RGB_NV12, "nv21": cv2.COLOR_YUV2RGB_NV21, "nv24": None}
ALL = sorted([*PACKED, *SEMI_PLANAR])
SUBSAMPLED_W = ["yuv422", "uyvy", "yuv422_yuy2", "yuyv", "nv12", "nv21"]
YUV = ["yuv422", "uyvy", "yuv422_yuy2", "yuyv", "nv12", "nv21", "nv24"]


def _rows_msg(rows: list[bytes], encoding: str, width: int, height: int, pad: int, big: bool = False) -> Image:
    """A message whose byte rows (Y rows then UV rows for semi-planar) each get `pad` junk bytes."""
    data = b"".join(r + b"\xee" * pad for r in rows)
    return Image(
        height=height, width=width, encoding=encoding, is_bigendian=int(big), step=len(rows[0]) + pad, data=data
    )


def _case(encoding: str, height: int, width: int, pad: int, big: bool, seed: int):
    """A random message and the RGB cv2.cvtColor makes of the same samples (the reference)."""
    rng = np.random.default_rng(seed)
    if encoding in PACKED:
        channels, bits, code = PACKED[encoding]
        samples = rng.integers(0, 1 << bits, (height, width, channels), dtype=np.uint8 if bits == 8 else np.uint16)
        stored = samples.astype(">u2" if big else "<u2") if bits == 16 else samples
        msg = _rows_msg([r.tobytes() for r in stored], encoding, width, height, pad, big)
        image = samples[:, :, 0] if channels == 1 else samples
        rgb = image if code is None else cv2.cvtColor(image, code)
        if bits == 16:  # cv_bridge: convertTo(CV_8U, 255/65535); convertScaleAbs is the same OpenCV scaling
            rgb = cv2.convertScaleAbs(rgb, alpha=255 / 65535)
        return msg, rgb
    luma = rng.integers(0, 256, (height, width), dtype=np.uint8)
    if encoding == "nv24":
        uv = rng.integers(0, 256, (height, 2 * width), dtype=np.uint8)
        # 4:4:4 as 4:2:0 at twice the size: every 2x2 block holds one pixel's Y and shares its UV.
        big_luma = np.repeat(np.repeat(luma, 2, axis=0), 2, axis=1)
        rgb = cv2.cvtColor(np.vstack([big_luma, uv]), cv2.COLOR_YUV2RGB_NV12)[::2, ::2]
        y_rows = [r.tobytes() for r in luma]
        uv_rows = [r.tobytes() + b"\xee" * pad for r in uv]  # the UV plane has twice the Y plane's padding
        return _rows_msg(y_rows + uv_rows, encoding, width, height, pad), rgb
    uv = rng.integers(0, 256, (height // 2, width), dtype=np.uint8)
    rgb = cv2.cvtColor(np.vstack([luma, uv]), SEMI_PLANAR[encoding])
    return _rows_msg([r.tobytes() for r in np.vstack([luma, uv])], encoding, width, height, pad), rgb


def _shares_message_memory(out: np.ndarray, msg: Image) -> bool:
    return np.shares_memory(out, np.frombuffer(msg.data, dtype=np.uint8))


def test_every_supported_encoding_is_tested_here():
    assert sorted(images.SUPPORTED_ENCODINGS) == ALL


@pytest.mark.parametrize(
    "encoding, pad, big",
    [
        (e, pad, big)
        for e in ALL
        for pad in (0, 3)
        for big in ((False, True) if PACKED.get(e, (0, 8))[1] == 16 else (False,))  # is_bigendian: 16-bit only
    ],
)
def test_every_encoding_matches_opencv_exactly(encoding, pad, big):
    for seed, (height, width) in enumerate([(6, 8), (2, 2), (4, 10)]):
        msg, expected = _case(encoding, height, width, pad, big, seed)
        out = image_msg_to_rgb(msg, max_pixels=1000, backend="opencv")
        assert out.shape == (height, width, 3) and out.dtype == np.uint8
        assert np.array_equal(out, expected), f"{encoding} {width}x{height} pad {pad} seed {seed}"
        assert out.flags.c_contiguous and out.flags.writeable and not _shares_message_memory(out, msg)


@pytest.mark.parametrize("encoding", [e for e in ALL if e not in SUBSAMPLED_W])
def test_odd_sizes_where_nothing_is_subsampled(encoding):
    for seed, (height, width) in enumerate([(5, 7), (1, 1), (3, 1), (1, 9)]):
        msg, expected = _case(encoding, height, width, pad=1, big=False, seed=seed)
        assert np.array_equal(image_msg_to_rgb(msg, 1000, backend="opencv"), expected), (encoding, width, height)


@pytest.mark.parametrize("pad", [0, 3])
@pytest.mark.parametrize(
    "encoding, pixels",
    [
        ("rgb8", RGB),
        ("bgr8", RGB[:, :, ::-1]),
        ("rgba8", np.dstack([RGB, np.full(RGB.shape[:2], 9, np.uint8)])),
        ("bgra8", np.dstack([RGB[:, :, ::-1], np.full(RGB.shape[:2], 9, np.uint8)])),
        ("rgb16", RGB.astype(np.uint16) * 257),
        ("bgr16", RGB[:, :, ::-1].astype(np.uint16) * 257),
        ("rgba16", np.dstack([RGB, np.full(RGB.shape[:2], 9, np.uint8)]).astype(np.uint16) * 257),
        ("bgra16", np.dstack([RGB[:, :, ::-1], np.full(RGB.shape[:2], 9, np.uint8)]).astype(np.uint16) * 257),
    ],
)
def test_colour_encodings_give_the_same_rgb(encoding, pixels, pad):
    stored = pixels if pixels.dtype == np.uint8 else pixels.astype("<u2")
    msg = _rows_msg([np.ascontiguousarray(r).tobytes() for r in stored], encoding, 7, 5, pad)
    out = image_msg_to_rgb(msg, max_pixels=100)
    np.testing.assert_array_equal(out, RGB)
    assert out.flags.c_contiguous and not _shares_message_memory(out, msg)


@pytest.mark.parametrize("pad", [0, 2, 3])
def test_mono8_and_mono16_both_endiannesses(pad):
    gray = RGB[:, :, 0]
    msg = _rows_msg([r.tobytes() for r in gray], "mono8", 7, 5, pad)
    np.testing.assert_array_equal(image_msg_to_rgb(msg, 100), np.dstack([gray] * 3))
    wide = gray.astype(np.uint16) * 257  # exact 8-bit values spread over 16 bits
    for big in (False, True):
        msg = _rows_msg([r.tobytes() for r in wide.astype(">u2" if big else "<u2")], "mono16", 7, 5, pad, big)
        np.testing.assert_array_equal(image_msg_to_rgb(msg, 100), np.dstack([gray] * 3))


def test_16_bit_scaling_is_round_x_times_255_over_65535_for_every_value():
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    msg = _rows_msg([r.tobytes() for r in values.astype("<u2")], "mono16", 256, 256, 0)
    out = image_msg_to_rgb(msg, 1 << 16)[:, :, 0]
    exact = (values.astype(np.int64) * 255 * 2 + 65535) // (2 * 65535)  # round half up; no value is a tie
    np.testing.assert_array_equal(out, exact)
    np.testing.assert_array_equal(out, cv2.convertScaleAbs(values, alpha=255 / 65535))


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
@pytest.mark.parametrize("bits", [8, 16])
def test_bayer_patterns_demosaic_a_flat_colour(pattern, bits):
    # Independent of any cv2 code: a flat scene seen through each filter layout comes back as that scene.
    colour = {"r": 200, "g": 100, "b": 30}
    scale = 257 if bits == 16 else 1
    tile = np.array([[colour[pattern[0]], colour[pattern[1]]], [colour[pattern[2]], colour[pattern[3]]]]) * scale
    mosaic = np.tile(tile, (4, 5)).astype(np.uint8 if bits == 8 else "<u2")
    msg = _rows_msg([r.tobytes() for r in mosaic], f"bayer_{pattern}{bits}", 10, 8, 0)
    out = image_msg_to_rgb(msg, 100)
    np.testing.assert_array_equal(out[2:-2, 2:-2], np.broadcast_to([200, 100, 30], (4, 6, 3)))


@pytest.mark.parametrize("encoding", YUV)
def test_yuv_is_bt601_limited_range(encoding):
    # Independent of any cv2 code: Y 16..235 is black..white; the float BT.601 limited-range formula agrees to 1
    # (OpenCV computes in fixed point and reads Y below 16 as 16).
    msg, _ = _case(encoding, 6, 8, pad=0, big=False, seed=7)
    raw = np.frombuffer(msg.data, np.uint8)
    if encoding in ("yuv422", "uyvy", "yuv422_yuy2", "yuyv"):
        quads = raw.reshape(6, 4, 4).astype(float)
        y0, u, y1, v = (quads[..., i] for i in ((1, 0, 3, 2) if encoding in ("yuv422", "uyvy") else (0, 1, 2, 3)))
        y = np.stack([y0, y1], axis=-1).reshape(6, 8)
        u, v = np.repeat(u, 2, axis=1), np.repeat(v, 2, axis=1)
    elif encoding == "nv24":
        y = raw[:48].reshape(6, 8).astype(float)
        uv = raw[48:].reshape(6, 8, 2).astype(float)
        u, v = uv[..., 0], uv[..., 1]
    else:
        y = raw[:48].reshape(6, 8).astype(float)
        uv = np.repeat(np.repeat(raw[48:].reshape(3, 4, 2), 2, axis=0), 2, axis=1).astype(float)
        u, v = (uv[..., 0], uv[..., 1]) if encoding == "nv12" else (uv[..., 1], uv[..., 0])
    y, u, v = 1.164 * np.maximum(y - 16, 0), u - 128, v - 128
    formula = np.clip(np.rint(np.stack([y + 1.596 * v, y - 0.813 * v - 0.391 * u, y + 2.018 * u], -1)), 0, 255)
    assert np.abs(image_msg_to_rgb(msg, 100).astype(float) - formula).max() <= 1

    flat, _ = _case(encoding, 2, 2, pad=0, big=False, seed=0)
    for luma, grey in ((16, 0), (235, 255), (126, 128)):
        data = bytearray(len(flat.data))
        data[:] = b"\x80" * len(data)  # U = V = 128: no colour
        if encoding in ("yuv422", "uyvy"):
            data[1::2] = bytes([luma]) * (len(data) // 2)
        elif encoding in ("yuv422_yuy2", "yuyv"):
            data[0::2] = bytes([luma]) * (len(data) // 2)
        else:
            data[:4] = bytes([luma]) * 4
        flat.data = bytes(data)
        np.testing.assert_array_equal(image_msg_to_rgb(flat, 100), np.full((2, 2, 3), grey, np.uint8))


@pytest.mark.parametrize("encoding", SUBSAMPLED_W)
def test_odd_widths_of_subsampled_formats_are_refused(encoding):
    msg, _ = _case(encoding, 4, 6, pad=0, big=False, seed=0)
    msg.width = 5
    with pytest.raises(ImageError, match=rf"{encoding} needs an even width \((4:2:[02]) chroma"):
        image_msg_to_rgb(msg, 100)


@pytest.mark.parametrize("encoding", ["nv12", "nv21"])
def test_odd_heights_of_420_formats_are_refused(encoding):
    msg, _ = _case(encoding, 4, 6, pad=0, big=False, seed=0)
    msg.height = 3
    with pytest.raises(ImageError, match=rf"{encoding} needs an even height \(4:2:0 chroma covers 2x2"):
        image_msg_to_rgb(msg, 100)


@pytest.mark.parametrize("encoding", ALL)
def test_short_data_and_short_step_are_refused(encoding):
    msg, _ = _case(encoding, 4, 6, pad=2, big=False, seed=0)
    whole = bytes(msg.data)
    msg.data = whole[:-1]
    with pytest.raises(ImageError, match=rf"data has {len(whole) - 1} B, {encoding} expected at least"):
        image_msg_to_rgb(msg, 100)
    msg.data = whole
    image_msg_to_rgb(msg, 100)  # the whole message converts
    row_bytes = 6 * (PACKED[encoding][0] * PACKED[encoding][1] // 8 if encoding in PACKED else 1)
    msg.step = row_bytes - 1
    with pytest.raises(ImageError, match=f"step {row_bytes - 1} is shorter than one row of 6 px"):
        image_msg_to_rgb(msg, 100)


@pytest.mark.parametrize("encoding", ["nv21", "nv24"])
def test_semi_planar_sized_as_two_channels_is_refused_not_misread(encoding):
    # Jazzy's image_encodings.hpp counts nv21/nv24 as 2 channels; a publisher that sized step = 2 x width and
    # data = step x height from that sends less than the planes need.
    msg = Image(height=4, width=6, encoding=encoding, step=12, data=b"\x80" * 48)
    with pytest.raises(ImageError, match=f"data has 48 B, {encoding} expected at least"):
        image_msg_to_rgb(msg, 100)


@pytest.mark.parametrize("encoding", ["rgb8", "rgba16", "bayer_grbg16", "yuyv", "nv12", "nv24"])
def test_huge_claims_with_short_data_are_refused_before_allocating(encoding):
    msg = Image(height=20_000, width=20_000, encoding=encoding, step=20_000 * 8, data=b"\x00" * 64)
    tracemalloc.start()
    try:
        with pytest.raises(ImageError, match="expected at least"):
            image_msg_to_rgb(msg, max_pixels=1 << 30)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"{peak} B allocated for a refused message"


@pytest.mark.parametrize(
    "change, fragment",
    [
        (dict(encoding="16UC1"), "unsupported image encoding '16UC1': a depth image"),
        (dict(encoding="32FC1"), "unsupported image encoding '32FC1': a depth image"),
        (dict(encoding="8UC3"), "unsupported image encoding '8UC3': a generic OpenCV type"),
        (dict(encoding="8UC1"), "generic OpenCV type"),
        (dict(encoding="16SC1"), "generic OpenCV type"),
        (dict(encoding="32FC3"), "generic OpenCV type"),
        (dict(encoding="64FC1"), "generic OpenCV type"),
        (dict(encoding="yuv420"), "unknown image encoding 'yuv420'; supported: bayer_bggr16, .*nv24, .*yuyv$"),
        (dict(encoding="RGB8"), "unknown image encoding 'RGB8'"),
        (dict(encoding=""), "unknown image encoding ''"),
        (dict(step=5), "shorter than one row"),
        (dict(height=0), "zero size"),
        (dict(width=0), "zero size"),
        (dict(height=100_000, width=100_000), "max_image_pixels"),
        (dict(data=b"\x00" * 10), "expected at least"),
    ],
)
def test_malformed_images_are_refused(change, fragment):
    msg = _rows_msg([r.tobytes() for r in RGB], "rgb8", 7, 5, 0)
    for key, value in change.items():
        setattr(msg, key, value)
    with pytest.raises(ImageError, match=fragment):
        image_msg_to_rgb(msg, max_pixels=1 << 20)


@pytest.fixture
def fake_cv_bridge(monkeypatch):
    """A stand-in cv_bridge module (none is installed here) that records what it is asked to convert."""
    calls = []

    class CvBridgeError(TypeError):
        pass

    class CvBridge:
        def imgmsg_to_cv2(self, msg, desired_encoding="passthrough"):
            calls.append((msg.encoding, desired_encoding))
            if msg.encoding == "bgr16":
                raise CvBridgeError("boom")
            if msg.encoding == "rgba8":
                return np.zeros((msg.height, msg.width, 4), np.uint8)
            return np.full((msg.height, msg.width, 3), 7, np.uint8)

    module = types.ModuleType("cv_bridge")
    module.CvBridge, module.CvBridgeError = CvBridge, CvBridgeError
    module.__path__ = []  # a package, like the real one, with its compiled part below
    monkeypatch.setitem(sys.modules, "cv_bridge", module)
    monkeypatch.setitem(sys.modules, "cv_bridge.boost", types.ModuleType("cv_bridge.boost"))
    monkeypatch.setitem(sys.modules, "cv_bridge.boost.cv_bridge_boost", types.ModuleType("cv_bridge_boost"))
    images.conversion_backend.cache_clear()
    images._bridge.cache_clear()
    yield calls
    images.conversion_backend.cache_clear()
    images._bridge.cache_clear()


def test_backend_is_opencv_without_cv_bridge(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv_bridge", None)  # makes `import cv_bridge` raise ImportError
    images.conversion_backend.cache_clear()
    try:
        assert images.conversion_backend() == "opencv"
    finally:
        images.conversion_backend.cache_clear()
    with pytest.raises(ValueError, match="backend must be one of"):
        image_msg_to_rgb(_rows_msg([r.tobytes() for r in RGB], "rgb8", 7, 5, 0), 100, backend="pillow")


def test_backend_is_opencv_when_cv_bridge_has_no_working_compiled_part(fake_cv_bridge, monkeypatch):
    assert images.conversion_backend() == "cv_bridge"
    monkeypatch.setitem(sys.modules, "cv_bridge.boost.cv_bridge_boost", None)
    images.conversion_backend.cache_clear()
    assert images.conversion_backend() == "opencv"


def test_cv_bridge_converts_what_it_reads_and_opencv_the_rest(fake_cv_bridge):
    assert images.conversion_backend() == "cv_bridge"
    bridged = _case("bayer_rggb8", 4, 6, pad=0, big=False, seed=0)[0]
    np.testing.assert_array_equal(image_msg_to_rgb(bridged, 100), np.full((4, 6, 3), 7))
    assert fake_cv_bridge == [("bayer_rggb8", "rgb8")]
    # Names cv_bridge does not know, rows padded by part of a pixel, foreign-endian 16-bit: OpenCV, same pixels.
    for encoding, pad, big in (
        ("uyvy", 0, False),
        ("nv12", 0, False),
        ("nv24", 0, False),
        ("rgb8", 1, False),
        ("mono16", 1, False),
        ("mono16", 0, sys.byteorder == "little"),
    ):
        msg, expected = _case(encoding, 4, 6, pad, big, seed=1)
        assert np.array_equal(image_msg_to_rgb(msg, 100), expected), encoding
    assert fake_cv_bridge == [("bayer_rggb8", "rgb8")]
    # Padding by whole pixels is read by cv_bridge, and its failures become ImageError, not a dead worker.
    image_msg_to_rgb(_case("rgb8", 4, 6, pad=3, big=False, seed=0)[0], 100)
    with pytest.raises(ImageError, match="cv_bridge could not convert bgr16 6x4: boom"):
        image_msg_to_rgb(_case("bgr16", 4, 6, pad=0, big=False, seed=0)[0], 100)
    with pytest.raises(ImageError, match=r"cv_bridge gave uint8 \(4, 6, 4\)"):
        image_msg_to_rgb(_case("rgba8", 4, 6, pad=0, big=False, seed=0)[0], 100)
    # Size checks come first whichever backend converts.
    with pytest.raises(ImageError, match="expected at least"):
        image_msg_to_rgb(Image(height=4, width=6, encoding="rgb8", step=18, data=b"\x00" * 10), 100)
    assert [c[0] for c in fake_cv_bridge] == ["bayer_rggb8", "rgb8", "bgr16", "rgba8"]
    # The explicit choice wins over what is installed.
    msg, expected = _case("bayer_rggb8", 4, 6, pad=0, big=False, seed=0)
    assert np.array_equal(image_msg_to_rgb(msg, 100, backend="opencv"), expected)


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_compressed_png_and_jpeg(fmt):
    y, x = np.mgrid[0:32, 0:48]
    smooth = np.dstack([x * 5, y * 7, x + y]).astype(np.uint8)  # JPEG is lossy: compare on a smooth image
    buf = io.BytesIO()
    PILImage.fromarray(smooth).save(buf, format=fmt.upper(), **({"quality": 95} if fmt == "jpeg" else {}))
    out = compressed_msg_to_rgb(CompressedImage(format=fmt, data=buf.getvalue()), 10_000)
    assert out.shape == smooth.shape and out.dtype == np.uint8
    if fmt == "png":
        np.testing.assert_array_equal(out, smooth)
    else:
        assert np.abs(out.astype(int) - smooth).mean() < 3


def test_compressed_refusals_check_the_header_before_decoding():
    big = io.BytesIO()
    PILImage.new("RGB", (4000, 3000)).save(big, format="PNG")
    with pytest.raises(ImageError, match="max_image_pixels"):
        compressed_msg_to_rgb(CompressedImage(format="png", data=big.getvalue()), max_pixels=1000)
    with pytest.raises(ImageError, match="cannot read"):
        compressed_msg_to_rgb(CompressedImage(format="jpeg", data=b"not an image"), 100)
    with pytest.raises(ImageError, match="unsupported"):
        compressed_msg_to_rgb(CompressedImage(format="h264", data=b"x"), 100)
