"""Uplink emulation: relays CompressedFeatures from `features_in` to `features_out` as a link of a configured rate
and latency would deliver them, so the transfer term of every Answer is real (design: "Evaluation").

Messages are relayed as serialized bytes (never deserialised); a worker thread releases each at its arrival time.
"""

from __future__ import annotations

import collections
import sys
import threading
import time

from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from tofc_msgs.msg import CompressedFeatures

from tofc_ros.nodes.diagnostics import Counters, DiagnosticsPublisher
from tofc_ros.nodes.entry import run_node
from tofc_ros.nodes.parameters import ParameterError
from tofc_ros.pipeline.uplink import Link


def _float_param(node: Node, name: str, default: float, low: float, high: float, description: str) -> float:
    desc = ParameterDescriptor(description=description, read_only=True, dynamic_typing=True,
                               floating_point_range=[FloatingPointRange(from_value=low, to_value=high, step=0.0)])
    value = node.declare_parameter(name, default, desc).value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ParameterError(f"parameter '{name}' = {value!r} must be a number in [{low}, {high}] ({description})")
    return float(value)


class UplinkNode(Node):
    """`features_in` → (rate, latency) → `features_out`."""

    def __init__(self, **kwargs) -> None:
        super().__init__("uplink_node", **kwargs)
        rate = _float_param(self, "rate_mbps", 10.0, 0.001, 100_000.0, "Link rate in Mbit/s")
        latency = _float_param(self, "latency_ms", 20.0, 0.0, 60_000.0, "One-way latency in milliseconds")
        backlog = _float_param(self, "max_backlog_s", 10.0, 0.0, 3600.0,
                               "Longest queued transmission time before messages are dropped")
        self._link = Link(rate, latency / 1e3, backlog)
        self.counters = Counters("relayed", "dropped", "bytes")
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self._pub = self.create_publisher(CompressedFeatures, "features_out", qos)
        self.create_subscription(CompressedFeatures, "features_in", self._on_message, qos, raw=True)
        self._queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        DiagnosticsPublisher(self, self.counters, 1.0, extra=lambda: {"queued": len(self._queue)})
        threading.Thread(target=self._deliver, name="uplink", daemon=True).start()
        self.get_logger().info(f"{self.resolve_topic_name('features_in')} → {self._pub.topic_name}: "
                               f"{rate} Mbit/s, {latency} ms")

    def _on_message(self, data: bytes) -> None:
        arrival = self._link.transmit(len(data), time.monotonic())
        if arrival is None:
            self.counters.error("dropped", "uplink backlog full")
            return
        with self._cond:
            self._queue.append((arrival, data))  # arrivals are in order: the link serialises
            self._cond.notify()

    def _deliver(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._queue or self._queue[0][0] > time.monotonic()):
                    self._cond.wait(max(self._queue[0][0] - time.monotonic(), 0.0) if self._queue else 0.5)
                if self._closed:
                    return
                _, data = self._queue.popleft()
            self._pub.publish(data)  # outside the lock: the subscription callback never waits on a publish
            self.counters.add("relayed")
            self.counters.add("bytes", len(data))

    def destroy_node(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        super().destroy_node()


def main(args=None) -> int:
    """Console entry point (`ros2 run tofc_ros uplink_node`)."""
    return run_node(UplinkNode, "uplink_node", args)


if __name__ == "__main__":
    sys.exit(main())
