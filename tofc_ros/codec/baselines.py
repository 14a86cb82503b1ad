"""Baseline codecs behind the :class:`~tofc_ros.codec.registry.Codec` interface (same container, same pipeline).

Feature codecs (Tensor[T, C, D] -> bytes -> Tensor[T, C, D] float32):
    fp16/1        raw float16, little-endian.
    fp16-zstd/1   float16 + zstd (``level``).
    quant-zstd/1  per-tensor uniform quantisation to ``bits`` (1..16) between min and max, + zstd (``level``);
                  sections: params (<B f f: bits, lo, hi>) and the compressed uint8/uint16 codes.
Image codecs (ndarray[H, W, 3] uint8 -> bytes -> ndarray[H, W, 3] uint8):
    jpeg/1, webp/1  Pillow at ``quality`` (1..100).

Decoders are self-describing (parameters travel in the payload); their fingerprint is the hash of the format name.
Decompression never trusts a declared size: zstd frame sizes and image dimensions are checked against the
container's shape before anything is allocated.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import torch
import zstandard
from PIL import Image
from torch import Tensor

from tofc_ros.zstd_frames import decompress_exact

from .bitstream import MAX_IMAGE_SIDE, LimitError, MalformedPayloadError, check_feature_shape, pack
from .registry import Codec, register_codec

__all__ = ["Fp16Codec", "Fp16ZstdCodec", "QuantZstdCodec", "JpegCodec", "WebpCodec"]


def _check_features(x: Tensor) -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"features must be a floating-point Tensor[T, C, D], got {type(x).__name__}")
    if x.dim() != 3:
        raise ValueError(f"features must have shape [T, C, D], got {tuple(x.shape)}")
    check_feature_shape(tuple(x.shape))
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"features of shape {tuple(x.shape)} contain NaN or Inf")
    return x.detach().cpu()


def _to_fp16_bytes(x: Tensor) -> bytes:
    if x.numel() and float(x.abs().max()) > 65504.0:
        raise ValueError("features exceed the float16 range (|x| > 65504)")
    return x.to(torch.float16).numpy().astype("<f2").tobytes()


def _from_fp16_bytes(data: bytes, shape) -> Tensor:
    n = shape[0] * shape[1] * shape[2]
    if len(data) != 2 * n:
        raise MalformedPayloadError(f"float16 section has {len(data)} bytes, shape {shape} needs {2 * n}")
    arr = np.frombuffer(data, dtype="<f2").astype(np.float32)
    return torch.from_numpy(arr.copy()).reshape(shape)


def _zstd_decompress(data: bytes, expected: int) -> bytes:
    return decompress_exact(data, expected, MalformedPayloadError)


def _check_level(level: int) -> int:
    if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 22:
        raise ValueError(f"zstd level must be an int in 1..22, got {level!r}")
    return level


@register_codec
class Fp16Codec(Codec):
    """Raw float16 features."""

    format = "fp16/1"

    def encode(self, x: Tensor) -> bytes:
        x = _check_features(x)
        return pack(self.format, self.fingerprint, x.shape, [_to_fp16_bytes(x)])

    def decode(self, payload: bytes) -> Tensor:
        header, (data,) = self._open(payload, 1)
        check_feature_shape(header.shape)
        return _from_fp16_bytes(data, header.shape)


@register_codec
class Fp16ZstdCodec(Codec):
    """float16 + zstd."""

    format = "fp16-zstd/1"

    def __init__(self, level: int = 3):
        self.level = _check_level(level)

    def encode(self, x: Tensor) -> bytes:
        x = _check_features(x)
        data = zstandard.ZstdCompressor(level=self.level).compress(_to_fp16_bytes(x))
        return pack(self.format, self.fingerprint, x.shape, [data])

    def decode(self, payload: bytes) -> Tensor:
        header, (data,) = self._open(payload, 1)
        check_feature_shape(header.shape)
        t, c, d = header.shape
        return _from_fp16_bytes(_zstd_decompress(data, 2 * t * c * d), header.shape)


_QPARAMS = struct.Struct("<Bff")


@register_codec
class QuantZstdCodec(Codec):
    """Per-tensor uniform quantisation to ``bits`` between min and max, then zstd. Max error (hi-lo)/(2^bits-1)/2."""

    format = "quant-zstd/1"

    def __init__(self, bits: int = 8, level: int = 3):
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
            raise ValueError(f"bits must be an int in 1..16, got {bits!r}")
        self.bits, self.level = bits, _check_level(level)

    def encode(self, x: Tensor) -> bytes:
        x = _check_features(x)
        lo = float(x.min()) if x.numel() else 0.0
        hi = float(x.max()) if x.numel() else 0.0
        lo32, hi32 = np.float32(lo), np.float32(hi)
        if not (np.isfinite(lo32) and np.isfinite(hi32)):
            raise ValueError("feature range exceeds float32")
        levels = (1 << self.bits) - 1
        span = float(hi32) - float(lo32)
        x64 = x.to(torch.float64)
        q = torch.zeros_like(x64) if span == 0 else torch.floor((x64 - float(lo32)) / span * levels + 0.5)
        q = q.clamp(0, levels).numpy().astype("<u1" if self.bits <= 8 else "<u2")
        data = zstandard.ZstdCompressor(level=self.level).compress(q.tobytes())
        return pack(self.format, self.fingerprint, x.shape, [_QPARAMS.pack(self.bits, lo32, hi32), data])

    def decode(self, payload: bytes) -> Tensor:
        header, (params, data) = self._open(payload, 2)
        check_feature_shape(header.shape)
        if len(params) != _QPARAMS.size:
            raise MalformedPayloadError(f"quant params section has {len(params)} bytes, expected {_QPARAMS.size}")
        bits, lo, hi = _QPARAMS.unpack(params)
        if not 1 <= bits <= 16 or not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
            raise MalformedPayloadError(f"bad quant params bits={bits} lo={lo} hi={hi}")
        t, c, d = header.shape
        width = 1 if bits <= 8 else 2
        raw = _zstd_decompress(data, width * t * c * d)
        q = np.frombuffer(raw, dtype="<u1" if width == 1 else "<u2").astype(np.float64)
        levels = (1 << bits) - 1
        if q.size and q.max() > levels:
            raise MalformedPayloadError(f"quantisation code {int(q.max())} exceeds {levels} for {bits} bits")
        x = lo + q * ((hi - lo) / levels)
        return torch.from_numpy(x.astype(np.float32)).reshape(t, c, d)


class _PillowCodec(Codec):
    kind = "image"
    _pil_format = ""

    def __init__(self, quality: int = 85):
        if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
            raise ValueError(f"quality must be an int in 1..100, got {quality!r}")
        self.quality = quality

    def encode(self, image: np.ndarray) -> bytes:
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
            raise TypeError(f"image must be a uint8 numpy array [H, W, 3], got {type(image).__name__}"
                            + (f" {image.dtype}" if isinstance(image, np.ndarray) else ""))
        if image.ndim != 3 or image.shape[2] != 3 or not (1 <= image.shape[0] <= MAX_IMAGE_SIDE
                                                          and 1 <= image.shape[1] <= MAX_IMAGE_SIDE):
            raise ValueError(f"image must have shape [H, W, 3] with 1 <= H, W <= {MAX_IMAGE_SIDE}, "
                             f"got {image.shape}")
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(image), mode="RGB").save(buf, format=self._pil_format,
                                                                    quality=self.quality)
        return pack(self.format, self.fingerprint, image.shape, [buf.getvalue()])

    def decode(self, payload: bytes) -> np.ndarray:
        header, (data,) = self._open(payload, 1)
        h, w, ch = header.shape
        if ch != 3 or not (1 <= h <= MAX_IMAGE_SIDE and 1 <= w <= MAX_IMAGE_SIDE):
            raise LimitError(f"image shape {header.shape} outside [1..{MAX_IMAGE_SIDE}]^2 x 3")
        try:
            img = Image.open(io.BytesIO(data))  # lazy: reads only the header
            if img.format != self._pil_format or img.size != (w, h):
                raise MalformedPayloadError(f"inner image is {img.format} {img.size}, header says "
                                            f"{self._pil_format} {(w, h)}")
            arr = np.asarray(img.convert("RGB"))
        except MalformedPayloadError:
            raise
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise MalformedPayloadError(f"{self._pil_format} decoding failed: {exc}") from None
        return arr


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
