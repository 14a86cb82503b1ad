"""Codecs by name: build one from a format name or a TOFC weights file, find the one a payload needs.

    codec = load_codec("fp16-zstd/1")              # by name (version optional: "fp16-zstd")
    codec = load_codec("quant-zstd", bits=6)       # options go to the constructor
    codec = load_codec("models/tofc_d1152.safetensors")   # a weights file -> the format its metadata names
                                                   # ("tofc/1", or "alignedvq/1" for AlignedVQ codebooks)
    payload = codec.encode(features, context)      # Tensor[T, C, D] (images: ndarray[H, W, 3] uint8)
    header = peek_header(payload)                  # format, fingerprints, image size, grid, shape
    codec = codec_for_header(header, loaded)       # the loaded learned codec, or a weightless one by name

Importing this module registers every built-in codec; it is the only module that imports them all.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import aligned_vq, baselines, image_codecs, tofc_codec  # noqa: F401  (registration side effect)
from .base import Codec, registered_codecs
from .bitstream import FingerprintMismatch, FrameHeader, UnknownCodecError

__all__ = ["available_codecs", "load_codec", "codec_for_header", "weights_format"]

# Formats whose decoder needs weights that do not travel in the payload.
LEARNED_FORMATS = frozenset({"tofc/1", "alignedvq/1"})


def available_codecs() -> list[str]:
    """Registered format names, e.g. ["fp16/1", "fp16-zstd/1", ...]."""
    return sorted(registered_codecs())


def _resolve(name: str) -> str:
    codecs = registered_codecs()
    if name in codecs:
        return name
    matches = sorted(f for f in codecs if f.split("/")[0] == name)
    if not matches:
        raise ValueError(f"unknown codec {name!r}; available: {sorted(codecs)} or a .safetensors weights path")
    return matches[-1]  # the newest version of that name


def load_codec(spec: str | os.PathLike, **options: Any) -> Codec:
    """Build a codec from a format name or a learned codec's weights file.

    Args:
        spec: "fp16/1", "fp16-zstd/1", "quant-zstd/1", "jpeg/1", "webp/1", "placeholder-zstd/1" (version
            optional), or the path of a learned codec's ``.safetensors`` file: its metadata names the format
            ("tofc/1" or "alignedvq/1"; both also accept ``model=`` or ``path=``).
        options: constructor options (``level`` for zstd, ``bits`` for quant-zstd, ``quality`` for jpeg/webp,
            ``device`` for TOFC).

    Raises:
        ValueError: unknown name, missing weights, or a bad weights file. TypeError: bad option names.
    """
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"spec must be a format name or a path, got {type(spec).__name__}")
    text = os.fspath(spec)
    if text.endswith(".safetensors") or (os.sep in text and Path(text).is_file()):
        return registered_codecs()[weights_format(text)](path=text, **options)
    return registered_codecs()[_resolve(text)](**options)


def weights_format(path: str | os.PathLike) -> str:
    """The learned format a weights file holds, from its safetensors metadata (files without one are TOFC's).

    Raises:
        ValueError: not a safetensors file, or a format that is not a learned codec's.
    """
    from .weights import safetensors_metadata

    with open(path, "rb") as f:
        head = f.read(8)
        size = int.from_bytes(head, "little") if len(head) == 8 else 0
        data = head + f.read(min(size, 1 << 24))
    meta = safetensors_metadata(data, f"a codec weights file ({os.fspath(path)})") or {}
    fmt = meta.get("format", "tofc/1")
    if fmt not in LEARNED_FORMATS:
        raise ValueError(f"{os.fspath(path)}: weights of format {fmt!r}; learned codecs are {sorted(LEARNED_FORMATS)}")
    return fmt


def codec_for_header(header: FrameHeader, loaded: Iterable[Codec] = ()) -> Codec:
    """The codec that decodes a payload with this header: one of ``loaded`` with its format and codec fingerprint,
    else a weightless codec built from the format name (their payloads are fully self-describing).

    Raises:
        FingerprintMismatch: a learned format whose weights none of ``loaded`` holds.
        UnknownCodecError: a format no codec is registered for.
    """
    for codec in loaded:
        if codec.format == header.format and codec.fingerprint == header.codec_fingerprint:
            return codec
    if header.format in LEARNED_FORMATS:
        held = [c.fingerprint.hex() for c in loaded if c.format == header.format]
        raise FingerprintMismatch(
            f"no loaded {header.format} codec has fingerprint {header.codec_fingerprint.hex()}"
            f" (this decoder holds {held or 'none'})"
        )
    codecs = registered_codecs()
    if header.format not in codecs:
        raise UnknownCodecError(f"no codec registered for {header.format!r}")
    return codecs[header.format]()
