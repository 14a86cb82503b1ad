"""The codec interface every payload format implements, and the table of formats by name.

A codec turns one frame's data into the sections of a :mod:`~tofc_ros.codec.bitstream` container and back. The
container (magic, version, fingerprints, image size, grid, shapes, CRC) is written and checked here, once, for all
codecs, so a codec only defines its sections:

    encode_sections(data) -> (shape (T, C, D) or (0, 0, 0), [bytes, ...])
    decode_sections(header, sections) -> data            (header already validated against this codec)

``encode(data, context)`` and ``decode(payload)`` wrap them for callers that hold a whole payload. Feature codecs code
``Tensor[T, C, D]``; image codecs code ``ndarray[H, W, 3]`` uint8.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from .bitstream import (
    CODEC_IDS,
    CodecMismatchError,
    FingerprintMismatch,
    FrameContext,
    FrameHeader,
    LimitError,
    format_fingerprint,
    pack,
    parse,
)

__all__ = ["Codec", "register_codec", "registered_codecs"]

_REGISTRY: dict[str, Callable[..., Codec]] = {}


class Codec(ABC):
    """A feature (or image) codec. Subclasses set ``format`` ("name/version"), ``kind`` and ``n_sections``.

    Attributes:
        format: the format name written into every payload, e.g. "fp16-zstd/1".
        kind: "features" (codes Tensor[T, C, D]) or "image" (codes ndarray[H, W, 3] uint8).
        n_sections: how many sections its payloads hold.
    """

    format: str = ""
    kind: str = "features"
    n_sections: int = 1

    @property
    def fingerprint(self) -> bytes:
        """16 bytes carried in every payload; the decoder refuses others. Codecs without weights: hash of the
        format name."""
        return format_fingerprint(self.format)

    @abstractmethod
    def encode_sections(self, data: Any) -> tuple[tuple[int, int, int], list[bytes]]:
        """Code one frame's data: its (T, C, D) shape ((0, 0, 0) for images) and the payload's sections.

        Raises:
            TypeError, ValueError: data of the wrong type, shape or range.
        """

    @abstractmethod
    def decode_sections(self, header: FrameHeader, sections: Sequence[bytes]) -> Any:
        """Decode sections whose container has been parsed and matched to this codec (raises BitstreamError)."""

    def encode(self, data: Any, context: FrameContext | None = None) -> bytes:
        """One frame's data -> a self-describing payload. ``context``: what the device knows of the frame
        (backbone, image size, grid, split); image codecs fill in the image size themselves."""
        context = context or FrameContext()
        shape, sections = self.encode_sections(data)
        if self.kind == "image":
            context = FrameContext(
                context.backbone_fingerprint,
                (int(data.shape[0]), int(data.shape[1])),
                context.grid,
                context.vision_layers,
            )
        return pack(self.format, self.fingerprint, context, shape, sections)

    def decode(self, payload: bytes) -> Any:
        """Decode a payload produced by :meth:`encode` (raises BitstreamError on any problem)."""
        header, sections = parse(payload)
        self.check_header(header, len(sections))
        return self.decode_sections(header, sections)

    def check_header(self, header: FrameHeader, n_sections: int) -> None:
        """Refuse a container of another format, other weights, the wrong kind or section count."""
        if header.format != self.format:
            raise CodecMismatchError(f"payload is {header.format!r}, this decoder is {self.format!r}")
        if header.codec_fingerprint != self.fingerprint:
            raise FingerprintMismatch(
                f"payload codec fingerprint {header.codec_fingerprint.hex()} does not match "
                f"this decoder's {self.fingerprint.hex()} (encoded with other weights)"
            )
        if header.kind != self.kind:
            raise LimitError(f"{self.format} payloads hold {self.kind}, the header declares {header.kind}")
        if n_sections != self.n_sections:
            raise CodecMismatchError(f"{self.format} payload must have {self.n_sections} sections, got {n_sections}")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.format} {self.fingerprint.hex()[:8]}>"


def register_codec(factory: type) -> type:
    """Class decorator: register a Codec subclass under its ``format``."""
    fmt = getattr(factory, "format", "")
    if fmt not in CODEC_IDS:
        raise ValueError(f"codec format {fmt!r} has no id in bitstream.CODEC_IDS")
    _REGISTRY[fmt] = factory
    return factory


def registered_codecs() -> dict[str, Callable[..., Codec]]:
    """Format name -> codec class, for the codecs whose modules have been imported (see ``registry``)."""
    return dict(_REGISTRY)
