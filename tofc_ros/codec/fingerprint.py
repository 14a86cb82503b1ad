"""The 16-byte fingerprint of a learned codec: what makes a decoder refuse payloads of other weights.

The first 16 bytes of SHA-256 over the format name, the canonical config JSON and every tensor of the state dict in
sorted name order (name, dtype, shape, little-endian bytes). It is computed from the stored integer networks and
CDF tables, so two machines holding the same file agree on it. Used by ``SelectiveEntropyModel.update`` and by
``weights`` (saving and loading); neither imports the other for it.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch import nn

__all__ = ["FORMAT", "canonical_tensors", "tensors_fingerprint", "model_fingerprint"]

FORMAT = "tofc/1"


def canonical_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as contiguous CPU copies, in sorted name order."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in sorted(model.state_dict().items())}


def tensors_fingerprint(config_json: str, tensors: dict[str, torch.Tensor], format: str = FORMAT) -> bytes:
    """Fingerprint of a codec format, a config JSON and a name -> tensor mapping."""
    h = hashlib.sha256()
    h.update(format.encode() + b"\0" + config_json.encode() + b"\0")
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        arr = t.numpy()
        arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        h.update(f"{name}|{t.dtype}|{list(t.shape)}|".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.digest()[:16]


def model_fingerprint(model) -> bytes:
    """16-byte fingerprint of a SelectiveEntropyModel's canonical weights + config."""
    return tensors_fingerprint(model.cfg.to_json(), canonical_tensors(model))
