"""Server-side answerers: one received frame + a question in, answer text out (or a typed refusal)."""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

from tofc_ros.codec import placeholder_pixels
from tofc_ros.pipeline.device import PLACEHOLDER_FINGERPRINT


class DecodeError(ValueError):
    """The payload is malformed: truncated, corrupt, or with shapes outside the limits."""


class ModelMismatch(ValueError):
    """The payload was made with other codec or backbone weights (or another format) than the server holds."""


@dataclasses.dataclass(frozen=True)
class ReceivedFrame:
    """The parts of a CompressedFeatures message an answerer needs (built by the node's adapter)."""

    camera: str
    stamp_ns: int
    format: str
    codec_fingerprint: str
    backbone_fingerprint: str
    image_height: int
    image_width: int
    grid_rows: int
    grid_cols: int
    n_tiles: int
    n_clusters: int
    feature_dim: int
    payload: bytes
    payload_size: int  # bytes on the wire (payload may be dropped, e.g. when oversize)
    refusal: str  # non-empty: the node already refused the payload and says why
    device_ms: float
    sent_ns: int
    arrival_ns: int


class Answerer(Protocol):
    """What the server node's worker calls for every question paired with a frame."""

    def answer(self, frame: ReceivedFrame, question: str) -> str:
        """Answer `question` about `frame`; raise DecodeError or ModelMismatch for payloads it must refuse."""
        ...


class PlaceholderAnswerer:
    """Decodes placeholder pixel payloads and describes them, saying plainly that no language model ran."""

    def __init__(self, max_pixels: int) -> None:
        self._max_pixels = max_pixels

    def answer(self, frame: ReceivedFrame, question: str) -> str:
        if frame.format != placeholder_pixels.FORMAT:
            raise ModelMismatch(f"format '{frame.format}' is not served here (this server decodes "
                                f"'{placeholder_pixels.FORMAT}')")
        if frame.codec_fingerprint != PLACEHOLDER_FINGERPRINT:
            raise ModelMismatch(f"codec fingerprint {frame.codec_fingerprint} != {PLACEHOLDER_FINGERPRINT}")
        try:
            rgb = placeholder_pixels.decode(frame.payload, self._max_pixels)
        except placeholder_pixels.PlaceholderPayloadError as exc:
            raise DecodeError(str(exc)) from exc
        if rgb.shape[:2] != (frame.image_height, frame.image_width):
            raise DecodeError(f"payload holds {rgb.shape[1]}x{rgb.shape[0]} px, message says "
                              f"{frame.image_width}x{frame.image_height}")
        mean = np.round(rgb.reshape(-1, 3).mean(axis=0)).astype(int)
        return (f"[placeholder: no language model loaded] {rgb.shape[1]}x{rgb.shape[0]} image, "
                f"mean colour RGB({mean[0]}, {mean[1]}, {mean[2]})")
