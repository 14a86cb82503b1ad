"""One codec interface for devices and servers, and a registry of codecs by format name.

    codec = load_codec("fp16-zstd/1")              # baselines by name (version optional: "fp16-zstd")
    codec = load_codec("quant-zstd", bits=6)       # options go to the constructor
    codec = load_codec("models/tofc_d1152.safetensors")   # a TOFC model file -> "tofc/1"
    payload = codec.encode(features)               # Tensor[T, C, D] (images: ndarray[H, W, 3] uint8)
    header = peek_header(payload)                  # format, fingerprint, shape without decoding
    features = codec.decode(payload)               # raises BitstreamError on anything wrong

Every payload is a :mod:`~tofc_ros.codec.bitstream` container, so any codec's output can be routed by its header.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Iterable

from .bitstream import CODEC_IDS, CodecMismatchError, FingerprintMismatch, Header, UnknownCodecError, parse
from .bitstream import peek_header

__all__ = ["Codec", "register_codec", "available_codecs", "load_codec", "codec_for_payload", "peek_header"]

_REGISTRY: dict[str, Callable[..., "Codec"]] = {}


class Codec(ABC):
    """A feature (or image) codec. Subclasses set ``format`` ("name/version") and ``kind``.

    Attributes:
        format: the format name written into every payload, e.g. "fp16-zstd/1".
        kind: "features" (encode Tensor[T, C, D] -> bytes) or "image" (encode ndarray[H, W, 3] uint8 -> bytes).
    """

    format: str = ""
    kind: str = "features"

    @property
    def fingerprint(self) -> bytes:
        """16 bytes carried in every payload; the decoder refuses others. Baselines: hash of the format name."""
        return hashlib.sha256(self.format.encode()).digest()[:16]

    @abstractmethod
    def encode(self, data: Any) -> bytes:
        """Encode one image's features (or one image) into a self-describing payload."""

    @abstractmethod
    def decode(self, payload: bytes) -> Any:
        """Decode a payload produced by :meth:`encode` (raises BitstreamError on any problem)."""

    def _open(self, payload: bytes, n_sections: int) -> tuple[Header, list[bytes]]:
        """Parse and check the container belongs to this codec and model."""
        header, sections = parse(payload)
        if header.format != self.format:
            raise CodecMismatchError(f"payload is {header.format!r}, this decoder is {self.format!r}")
        if header.fingerprint != self.fingerprint:
            raise FingerprintMismatch(f"payload fingerprint {header.fingerprint.hex()} does not match this "
                                      f"decoder's {self.fingerprint.hex()} (encoded with other weights)")
        if len(sections) != n_sections:
            raise CodecMismatchError(f"{self.format} payload must have {n_sections} sections, got {len(sections)}")
        return header, sections

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.format} {self.fingerprint.hex()[:8]}>"


def register_codec(factory: Callable[..., Codec] | type) -> Callable[..., Codec] | type:
    """Class decorator: register a Codec subclass under its ``format``."""
    fmt = getattr(factory, "format", "")
    if fmt not in CODEC_IDS:
        raise ValueError(f"codec format {fmt!r} has no id in bitstream.CODEC_IDS")
    _REGISTRY[fmt] = factory
    return factory


def available_codecs() -> list[str]:
    """Registered format names, e.g. ["fp16/1", "fp16-zstd/1", ...]."""
    _ensure_builtin()
    return sorted(_REGISTRY)


def _ensure_builtin() -> None:
    from . import baselines, tofc_codec  # noqa: F401  (registration side effect)


def _resolve(name: str) -> str:
    if name in _REGISTRY:
        return name
    matches = sorted(f for f in _REGISTRY if f.split("/")[0] == name)
    if not matches:
        raise ValueError(f"unknown codec {name!r}; available: {sorted(_REGISTRY)} or a .safetensors model path")
    return matches[-1]  # the newest version of that name


def load_codec(spec: str | os.PathLike, **options: Any) -> Codec:
    """Build a codec from a format name or a TOFC model file.

    Args:
        spec: "fp16/1", "fp16-zstd/1", "quant-zstd/1", "jpeg/1", "webp/1" (version optional), or the path of a
            TOFC ``.safetensors`` model ("tofc/1" also accepts ``model=`` or ``path=``).
        options: constructor options (``level`` for zstd, ``bits`` for quant-zstd, ``quality`` for jpeg/webp).

    Raises:
        ValueError: unknown name, missing model, or a bad model file. TypeError: bad option names.
    """
    _ensure_builtin()
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"spec must be a format name or a path, got {type(spec).__name__}")
    text = os.fspath(spec)
    if text.endswith(".safetensors") or (os.sep in text and Path(text).is_file()):
        return _REGISTRY["tofc/1"](path=text, **options)
    return _REGISTRY[_resolve(text)](**options)


def codec_for_payload(payload: bytes, models: Iterable[Codec] = ()) -> Codec:
    """The codec that decodes ``payload``: one of ``models`` with a matching format and fingerprint, else a
    baseline built from the header (baselines are fully self-describing).

    Raises:
        BitstreamError: bad header, or a TOFC payload whose fingerprint matches none of ``models``.
    """
    _ensure_builtin()
    header = peek_header(payload)
    for codec in models:
        if codec.format == header.format and codec.fingerprint == header.fingerprint:
            return codec
    if header.format == "tofc/1":
        raise FingerprintMismatch(f"no loaded TOFC model has fingerprint {header.fingerprint.hex()}")
    if header.format not in _REGISTRY:
        raise UnknownCodecError(f"no codec registered for {header.format!r}")
    return _REGISTRY[header.format]()
