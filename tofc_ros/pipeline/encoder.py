"""The device's frame encoder: RGB image in, one self-describing payload and its timings out (no rclpy).

    FeatureEncoder (TOFC and the feature baselines):
        rgb -> DeviceHalf (tiles -> vision tower) -> [T, n_v, d] -> DPC-KNN merge -> [T, n_c, d] -> codec -> payload
    FeatureEncoder with a DeviceHalf cut inside the tower (AlignedVQ; the codec names the split layer X):
        rgb -> tiles -> embeddings + layers 1..X -> hidden [T, N, d] (-> optional DPC-KNN, CLS kept) -> codec
    ImageEncoder (JPEG, WebP, the placeholder): rgb -> codec -> payload (the server runs the vision tower)

The device node, replay, offline evaluation, the latency model and the benchmarks all encode through these objects,
built from the same parameters by :func:`make_encoder`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import numpy as np

from tofc_ros.pipeline.records import DeviceTimings, EncodedFrame

__all__ = ["FrameEncoder", "FeatureEncoder", "ImageEncoder", "codec_from_config", "make_encoder", "point_encoders"]


class FrameEncoder(Protocol):
    """What the device node calls for every frame it publishes."""

    def encode(self, rgb: np.ndarray) -> EncodedFrame:
        """Encode an RGB image [H, W, 3] uint8."""
        ...


def _ms(start: float, end: float) -> float:
    return (end - start) * 1e3


class FeatureEncoder:
    """Vision tower + DPC-KNN merging + a feature codec (TOFC or a baseline).

    Args:
        device_half: the vision side of the backbone (tofc_ros.backbones.DeviceHalf).
        codec: a feature codec (tofc_ros.codec.Codec of kind "features").
        n_clusters: merged features per tile; 0 or >= the tower's tokens per tile sends every token unmerged.
        k: DPC-KNN neighbours.
        merge: replaces DPC-KNN (``merge(features [T, N, d], n_c) -> [T, n_c, d]``); for ablation benchmarks only.
        keep_clusters: return DPC-KNN's assignment and centres with each frame (the debug overlay).
    """

    def __init__(
        self,
        device_half,
        codec,
        n_clusters: int,
        k: int = 5,
        merge: Callable | None = None,
        keep_clusters: bool = False,
    ) -> None:
        if codec.kind != "features":
            raise ValueError(f"{codec.format} codes images, not features: use ImageEncoder")
        split = device_half.split_layer
        if getattr(codec, "split_layer", split) != split:
            raise ValueError(
                f"{codec.format} codes the hidden state after layer {codec.split_layer}; this vision tower stops "
                f"after {split}"
            )
        self._inside = split < device_half.spec.vision_layers_needed  # a split inside the tower (AlignedVQ)
        self.device_half = device_half
        self.codec = codec
        self.n_clusters = n_clusters
        self.k = k
        self._merge = merge
        self.keep_clusters = keep_clusters
        self._backbone = bytes.fromhex(device_half.fingerprint) if device_half.fingerprint else bytes(16)

    def encode(self, rgb: np.ndarray, n_clusters: int | None = None) -> EncodedFrame:
        """Encode an RGB image [H, W, 3] uint8; ``n_clusters`` overrides the encoder's own (a two-stage refinement
        asks for its crop's detail)."""
        import torch  # here, not at module level: image encoders start without the vision stack

        from tofc_ros.backbones.vision_split import leading_cls
        from tofc_ros.codec import FrameContext
        from tofc_ros.codec.merging import dpc_knn_merge, merge_keeping_first

        with torch.inference_mode():
            t0 = time.perf_counter()
            vision = self.device_half.encode_image(rgb)
            t1 = time.perf_counter()
            features = vision.features.float()
            clusters = None
            n_c = self.n_clusters if n_clusters is None else n_clusters
            if self._inside and 0 < n_c < features.shape[1] - leading_cls(self.device_half.spec):
                # Merged before the server's remaining layers, which attend over whatever tokens arrive; CLIP's
                # CLS stays first and unmerged (the final selection drops it).
                features = merge_keeping_first(features, n_c, self.k, leading_cls(self.device_half.spec))
            elif not self._inside and 0 < n_c < features.shape[1]:
                if self._merge is None:
                    merged = dpc_knn_merge(features, n_c, k=self.k)
                    features = merged.merged
                    if self.keep_clusters:
                        clusters = (merged.assignment.numpy(), merged.centres.numpy())
                else:
                    features = self._merge(features, n_c)
            t2 = time.perf_counter()
            context = FrameContext(self._backbone, vision.image_size, vision.grid, self.device_half.split_layer)
            payload = self.codec.encode(features.cpu(), context)
            t3 = time.perf_counter()
        timings = DeviceTimings(_ms(t0, t1), _ms(t1, t2), _ms(t2, t3))
        return EncodedFrame(payload, self.codec.format, timings, clusters)


class ImageEncoder:
    """Send the image itself with an image codec (the paper's JPEG/WebP upload baselines, or the placeholder)."""

    def __init__(self, codec) -> None:
        if codec.kind != "image":
            raise ValueError(f"{codec.format} codes features, not images: use FeatureEncoder")
        self.codec = codec

    def encode(self, rgb: np.ndarray) -> EncodedFrame:
        t0 = time.perf_counter()
        payload = self.codec.encode(rgb)
        return EncodedFrame(payload, self.codec.format, DeviceTimings(encode_ms=_ms(t0, time.perf_counter())))


def codec_from_config(config):
    """The codec a DeviceConfig (or ServerConfig) names: TOFC weights from ``codec_path``, baselines by name."""
    from tofc_ros.codec import load_codec
    from tofc_ros.resources import resolve_resource

    if config.codec == "tofc":
        return load_codec(str(resolve_resource(config.codec_path)), device=config.device)
    if config.codec == "alignedvq":
        if not config.alignedvq_path:
            raise ValueError("codec 'alignedvq' needs alignedvq_path (the codebooks, which name the split layer)")
        return load_codec(str(resolve_resource(config.alignedvq_path)), device=config.device)
    options = {
        "fp16": {},
        "fp16-zstd": {"level": config.zstd_level},
        "quant-zstd": {"bits": config.quant_bits, "level": config.zstd_level},
        "jpeg": {"quality": config.image_quality},
        "webp": {"quality": config.image_quality},
        "rgb8": {},
        "placeholder-zstd": {"level": config.zstd_level},
    }
    return load_codec(config.codec, **options[config.codec])


def point_encoders(bundle, device_half=None, k: int = 5, keep_clusters: bool = False) -> list[FrameEncoder]:
    """One encoder per operating point of a bundle (``codec.points.OperatingPoints``), in its order; feature points
    share one vision tower (``device_half``, required when the bundle has any)."""
    out: list[FrameEncoder] = []
    for point in bundle.points:
        codec = bundle.codec(point)
        if codec.kind == "image":
            out.append(ImageEncoder(codec))
        elif device_half is None:
            raise ValueError(f"operating point {point.name!r} sends features: a vision tower is needed")
        else:
            out.append(FeatureEncoder(device_half, codec, point.n_c, k, keep_clusters=keep_clusters))
    return out


def make_encoder(config) -> FrameEncoder:
    """The encoder a DeviceConfig asks for (loads the vision tower only when features are sent)."""
    codec = codec_from_config(config)
    if codec.kind == "image":
        return ImageEncoder(codec)
    from tofc_ros.backbones import load_device_half
    from tofc_ros.resources import resolve_resource

    split = getattr(codec, "split_layer", None)  # AlignedVQ: the device runs only the layers before its split
    device_half = load_device_half(
        resolve_resource(config.model_path), dtype=config.dtype, device=config.device, split_layer=split
    )
    n_clusters = getattr(codec, "n_clusters", config.n_clusters)  # AlignedVQ was trained for its own merging
    keep = config.debug_image or config.two_stage  # the overlay draws the assignment; two-stage maps tokens by it
    return FeatureEncoder(device_half, codec, n_clusters, config.dpc_k, keep_clusters=keep)


def make_point_encoders(config):
    """An adaptive DeviceConfig's bundle (``codec.points.OperatingPoints``) and one encoder per point."""
    from tofc_ros.codec.points import OperatingPoints
    from tofc_ros.resources import resolve_resource

    bundle = OperatingPoints.load(resolve_resource(config.operating_points), device=config.device)
    device_half = None
    if any(p.kind == "features" for p in bundle.points):
        from tofc_ros.backbones import load_device_half

        device_half = load_device_half(resolve_resource(config.model_path), dtype=config.dtype, device=config.device)
    return bundle, point_encoders(bundle, device_half, config.dpc_k, keep_clusters=config.debug_image)
