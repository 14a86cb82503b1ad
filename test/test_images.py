"""sensor_msgs images to RGB: every supported encoding, padding, endianness, and refusals before allocation."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image as PILImage
from sensor_msgs.msg import CompressedImage, Image

from tofc_ros.nodes.images import ImageError, compressed_msg_to_rgb, image_msg_to_rgb

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)


def _msg(pixels: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False) -> Image:
    h, w = pixels.shape[:2]
    rows = pixels.reshape(h, -1).view(np.uint8) if pixels.dtype == np.uint8 else pixels.reshape(h, w)
    raw = rows.tobytes() if pixels.dtype == np.uint8 else rows.astype(">u2" if bigendian else "<u2").tobytes()
    row_bytes = len(raw) // h
    data = b"".join(raw[i * row_bytes:(i + 1) * row_bytes] + b"\xee" * pad for i in range(h))
    return Image(height=h, width=w, encoding=encoding, is_bigendian=int(bigendian), step=row_bytes + pad, data=data)


@pytest.mark.parametrize("pad", [0, 3])
@pytest.mark.parametrize("encoding, pixels", [
    ("rgb8", RGB), ("bgr8", RGB[:, :, ::-1]),
    ("rgba8", np.dstack([RGB, np.full(RGB.shape[:2], 9, np.uint8)])),
    ("bgra8", np.dstack([RGB[:, :, ::-1], np.full(RGB.shape[:2], 9, np.uint8)])),
])
def test_colour_encodings_give_the_same_rgb(encoding, pixels, pad):
    out = image_msg_to_rgb(_msg(np.ascontiguousarray(pixels), encoding, pad), max_pixels=100)
    np.testing.assert_array_equal(out, RGB)
    assert out.flags.c_contiguous and out.flags.owndata or out.base is not None


@pytest.mark.parametrize("pad", [0, 2])
def test_mono8_and_mono16_both_endiannesses(pad):
    gray = RGB[:, :, 0]
    np.testing.assert_array_equal(image_msg_to_rgb(_msg(gray[:, :, None], "mono8", pad), 100), np.dstack([gray] * 3))
    wide = gray.astype(np.uint16) * 257  # exact 8-bit values spread over 16 bits
    for big in (False, True):
        out = image_msg_to_rgb(_msg(wide, "mono16", pad, bigendian=big), 100)
        np.testing.assert_array_equal(out, np.dstack([gray] * 3))


@pytest.mark.parametrize("change, fragment", [
    (dict(encoding="16UC1"), "unsupported"),
    (dict(encoding="32FC1"), "unsupported"),
    (dict(encoding="yuv420"), "unknown"),
    (dict(step=5), "shorter than one row"),
    (dict(height=0), "zero size"),
    (dict(height=100_000, width=100_000), "max_image_pixels"),
    (dict(data=b"\x00" * 10), "expected at least"),
])
def test_malformed_images_are_refused(change, fragment):
    msg = _msg(RGB, "rgb8")
    for key, value in change.items():
        setattr(msg, key, value)
    with pytest.raises(ImageError, match=fragment):
        image_msg_to_rgb(msg, max_pixels=1 << 20)


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
