"""Versioned, self-describing bitstream container shared by every codec (TOFC and the baselines).

Layout (little-endian)::

    offset  size  field
    0       4     magic b"TOFC"
    4       1     container version (1)
    5       1     codec id (see CODEC_IDS: 1 tofc/1, 2 fp16/1, 3 fp16-zstd/1, 4 quant-zstd/1, 5 jpeg/1, 6 webp/1)
    6       2     flags, must be 0
    8       16    model fingerprint (TOFC: hash of weights + config; baselines: hash of the format name)
    24      12    shape: three u32 (T, C, D) for features, (H, W, 3) for images
    36      2     number of sections S (<= MAX_SECTIONS)
    38      2     reserved, must be 0
    40      ...   S sections, each a u32 byte length followed by the bytes
    end-4   4     CRC32 of every preceding byte

The TOFC codec's sections are: expert indices (fixed-length bit packing), the z rANS string, the y rANS string.

Parsing checks, in order and before allocating anything: minimum length, magic, version, codec id, flags, section
count, every section length against the bytes that remain, no trailing bytes, CRC32, then (by the codec) the codec
id, fingerprint, shape limits and section sizes. Every failure raises a :class:`BitstreamError` subclass whose message
says what was wrong; ``BitstreamError`` subclasses ``ValueError`` so boundary code can catch either.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Sequence

__all__ = [
    "MAGIC", "VERSION", "CODEC_IDS", "Header", "pack", "parse", "peek_header", "check_feature_shape",
    "BitstreamError", "TruncatedError", "TrailingDataError", "BadMagicError", "UnsupportedVersionError",
    "UnknownCodecError", "CodecMismatchError", "ChecksumError", "FingerprintMismatch", "LimitError",
    "MalformedPayloadError",
]

MAGIC = b"TOFC"
VERSION = 1
CODEC_IDS = {"tofc/1": 1, "fp16/1": 2, "fp16-zstd/1": 3, "quant-zstd/1": 4, "jpeg/1": 5, "webp/1": 6}
_FORMATS = {v: k for k, v in CODEC_IDS.items()}

_HEAD = struct.Struct("<4sBBH16s3IHH")  # 40 bytes
_U32 = struct.Struct("<I")
HEADER_SIZE = _HEAD.size
MAX_SECTIONS = 8
MAX_PAYLOAD = 1 << 31
# Feature shape limits: far above LLaVA's needs (anyres: <= ~40 tiles x 729 x 1152), far below memory trouble.
MAX_TILES, MAX_ROWS, MAX_DIM, MAX_ELEMENTS = 4096, 8192, 16384, 1 << 28
MAX_IMAGE_SIDE = 16384


class BitstreamError(ValueError):
    """A payload that cannot be decoded. The ROS layer logs it (throttled) and drops the frame."""


class TruncatedError(BitstreamError):
    """The payload ends before the header, a section or the CRC does."""


class TrailingDataError(BitstreamError):
    """Bytes follow the CRC (an extended payload)."""


class BadMagicError(BitstreamError):
    """Not a TOFC container."""


class UnsupportedVersionError(BitstreamError):
    """Container version this decoder does not know."""


class UnknownCodecError(BitstreamError):
    """Codec id not in CODEC_IDS."""


class CodecMismatchError(BitstreamError):
    """A valid payload of another codec than the one decoding it."""


class ChecksumError(BitstreamError):
    """CRC32 mismatch: the payload was corrupted in transit."""


class FingerprintMismatch(BitstreamError):
    """Encoded with other model weights than the decoder holds."""


class LimitError(BitstreamError):
    """A declared shape, count or size exceeds the decoder's limits or disagrees with the model."""


class MalformedPayloadError(BitstreamError):
    """Sections that pass the CRC but do not decode (wrong sizes, bad values, bad inner format)."""


@dataclass(frozen=True)
class Header:
    """Parsed fixed header. ``format`` is e.g. "tofc/1"; ``shape`` is (T, C, D) or (H, W, 3)."""

    version: int
    codec_id: int
    format: str
    fingerprint: bytes
    shape: tuple[int, int, int]
    n_sections: int
    size: int  # total payload bytes


def pack(fmt: str, fingerprint: bytes, shape: Sequence[int], sections: Sequence[bytes]) -> bytes:
    """Build a container. Args: format name, 16-byte fingerprint, 3-int shape, up to MAX_SECTIONS byte strings."""
    if fmt not in CODEC_IDS:
        raise ValueError(f"unknown format {fmt!r}; known: {sorted(CODEC_IDS)}")
    if len(fingerprint) != 16:
        raise ValueError(f"fingerprint must be 16 bytes, got {len(fingerprint)}")
    if len(shape) != 3 or any(not 0 <= int(s) < 2**32 for s in shape):
        raise ValueError(f"shape must be three u32 values, got {tuple(shape)}")
    if len(sections) > MAX_SECTIONS:
        raise ValueError(f"at most {MAX_SECTIONS} sections, got {len(sections)}")
    parts = [_HEAD.pack(MAGIC, VERSION, CODEC_IDS[fmt], 0, bytes(fingerprint), *(int(s) for s in shape),
                        len(sections), 0)]
    for s in sections:
        parts += [_U32.pack(len(s)), bytes(s)]
    body = b"".join(parts)
    if len(body) + 4 > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(body) + 4} bytes exceeds {MAX_PAYLOAD}")
    return body + _U32.pack(zlib.crc32(body))


def peek_header(payload: bytes) -> Header:
    """Read the fixed header without checking sections or CRC (cheap; for routing and logging).

    Raises:
        TypeError: payload is not bytes-like.
        BitstreamError: too short, bad magic, unknown version/codec, nonzero flags or too many sections.
    """
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise TypeError(f"payload must be bytes, got {type(payload).__name__}")
    if len(payload) < HEADER_SIZE + 4:
        raise TruncatedError(f"payload of {len(payload)} bytes is shorter than the {HEADER_SIZE + 4}-byte minimum")
    if len(payload) > MAX_PAYLOAD:
        raise LimitError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    magic, version, codec_id, flags, fingerprint, s0, s1, s2, n_sections, reserved = _HEAD.unpack_from(payload)
    if magic != MAGIC:
        raise BadMagicError(f"bad magic {magic!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise UnsupportedVersionError(f"container version {version}, this decoder reads version {VERSION}")
    if codec_id not in _FORMATS:
        raise UnknownCodecError(f"unknown codec id {codec_id}; known: {sorted(_FORMATS)}")
    if flags != 0 or reserved != 0:
        raise MalformedPayloadError(f"flags/reserved fields must be 0, got {flags}/{reserved}")
    if n_sections > MAX_SECTIONS:
        raise LimitError(f"{n_sections} sections declared, at most {MAX_SECTIONS}")
    return Header(version, codec_id, _FORMATS[codec_id], bytes(fingerprint), (s0, s1, s2), n_sections,
                  len(payload))


def parse(payload: bytes) -> tuple[Header, list[bytes]]:
    """Validate the whole container (sections, trailing bytes, CRC32) and return the header and sections."""
    header = peek_header(payload)
    view = memoryview(payload)
    pos, end = HEADER_SIZE, len(payload) - 4
    sections = []
    for i in range(header.n_sections):
        if pos + 4 > end:
            raise TruncatedError(f"section {i}: length field at byte {pos} runs past the payload end ({end})")
        (n,) = _U32.unpack_from(view, pos)
        pos += 4
        if n > end - pos:
            raise TruncatedError(f"section {i}: declares {n} bytes but only {end - pos} remain before the CRC")
        sections.append(bytes(view[pos: pos + n]))
        pos += n
    if pos != end:
        raise TrailingDataError(f"{end - pos} unexpected bytes after the last section (extended or corrupted)")
    (crc,) = _U32.unpack_from(view, end)
    actual = zlib.crc32(view[:end])
    if crc != actual:
        raise ChecksumError(f"CRC32 mismatch: stored {crc:#010x}, computed {actual:#010x}")
    return header, sections


def check_feature_shape(shape: tuple[int, int, int]) -> None:
    """Raise LimitError unless (T, C, D) is within MAX_TILES, MAX_ROWS, MAX_DIM and MAX_ELEMENTS."""
    t, c, d = shape
    if t > MAX_TILES or c > MAX_ROWS or d > MAX_DIM or t * c * d > MAX_ELEMENTS:
        raise LimitError(f"feature shape {shape} exceeds limits T<={MAX_TILES}, C<={MAX_ROWS}, D<={MAX_DIM}, "
                         f"T*C*D<={MAX_ELEMENTS}")
