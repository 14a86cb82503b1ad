"""Image codecs: the device sends pixels, the server runs the vision tower (the paper's image-upload baselines).

ndarray[H, W, 3] uint8 -> sections -> ndarray[H, W, 3] uint8:
    jpeg/1, webp/1        Pillow at ``quality`` (1..100); one section, the image file.
    rgb8/1                the raw pixels (what uploading an uncompressed camera frame costs).
    placeholder-zstd/1    zstd-compressed rgb8 pixels, lossless: runs the ROS graph without any model (the server's
                          placeholder answerer describes the pixels and says that no language model ran).

The image size travels in the container header; decoders check the file's own size against it (JPEG/WebP headers
are read before the pixels) and the zstd frame size against H * W * 3 before allocating anything.
"""

from __future__ import annotations

import io

import numpy as np
import zstandard
from PIL import Image

from tofc_ros.zstd_frames import decompress_exact

from .base import Codec, register_codec
from .bitstream import MAX_IMAGE_SIDE, FrameHeader, LimitError, MalformedPayloadError

__all__ = ["JpegCodec", "WebpCodec", "RawRgbCodec", "PlaceholderCodec", "check_rgb"]


def check_rgb(image: np.ndarray) -> np.ndarray:
    """Refuse anything but a uint8 [H, W, 3] array with 1 <= H, W <= MAX_IMAGE_SIDE; returns it C-contiguous."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise TypeError(
            f"image must be a uint8 numpy array [H, W, 3], got {type(image).__name__}"
            + (f" {image.dtype}" if isinstance(image, np.ndarray) else "")
        )
    if (
        image.ndim != 3
        or image.shape[2] != 3
        or not (1 <= image.shape[0] <= MAX_IMAGE_SIDE and 1 <= image.shape[1] <= MAX_IMAGE_SIDE)
    ):
        raise ValueError(f"image must have shape [H, W, 3] with 1 <= H, W <= {MAX_IMAGE_SIDE}, got {image.shape}")
    return np.ascontiguousarray(image)


def _image_size(header: FrameHeader) -> tuple[int, int]:
    h, w = header.image_size
    if not (h >= 1 and w >= 1):
        raise LimitError(f"image payload declares an empty image {w}x{h}")
    return h, w


class _PillowCodec(Codec):
    kind = "image"
    _pil_format = ""

    def __init__(self, quality: int = 85):
        if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
            raise ValueError(f"quality must be an int in 1..100, got {quality!r}")
        self.quality = quality

    def encode_sections(self, image: np.ndarray):
        image = check_rgb(image)
        buf = io.BytesIO()
        Image.fromarray(image, mode="RGB").save(buf, format=self._pil_format, quality=self.quality)
        return (0, 0, 0), [buf.getvalue()]

    def decode_sections(self, header: FrameHeader, sections) -> np.ndarray:
        h, w = _image_size(header)
        try:
            img = Image.open(io.BytesIO(sections[0]))  # lazy: reads only the file's header
            if img.format != self._pil_format or img.size != (w, h):
                raise MalformedPayloadError(
                    f"inner image is {img.format} {img.size}, header says {self._pil_format} {(w, h)}"
                )
            return np.asarray(img.convert("RGB"))
        except MalformedPayloadError:
            raise
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise MalformedPayloadError(f"{self._pil_format} decoding failed: {exc}") from None


@register_codec
class JpegCodec(_PillowCodec):
    """JPEG image at ``quality`` (Pillow/libjpeg)."""

    format = "jpeg/1"
    _pil_format = "JPEG"


@register_codec
class WebpCodec(_PillowCodec):
    """Lossy WebP image at ``quality`` (Pillow/libwebp)."""

    format = "webp/1"
    _pil_format = "WEBP"


@register_codec
class RawRgbCodec(Codec):
    """Uncompressed rgb8 pixels."""

    format = "rgb8/1"
    kind = "image"

    def encode_sections(self, image: np.ndarray):
        return (0, 0, 0), [check_rgb(image).tobytes()]

    def decode_sections(self, header: FrameHeader, sections) -> np.ndarray:
        h, w = _image_size(header)
        if len(sections[0]) != h * w * 3:
            raise MalformedPayloadError(f"rgb8 section has {len(sections[0])} bytes, {w}x{h} needs {h * w * 3}")
        return np.frombuffer(sections[0], dtype=np.uint8).reshape(h, w, 3)


@register_codec
class PlaceholderCodec(Codec):
    """zstd-compressed rgb8 pixels, honestly labelled: the graph runs without any model."""

    format = "placeholder-zstd/1"
    kind = "image"

    def __init__(self, level: int = 3):
        if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 22:
            raise ValueError(f"zstd level must be an int in 1..22, got {level!r}")
        self.level = level

    def encode_sections(self, image: np.ndarray):
        pixels = check_rgb(image).tobytes()
        return (0, 0, 0), [zstandard.ZstdCompressor(level=self.level).compress(pixels)]

    def decode_sections(self, header: FrameHeader, sections) -> np.ndarray:
        h, w = _image_size(header)
        pixels = decompress_exact(sections[0], h * w * 3, MalformedPayloadError)
        return np.frombuffer(pixels, dtype=np.uint8).reshape(h, w, 3)
