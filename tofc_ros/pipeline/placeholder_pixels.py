"""Placeholder payload: zstd-compressed rgb8 pixels with a small checked header.

It lets the device → server graph run before the TOFC codec and the LLaVA split are wired in, and it says what
it is in the message's `format` ("placeholder-zstd-rgb8/1"): nobody should mistake it for feature compression.
It lives beside the pipeline, not in tofc_ros.codec, so a graph running it starts without importing torch.

Layout (little endian): magic b"TPX1", uint32 height, uint32 width, uint32 CRC32 of the pixels, zstd frame.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import zstandard

from tofc_ros.zstd_frames import decompress_exact

FORMAT = "placeholder-zstd-rgb8/1"
MAGIC = b"TPX1"
_HEADER = struct.Struct("<4sIII")


class PlaceholderPayloadError(ValueError):
    """A placeholder payload that is truncated, corrupt or larger than allowed."""


def encode(rgb: np.ndarray, level: int = 3) -> bytes:
    """Compress an RGB image [H, W, 3] uint8."""
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 array [H, W, 3], got {getattr(rgb, 'shape', type(rgb))}")
    pixels = np.ascontiguousarray(rgb).tobytes()
    header = _HEADER.pack(MAGIC, rgb.shape[0], rgb.shape[1], zlib.crc32(pixels))
    return header + zstandard.ZstdCompressor(level=level).compress(pixels)


def decode(payload: bytes, max_pixels: int) -> np.ndarray:
    """Decompress to [H, W, 3] uint8, checking the header's size before allocating."""
    if len(payload) < _HEADER.size:
        raise PlaceholderPayloadError(f"payload of {len(payload)} B is shorter than the {_HEADER.size} B header")
    magic, height, width, crc = _HEADER.unpack_from(payload)
    if magic != MAGIC:
        raise PlaceholderPayloadError(f"bad magic {magic!r}, expected {MAGIC!r}")
    if height == 0 or width == 0 or height * width > max_pixels:
        raise PlaceholderPayloadError(f"image size {width}x{height} outside 1..{max_pixels} pixels")
    expected = height * width * 3
    pixels = decompress_exact(payload[_HEADER.size:], expected, PlaceholderPayloadError)
    if zlib.crc32(pixels) != crc:
        raise PlaceholderPayloadError("pixel CRC32 mismatch")
    return np.frombuffer(pixels, dtype=np.uint8).reshape(height, width, 3)
