"""Codec weights as safetensors (entropy tables included) and the model fingerprint.

File layout: every tensor of the model's ``state_dict`` (float training parameters, the frozen integer networks,
the z medians and all quantized CDF tables), plus safetensors metadata::

    {"format": "tofc/1", "config": <HyperpriorConfig canonical JSON>, "fingerprint": <32 hex chars>}

Fingerprint: the first 16 bytes of SHA-256 over the canonical config JSON and every tensor in sorted name order
(name, dtype, shape, little-endian bytes). It is carried in every bitstream; a decoder holding other weights refuses
the payload. Never pickle / ``torch.load``: safetensors holds only raw tensors and JSON.
"""

from __future__ import annotations

import json
import os
import struct

import torch
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

from .fingerprint import FORMAT, canonical_tensors, model_fingerprint, tensors_fingerprint
from .hyperprior import HyperpriorConfig
from .selective import SelectiveEntropyModel

__all__ = ["FORMAT", "model_fingerprint", "save_model", "load_model", "model_to_bytes", "model_from_bytes"]

_MAX_HEADER = 1 << 24  # safetensors JSON header bound (16 MiB) checked before parsing

# Buffers that are empty on a freshly constructed module and sized by update(): resized before load_state_dict.
_RESIZABLE = ("_offset", "_quantized_cdf", "_cdf_length", "scale_table") + tuple(
    f"{p}{i}" for p in ("w_int", "b_int") for i in range(64)
)


def model_to_bytes(model: SelectiveEntropyModel) -> bytes:
    """Serialize an updated model to safetensors bytes."""
    model._require_updated()
    tensors = canonical_tensors(model)
    meta = {
        "format": FORMAT,
        "config": model.cfg.to_json(),
        "fingerprint": tensors_fingerprint(model.cfg.to_json(), tensors).hex(),
    }
    return _st_save(tensors, metadata=meta)


def save_model(model: SelectiveEntropyModel, path: str | os.PathLike) -> bytes:
    """Write an updated model to ``path`` (safetensors). Returns its fingerprint."""
    data = model_to_bytes(model)
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)  # atomic: a reader never sees half a file
    return model.fingerprint_bytes or model_fingerprint(model)


def safetensors_metadata(data: bytes, what: str = "a safetensors file") -> dict | None:
    """The ``__metadata__`` of a safetensors file's header (None if it has none), its length checked against the
    data and a bound before the JSON is parsed.

    Raises:
        ValueError: "not {what}: ..." for a short file, a header length beyond the file or the bound, bad JSON.
    """
    if len(data) < 8:
        raise ValueError(f"not {what}: shorter than 8 bytes")
    (n,) = struct.unpack("<Q", data[:8])
    if n > _MAX_HEADER or 8 + n > len(data):
        raise ValueError(f"not {what}: header length {n} exceeds the file or {_MAX_HEADER}")
    try:
        header = json.loads(data[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not {what}: bad JSON header ({exc})") from None
    return header.get("__metadata__") if isinstance(header, dict) else None


def _metadata(data: bytes) -> dict:
    meta = safetensors_metadata(data)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "config" not in meta:
        raise ValueError(f"safetensors metadata must have format={FORMAT!r} and a config, got {meta!r}")
    return meta


def model_from_bytes(data: bytes) -> SelectiveEntropyModel:
    """Load a model saved by :func:`save_model` from bytes (eval mode, ready for compress/decompress).

    Raises:
        ValueError: not a tofc/1 safetensors file, unknown/missing tensors, wrong shapes, a stored fingerprint that
            does not match the content, or integer networks that violate the exactness bound.
    """
    meta = _metadata(data)
    cfg = HyperpriorConfig.from_json(meta["config"])
    tensors = _st_load(data)
    model = SelectiveEntropyModel(cfg)
    own = model.state_dict()
    missing, unknown = set(own) - set(tensors), set(tensors) - set(own)
    if missing or unknown:
        raise ValueError(
            f"weights do not match the config: missing {sorted(missing)[:5]}, unknown {sorted(unknown)[:5]}"
        )
    for name, value in tensors.items():
        if own[name].shape != value.shape:
            owner_name, _, leaf = name.rpartition(".")
            if leaf not in _RESIZABLE:
                raise ValueError(f"tensor {name}: shape {tuple(value.shape)}, expected {tuple(own[name].shape)}")
            owner = model.get_submodule(owner_name)
            owner._buffers[leaf] = torch.empty_like(value)  # empty until update(): resize, then load
    model.load_state_dict(tensors, strict=True)
    for net in (model.router, model.experts.h_a, model.experts.h_s):
        net.check_exact_bound()
    model.fingerprint_bytes = model_fingerprint(model)
    stored = meta.get("fingerprint")
    if stored is not None and stored != model.fingerprint_bytes.hex():
        raise ValueError(f"stored fingerprint {stored} does not match the content {model.fingerprint_bytes.hex()}")
    model._require_updated()
    return model.eval()


def load_model(path: str | os.PathLike) -> SelectiveEntropyModel:
    """Load a model saved by :func:`save_model` (see :func:`model_from_bytes`)."""
    with open(path, "rb") as f:
        return model_from_bytes(f.read())
