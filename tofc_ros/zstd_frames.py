"""zstd decompression that never lets a frame header choose the allocation size (no torch: the placeholder path
and the codec baselines both use it)."""

from __future__ import annotations

import zstandard


def decompress_exact(data: bytes, expected: int, error: type[Exception]) -> bytes:
    """Decompress a zstd frame that must hold exactly `expected` bytes.

    Raises:
        error: the frame is corrupt, declares another size, or decompresses to another size.
    """
    try:
        declared = zstandard.frame_content_size(data)
    except zstandard.ZstdError as exc:
        raise error(f"bad zstd frame: {exc}") from None
    if declared not in (-1, expected):  # -1: size not written (streamed frames); max_output_size bounds it
        raise error(f"zstd frame declares {declared} bytes, expected {expected}")
    try:
        out = zstandard.ZstdDecompressor().decompress(data, max_output_size=expected)
    except zstandard.ZstdError as exc:
        raise error(f"zstd decompression failed: {exc}") from None
    if len(out) != expected:
        raise error(f"zstd produced {len(out)} bytes, expected {expected}")
    return out
