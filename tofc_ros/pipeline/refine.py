"""Two-stage answering: the records and the device's half of a refinement (no rclpy).

    server  first pass: the frame's cheap view (all tiles at a small n_c) -> answer + its min-entropy
            unsure (min-entropy > refine_threshold): where the answer looked, per payload token -> RefineAsk
    device  RefineAsk + the frame (its recent history) + that frame's DPC-KNN assignment (FirstPasses)
            -> token weights spread over the patches each merged token covers -> pixel density
            -> the densest box of at most max_area of the frame (Region) -> the crop, encoded at full detail
            -> RefineReply (the crop's payload, or a refusal that says why)
    server  first-pass tokens + crop tokens (token_order's regime 3) -> the answer (refinement DONE), or the first-pass
            answer flagged TIMED_OUT / FAILED

Which side maps tokens to pixels: the device. A merged token covers the patches DPC-KNN put in its cluster, and only
the device knows them; sending the assignment would cost 729 x log2(n_c) bits per tile, more than the cheap view's
features. The server sends one weight per payload token instead (n_c per tile), and the device, which kept the
assignment of every frame it sent (``FirstPasses``, bounded like its frame history), maps them.
"""

from __future__ import annotations

import collections
import math
import threading
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Region",
    "RefineAsk",
    "RefineReply",
    "RefineRefused",
    "FirstPass",
    "FirstPasses",
    "region_from_weights",
    "check_region",
    "crop",
    "plan_region",
    "DeviceRefiner",
]

_CELL_PX = 8  # the density map's cell: fine enough for a patch of a 1280-wide thumbnail (47 px), cheap to scan


class RefineRefused(ValueError):
    """A refinement request the device (or the server) cannot serve; the message says why."""


@dataclass(frozen=True)
class Region:
    """A box in frame pixels: top-left (x, y), width x height."""

    x: int
    y: int
    width: int
    height: int

    @property
    def area(self) -> int:
        return self.width * self.height


@dataclass(frozen=True)
class RefineAsk:
    """A RefineRequest as the pure code holds it (see msg/RefineRequest.msg)."""

    question_id: str
    camera: str
    stamp_ns: int
    token_weights: np.ndarray  # float32 [T * n], payload order
    region: Region | None = None  # an explicit region instead of the weights
    max_area: float = 0.0  # 0: the device's default
    n_clusters: int = 0  # 0: the device's default


@dataclass(frozen=True)
class RefineReply:
    """A RefinedFeatures as the pure code holds it: ``frame`` (a ReceivedFrame of the crop) when ok, else why not."""

    question_id: str
    camera: str
    stamp_ns: int
    ok: bool
    error: str = ""
    region: Region | None = None
    frame: object = None


@dataclass(frozen=True)
class FirstPass:
    """What the device keeps of a frame it sent, to map token weights back to pixels.

    Attributes:
        image_size: (height, width) of the frame.
        n_tiles, n_per_tile: the payload's token layout.
        assignment: int [T, n_v], the merged token (0..n-1) of every vision token of every tile; None when the payload
            carries every token unmerged (token k is patch k).
    """

    image_size: tuple[int, int]
    n_tiles: int
    n_per_tile: int
    assignment: np.ndarray | None


class FirstPasses:
    """The FirstPass of the newest ``size`` frames per camera (thread-safe: the encoder thread writes, the same
    thread reads; the lock keeps diagnostics readers safe)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self._size = size
        self._lock = threading.Lock()
        self._by_camera: dict[str, collections.OrderedDict[int, FirstPass]] = {}

    def put(self, camera: str, stamp_ns: int, first: FirstPass) -> None:
        with self._lock:
            kept = self._by_camera.setdefault(camera, collections.OrderedDict())
            kept[stamp_ns] = first
            kept.move_to_end(stamp_ns)
            while len(kept) > self._size:
                kept.popitem(last=False)

    def get(self, camera: str, stamp_ns: int) -> FirstPass | None:
        with self._lock:
            return self._by_camera.get(camera, {}).get(stamp_ns)


def check_region(region: Region, image_size: tuple[int, int]) -> None:
    """Refuse a region that is empty or not inside a frame of (height, width)."""
    h, w = image_size
    if region.width < 1 or region.height < 1:
        raise RefineRefused(f"region {region.width}x{region.height} is empty")
    if region.x < 0 or region.y < 0 or region.x + region.width > w or region.y + region.height > h:
        raise RefineRefused(
            f"region x={region.x} y={region.y} {region.width}x{region.height} is not inside the {w}x{h} frame"
        )


def crop(rgb: np.ndarray, region: Region) -> np.ndarray:
    """The region's pixels (a contiguous copy: the encoder may keep it past the frame's life)."""
    check_region(region, rgb.shape[:2])
    return np.ascontiguousarray(rgb[region.y : region.y + region.height, region.x : region.x + region.width])


def _patch_weights(weights: np.ndarray, first: FirstPass, n_v: int) -> np.ndarray:
    """Payload-token weights [T * n] -> vision-patch weights [T, n_v]: a merged token's weight spread evenly over the
    patches of its cluster."""
    t, n = first.n_tiles, first.n_per_tile
    w = weights.reshape(t, n).astype(np.float64)
    if first.assignment is None:
        if n != n_v:
            raise RefineRefused(f"{n} tokens per tile without their assignment (the tower has {n_v})")
        return w
    a = first.assignment
    if a.shape != (t, n_v) or a.min() < 0 or a.max() >= n:
        raise RefineRefused(f"the kept assignment {a.shape} does not fit {t} tiles of {n} tokens")
    counts = np.stack([np.bincount(a[i], minlength=n) for i in range(t)])  # patches per merged token
    per_patch = w / np.maximum(counts, 1)
    return np.take_along_axis(per_patch, a, axis=1)


def region_from_weights(weights: np.ndarray, first: FirstPass, spec, max_area: float, cell: int = _CELL_PX) -> Region:
    """The box of at most ``max_area`` of the frame where the token weights are densest.

    Every vision patch's weight is spread over its source box in the frame (``tiling.patch_boxes``: the thumbnail's
    patches cover larger boxes than the grid tiles'), which gives a density per ``cell`` x ``cell`` pixel cell; the
    box (square where the frame allows, whole cells, clipped to the frame) with the largest summed density wins, the
    first one in row-major order on ties, so the result is deterministic.

    Args:
        weights: [T * n] non-negative weights of the first-pass payload's tokens (payload order).
        first: what the device kept of that payload (its layout and DPC-KNN assignment).
        spec: the backbone's BackboneSpec.
        max_area: the box's largest area as a fraction of the frame's, in (0, 1].
    """
    from tofc_ros.backbones.tiling import patch_boxes

    weights = np.asarray(weights, dtype=np.float64).reshape(-1)
    if weights.size != first.n_tiles * first.n_per_tile:
        raise RefineRefused(
            f"{weights.size} token weights; the frame was sent as {first.n_tiles} tiles x {first.n_per_tile} tokens"
        )
    if not np.all(np.isfinite(weights)) or weights.min() < 0 or weights.sum() <= 0:
        raise RefineRefused("token weights must be finite, non-negative and not all zero")
    if not 0 < max_area <= 1:
        raise RefineRefused(f"max_area must be in (0, 1], got {max_area}")
    h, w = first.image_size
    boxes = patch_boxes(spec, (h, w))  # [T, n_v, 4]: y0, x0, y1, x1 (NaN: padding only)
    if boxes.shape[0] != first.n_tiles:
        raise RefineRefused(f"a {w}x{h} frame has {boxes.shape[0]} tiles, the payload {first.n_tiles}")
    pw = _patch_weights(weights, first, boxes.shape[1]).reshape(-1)
    b = boxes.reshape(-1, 4)
    seen = ~np.isnan(b[:, 0]) & (pw > 0)
    b, pw = b[seen], pw[seen]
    rows, cols = math.ceil(h / cell), math.ceil(w / cell)
    y0 = np.floor(b[:, 0] / cell).astype(np.int64)
    x0 = np.floor(b[:, 1] / cell).astype(np.int64)
    y1 = np.maximum(np.ceil(b[:, 2] / cell).astype(np.int64), y0 + 1)
    x1 = np.maximum(np.ceil(b[:, 3] / cell).astype(np.int64), x0 + 1)
    v = pw / ((y1 - y0) * (x1 - x0))  # each patch's weight spread evenly over the cells it covers
    diff = np.zeros((rows + 1, cols + 1))
    np.add.at(diff, (y0, x0), v)
    np.add.at(diff, (y0, x1), -v)
    np.add.at(diff, (y1, x0), -v)
    np.add.at(diff, (y1, x1), v)
    density = diff.cumsum(0).cumsum(1)[:rows, :cols]
    side = math.sqrt(max_area * h * w)  # a square box of max_area, narrowed to the frame where it does not fit
    bw = max(1, min(cols, int(min(side, w) // cell)))
    bh = max(1, min(rows, int(max_area * h * w / (bw * cell) // cell)))
    integral = np.zeros((rows + 1, cols + 1))
    integral[1:, 1:] = density.cumsum(0).cumsum(1)
    sums = integral[bh:, bw:] - integral[:-bh, bw:] - integral[bh:, :-bw] + integral[:-bh, :-bw]
    top, left = np.unravel_index(int(np.argmax(sums)), sums.shape)
    x, y = int(left) * cell, int(top) * cell
    return Region(x, y, min(bw * cell, w - x), min(bh * cell, h - y))


def plan_region(ask: RefineAsk, image_size: tuple[int, int], first: FirstPass | None, spec, default_area: float):
    """The region a request asks for: its explicit one (checked inside the frame), else the one its weights give."""
    if ask.region is not None:
        check_region(ask.region, image_size)
        return ask.region
    if first is None:
        raise RefineRefused("no first pass of that frame is kept here (it was not sent as features, or too long ago)")
    if tuple(first.image_size) != tuple(image_size):
        raise RefineRefused(f"the frame is {image_size}, its first pass was {first.image_size}")
    return region_from_weights(ask.token_weights, first, spec, ask.max_area or default_area)


class DeviceRefiner:
    """The device's side of two-stage answering, for the device node and offline evaluation alike.

    Args:
        encoder: the device's ``FeatureEncoder`` (kept clusters: ``keep_clusters=True``); it encodes the crops too.
        max_area: default largest region, as a fraction of the frame.
        n_clusters: default merged tokens per tile of a crop (0: every token).
        history: first passes kept per camera (match the frame history).
    """

    def __init__(self, encoder, max_area: float, n_clusters: int, history: int) -> None:
        if getattr(encoder, "device_half", None) is None:
            raise ValueError("two-stage answering needs a feature encoder (the device must run the vision tower)")
        half = encoder.device_half
        if half.split_layer != half.spec.vision_layers_needed:
            raise ValueError("two-stage answering maps tokens of the feature layer; this codec cuts inside the tower")
        if not encoder.keep_clusters:
            raise ValueError("two-stage answering needs the encoder to keep its DPC-KNN assignment (keep_clusters)")
        if not 0 < max_area <= 1:
            raise ValueError(f"max_area must be in (0, 1], got {max_area}")
        self.encoder = encoder
        self.max_area = max_area
        self.n_clusters = n_clusters
        self.first_passes = FirstPasses(history)

    def remember(self, camera: str, stamp_ns: int, encoded) -> None:
        """Keep what maps the weights of a frame just sent back to its pixels."""
        from tofc_ros.codec.bitstream import peek_header

        header = peek_header(encoded.payload)
        t, n, _ = header.feature_shape
        assignment = None if encoded.clusters is None else np.asarray(encoded.clusters[0])
        self.first_passes.put(camera, stamp_ns, FirstPass(tuple(header.image_size), t, n, assignment))

    def refine(self, ask: RefineAsk, rgb: np.ndarray):
        """(Region, EncodedFrame of its crop) for a request about ``rgb`` (the frame it names).

        Raises:
            RefineRefused: a request this frame cannot serve (region outside, weights that do not fit, no first pass).
        """
        first = self.first_passes.get(ask.camera, ask.stamp_ns)
        region = plan_region(ask, rgb.shape[:2], first, self.encoder.device_half.spec, self.max_area)
        n_c = ask.n_clusters or self.n_clusters
        return region, self.encoder.encode(crop(rgb, region), n_clusters=n_c)
