"""Device-side frame encoders: RGB image in, one payload with the fields of a CompressedFeatures message out.

    FeatureEncoder (TOFC and feature baselines):
        rgb → DeviceHalf (tiles → vision tower) → [T, n_v, d] → DPC-KNN merge → [T, n_c, d] → codec → payload
    ImageEncoder (JPEG/WebP baselines): rgb → Pillow → payload (the server runs the vision tower)
    PlaceholderEncoder: zstd-compressed pixels, labelled as such
"""

from __future__ import annotations

import dataclasses
import time
from typing import Protocol

import numpy as np

from tofc_ros.pipeline import placeholder_pixels


@dataclasses.dataclass(frozen=True)
class EncodedFrame:
    """One image's payload and the metadata the CompressedFeatures message carries with it."""

    format: str
    payload: bytes
    codec_fingerprint: str
    backbone_fingerprint: str
    image_height: int
    image_width: int
    grid_rows: int
    grid_cols: int
    n_tiles: int
    n_clusters: int
    feature_dim: int
    vision_ms: float = 0.0
    merge_ms: float = 0.0
    encode_ms: float = 0.0


class FrameEncoder(Protocol):
    """What the device node calls for every frame it publishes."""

    def encode(self, rgb: np.ndarray) -> EncodedFrame:
        """Encode an RGB image [H, W, 3] uint8."""
        ...


# A placeholder or an image codec has no backbone; its fingerprint says so instead of faking a hash.
NO_FINGERPRINT = "0" * 32
PLACEHOLDER_FINGERPRINT = NO_FINGERPRINT


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1e3


class FeatureEncoder:
    """Vision tower + DPC-KNN merging + a feature codec (TOFC or a baseline).

    Args:
        device_half: the vision side of the backbone (tofc_ros.backbones.DeviceHalf).
        codec: a features codec (tofc_ros.codec.Codec with kind "features").
        n_clusters: merged features per tile; 0 or ≥ the tower's tokens per tile sends every token unmerged.
        k: DPC-KNN neighbours.
    """

    def __init__(self, device_half, codec, n_clusters: int, k: int = 5) -> None:
        if codec.kind != "features":
            raise ValueError(f"{codec.format} encodes images, not features: use ImageEncoder")
        self.device_half = device_half
        self.codec = codec
        self.n_clusters = n_clusters
        self.k = k

    def encode(self, rgb: np.ndarray) -> EncodedFrame:
        import torch  # here, not at module level: the placeholder and image paths start without torch

        from tofc_ros.codec import dpc_knn_merge

        with torch.inference_mode():
            t0 = time.perf_counter()
            vision = self.device_half.encode_image(rgb)
            t1 = time.perf_counter()
            features = vision.features.float()
            if 0 < self.n_clusters < features.shape[1]:
                features = dpc_knn_merge(features, self.n_clusters, k=self.k).merged
            t2 = time.perf_counter()
            payload = self.codec.encode(features.cpu())
        return EncodedFrame(
            format=self.codec.format, payload=payload, codec_fingerprint=self.codec.fingerprint.hex(),
            backbone_fingerprint=self.device_half.fingerprint, image_height=vision.image_size[0],
            image_width=vision.image_size[1], grid_rows=vision.grid[0], grid_cols=vision.grid[1],
            n_tiles=features.shape[0], n_clusters=features.shape[1], feature_dim=features.shape[2],
            vision_ms=(t1 - t0) * 1e3, merge_ms=(t2 - t1) * 1e3, encode_ms=_ms(t2))


class ImageEncoder:
    """Send the image itself with an image codec (the paper's JPEG/WebP upload baselines)."""

    def __init__(self, codec) -> None:
        if codec.kind != "image":
            raise ValueError(f"{codec.format} encodes features, not images: use FeatureEncoder")
        self.codec = codec

    def encode(self, rgb: np.ndarray) -> EncodedFrame:
        t0 = time.perf_counter()
        payload = self.codec.encode(np.ascontiguousarray(rgb))
        return EncodedFrame(
            format=self.codec.format, payload=payload, codec_fingerprint=self.codec.fingerprint.hex(),
            backbone_fingerprint=NO_FINGERPRINT, image_height=rgb.shape[0], image_width=rgb.shape[1],
            grid_rows=0, grid_cols=0, n_tiles=0, n_clusters=0, feature_dim=0, encode_ms=_ms(t0))


class PlaceholderEncoder:
    """zstd-compressed pixels, honestly labelled: runs the graph without any model."""

    def __init__(self, zstd_level: int = 3) -> None:
        self._level = zstd_level

    def encode(self, rgb: np.ndarray) -> EncodedFrame:
        t0 = time.perf_counter()
        payload = placeholder_pixels.encode(rgb, self._level)
        return EncodedFrame(
            format=placeholder_pixels.FORMAT, payload=payload, codec_fingerprint=PLACEHOLDER_FINGERPRINT,
            backbone_fingerprint=PLACEHOLDER_FINGERPRINT, image_height=rgb.shape[0], image_width=rgb.shape[1],
            grid_rows=1, grid_cols=1, n_tiles=1, n_clusters=0, feature_dim=0, encode_ms=_ms(t0))


def load_feature_codec(config):
    """The codec a DeviceConfig or ServerConfig names (TOFC weights from `codec_path`)."""
    from tofc_ros.codec import load_codec
    from tofc_ros.resources import resolve_resource

    if config.codec == "tofc":
        return load_codec(str(resolve_resource(config.codec_path)), device=config.device)
    options = {"fp16": {}, "fp16-zstd": {"level": config.zstd_level},
               "quant-zstd": {"bits": config.quant_bits, "level": config.zstd_level},
               "jpeg": {"quality": config.image_quality}, "webp": {"quality": config.image_quality}}
    return load_codec(config.codec, **options[config.codec])


def make_encoder(config) -> FrameEncoder:
    """The encoder a DeviceConfig asks for (loads the vision tower only when features are sent)."""
    if config.codec == "placeholder-zstd":
        return PlaceholderEncoder(config.zstd_level)
    codec = load_feature_codec(config)
    if codec.kind == "image":
        return ImageEncoder(codec)
    from tofc_ros.backbones import load_device_half
    from tofc_ros.resources import resolve_resource

    device_half = load_device_half(resolve_resource(config.model_path), dtype=config.dtype, device=config.device)
    return FeatureEncoder(device_half, codec, config.n_clusters, config.dpc_k)
