"""Server-side answerers: one received frame + a question in, answer text out (or a typed refusal)."""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

from tofc_ros.pipeline import placeholder_pixels
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


class ModelAnswerer:
    """Decode features (or an image), check they fit the backbone, and answer with the LLM.

    Args:
        server_half: the projector + LLM side (tofc_ros.backbones.ServerHalf); with its vision tower loaded it
            also answers image payloads (JPEG/WebP baselines).
        models: the learned codecs this server holds (TOFC); payloads by other weights are MODEL_MISMATCH.
        options: generation options (tofc_ros.backbones.GenerationOptions).
        max_pixels: largest image payload accepted (image baselines).
    """

    def __init__(self, server_half, models=(), options=None, max_pixels: int = 1 << 25) -> None:
        from tofc_ros.backbones import GenerationOptions

        self.server_half = server_half
        self.models = tuple(models)
        self.options = options or GenerationOptions()
        self.max_pixels = max_pixels

    def answer(self, frame: ReceivedFrame, question: str) -> str:
        from tofc_ros.codec import BitstreamError, codec_for_payload
        from tofc_ros.codec.bitstream import CodecMismatchError, FingerprintMismatch, UnknownCodecError, parse

        try:
            # Whole-container check (lengths, CRC32) first: a corrupted fingerprint is a decode error, not a
            # model mismatch.
            parse(frame.payload)
            codec = codec_for_payload(frame.payload, self.models)
            if codec.format != frame.format:
                raise DecodeError(f"message says format '{frame.format}', payload is '{codec.format}'")
            decoded = codec.decode(frame.payload)
        except (FingerprintMismatch, CodecMismatchError, UnknownCodecError) as exc:
            raise ModelMismatch(str(exc)) from exc
        except BitstreamError as exc:
            raise DecodeError(str(exc)) from exc
        if codec.kind == "image":
            return self._answer_image(decoded, question)
        return self._answer_features(frame, decoded, question)

    def _answer_image(self, rgb: np.ndarray, question: str) -> str:
        if self.server_half.vision is None:
            raise ModelMismatch("image payloads need the vision tower on the server (parameter load_vision)")
        if rgb.shape[0] * rgb.shape[1] > self.max_pixels:
            raise DecodeError(f"image {rgb.shape[1]}x{rgb.shape[0]} exceeds {self.max_pixels} pixels")
        vision = self.server_half.encode_image(rgb)
        return self.server_half.answer(vision.features, vision.grid, vision.image_size, question, self.options)

    def _answer_features(self, frame: ReceivedFrame, features, question: str) -> str:
        spec = self.server_half.spec
        if frame.backbone_fingerprint != self.server_half.fingerprint:
            raise ModelMismatch(f"features from backbone {frame.backbone_fingerprint}, this server holds "
                                f"{self.server_half.fingerprint}")
        # The payload's shape is checked against the backbone before anything is allocated for the prompt:
        # a message whose grid, size and tile count disagree would otherwise build a wrong token layout.
        grid, size = (frame.grid_rows, frame.grid_cols), (frame.image_height, frame.image_width)
        t, c, d = features.shape
        if size[0] < 1 or size[1] < 1:
            raise DecodeError(f"image size {size[1]}x{size[0]} is empty")
        expected_grid = spec.tile_grid(size)
        if grid != expected_grid or t != spec.num_tiles(grid):
            raise DecodeError(f"{t} tiles on a {grid[0]}x{grid[1]} grid do not fit a {size[1]}x{size[0]} image "
                              f"(expected {spec.num_tiles(expected_grid)} on {expected_grid[0]}x{expected_grid[1]})")
        if d != spec.vision_dim or not 1 <= c <= spec.tokens_per_tile:
            raise DecodeError(f"features [{t}, {c}, {d}] do not fit the backbone (d = {spec.vision_dim}, "
                              f"at most {spec.tokens_per_tile} per tile)")
        return self.server_half.answer(features, grid, size, question, self.options)


def make_answerer(config) -> Answerer:
    """The answerer a ServerConfig asks for."""
    if config.answerer == "placeholder":
        return PlaceholderAnswerer(max_pixels=1 << 30)
    from tofc_ros.backbones import GenerationOptions, load_server_half
    from tofc_ros.codec import load_codec
    from tofc_ros.resources import resolve_resource

    server_half = load_server_half(resolve_resource(config.model_path), dtype=config.dtype, device=config.device,
                                   load_vision=config.load_vision)
    models = [load_codec(str(resolve_resource(config.codec_path)), device=config.device)] if config.codec_path else []
    return ModelAnswerer(server_half, models, GenerationOptions(max_new_tokens=config.max_new_tokens))
