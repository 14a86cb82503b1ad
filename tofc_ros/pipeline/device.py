"""Device-side frame encoders: RGB image in, one payload with the fields of a CompressedFeatures message out."""

from __future__ import annotations

import dataclasses
import time
from typing import Protocol

import numpy as np

from tofc_ros.codec import placeholder_pixels


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


# A placeholder has no weights; its fingerprint says so instead of faking a hash.
PLACEHOLDER_FINGERPRINT = "0" * 32


class PlaceholderEncoder:
    """zstd-compressed pixels, honestly labelled, until the TOFC codec and the vision tower are wired in."""

    def __init__(self, zstd_level: int = 3) -> None:
        self._level = zstd_level

    def encode(self, rgb: np.ndarray) -> EncodedFrame:
        t0 = time.perf_counter()
        payload = placeholder_pixels.encode(rgb, self._level)
        encode_ms = (time.perf_counter() - t0) * 1e3
        return EncodedFrame(
            format=placeholder_pixels.FORMAT,
            payload=payload,
            codec_fingerprint=PLACEHOLDER_FINGERPRINT,
            backbone_fingerprint=PLACEHOLDER_FINGERPRINT,
            image_height=rgb.shape[0],
            image_width=rgb.shape[1],
            grid_rows=1,
            grid_cols=1,
            n_tiles=1,
            n_clusters=0,
            feature_dim=0,
            encode_ms=encode_ms,
        )


def make_encoder(config) -> FrameEncoder:
    """The encoder a DeviceConfig asks for."""
    if config.codec == "placeholder-zstd":
        return PlaceholderEncoder(config.zstd_level)
    raise ValueError(f"unknown codec '{config.codec}'")
