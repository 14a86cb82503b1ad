"""Operating-point bundles: several operating points of one backbone in one safetensors file (design: "Adaptive").

    bundle = OperatingPoints.load("models/scenes-tiny-ov/operating_points.safetensors")
    bundle.points            # richest first: name, codec format, n_c, codec options, measured priors
    bundle.codec(point)      # the Codec that encodes it (learned weights come from the bundle)
    bundle.learned_codecs()  # every learned codec, for the server's decoder
    bundle.identify(header)  # which point a payload is (format, codec fingerprint and tokens per tile say so)

File layout: each learned codec's tensors under ``codec<j>/<tensor name>``; metadata ``{"format": "tofc-points/1",
"points": <JSON list>, "codecs": <JSON list of each learned codec's config and fingerprint>}``. A learned codec is
rebuilt through :func:`weights.model_from_bytes`, which checks its fingerprint against the content. Nothing is
unpickled.

A payload carries no point index: it is identified by what it already says (format, codec fingerprint, tokens per
tile), so a bundle must make every point distinguishable that way (checked on construction).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

from .base import Codec
from .bitstream import FrameHeader
from .weights import FORMAT as TOFC_FORMAT
from .weights import safetensors_metadata

__all__ = ["BUNDLE_FORMAT", "OperatingPoint", "OperatingPoints"]

BUNDLE_FORMAT = "tofc-points/1"
_MAX_POINTS = 64
_OPTIONS = {"quality", "level", "bits"}


@dataclasses.dataclass(frozen=True)
class OperatingPoint:
    """One operating point and what was measured of it when the bundle was made.

    Attributes:
        name: label (diagnostics, reports).
        codec: payload format ("tofc/1", "fp16/1", "fp16-zstd/1", "quant-zstd/1", "jpeg/1", "webp/1").
        n_c: merged tokens per tile (0: every token, unmerged; image codecs: 0).
        options: codec options (quality, level, bits).
        learned: index of its learned codec in the bundle (tofc/1), -1 for a weightless codec.
        bytes, device_ms, server_ms: measured mean payload bytes and device / server milliseconds per frame (the
            adaptive device's priors).
        accuracy: measured accuracy (documentation; the bundle's order, richest first, is what the policy uses).
    """

    name: str
    codec: str
    n_c: int = 0
    options: dict = dataclasses.field(default_factory=dict)
    learned: int = -1
    bytes: float = 0.0
    device_ms: float = 0.0
    server_ms: float = 0.0
    accuracy: float | None = None

    @property
    def kind(self) -> str:
        from .registry import registered_codecs

        return registered_codecs()[self.codec].kind


class OperatingPoints:
    """A bundle of operating points, richest first, with the learned codecs they use.

    Raises:
        ValueError: no points, an unknown codec or option, a learned point without its codec, or two points a
            payload could not tell apart.
    """

    def __init__(self, points: Sequence[OperatingPoint], codecs: Sequence[Codec] = ()) -> None:
        from .registry import LEARNED_FORMATS, registered_codecs

        self.points = tuple(points)
        self.codecs = tuple(codecs)
        if not 0 < len(self.points) <= _MAX_POINTS:
            raise ValueError(f"a bundle holds 1 to {_MAX_POINTS} operating points, got {len(self.points)}")
        seen: dict[tuple, str] = {}
        for p in self.points:
            if p.codec not in registered_codecs():
                raise ValueError(f"point {p.name!r}: unknown codec {p.codec!r}")
            if set(p.options) - _OPTIONS:
                raise ValueError(f"point {p.name!r}: unknown codec options {sorted(set(p.options) - _OPTIONS)}")
            if (p.codec in LEARNED_FORMATS) != (0 <= p.learned < len(self.codecs)):
                raise ValueError(f"point {p.name!r}: a learned codec needs its index in the bundle's codecs")
            if p.n_c < 0 or (p.kind == "image" and p.n_c):
                raise ValueError(f"point {p.name!r}: n_c must be >= 0, and 0 for an image codec")
            key = (p.codec, p.learned, p.n_c)
            if key in seen or (p.kind == "image" and p.codec in {k[0] for k in seen}):
                raise ValueError(f"points {seen.get(key, p.codec)!r} and {p.name!r}: a payload cannot tell them apart")
            seen[key] = p.name
        if len({p.name for p in self.points}) != len(self.points):
            raise ValueError("operating point names must be unique")

    # -- use -----------------------------------------------------------------------------------------------------
    def codec(self, point: OperatingPoint) -> Codec:
        """The codec that encodes (and decodes) ``point``."""
        from .registry import load_codec

        if point.learned >= 0:
            return self.codecs[point.learned]
        return load_codec(point.codec, **point.options)

    def learned_codecs(self) -> tuple[Codec, ...]:
        return self.codecs

    def identify(self, header: FrameHeader) -> OperatingPoint | None:
        """The point a payload was made with, or None when it is none of this bundle's."""
        same = [
            p
            for p in self.points
            if p.codec == header.format
            and (p.learned < 0 or self.codecs[p.learned].fingerprint == header.codec_fingerprint)
        ]
        if header.kind == "image":
            return same[0] if same else None
        exact = [p for p in same if p.n_c == header.tokens_per_tile]
        return (exact or [p for p in same if p.n_c == 0] or [None])[0]

    # -- files ---------------------------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        from safetensors.torch import save

        from .fingerprint import canonical_tensors

        tensors, codecs = {}, []
        for j, codec in enumerate(self.codecs):
            model = codec.model
            for name, value in canonical_tensors(model).items():
                tensors[f"codec{j}/{name}"] = value
            codecs.append({"config": model.cfg.to_json(), "fingerprint": codec.fingerprint.hex()})
        meta = {
            "format": BUNDLE_FORMAT,
            "points": json.dumps([dataclasses.asdict(p) for p in self.points], sort_keys=True),
            "codecs": json.dumps(codecs),
        }
        return save(tensors, metadata=meta)

    def save(self, path: str | os.PathLike) -> None:
        tmp = f"{os.fspath(path)}.tmp"
        with open(tmp, "wb") as f:
            f.write(self.to_bytes())
        os.replace(tmp, path)

    @classmethod
    def from_bytes(cls, data: bytes, device: str = "cpu") -> OperatingPoints:
        """Parse a bundle (limits checked before anything is allocated; every learned codec's fingerprint checked).

        Raises:
            ValueError: not a bundle, bad JSON or fields, or a codec whose content does not match its fingerprint.
        """
        from safetensors.torch import load, save

        from .tofc_codec import TofcCodec
        from .weights import model_from_bytes

        meta = _bundle_metadata(data)
        try:
            rows = json.loads(meta["points"])
            codec_meta = json.loads(meta["codecs"])
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"operating-point bundle: bad metadata ({exc})") from None
        if not isinstance(rows, list) or not isinstance(codec_meta, list) or len(codec_meta) > _MAX_POINTS:
            raise ValueError("operating-point bundle: 'points' and 'codecs' must be lists")
        fields = {f.name for f in dataclasses.fields(OperatingPoint)}
        points = []
        for row in rows:
            if not isinstance(row, dict) or set(row) - fields or "name" not in row or "codec" not in row:
                raise ValueError(f"operating-point bundle: bad point {row!r}")
            points.append(OperatingPoint(**row))
        tensors = load(data)
        codecs = []
        for j, cm in enumerate(codec_meta):
            prefix = f"codec{j}/"
            own = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            if not isinstance(cm, dict) or not isinstance(cm.get("config"), str) or "fingerprint" not in cm:
                raise ValueError(f"operating-point bundle: bad codec entry {j}")
            meta_j = {"format": TOFC_FORMAT, "config": cm["config"], "fingerprint": str(cm["fingerprint"])}
            single = save(own, metadata=meta_j)
            codecs.append(TofcCodec(model=model_from_bytes(single), device=device))
        return cls(points, codecs)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu") -> OperatingPoints:
        with open(path, "rb") as f:
            return cls.from_bytes(f.read(), device)


def _bundle_metadata(data: bytes) -> dict:
    meta = safetensors_metadata(data, "an operating-point bundle")
    if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT:
        raise ValueError(f"not an operating-point bundle: metadata format must be {BUNDLE_FORMAT!r}")
    return meta
