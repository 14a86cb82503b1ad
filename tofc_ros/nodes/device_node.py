"""Device (robot) node: camera frames → CompressedFeatures.

Threads: the executor thread only stores frames (sensor-data QoS, depth 1) in a bounded FrameStore; one worker
thread encodes and publishes. Continuous mode encodes each camera's newest frame at most `max_rate_hz` times a
second: frames that arrive while the worker is busy replace each other and are counted as dropped, so nothing
queues without bound. On-demand mode keeps a short history per camera and encodes the frame nearest each
question's image_stamp. Adaptive mode picks an operating point of a bundle per frame and switches between the
two by the question rate (pipeline/adaptive.py holds the policy; this node only feeds it events and its clock).
With `two_stage`, the server's refine_requests are served before any frame: the crop of where the model looked
(pipeline/refine.py maps the server's token weights to pixels with the DPC-KNN assignment kept for each frame sent),
encoded at full detail and published on `refined_features`; every request gets exactly one reply.
"""

from __future__ import annotations

import sys
import threading
import time

import rclpy
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image

from tofc_msgs.msg import Answer, CompressedFeatures, Question, RefinedFeatures, RefineRequest
from tofc_ros.config import DeviceConfig
from tofc_ros.nodes import adapters
from tofc_ros.nodes.diagnostics import Counters, DiagnosticsPublisher
from tofc_ros.nodes.entry import StartupError, run_node
from tofc_ros.nodes.images import ImageError, compressed_msg_to_rgb, image_msg_to_rgb
from tofc_ros.nodes.parameters import declare_config, qos
from tofc_ros.pipeline.adaptive import AdaptiveController, priors, settings_from_config
from tofc_ros.pipeline.encoder import FrameEncoder, make_encoder, make_point_encoders
from tofc_ros.pipeline.frame_store import FrameStore
from tofc_ros.pipeline.overlay import cluster_overlay
from tofc_ros.pipeline.records import Status
from tofc_ros.pipeline.refine import DeviceRefiner, RefineRefused


class DeviceNode(Node):
    """Subscribes to `image` (or `image/compressed`; `<camera>/image...` with several cameras), in on-demand and
    adaptive mode `questions`, in adaptive mode `answers`; publishes `features`."""

    def __init__(self, encoder: FrameEncoder | None = None, **kwargs) -> None:
        super().__init__("device_node", **kwargs)
        self.config: DeviceConfig = declare_config(self, DeviceConfig)
        cfg = self.config
        adaptive = cfg.mode == "adaptive"
        self._adaptive: AdaptiveController | None = None
        self._adaptive_lock = threading.Lock()
        try:
            if adaptive:
                bundle, self._encoders = make_point_encoders(cfg)
                self._adaptive = AdaptiveController(priors(bundle), settings_from_config(cfg))
                self._encoder = self._encoders[0]
            else:
                self._encoder = encoder or make_encoder(cfg)
        except (OSError, ValueError) as exc:
            raise StartupError(f"loading the model or codec failed: {exc}") from exc
        self._refiner: DeviceRefiner | None = None
        if cfg.two_stage:
            if adaptive:
                raise StartupError("two_stage needs mode continuous or on_demand (one encoder maps tokens to pixels)")
            try:
                self._refiner = DeviceRefiner(
                    self._encoder, cfg.refine_max_area, cfg.refine_n_clusters, cfg.on_demand_history
                )
            except ValueError as exc:
                raise StartupError(f"two_stage: {exc}") from exc
        self.counters = Counters(
            "frames_received",
            "frames_skipped",
            "frames_dropped",
            "frames_refused",
            "requests",
            "requests_unknown_camera",
            "published",
            "bytes_published",
            "encode_errors",
            "internal_errors",
            "refine_requests",
            "refine_replies",
            "refine_refused",
            "refine_bytes",
        )
        on_demand = cfg.mode != "continuous"
        self._store = FrameStore(
            list(cfg.cameras),
            history=cfg.on_demand_history if on_demand or cfg.two_stage else 0,
            min_period_s=1.0 / cfg.max_rate_hz,
            continuous=not on_demand,
        )
        self._sequence = dict.fromkeys(cfg.cameras, 0)
        self._stride = dict.fromkeys(cfg.cameras, 0)

        self._pub = self.create_publisher(
            CompressedFeatures, "features", qos(cfg.features_qos_reliability, cfg.features_qos_depth)
        )
        self._debug = self.create_publisher(Image, "debug/image", qos("reliable", 1)) if cfg.debug_image else None
        image_qos = qos(cfg.image_qos_reliability, cfg.image_qos_depth)
        msg_type, suffix = (Image, "image") if cfg.image_format == "raw" else (CompressedImage, "image/compressed")
        self._subs = {}
        for camera in cfg.cameras:
            topic = suffix if len(cfg.cameras) == 1 else f"{camera}/{suffix}"
            self._subs[camera] = self.create_subscription(
                msg_type, topic, lambda msg, c=camera: self._on_image(c, msg), image_qos
            )
        if on_demand:
            self.create_subscription(
                Question, "questions", self._on_question, qos(cfg.questions_qos_reliability, cfg.questions_qos_depth)
            )
        if adaptive:
            self.create_subscription(
                Answer, "answers", self._on_answer, qos(cfg.answers_qos_reliability, cfg.answers_qos_depth)
            )
            self.create_timer(0.25, self._update_mode)  # the question rate also falls while no question comes
        if cfg.two_stage:  # the features' QoS: a request and its reply travel like the frames they are about
            features_qos = qos(cfg.features_qos_reliability, cfg.features_qos_depth)
            self._refined = self.create_publisher(RefinedFeatures, "refined_features", features_qos)
            self.create_subscription(RefineRequest, "refine_requests", self._on_refine_request, features_qos)
        self._diagnostics = DiagnosticsPublisher(
            self, self.counters, cfg.diagnostics_period_s, extra=self._adaptive_status if adaptive else None
        )
        self._worker = threading.Thread(target=self._run, name="device-encoder", daemon=True)
        self._worker.start()
        topics = ", ".join(f"{c}: {s.topic_name}" for c, s in self._subs.items())
        rate = {"continuous": f"≤ {cfg.max_rate_hz} Hz per camera", "on_demand": "on demand"}.get(
            cfg.mode, f"adaptive: {len(self._encoders) if adaptive else 0} points, {cfg.latency_budget_ms} ms budget"
        )
        codec = cfg.codec + (", two-stage detail on request" if cfg.two_stage else "")
        half = getattr(self._encoder, "device_half", None)
        if half is not None and half.split_layer < half.spec.vision_layers_needed:  # AlignedVQ: a cut inside the tower
            codec += f", split after vision block {half.split_layer}"
        self.get_logger().info(f"{cfg.image_format} images ({topics}) → {self._pub.topic_name} ({codec}, {rate})")

    def _on_image(self, camera: str, msg) -> None:
        self.counters.add("frames_received")
        self._stride[camera] += 1
        if (self._stride[camera] - 1) % self.config.frame_stride:
            self.counters.add("frames_skipped")
            return
        if self._store.put(camera, adapters.stamp_ns(msg.header.stamp), msg):
            self.counters.add("frames_dropped")

    def _on_question(self, msg: Question) -> None:
        self.counters.add("requests")
        camera = msg.camera or self.config.cameras[0]
        if self._adaptive is not None:
            with self._adaptive_lock:
                self._adaptive.question(time.monotonic(), camera, adapters.stamp_ns(msg.image_stamp))
            self._update_mode()
        if not self._store.request(
            camera, adapters.stamp_ns(msg.image_stamp), int(self.config.stamp_tolerance_s * 1e9)
        ):
            self.counters.error("requests_unknown_camera", f"question names camera '{camera}'")

    def _on_refine_request(self, msg: RefineRequest) -> None:
        """Two-stage: queue the crop a server asks for (before frames); a request refused here is answered here."""
        self.counters.add("refine_requests")
        try:
            ask = adapters.refine_ask(msg)
        except RefineRefused as exc:
            self._reply_refused(adapters.refused_ask(msg), str(exc))
            return
        tolerance = int(self.config.stamp_tolerance_s * 1e9)
        if not self._store.refine(ask.camera, ask.stamp_ns, tolerance, ask):
            self._reply_refused(ask, f"unknown camera '{ask.camera}' (this device has {list(self.config.cameras)})")

    def _reply_refused(self, ask, why: str, status: int = RefinedFeatures.STATUS_REFUSED) -> None:
        self.counters.error("refine_refused", why)
        self.get_logger().warning(f"refine request '{ask.question_id}' refused: {why}", throttle_duration_sec=5.0)
        reply = adapters.refined_msg(ask, None, None, status, why, self.get_clock().now().nanoseconds)
        self._refined.publish(reply)

    def _on_answer(self, msg: Answer) -> None:
        """Adaptive mode: what the server measured of a frame (transfer, server time) or that it never came."""
        with self._adaptive_lock:
            self._adaptive.answered(
                time.monotonic(),
                msg.camera,
                adapters.stamp_ns(msg.image_stamp),
                ok=msg.status == Status.OK,
                no_frame=msg.status == Status.NO_FRAME,
                transfer_ms=msg.transfer_ms,
                server_ms=msg.server_ms,
            )

    def _update_mode(self) -> None:
        with self._adaptive_lock:
            continuous = self._adaptive.speculative(time.monotonic())
        self._store.set_continuous(continuous)

    def _adaptive_status(self) -> dict[str, object]:
        with self._adaptive_lock:
            return self._adaptive.snapshot(time.monotonic())

    def _run(self) -> None:
        while not self._store.closed and rclpy.ok(context=self.context):
            work = self._store.take(timeout=0.5)
            if work is None:
                continue
            try:
                if work.refine is not None:
                    self._refine(work)
                else:
                    self._encode_and_publish(work.camera, work.stamp_ns, work.frame)
            except Exception as exc:  # whatever raises, the worker goes on with the next frame
                self.counters.error("internal_errors", repr(exc))
                self.get_logger().error(f"frame of camera '{work[0]}' failed: {exc!r}", throttle_duration_sec=5.0)
                if work.refine is not None:  # its server still waits for one reply
                    self._reply_refused(work.refine, f"internal error: {exc!r}", RefinedFeatures.STATUS_FAILED)

    def _to_rgb(self, msg):
        cfg = self.config
        if cfg.image_format == "raw":
            return image_msg_to_rgb(msg, cfg.max_image_pixels)
        return compressed_msg_to_rgb(msg, cfg.max_image_pixels)

    def _refine(self, work) -> None:
        """Crop the frame a RefineRequest names where its weights point, encode the crop, reply (one reply always)."""
        ask = work.refine
        if work.frame is None:
            kept = self.config.on_demand_history
            self._reply_refused(
                ask, f"no frame of camera '{ask.camera}' stamped {ask.stamp_ns} ns among the last {kept}"
            )
            return
        started = time.perf_counter()
        try:
            region, encoded = self._refiner.refine(ask, self._to_rgb(work.frame))
        except (RefineRefused, ImageError) as exc:
            self._reply_refused(ask, str(exc))
            return
        except Exception as exc:  # the crop could not be encoded: say so, the server publishes its first answer
            self.counters.error("encode_errors", repr(exc))
            self._reply_refused(ask, f"encoding the crop failed: {exc!r}", RefinedFeatures.STATUS_FAILED)
            return
        now = self.get_clock().now().nanoseconds
        features = adapters.features_msg(
            encoded, work.frame.header, ask.camera, 0, device_ms=(time.perf_counter() - started) * 1e3, sent_ns=now
        )
        self._refined.publish(adapters.refined_msg(ask, region, features, RefinedFeatures.STATUS_OK, "", now))
        self.counters.add("refine_replies")
        self.counters.add("refine_bytes", len(encoded.payload))

    def _encode_and_publish(self, camera: str, stamp_ns: int, msg) -> None:
        started = time.perf_counter()
        cfg = self.config
        try:
            rgb = self._to_rgb(msg)
        except ImageError as exc:
            self.counters.error("frames_refused", str(exc))
            self.get_logger().warning(f"frame refused: {exc}", throttle_duration_sec=5.0)
            return
        encoder, choice = self._encoder, None
        if self._adaptive is not None:
            with self._adaptive_lock:
                previous = self._adaptive.current
                choice = self._adaptive.choose(time.monotonic())
                link = self._adaptive.link
            encoder = self._encoders[choice.index]
            if choice.index != previous:
                self.get_logger().info(
                    f"operating point {choice.name}: predicted {choice.predicted_ms:.0f} ms of "
                    f"{cfg.latency_budget_ms:g} (link {link.rate_mbps:.3g} Mbit/s, {link.delay_ms:.0f} ms"
                    f"{'; nothing fits' if choice.starved else ''}{'; speculative' if choice.speculative else ''})"
                )
        try:
            encoded = encoder.encode(rgb)
        except Exception as exc:  # a failing model must not take the node down; diagnostics show it
            self.counters.error("encode_errors", repr(exc))
            self.get_logger().error(f"encoding failed: {exc!r}", throttle_duration_sec=5.0)
            return
        out = adapters.features_msg(
            encoded,
            msg.header,
            camera,
            self._sequence[camera],
            device_ms=(time.perf_counter() - started) * 1e3,
            sent_ns=self.get_clock().now().nanoseconds,
        )
        if self._refiner is not None:  # before publishing: a request about this frame can come back at once
            self._refiner.remember(camera, stamp_ns, encoded)
        self._pub.publish(out)
        if choice is not None:
            with self._adaptive_lock:
                self._adaptive.sent(
                    time.monotonic(), camera, stamp_ns, choice.index, len(encoded.payload), out.device_ms
                )
        # Counted before the overlay: a failing debug image must not make the next frame reuse this sequence number.
        self._sequence[camera] += 1
        self.counters.add("published")
        self.counters.add("bytes_published", len(encoded.payload))
        if self._debug is not None and encoded.clusters is not None:
            self._publish_overlay(rgb, msg.header, encoded.clusters, encoder)

    def _publish_overlay(self, rgb, header, clusters, encoder) -> None:
        overlay = cluster_overlay(rgb, encoder.device_half.spec, *clusters)
        self._debug.publish(adapters.image_msg(overlay, header))

    def destroy_node(self) -> None:
        # Let an encode in progress finish: a daemon thread killed inside torch at exit aborts the process.
        self._store.close()
        self._worker.join(timeout=30)
        super().destroy_node()


def main(args=None) -> int:
    """Console entry point (`ros2 run tofc_ros device_node`)."""
    return run_node(DeviceNode, "device_node", args)


if __name__ == "__main__":
    sys.exit(main())
