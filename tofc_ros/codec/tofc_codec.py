"""The TOFC feature codec ("tofc/1"): selective Laplacian hyperprior + rANS in the shared container.

Yuan et al., TOFC. Input is the *merged* features (see :func:`~tofc_ros.codec.merging.dpc_knn_merge`)::

    features[T, C, D] --router/h_a/h_s (exact integer nets)--> experts, z symbols, y symbols
                      --rANS (1 call for z, 1 for y)--> sections [expert bits, z string, y string]
                      (in the shared container: fingerprints, image size, grid, (T, C, D), CRC32)

Decoding is bit-exact across machines, thread counts and devices (see fixed_point.py).
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from torch import Tensor

from .base import Codec, register_codec
from .baselines import check_features
from .bitstream import FrameHeader, LimitError, MalformedPayloadError
from .selective import SelectiveEntropyModel
from .weights import load_model

__all__ = ["TofcCodec", "pack_indices", "unpack_indices"]


def pack_indices(values: Tensor, bits: int) -> bytes:
    """LongTensor[M] of values < 2^bits -> ceil(M * bits / 8) bytes, MSB first, zero padding."""
    if bits == 0:
        return b""
    v = values.cpu().numpy().astype(np.int64)
    bit_matrix = (v[:, None] >> np.arange(bits - 1, -1, -1)) & 1
    return np.packbits(bit_matrix.astype(np.uint8).reshape(-1)).tobytes()


def unpack_indices(data: bytes, count: int, bits: int, limit: int) -> Tensor:
    """Inverse of :func:`pack_indices`; validates the size, zero padding and every value < limit."""
    expected = math.ceil(count * bits / 8)
    if len(data) != expected:
        raise MalformedPayloadError(
            f"expert index section has {len(data)} bytes, {count} x {bits} bits needs {expected}"
        )
    if bits == 0:
        return torch.zeros(count, dtype=torch.int64)
    flat = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
    if flat[count * bits :].any():
        raise MalformedPayloadError("nonzero padding bits after the expert indices")
    weights = 1 << np.arange(bits - 1, -1, -1)
    values = (flat[: count * bits].reshape(count, bits).astype(np.int64) * weights).sum(1)
    if values.size and values.max() >= limit:
        raise MalformedPayloadError(f"expert index {int(values.max())} >= n_e={limit}")
    return torch.from_numpy(values)


@register_codec
class TofcCodec(Codec):
    """TOFC codec around an updated :class:`SelectiveEntropyModel`.

    Args:
        model: an updated model, or
        path: a ``.safetensors`` file written by :func:`~tofc_ros.codec.weights.save_model`.
        device: where the integer networks run when decoding (results are identical on any device).
    """

    format = "tofc/1"
    n_sections = 3

    def __init__(
        self,
        model: SelectiveEntropyModel | None = None,
        path: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
    ):
        if (model is None) == (path is None):
            raise ValueError("TofcCodec needs exactly one of model= or path= (a .safetensors file)")
        if path is not None:
            model = load_model(path)
        if not isinstance(model, SelectiveEntropyModel):
            raise TypeError(f"model must be a SelectiveEntropyModel, got {type(model).__name__}")
        model._require_updated()  # raises "Uninitialized CDFs. Run update() first"
        if model.fingerprint_bytes is None:
            raise ValueError("model has no fingerprint: call update() or load it with load_model()")
        self.model, self.device = model.eval(), device

    @property
    def fingerprint(self) -> bytes:
        return self.model.fingerprint_bytes

    def encode_sections(self, features: Tensor):
        """Tensor[T, C, D] merged features -> sections (raises TypeError/ValueError on bad input)."""
        check_features(features)
        out = self.model.compress(features)
        return out["shape"], [pack_indices(out["experts"], self.model.index_bits), *out["strings"]]

    def decode_sections(self, header: FrameHeader, sections) -> Tensor:
        """Sections -> Tensor[T, C, D] float32, bit-exact; raises BitstreamError subclasses."""
        experts, z_string, y_string = sections
        t, c, d = header.feature_shape
        if d != self.model.cfg.d:
            raise LimitError(f"payload feature dim {d} does not match the codec's d={self.model.cfg.d}")
        idx = unpack_indices(experts, t * c, self.model.index_bits, self.model.cfg.n_e)
        try:
            return self.model.decompress([z_string, y_string], idx, (t, c, d), device=self.device)["x_hat"]
        except (ValueError, RuntimeError) as exc:  # e.g. a string too short for the symbols it must hold
            raise MalformedPayloadError(f"entropy decoding failed: {exc}") from None
