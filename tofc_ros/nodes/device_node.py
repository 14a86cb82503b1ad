"""Device (robot) node: camera frames → CompressedFeatures.

Threads: the executor thread only stores the newest frame (sensor-data QoS, depth 1); one worker thread takes
the newest frame, encodes it and publishes, at most `max_rate_hz` times a second. Encoding is slower than the
camera, so frames that arrive while the worker is busy replace each other and are counted as dropped: nothing
queues without bound.
"""

from __future__ import annotations

import sys
import threading
import time

import rclpy
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image
from tofc_msgs.msg import CompressedFeatures

from tofc_ros.config import DeviceConfig
from tofc_ros.nodes.diagnostics import Counters, DiagnosticsPublisher
from tofc_ros.nodes.images import ImageError, compressed_msg_to_rgb, image_msg_to_rgb
from tofc_ros.nodes.entry import StartupError, run_node
from tofc_ros.nodes.parameters import declare_config, qos
from tofc_ros.pipeline.device import EncodedFrame, FrameEncoder, make_encoder


class LatestFrame:
    """A one-slot mailbox: put() replaces an unread frame (counted as dropped), take() waits for a new one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item = None
        self._closed = False

    def put(self, item) -> bool:
        """Store `item`; return True when it replaced a frame nobody took."""
        with self._cond:
            replaced = self._item is not None
            self._item = item
            self._cond.notify()
            return replaced

    def take(self, timeout: float | None = None):
        """The newest item, or None on timeout or after close()."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self._closed, timeout)
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class DeviceNode(Node):
    """Subscribes to `image` (or `image/compressed`), publishes `features`."""

    def __init__(self, encoder: FrameEncoder | None = None, **kwargs) -> None:
        super().__init__("device_node", **kwargs)
        self.config: DeviceConfig = declare_config(self, DeviceConfig)
        try:
            self._encoder = encoder or make_encoder(self.config)
        except (OSError, ValueError) as exc:
            raise StartupError(f"loading the model or codec failed: {exc}") from exc
        self.counters = Counters("frames_received", "frames_skipped", "frames_dropped", "frames_refused",
                                 "published", "bytes_published", "encode_errors")
        self._sequence = 0
        self._mailbox = LatestFrame()
        self._stride_count = 0

        cfg = self.config
        self._pub = self.create_publisher(
            CompressedFeatures, "features", qos(cfg.features_qos_reliability, cfg.features_qos_depth))
        image_qos = qos(cfg.image_qos_reliability, cfg.image_qos_depth)
        if cfg.image_format == "raw":
            self._sub = self.create_subscription(Image, "image", self._on_image, image_qos)
        else:
            self._sub = self.create_subscription(CompressedImage, "image/compressed", self._on_image, image_qos)
        self._diagnostics = DiagnosticsPublisher(self, self.counters, cfg.diagnostics_period_s)
        self._worker = threading.Thread(target=self._run, name="device-encoder", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"camera '{cfg.camera}': {cfg.image_format} images on {self._sub.topic_name} → "
            f"{self._pub.topic_name} ({cfg.codec}, ≤ {cfg.max_rate_hz} Hz)")

    def _on_image(self, msg) -> None:
        self.counters.add("frames_received")
        self._stride_count += 1
        if (self._stride_count - 1) % self.config.frame_stride:
            self.counters.add("frames_skipped")
            return
        if self._mailbox.put(msg):
            self.counters.add("frames_dropped")

    def _run(self) -> None:
        period = 1.0 / self.config.max_rate_hz
        next_start = 0.0
        while rclpy.ok(context=self.context):
            item = self._mailbox.take(timeout=0.5)
            if item is None:
                continue
            # Rate limit: wait out the period, then take the newest frame that arrived meanwhile.
            delay = next_start - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
                newer = self._mailbox.take(timeout=0)
                if newer is not None:
                    self.counters.add("frames_dropped")
                    item = newer
            next_start = time.perf_counter() + period
            self._encode_and_publish(item)

    def _encode_and_publish(self, msg) -> None:
        started = time.perf_counter()
        cfg = self.config
        try:
            if cfg.image_format == "raw":
                rgb = image_msg_to_rgb(msg, cfg.max_image_pixels)
            else:
                rgb = compressed_msg_to_rgb(msg, cfg.max_image_pixels)
        except ImageError as exc:
            self.counters.error("frames_refused", str(exc))
            self.get_logger().warning(f"frame refused: {exc}", throttle_duration_sec=5.0)
            return
        try:
            encoded = self._encoder.encode(rgb)
        except Exception as exc:  # a failing model must not take the node down; diagnostics show it
            self.counters.error("encode_errors", repr(exc))
            self.get_logger().error(f"encoding failed: {exc!r}", throttle_duration_sec=5.0)
            return
        out = _features_msg(encoded, msg.header, cfg.camera, self._sequence,
                            device_ms=(time.perf_counter() - started) * 1e3)
        out.sent = self.get_clock().now().to_msg()
        self._pub.publish(out)
        self._sequence += 1
        self.counters.add("published")
        self.counters.add("bytes_published", len(encoded.payload))

    def destroy_node(self) -> None:
        self._mailbox.close()
        super().destroy_node()


def _features_msg(enc: EncodedFrame, header, camera: str, sequence: int, device_ms: float) -> CompressedFeatures:
    msg = CompressedFeatures()
    msg.header = header
    msg.camera = camera
    msg.sequence = sequence
    msg.format = enc.format
    msg.codec_fingerprint = enc.codec_fingerprint
    msg.backbone_fingerprint = enc.backbone_fingerprint
    msg.image_height, msg.image_width = enc.image_height, enc.image_width
    msg.grid_rows, msg.grid_cols, msg.n_tiles = enc.grid_rows, enc.grid_cols, enc.n_tiles
    msg.n_clusters, msg.feature_dim = enc.n_clusters, enc.feature_dim
    msg.payload = enc.payload
    msg.vision_ms, msg.merge_ms, msg.encode_ms = enc.vision_ms, enc.merge_ms, enc.encode_ms
    msg.device_ms = device_ms
    return msg


def main(args=None) -> int:
    """Console entry point (`ros2 run tofc_ros device_node`)."""
    return run_node(DeviceNode, "device_node", args)


if __name__ == "__main__":
    sys.exit(main())
