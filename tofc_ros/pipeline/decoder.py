"""The server's frame decoder: payload bytes in, a validated DecodedFrame out (no rclpy).

Validation happens once, here, before anything is allocated for the frame's contents:

    container (magic, version, limits, section lengths, CRC32)        -> DecodeError
    the message's claimed format == the payload's                     -> DecodeError
    a codec for (format, codec fingerprint) is held                   -> ModelMismatch
    features: backbone fingerprint == the backbone's; split point at the feature layer or one whose vision tail
              this server holds (AlignedVQ)                           -> ModelMismatch
              image size, grid, tiles, tokens per tile, feature dim fit the backbone (token_order's one rule)
                                                                      -> DecodeError
    images:   this server answers images at all; size within limits   -> ModelMismatch / DecodeError
    then the codec decodes its sections                               -> DecodeError on anything malformed

Every refusal is a :class:`FrameError` carrying the Answer status it maps to.
"""

from __future__ import annotations

from collections.abc import Iterable

from tofc_ros.codec.base import Codec
from tofc_ros.codec.bitstream import (
    BitstreamError,
    CodecMismatchError,
    FingerprintMismatch,
    FrameHeader,
    UnknownCodecError,
    parse,
)
from tofc_ros.codec.registry import codec_for_header
from tofc_ros.pipeline.records import DecodedFrame, Status

__all__ = ["FrameError", "DecodeError", "ModelMismatch", "FrameDecoder"]


class FrameError(ValueError):
    """A payload the server refuses; ``status`` is the Answer status that says so."""

    status = Status.DECODE_ERROR


class DecodeError(FrameError):
    """Malformed: truncated, corrupt, inconsistent with its message, or shapes that do not fit the backbone."""

    status = Status.DECODE_ERROR


class ModelMismatch(FrameError):
    """Made by other codec or backbone weights, another split point, or a kind of payload this server does not
    answer."""

    status = Status.MODEL_MISMATCH


class FrameDecoder:
    """Decode payloads for one server.

    Args:
        codecs: the learned codecs this server holds (TOFC weights); weightless codecs are built from the header.
        spec: the backbone's ``BackboneSpec`` (None: this server answers no feature payloads).
        backbone_fingerprint: the backbone's fingerprint (32 hex digits), required with ``spec``.
        formats: the payload formats this server answers (None: every registered format of the kinds it can).
        accept_images: image payloads are answered (the server holds a vision tower, or describes pixels).
        max_pixels: largest image accepted (height x width) for image payloads.
        splits: split layers inside the vision tower whose payloads this server finishes (it holds their tails).
    """

    def __init__(
        self,
        codecs: Iterable[Codec] = (),
        spec=None,
        backbone_fingerprint: str = "",
        formats: Iterable[str] | None = None,
        accept_images: bool = False,
        max_pixels: int = 1 << 25,
        splits: Iterable[int] = (),
    ):
        self.codecs = tuple(codecs)
        self.spec = spec
        self._backbone = bytes.fromhex(backbone_fingerprint) if spec is not None else None
        self.formats = frozenset(formats) if formats is not None else None
        self.accept_images = accept_images
        self.max_pixels = max_pixels
        self.splits = frozenset(splits)

    def decode(self, payload: bytes, claimed_format: str | None = None) -> DecodedFrame:
        """Validate and decode one payload.

        Args:
            payload: the container bytes.
            claimed_format: the format the message says it carries (checked against the payload), or None.

        Raises:
            DecodeError, ModelMismatch: see the module docstring.
        """
        try:
            header, sections = parse(payload)
        except TypeError as exc:
            raise DecodeError(str(exc)) from None
        except UnknownCodecError as exc:
            raise ModelMismatch(str(exc)) from None
        except BitstreamError as exc:
            raise DecodeError(str(exc)) from None
        if claimed_format is not None and claimed_format != header.format:
            raise DecodeError(f"message says format '{claimed_format}', payload is '{header.format}'")
        if self.formats is not None and header.format not in self.formats:
            raise ModelMismatch(
                f"format '{header.format}' is not served here (this server answers {sorted(self.formats)})"
            )
        try:
            codec = codec_for_header(header, self.codecs)
        except (FingerprintMismatch, UnknownCodecError) as exc:
            raise ModelMismatch(str(exc)) from None
        try:
            codec.check_header(header, len(sections))
        except CodecMismatchError as exc:
            raise DecodeError(str(exc)) from None
        except BitstreamError as exc:
            raise DecodeError(str(exc)) from None
        if header.kind == "features":
            self._check_features(header)
        else:
            self._check_image(header)
        try:
            data = codec.decode_sections(header, sections)
        except BitstreamError as exc:
            raise DecodeError(str(exc)) from None
        if header.kind == "features":
            return DecodedFrame(header, features=data)
        return DecodedFrame(header, rgb=data)

    def _check_features(self, header: FrameHeader) -> None:
        from tofc_ros.backbones.token_order import check_tile_features
        from tofc_ros.backbones.vision_split import leading_cls, tokens_at_split

        spec = self.spec
        if spec is None:
            raise ModelMismatch(f"{header.format} carries vision features; this server holds no backbone")
        if header.backbone_fingerprint != self._backbone:
            raise ModelMismatch(
                f"features from backbone {header.backbone_fingerprint.hex()}, this server holds {self._backbone.hex()}"
            )
        split = header.vision_layers
        if split != spec.vision_layers_needed and split not in self.splits:
            served = sorted({spec.vision_layers_needed, *self.splits})
            raise ModelMismatch(
                f"features taken after {split} vision layers; this server finishes payloads cut after {served} "
                "(another split point)"
            )
        t, c, d = header.feature_shape
        if d != spec.vision_dim:
            raise DecodeError(f"features [{t}, {c}, {d}] do not fit the backbone's feature dim {spec.vision_dim}")
        try:
            if split == spec.vision_layers_needed:
                check_tile_features(spec, t, c, header.grid, header.image_size)
            else:  # inside the tower: every token, or merged ones (a CLS token kept first)
                check_tile_features(spec, t, 1, header.grid, header.image_size)
                lo, hi = leading_cls(spec) + 1, tokens_at_split(spec, split)
                if not lo <= c <= hi:
                    raise ValueError(f"the hidden state after layer {split} has {lo}..{hi} tokens per tile")
        except (TypeError, ValueError) as exc:
            raise DecodeError(f"{header.describe()}: {exc}") from None

    def _check_image(self, header: FrameHeader) -> None:
        if not self.accept_images:
            raise ModelMismatch(
                f"{header.format} carries an image; this server answers from features only "
                "(an image needs the vision tower: parameter load_vision)"
            )
        h, w = header.image_size
        if h * w > self.max_pixels:
            raise DecodeError(f"image {w}x{h} exceeds {self.max_pixels} pixels")
