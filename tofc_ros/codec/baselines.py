"""Baseline feature codecs behind the :class:`~tofc_ros.codec.base.Codec` interface (same container, same pipeline).

Tensor[T, C, D] -> sections -> Tensor[T, C, D] float32:
    fp16/1        raw float16, little-endian.
    fp16-zstd/1   float16 + zstd (``level``).
    quant-zstd/1  per-tensor uniform quantisation to ``bits`` (1..16) between min and max, + zstd (``level``);
                  sections: params (<B f f: bits, lo, hi>) and the compressed uint8/uint16 codes.

Decoders are self-describing (parameters travel in the payload); their fingerprint is the hash of the format name.
Decompression never trusts a declared size: zstd frame sizes are checked against the container's shape before
anything is allocated. Image codecs (JPEG, WebP, the placeholder) are in ``image_codecs``.
"""

from __future__ import annotations

import struct

import numpy as np
import torch
import zstandard
from torch import Tensor

from tofc_ros.zstd_frames import decompress_exact

from .base import Codec, register_codec
from .bitstream import MAX_DIM, MAX_ELEMENTS, MAX_ROWS, MAX_TILES, FrameHeader, MalformedPayloadError

__all__ = ["Fp16Codec", "Fp16ZstdCodec", "QuantZstdCodec", "check_features"]


def check_features(x: Tensor) -> Tensor:
    """Refuse anything but a finite floating-point Tensor[T, C, D] within the container's limits (T, C, D >= 1)."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"features must be a floating-point Tensor[T, C, D], got {type(x).__name__}")
    if x.dim() != 3:
        raise ValueError(f"features must have shape [T, C, D], got {tuple(x.shape)}")
    t, c, d = x.shape
    if not (1 <= t <= MAX_TILES and 1 <= c <= MAX_ROWS and 1 <= d <= MAX_DIM and t * c * d <= MAX_ELEMENTS):
        raise ValueError(
            f"feature shape {tuple(x.shape)} outside 1 <= T <= {MAX_TILES}, C <= {MAX_ROWS}, "
            f"D <= {MAX_DIM}, T*C*D <= {MAX_ELEMENTS}"
        )
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

    def encode_sections(self, x: Tensor):
        x = check_features(x)
        return tuple(x.shape), [_to_fp16_bytes(x)]

    def decode_sections(self, header: FrameHeader, sections) -> Tensor:
        return _from_fp16_bytes(sections[0], header.feature_shape)


@register_codec
class Fp16ZstdCodec(Codec):
    """float16 + zstd."""

    format = "fp16-zstd/1"

    def __init__(self, level: int = 3):
        self.level = _check_level(level)

    def encode_sections(self, x: Tensor):
        x = check_features(x)
        return tuple(x.shape), [zstandard.ZstdCompressor(level=self.level).compress(_to_fp16_bytes(x))]

    def decode_sections(self, header: FrameHeader, sections) -> Tensor:
        t, c, d = header.feature_shape
        return _from_fp16_bytes(_zstd_decompress(sections[0], 2 * t * c * d), header.feature_shape)


_QPARAMS = struct.Struct("<Bff")


@register_codec
class QuantZstdCodec(Codec):
    """Per-tensor uniform quantisation to ``bits`` between min and max, then zstd. Max error (hi-lo)/(2^bits-1)/2."""

    format = "quant-zstd/1"
    n_sections = 2

    def __init__(self, bits: int = 8, level: int = 3):
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
            raise ValueError(f"bits must be an int in 1..16, got {bits!r}")
        self.bits, self.level = bits, _check_level(level)

    def encode_sections(self, x: Tensor):
        x = check_features(x)
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
        return tuple(x.shape), [_QPARAMS.pack(self.bits, lo32, hi32), data]

    def decode_sections(self, header: FrameHeader, sections) -> Tensor:
        params, data = sections
        if len(params) != _QPARAMS.size:
            raise MalformedPayloadError(f"quant params section has {len(params)} bytes, expected {_QPARAMS.size}")
        bits, lo, hi = _QPARAMS.unpack(params)
        if not 1 <= bits <= 16 or not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
            raise MalformedPayloadError(f"bad quant params bits={bits} lo={lo} hi={hi}")
        t, c, d = header.feature_shape
        width = 1 if bits <= 8 else 2
        raw = _zstd_decompress(data, width * t * c * d)
        q = np.frombuffer(raw, dtype="<u1" if width == 1 else "<u2").astype(np.float64)
        levels = (1 << bits) - 1
        if q.size and q.max() > levels:
            raise MalformedPayloadError(f"quantisation code {int(q.max())} exceeds {levels} for {bits} bits")
        x = lo + q * ((hi - lo) / levels)
        return torch.from_numpy(x.astype(np.float32)).reshape(t, c, d)
