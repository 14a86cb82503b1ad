"""Pure torch/numpy feature codecs (no rclpy): DPC-KNN merging, entropy models, the frame container, baselines.

Yuan et al., TOFC: token merging (DPC-KNN, sec. IV-A) + a selective Laplacian hyperprior entropy model
(sec. IV-B/C) for the vision features of a split VLM. Public API::

    from tofc_ros.codec import dpc_knn_merge, load_codec, peek_header, BitstreamError
    merged, assignment, centres = dpc_knn_merge(features, n_c=16)      # [T, N, D] -> [T, C, D]
    codec = load_codec("model.safetensors")   # or "fp16/1", "fp16-zstd/1", "quant-zstd/1", "jpeg/1", "webp/1"
    payload = codec.encode(merged, FrameContext(backbone_fp, image_size, grid, vision_layers))
    header = peek_header(payload); merged_hat = codec.decode(payload)

Training: SelectiveEntropyModel(HyperpriorConfig(d=...)) -> forward() / aux_loss() -> update() -> save_model().

Modules: merging (DPC-KNN), laplacian (Laplace conditional), fixed_point (exact integer networks), hyperprior
(E hyperprior experts), selective (router + experts, CompressAI contract), entropy_coding (rANS calls), bitstream
(the frame container + errors), base (the Codec interface), fingerprint, weights (safetensors), baselines (feature
codecs), image_codecs (JPEG, WebP, placeholder), tofc_codec, registry (load_codec), fitting.
"""

from .base import Codec, register_codec
from .bitstream import (
    BitstreamError,
    ChecksumError,
    CodecMismatchError,
    FingerprintMismatch,
    FrameContext,
    FrameHeader,
    LimitError,
    MalformedPayloadError,
    TruncatedError,
    UnsupportedVersionError,
    parse,
    peek_header,
)
from .hyperprior import HyperpriorConfig
from .merging import MergeResult, dpc_knn_merge
from .registry import available_codecs, codec_for_header, load_codec
from .selective import SelectiveEntropyModel
from .tofc_codec import TofcCodec
from .weights import load_model, model_fingerprint, save_model

__all__ = [
    "BitstreamError",
    "ChecksumError",
    "CodecMismatchError",
    "FingerprintMismatch",
    "FrameContext",
    "FrameHeader",
    "LimitError",
    "MalformedPayloadError",
    "TruncatedError",
    "UnsupportedVersionError",
    "parse",
    "peek_header",
    "HyperpriorConfig",
    "MergeResult",
    "dpc_knn_merge",
    "Codec",
    "available_codecs",
    "codec_for_header",
    "load_codec",
    "register_codec",
    "SelectiveEntropyModel",
    "TofcCodec",
    "load_model",
    "model_fingerprint",
    "save_model",
]
