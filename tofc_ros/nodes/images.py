"""sensor_msgs/Image and CompressedImage → RGB numpy arrays, checked before anything is allocated.

No rclpy here: the functions read message fields only, so they are tested with plain message objects. Every
refusal is an `ImageError` whose message says what was wrong; the node logs it (throttled), counts it in
diagnostics and goes on.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image as PILImage

# encoding → (channels, bytes per channel, how to reach RGB)
_RAW_ENCODINGS = {
    "rgb8": (3, 1),
    "bgr8": (3, 1),
    "rgba8": (4, 1),
    "bgra8": (4, 1),
    "mono8": (1, 1),
    "mono16": (1, 2),
}
# Encodings that are images but not of a scene a VLM can look at (depth, float, Bayer): named so that the error
# says "unsupported" rather than "unknown".
_KNOWN_UNSUPPORTED = ("16UC1", "32FC1", "16SC1", "8UC1", "8UC3", "8UC4", "32SC1", "64FC1", "bayer_", "yuv422")


class ImageError(ValueError):
    """A camera message that cannot be turned into an RGB image."""


def image_msg_to_rgb(msg, max_pixels: int) -> np.ndarray:
    """Convert a sensor_msgs/Image to an RGB array.

    Args:
        msg: a sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8 or mono16; rows may be padded; either
            endianness for mono16).
        max_pixels: the largest width x height accepted.

    Returns:
        uint8 array [H, W, 3], C-contiguous, owning its memory (the message buffer may be reused).

    Raises:
        ImageError: unsupported or unknown encoding, zero or too large size, step or data too short.
    """
    encoding = str(msg.encoding)
    if encoding not in _RAW_ENCODINGS:
        if encoding.startswith(_KNOWN_UNSUPPORTED):
            raise ImageError(f"unsupported image encoding '{encoding}' (depth/raw sensor data is not a scene image)")
        raise ImageError(f"unknown image encoding '{encoding}'; supported: {sorted(_RAW_ENCODINGS)}")
    channels, depth = _RAW_ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    _check_size(height, width, max_pixels)
    row_bytes = width * channels * depth
    if step < row_bytes:
        raise ImageError(f"step {step} is shorter than one row of {width} px x {channels * depth} B = {row_bytes} B")
    data = msg.data
    if len(data) < step * height:
        raise ImageError(f"data has {len(data)} B, expected at least step x height = {step} x {height} = {step * height}")

    buf = np.frombuffer(data, dtype=np.uint8, count=step * height).reshape(height, step)[:, :row_bytes]
    if depth == 2:
        dtype = np.dtype(">u2" if msg.is_bigendian else "<u2")
        mono16 = buf.copy().view(dtype).reshape(height, width)
        # Full 16-bit range onto 8 bits (x / 257 rounds 65535 → 255 exactly).
        gray = ((mono16.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    pixels = buf.reshape(height, width, channels)
    if encoding == "mono8":
        return np.repeat(pixels, 3, axis=2)
    if encoding in ("bgr8", "bgra8"):
        return np.ascontiguousarray(pixels[:, :, 2::-1])
    return np.ascontiguousarray(pixels[:, :, :3])


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


def _check_size(height: int, width: int, max_pixels: int) -> None:
    if height <= 0 or width <= 0:
        raise ImageError(f"image has zero size {width}x{height}")
    if height * width > max_pixels:
        raise ImageError(f"image {width}x{height} has more than max_image_pixels = {max_pixels} pixels")
