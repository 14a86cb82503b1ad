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
    """

    name: str
    family: str
    kind: str
    codec: str
    model: str
    options: dict = field(default_factory=dict)
    n_c: int = 0
    merge: str = "dpc_knn"


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
        self._learned: dict[str, list[str]] = {}  # backbone -> its points' TOFC codecs, in order, once each
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

    def halves(self, model: str):
        if model not in self._halves:
            from tofc_ros.backbones import load_device_half, load_server_half

            self._halves[model] = (load_device_half(model), load_server_half(model, load_vision=True))
        return self._halves[model]

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

        dev, _ = self.halves(point.model)
        return FeatureEncoder(dev, codec, point.n_c, merge=merge)
