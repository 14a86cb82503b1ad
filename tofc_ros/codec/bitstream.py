"""The frame contract: one versioned, self-describing, checksummed container for every payload a device sends.

The payload alone tells a decoder and the server everything they need: which codec and which weights made it,
which backbone computed the features, the camera image's size, the tile grid, the shape of what is inside and where
in the vision encoder it was taken. A ROS message around it carries only routing and timing.

Layout, container version 2 (little-endian)::

    offset  size  field
    0       4     magic b"TOFC"
    4       1     container version (2)
    5       1     codec id (CODEC_IDS: 1 tofc/1, 2 fp16/1, 3 fp16-zstd/1, 4 quant-zstd/1, 5 jpeg/1, 6 webp/1,
                  7 placeholder-zstd/1, 8 rgb8/1, 9 alignedvq/1)
    6       2     flags, must be 0
    8       16    codec fingerprint (learned codecs: hash of weights + config; others: hash of the format name)
    24      16    backbone fingerprint (which vision tower made the features; zeros for image payloads)
    40      4     image height (the camera image, before tiling)
    44      4     image width
    48      2     grid rows (anyres tiles; 1 x 1 for one-tile models; 0 x 0 for image payloads)
    50      2     grid cols
    52      2     tiles T (thumbnail included; 0 for image payloads)
    54      2     tokens per tile C (merged features per tile, or all of them)
    56      4     feature dim D
    60      2     vision layers: encoder layers the device ran (the split point; 0 for image payloads)
    62      2     number of sections S (<= MAX_SECTIONS)
    64      ...   S sections, each a u32 byte length followed by the bytes
    end-4   4     CRC32 of every preceding byte

Sections per codec: tofc/1 expert indices (fixed-length bits), z rANS string, y rANS string; fp16/1 and fp16-zstd/1
the (compressed) float16 values; quant-zstd/1 parameters and codes; jpeg/1, webp/1 the image file; rgb8/1 the raw
pixels; placeholder-zstd/1 zstd-compressed rgb8 pixels; alignedvq/1 the statistics rANS string and the codebook
index rANS string (its features are the hidden state inside the tower: vision layers < the feature layer's).

Parsing checks, in order and before allocating anything: minimum length, magic, version, codec id, flags, section
count, the declared shapes against the limits, every section length against the bytes that remain, no trailing
bytes, CRC32. Every failure raises a :class:`BitstreamError` subclass whose message says what was wrong;
``BitstreamError`` subclasses ``ValueError`` so boundary code can catch either. Version 1 payloads (the shape-only
header of earlier releases) raise :class:`UnsupportedVersionError` naming both versions.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "MAGIC",
    "VERSION",
    "CODEC_IDS",
    "HEADER_SIZE",
    "NO_FINGERPRINT",
    "FrameHeader",
    "FrameContext",
    "pack",
    "parse",
    "peek_header",
    "format_fingerprint",
    "BitstreamError",
    "TruncatedError",
    "TrailingDataError",
    "BadMagicError",
    "UnsupportedVersionError",
    "UnknownCodecError",
    "CodecMismatchError",
    "ChecksumError",
    "FingerprintMismatch",
    "LimitError",
    "MalformedPayloadError",
]

MAGIC = b"TOFC"
VERSION = 2
CODEC_IDS = {
    "tofc/1": 1,
    "fp16/1": 2,
    "fp16-zstd/1": 3,
    "quant-zstd/1": 4,
    "jpeg/1": 5,
    "webp/1": 6,
    "placeholder-zstd/1": 7,
    "rgb8/1": 8,
    "alignedvq/1": 9,
}
_FORMATS = {v: k for k, v in CODEC_IDS.items()}
NO_FINGERPRINT = bytes(16)

_HEAD = struct.Struct("<4sBBH16s16sIIHHHHIHH")  # 64 bytes
_U32 = struct.Struct("<I")
HEADER_SIZE = _HEAD.size
MAX_SECTIONS = 8
MAX_PAYLOAD = 1 << 31
# Shape limits: far above LLaVA's needs (anyres: <= ~40 tiles x 729 x 1152), far below memory trouble.
MAX_TILES, MAX_ROWS, MAX_DIM, MAX_ELEMENTS = 4096, 8192, 16384, 1 << 28
MAX_IMAGE_SIDE = 16384
MAX_GRID = 256


class BitstreamError(ValueError):
    """A payload that cannot be decoded. The ROS layer logs it (throttled) and answers DECODE_ERROR."""


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
    """Encoded with other model weights (codec or backbone) than the decoder holds."""


class LimitError(BitstreamError):
    """A declared shape, count or size exceeds the decoder's limits or disagrees with the model."""


class MalformedPayloadError(BitstreamError):
    """Sections that pass the CRC but do not decode (wrong sizes, bad values, bad inner format)."""


def format_fingerprint(fmt: str) -> bytes:
    """The 16-byte fingerprint of a codec without weights: the hash of its format name."""
    return hashlib.sha256(fmt.encode()).digest()[:16]


@dataclass(frozen=True)
class FrameContext:
    """What the device knows about a frame besides the data it codes (the encoder pipeline fills it in).

    Attributes:
        backbone_fingerprint: 16 bytes identifying the vision tower (NO_FINGERPRINT for image payloads).
        image_size: (height, width) of the camera image.
        grid: (rows, cols) of the anyres tiles.
        vision_layers: vision encoder layers run on the device (the split point).
    """

    backbone_fingerprint: bytes = NO_FINGERPRINT
    image_size: tuple[int, int] = (0, 0)
    grid: tuple[int, int] = (0, 0)
    vision_layers: int = 0


@dataclass(frozen=True)
class FrameHeader:
    """The parsed fixed header of a container (see the module docstring for the layout).

    ``format`` is e.g. "tofc/1"; ``size`` is the whole payload in bytes. Image payloads have n_tiles,
    tokens_per_tile and feature_dim 0.
    """

    format: str
    codec_fingerprint: bytes
    backbone_fingerprint: bytes
    image_size: tuple[int, int]
    grid: tuple[int, int]
    n_tiles: int
    tokens_per_tile: int
    feature_dim: int
    vision_layers: int
    n_sections: int
    size: int
    version: int = VERSION

    @property
    def feature_shape(self) -> tuple[int, int, int]:
        """(T, C, D) of the features inside (zeros for image payloads)."""
        return (self.n_tiles, self.tokens_per_tile, self.feature_dim)

    @property
    def kind(self) -> str:
        """ "features" or "image"."""
        return "features" if self.feature_dim else "image"

    def describe(self) -> str:
        """One line for logs: format, image size, grid and shape."""
        h, w = self.image_size
        if self.kind == "image":
            return f"{self.format} {w}x{h} image, {self.size} B"
        t, c, d = self.feature_shape
        return (
            f"{self.format} {w}x{h} image, grid {self.grid[0]}x{self.grid[1]}, [{t}, {c}, {d}] after "
            f"{self.vision_layers} vision layers, {self.size} B"
        )


def _check_shape(image_size, grid, t: int, c: int, d: int, vision_layers: int) -> None:
    h, w = image_size
    rows, cols = grid
    if not (0 <= h <= MAX_IMAGE_SIDE and 0 <= w <= MAX_IMAGE_SIDE):
        raise LimitError(f"image size {w}x{h} exceeds {MAX_IMAGE_SIDE} per side")
    if not (0 <= rows <= MAX_GRID and 0 <= cols <= MAX_GRID):
        raise LimitError(f"grid {rows}x{cols} exceeds {MAX_GRID} per side")
    if t > MAX_TILES or c > MAX_ROWS or d > MAX_DIM or t * c * d > MAX_ELEMENTS:
        raise LimitError(
            f"feature shape {(t, c, d)} exceeds limits T<={MAX_TILES}, C<={MAX_ROWS}, D<={MAX_DIM}, "
            f"T*C*D<={MAX_ELEMENTS}"
        )
    if (t == 0) != (d == 0) or (d == 0) != (c == 0):
        raise LimitError(f"feature shape {(t, c, d)}: T, C and D are either all zero (image) or all positive")
    if not 0 <= vision_layers < 1 << 16:
        raise LimitError(f"vision layers {vision_layers} out of range")


def pack(
    fmt: str, codec_fingerprint: bytes, context: FrameContext, shape: Sequence[int], sections: Sequence[bytes]
) -> bytes:
    """Build a container.

    Args:
        fmt: registered format name.
        codec_fingerprint: 16 bytes.
        context: backbone fingerprint, image size, grid and vision layers of the frame.
        shape: (T, C, D) of feature payloads, (0, 0, 0) for image payloads.
        sections: up to MAX_SECTIONS byte strings.
    """
    if fmt not in CODEC_IDS:
        raise ValueError(f"unknown format {fmt!r}; known: {sorted(CODEC_IDS)}")
    if len(codec_fingerprint) != 16 or len(context.backbone_fingerprint) != 16:
        raise ValueError(
            "codec and backbone fingerprints must be 16 bytes each, got "
            f"{len(codec_fingerprint)} and {len(context.backbone_fingerprint)}"
        )
    if len(shape) != 3:
        raise ValueError(f"shape must be (T, C, D), got {tuple(shape)}")
    t, c, d = (int(v) for v in shape)
    try:
        _check_shape(context.image_size, context.grid, t, c, d, context.vision_layers)
    except LimitError as exc:
        raise ValueError(str(exc)) from None
    if len(sections) > MAX_SECTIONS:
        raise ValueError(f"at most {MAX_SECTIONS} sections, got {len(sections)}")
    (h, w), (rows, cols) = context.image_size, context.grid
    parts = [
        _HEAD.pack(
            MAGIC,
            VERSION,
            CODEC_IDS[fmt],
            0,
            bytes(codec_fingerprint),
            bytes(context.backbone_fingerprint),
            h,
            w,
            rows,
            cols,
            t,
            c,
            d,
            context.vision_layers,
            len(sections),
        )
    ]
    for s in sections:
        parts += [_U32.pack(len(s)), bytes(s)]
    body = b"".join(parts)
    if len(body) + 4 > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(body) + 4} bytes exceeds {MAX_PAYLOAD}")
    return body + _U32.pack(zlib.crc32(body))


def peek_header(payload: bytes) -> FrameHeader:
    """Read and check the fixed header without the sections or the CRC (cheap: for routing and logging).

    Raises:
        TypeError: payload is not bytes-like.
        BitstreamError: too short, bad magic, unknown version or codec, nonzero flags, too many sections or shapes
            beyond the limits.
    """
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise TypeError(f"payload must be bytes, got {type(payload).__name__}")
    if len(payload) >= 5 and bytes(payload[:4]) == MAGIC and payload[4] != VERSION:
        raise UnsupportedVersionError(
            f"container version {payload[4]}, this decoder reads version {VERSION}"
            + (
                " (version 1 payloads carried only a shape: re-encode them with this release's device node)"
                if payload[4] == 1
                else ""
            )
        )
    if len(payload) < HEADER_SIZE + 4:
        raise TruncatedError(f"payload of {len(payload)} bytes is shorter than the {HEADER_SIZE + 4}-byte minimum")
    if len(payload) > MAX_PAYLOAD:
        raise LimitError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    (magic, version, codec_id, flags, codec_fp, backbone_fp, h, w, rows, cols, t, c, d, layers, n_sections) = (
        _HEAD.unpack_from(payload)
    )
    if magic != MAGIC:
        raise BadMagicError(f"bad magic {magic!r}, expected {MAGIC!r}")
    if codec_id not in _FORMATS:
        raise UnknownCodecError(f"unknown codec id {codec_id}; known: {sorted(_FORMATS)}")
    if flags != 0:
        raise MalformedPayloadError(f"flags must be 0, got {flags}")
    if n_sections > MAX_SECTIONS:
        raise LimitError(f"{n_sections} sections declared, at most {MAX_SECTIONS}")
    _check_shape((h, w), (rows, cols), t, c, d, layers)
    return FrameHeader(
        _FORMATS[codec_id],
        bytes(codec_fp),
        bytes(backbone_fp),
        (h, w),
        (rows, cols),
        t,
        c,
        d,
        layers,
        n_sections,
        len(payload),
        version,
    )


def parse(payload: bytes) -> tuple[FrameHeader, list[bytes]]:
    """Validate the whole container (header, sections, trailing bytes, CRC32); return the header and sections."""
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
        sections.append(bytes(view[pos : pos + n]))
        pos += n
    if pos != end:
        raise TrailingDataError(f"{end - pos} unexpected bytes after the last section (extended or corrupted)")
    (crc,) = _U32.unpack_from(view, end)
    actual = zlib.crc32(view[:end])
    if crc != actual:
        raise ChecksumError(f"CRC32 mismatch: stored {crc:#010x}, computed {actual:#010x}")
    return header, sections
