"""The deployed objects for offline evaluation: what the device and server nodes would build for an operating point.

    Point (codec, options, n_c, backbone)  --Deployment-->  FeatureEncoder / ImageEncoder   (device node's)
                                                            FrameDecoder + ModelAnswerer    (server node's)

Rate-accuracy, the latency model and the benchmarks run these objects, so their numbers measure the deployed code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Point", "Deployment"]


@dataclass(frozen=True)
class Point:
    """One operating point.

    Attributes:
        name: label in the table and plot.
        family: curve it belongs to (tofc, merge-fp16, fp16, fp16-zstd, jpeg, webp, ...).
        kind: "features" (device encodes features) or "image" (device sends the image).
        codec: a ``load_codec`` spec (format name or TOFC .safetensors path).
        options: codec constructor options (quality, level).
        n_c: merged tokens per tile (0: no merging).
        merge: merge method for features ("dpc_knn" is what the device node runs; others for ablations).
        model: llava-hf directory of the backbone this point runs with.
        split_layer: vision layers the device runs for a weightless feature codec (None: to the feature layer);
            e.g. raw fp16 of the hidden state inside the tower. A learned codec that names its split (AlignedVQ)
            brings its own.
    """

    name: str
    family: str
    kind: str
    codec: str
    model: str
    options: dict = field(default_factory=dict)
    n_c: int = 0
    merge: str = "dpc_knn"
    split_layer: int | None = None


class Deployment:
    """The deployed objects of each backbone, loaded once: device half, server half (with its vision tower, for
    image points), the server's decoder holding every learned codec of the points, and its answerer.

    Args:
        points: the points that will run (their TOFC codecs are loaded into each backbone's decoder).
        options: the answerer's generation options (``backbones.GenerationOptions``; None: its defaults).
    """

    def __init__(self, points: list[Point] = (), options=None):
        self.options = options
        self._halves: dict[str, tuple] = {}
        self._servers: dict[str, tuple] = {}
        self._codecs: dict[tuple, object] = {}
        self._devices: dict[tuple, object] = {}
        self._learned: dict[str, list[str]] = {}  # backbone -> its points' learned codecs, in order, once each
        self._splits: dict[str, set[int]] = {}  # backbone -> the splits inside the tower its points cut at
        self._points = list(points)
        for p in points:
            if p.kind == "features" and p.codec.endswith(".safetensors"):
                self._learned.setdefault(p.model, [])
                if p.codec not in self._learned[p.model]:
                    self._learned[p.model].append(p.codec)

    def codec(self, point: Point):
        from tofc_ros.codec import load_codec

        key = (point.codec, tuple(sorted(point.options.items())))
        if key not in self._codecs:
            self._codecs[key] = load_codec(point.codec, **point.options)
        return self._codecs[key]

    def split_of(self, point: Point) -> int | None:
        """The split layer a point's device stops at (None: the feature layer)."""
        if point.kind != "features":
            return None
        return getattr(self.codec(point), "split_layer", point.split_layer)

    def halves(self, model: str):
        """(device half to the feature layer, server half with its vision tower and the tails every point of this
        backbone needs)."""
        if model not in self._halves:
            from tofc_ros.backbones import load_device_half, load_server_half

            splits = {self.split_of(p) for p in self._points if p.model == model} - {None}
            server = load_server_half(model, load_vision=True, vision_splits=sorted(splits))
            self._halves[model] = (load_device_half(model), server)
        return self._halves[model]

    def device_half(self, model: str, split_layer: int | None = None):
        """The device half of a backbone, cut after ``split_layer`` layers (None: the feature layer)."""
        if split_layer is None:
            return self.halves(model)[0]
        key = (model, split_layer)
        if key not in self._devices:
            from tofc_ros.backbones import load_device_half

            self._devices[key] = load_device_half(model, split_layer=split_layer)
        return self._devices[key]

    def server(self, model: str):
        """(FrameDecoder, ModelAnswerer) of a backbone, as ``pipeline.answerer.build_server`` makes them."""
        if model not in self._servers:
            from tofc_ros.codec import load_codec
            from tofc_ros.pipeline.answerer import model_server

            _, srv = self.halves(model)
            codecs = [load_codec(c) for c in self._learned.get(model, [])]
            self._servers[model] = model_server(srv, codecs, self.options, accept_images=True)
        return self._servers[model]

    def encoder(self, point: Point):
        """The FeatureEncoder / ImageEncoder the device node would build for this point."""
        from tofc_ros.pipeline.encoder import FeatureEncoder, ImageEncoder

        codec = self.codec(point)
        if point.kind == "image":
            return ImageEncoder(codec)
        merge = None
        if point.merge != "dpc_knn":  # ablations only: the device node always runs DPC-KNN
            from tofc_ros.train.differentiable_merge import merge_features

            def merge(x, n_c, method=point.merge):
                return merge_features(x, n_c, method)

        dev = self.device_half(point.model, self.split_of(point))
        n_c = getattr(codec, "n_clusters", point.n_c)  # an AlignedVQ codec was trained with its own merging
        return FeatureEncoder(dev, codec, n_c, merge=merge)
