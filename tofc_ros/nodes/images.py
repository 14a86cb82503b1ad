"""sensor_msgs/Image and CompressedImage → RGB numpy arrays, checked before anything is allocated.

No rclpy here: the functions read message fields only, so they are tested with plain message objects. Every
refusal is an `ImageError` whose message says what was wrong; the node logs it (throttled), counts it in
diagnostics and goes on.

Raw images are converted the way cv_bridge's `imgmsg_to_cv2(msg, "rgb8")` does: the OpenCV colour conversion
cv_bridge picks for the encoding (BT.601 limited range for YUV, OpenCV's bilinear demosaicing for Bayer), then, for
16-bit data, `convertTo` with scale 255/65535 (round(x * 255 / 65535)). Where a ROS install has cv_bridge it does
the conversion itself (`conversion_backend()`); otherwise, and for what cv_bridge cannot read, OpenCV does the same
steps here. Semi-planar layouts (`step` is the Y plane's row stride, as in V4L2):

    nv12, nv21   Y plane: height rows of `step` B, then the interleaved UV (nv21: VU) plane: height/2 rows of `step` B
    nv24         Y plane: height rows of `step` B, then the interleaved UV plane: height rows of 2 x `step` B

(nv12 is newer than Jazzy's image_encodings.hpp, which also counts nv21/nv24 as 2 channels: a message sized from that,
step = 2 x width and data = step x height, is refused as short, never misread.)
"""

from __future__ import annotations

import functools
import io
import re
import sys
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image as PILImage

PACKED, YUV420SP, YUV444SP = "packed", "yuv420sp", "yuv444sp"


@dataclass(frozen=True)
class Encoding:
    """How one sensor_msgs/Image encoding is stored and turned into RGB.

    Attributes:
        channels: samples per pixel as stored (1 for the Y plane of the semi-planar layouts).
        sample_bytes: 1 or 2 (16-bit samples honour `is_bigendian` and are scaled to 8 bits after conversion).
        to_rgb: the cv2.COLOR_* code cv_bridge uses towards rgb8; None when the samples already are RGB.
        layout: PACKED (rows of `step` bytes), YUV420SP (nv12/nv21) or YUV444SP (nv24).
        even: the dimensions chroma subsampling needs even: "", "w" (4:2:2) or "wh" (4:2:0).
        cv_bridge: whether cv_bridge knows the name (it does not know the newer uyvy/yuyv nor nv12/nv21/nv24).
    """

    channels: int
    sample_bytes: int
    to_rgb: int | None
    layout: str = PACKED
    even: str = ""
    cv_bridge: bool = True


def _encodings() -> dict[str, Encoding]:
    table = {}
    for bits, size in ((8, 1), (16, 2)):
        table[f"rgb{bits}"] = Encoding(3, size, None)
        table[f"bgr{bits}"] = Encoding(3, size, cv2.COLOR_BGR2RGB)
        table[f"rgba{bits}"] = Encoding(4, size, cv2.COLOR_RGBA2RGB)
        table[f"bgra{bits}"] = Encoding(4, size, cv2.COLOR_BGRA2RGB)
        table[f"mono{bits}"] = Encoding(1, size, cv2.COLOR_GRAY2RGB)
        # OpenCV's legacy Bayer names count from the second row and column, so RGGB is "BayerBG" (the newer alias
        # COLOR_BayerRGGB2RGB has the same value); these are the codes cv_bridge uses.
        table[f"bayer_rggb{bits}"] = Encoding(1, size, cv2.COLOR_BayerBG2RGB)
        table[f"bayer_bggr{bits}"] = Encoding(1, size, cv2.COLOR_BayerRG2RGB)
        table[f"bayer_gbrg{bits}"] = Encoding(1, size, cv2.COLOR_BayerGR2RGB)
        table[f"bayer_grbg{bits}"] = Encoding(1, size, cv2.COLOR_BayerGB2RGB)
    # yuv422 is UYVY and yuv422_yuy2 is YUYV (sensor_msgs' image_encodings.hpp); uyvy/yuyv are their newer names.
    for name, code, bridge in (
        ("yuv422", cv2.COLOR_YUV2RGB_UYVY, True),
        ("uyvy", cv2.COLOR_YUV2RGB_UYVY, False),
        ("yuv422_yuy2", cv2.COLOR_YUV2RGB_YUY2, True),
        ("yuyv", cv2.COLOR_YUV2RGB_YUY2, False),
    ):
        table[name] = Encoding(2, 1, code, even="w", cv_bridge=bridge)
    table["nv12"] = Encoding(1, 1, cv2.COLOR_YUV2RGB_NV12, YUV420SP, "wh", cv_bridge=False)
    table["nv21"] = Encoding(1, 1, cv2.COLOR_YUV2RGB_NV21, YUV420SP, "wh", cv_bridge=False)
    # OpenCV has no 4:4:4 semi-planar code: each pixel goes through the 4:2:2 (YUYV) conversion as a pair of twins,
    # which is the same fixed-point BT.601 arithmetic as the nv12 and 4:2:2 conversions.
    table["nv24"] = Encoding(1, 1, cv2.COLOR_YUV2RGB_YUY2, YUV444SP, cv_bridge=False)
    return table


ENCODINGS: dict[str, Encoding] = _encodings()
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(sorted(ENCODINGS))
# Generic OpenCV types (sensor_msgs' TYPE_*): no colour meaning, and cv_bridge refuses to make rgb8 of them too.
_GENERIC_TYPE = re.compile(r"(8|16|32|64)(U|S|F)C([0-9]*)")
_DEPTH_TYPES = ("16UC1", "32FC1")
BACKENDS = ("cv_bridge", "opencv")


class ImageError(ValueError):
    """A camera message that cannot be turned into an RGB image."""


@functools.cache
def conversion_backend() -> str:
    """The library that converts raw images: "cv_bridge" where it imports (a ROS install), else "opencv".

    Decided once per process (tests call `conversion_backend.cache_clear()`). Both give the same pixels; the
    OpenCV path also covers what cv_bridge cannot read (see `_cv_bridge_reads`). The compiled part is imported too:
    cv_bridge loads it only when converting, and one built against another NumPy would then refuse every frame.
    """
    try:
        import cv_bridge
        import cv_bridge.boost.cv_bridge_boost  # noqa: F401
    except ImportError:
        return "opencv"
    return "cv_bridge"


def image_msg_to_rgb(msg, max_pixels: int, backend: str | None = None) -> np.ndarray:
    """Convert a sensor_msgs/Image to an RGB array, as cv_bridge's `imgmsg_to_cv2(msg, "rgb8")` would.

    Args:
        msg: a sensor_msgs/Image in one of `SUPPORTED_ENCODINGS`; rows may be padded (`step` > row bytes), 16-bit
            samples may be either endianness.
        max_pixels: the largest width x height accepted.
        backend: "cv_bridge" or "opencv"; None uses `conversion_backend()`.

    Returns:
        uint8 array [H, W, 3], C-contiguous, owning its memory (the message buffer may be reused).

    Raises:
        ImageError: unsupported or unknown encoding, zero or too large size, an odd dimension that the chroma
            subsampling needs even, step shorter than a row, data shorter than the layout needs. All are checked
            before any pixel memory is allocated.
    """
    backend = conversion_backend() if backend is None else backend
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    encoding = str(msg.encoding)
    enc = _lookup(encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    _check_size(height, width, max_pixels)
    _check_layout(encoding, enc, height, width, step, len(msg.data))
    big_endian = bool(msg.is_bigendian)
    if backend == "cv_bridge" and _cv_bridge_reads(enc, step, big_endian):
        return _convert_with_cv_bridge(msg, encoding, height, width)
    try:
        return _convert_with_opencv(msg.data, enc, height, width, step, big_endian)
    except cv2.error as exc:  # not expected after the checks above; a frame must not take the node down
        raise ImageError(f"OpenCV could not convert {encoding} {width}x{height}: {exc}") from exc


def compressed_msg_to_rgb(msg, max_pixels: int) -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage (JPEG or PNG) to an RGB array [H, W, 3] uint8.

    The size in the file header is checked against `max_pixels` before the pixels are decoded.
    """
    fmt = str(msg.format).lower()
    if "jpeg" not in fmt and "jpg" not in fmt and "png" not in fmt:
        raise ImageError(f"unsupported compressed image format '{msg.format}'; expected JPEG or PNG")
    try:
        image = PILImage.open(io.BytesIO(bytes(msg.data)))
    except Exception as exc:  # Pillow raises several types for garbage input
        raise ImageError(f"cannot read compressed image header ({msg.format}): {exc}") from exc
    if image.format not in ("JPEG", "PNG"):
        raise ImageError(f"compressed image is {image.format}, expected JPEG or PNG")
    width, height = image.size
    _check_size(height, width, max_pixels)
    try:
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except Exception as exc:
        raise ImageError(f"cannot decode {image.format} image {width}x{height}: {exc}") from exc


def _lookup(encoding: str) -> Encoding:
    enc = ENCODINGS.get(encoding)
    if enc is not None:
        return enc
    if encoding in _DEPTH_TYPES:
        raise ImageError(
            f"unsupported image encoding '{encoding}': a depth image holds distances, not a scene a "
            f"vision-language model can look at"
        )
    if _GENERIC_TYPE.fullmatch(encoding):
        raise ImageError(
            f"unsupported image encoding '{encoding}': a generic OpenCV type (depth, float, signed or "
            f"raw data) has no colour meaning; cv_bridge cannot make rgb8 of it either"
        )
    raise ImageError(f"unknown image encoding '{encoding}'; supported: {', '.join(SUPPORTED_ENCODINGS)}")


def _check_size(height: int, width: int, max_pixels: int) -> None:
    if height <= 0 or width <= 0:
        raise ImageError(f"image has zero size {width}x{height}")
    if height * width > max_pixels:
        raise ImageError(f"image {width}x{height} has more than max_image_pixels = {max_pixels} pixels")


def _check_layout(encoding: str, enc: Encoding, height: int, width: int, step: int, size: int) -> None:
    """Refuse odd dimensions the subsampling cannot take, a short step and short data (message fields only)."""
    if "w" in enc.even and width % 2:
        why = "4:2:0 chroma covers 2x2 pixel blocks" if "h" in enc.even else "4:2:2 chroma is shared by pixel pairs"
        raise ImageError(f"{encoding} needs an even width ({why}); got {width}x{height}")
    if "h" in enc.even and height % 2:
        raise ImageError(
            f"{encoding} needs an even height (4:2:0 chroma covers 2x2 pixel blocks); got {width}x{height}"
        )
    pixel_bytes = enc.channels * enc.sample_bytes
    row_bytes = width * pixel_bytes
    if step < row_bytes:
        raise ImageError(f"step {step} is shorter than one row of {width} px x {pixel_bytes} B = {row_bytes} B")
    if enc.layout == YUV420SP:
        need, planes = step * height * 3 // 2, f"Y step x {height} + UV step x {height // 2}"
    elif enc.layout == YUV444SP:
        need, planes = step * height * 3, f"Y step x {height} + UV 2 step x {height}"
    else:
        need, planes = step * height, f"step x height = {step} x {height}"
    if size < need:
        raise ImageError(f"data has {size} B, {encoding} expected at least {planes} = {need} B (step {step})")


def _cv_bridge_reads(enc: Encoding, step: int, big_endian: bool) -> bool:
    """Whether cv_bridge's Python `imgmsg_to_cv2` reads this message correctly.

    It knows fewer names than this module; it assumes rows padded by whole pixels (it takes step / pixel bytes as
    the row length); and it swaps foreign-endian data with `ndarray.newbyteorder`, which NumPy 2 removed. Those
    messages take the OpenCV path, which gives what cv_bridge gives where it works.
    """
    pixel_bytes = enc.channels * enc.sample_bytes
    native = big_endian == (sys.byteorder == "big")
    return enc.cv_bridge and step % pixel_bytes == 0 and (enc.sample_bytes == 1 or native)


@functools.cache
def _bridge():
    from cv_bridge import CvBridge

    return CvBridge()


def _convert_with_cv_bridge(msg, encoding: str, height: int, width: int) -> np.ndarray:
    try:
        rgb = _bridge().imgmsg_to_cv2(msg, "rgb8")
    except Exception as exc:  # CvBridgeError, and whatever its compiled part raises: a frame is refused, no more
        raise ImageError(f"cv_bridge could not convert {encoding} {width}x{height}: {exc}") from exc
    rgb = np.asarray(rgb)
    if rgb.shape != (height, width, 3) or rgb.dtype != np.uint8:
        raise ImageError(
            f"cv_bridge gave {rgb.dtype} {rgb.shape} for {encoding} {width}x{height}, "
            f"expected uint8 ({height}, {width}, 3)"
        )
    return np.array(rgb, dtype=np.uint8, order="C", copy=True)


def _convert_with_opencv(data, enc: Encoding, height: int, width: int, step: int, big_endian: bool) -> np.ndarray:
    """The OpenCV steps cv_bridge takes; `data` is at least as long as `_check_layout` requires."""
    if enc.layout == YUV420SP:
        # Both planes have rows of `step` bytes, so the whole frame is one (1.5 H) x W view, as OpenCV wants it.
        frame = np.ndarray((height * 3 // 2, width), np.uint8, buffer=data, strides=(step, 1))
        return cv2.cvtColor(frame, enc.to_rgb)
    if enc.layout == YUV444SP:
        luma = np.ndarray((height, width), np.uint8, buffer=data, strides=(step, 1))
        chroma = np.ndarray((height, width, 2), np.uint8, buffer=data, offset=step * height, strides=(2 * step, 2, 1))
        twins = np.empty((height, width, 4), np.uint8)  # Y U Y V: each pixel twice, as one YUYV pair
        twins[..., 0] = twins[..., 2] = luma
        twins[..., 1], twins[..., 3] = chroma[..., 0], chroma[..., 1]
        rgb = cv2.cvtColor(twins.reshape(height, 2 * width, 2), enc.to_rgb)
        return np.ascontiguousarray(rgb[:, ::2])

    size = enc.sample_bytes
    dtype = np.dtype(np.uint8) if size == 1 else np.dtype(">u2" if big_endian else "<u2")
    shape = (height, width) if enc.channels == 1 else (height, width, enc.channels)
    strides = (step, size) if enc.channels == 1 else (step, enc.channels * size, size)
    # A view of the message's rows (padding skipped); OpenCV wants native-endian, aligned 16-bit samples: copy.
    pixels = np.ndarray(shape, dtype, buffer=data, strides=strides)
    if size == 2:
        pixels = pixels.astype(np.uint16)
    rgb = np.array(pixels, order="C") if enc.to_rgb is None else cv2.cvtColor(pixels, enc.to_rgb)
    if size == 2:
        # cv_bridge: convertTo(CV_8U, 255/65535), i.e. round(x * 255 / 65535) = round(x / 257), exactly in integers.
        rgb = ((rgb.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    return rgb
