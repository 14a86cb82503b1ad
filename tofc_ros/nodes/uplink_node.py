"""Uplink emulation: relays CompressedFeatures from `features_in` to `features_out` as a link of a configured rate
and latency would deliver them, so the transfer term of every Answer is real (design: "Evaluation").

Messages are relayed as serialized bytes (never deserialised); a delivery thread releases each at its arrival time.
On shutdown the thread is stopped and joined before the publisher goes, so nothing is published after it.
"""

from __future__ import annotations

import collections
import sys
import threading
import time

from rclpy.node import Node

from tofc_msgs.msg import CompressedFeatures
from tofc_ros.config import UplinkConfig
from tofc_ros.nodes.diagnostics import Counters, DiagnosticsPublisher
from tofc_ros.nodes.entry import StartupError, run_node
from tofc_ros.nodes.parameters import declare_config, qos
from tofc_ros.pipeline.uplink import Link, RateTrace


class UplinkNode(Node):
    """`features_in` -> (rate, latency) -> `features_out`."""

    def __init__(self, **kwargs) -> None:
        super().__init__("uplink_node", **kwargs)
        self.config: UplinkConfig = declare_config(self, UplinkConfig)
        cfg = self.config
        try:
            trace = RateTrace.parse(cfg.rate_trace) if cfg.rate_trace not in ("", "none") else None
        except (OSError, ValueError) as exc:
            raise StartupError(f"parameter rate_trace: {exc}") from exc
        self._link = Link(cfg.rate_mbps, cfg.latency_ms / 1e3, cfg.max_backlog_s, trace, origin=time.monotonic())
        self._started = False  # the trace's offset 0 is the first message (a graph's start-up time is not the link's)
        self.counters = Counters("relayed", "dropped", "bytes")
        # What the link delivered in each trace segment (by arrival time): the report of a rate-trace run.
        self._delivered = [[0, 0] for _ in (trace.rates if trace else (cfg.rate_mbps,))]
        self._pub = self.create_publisher(
            CompressedFeatures, "features_out", qos(cfg.features_out_qos_reliability, cfg.features_out_qos_depth)
        )
        self.create_subscription(
            CompressedFeatures,
            "features_in",
            self._on_message,
            qos(cfg.features_in_qos_reliability, cfg.features_in_qos_depth),
            raw=True,
        )
        self._queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        DiagnosticsPublisher(self, self.counters, cfg.diagnostics_period_s, extra=self._status)
        self._thread = threading.Thread(target=self._deliver, name="uplink", daemon=True)
        self._thread.start()
        rate = f"rate trace {cfg.rate_trace!r}" if trace else f"{cfg.rate_mbps} Mbit/s"
        self.get_logger().info(
            f"{self.resolve_topic_name('features_in')} → {self._pub.topic_name}: {rate}, {cfg.latency_ms} ms"
        )

    def _status(self) -> dict[str, object]:
        now = time.monotonic()
        trace = self._link.trace
        return {
            "queued": len(self._queue),
            "rate_mbps": self._link.rate_at(now),
            "segment": trace.segment(now - self._link.origin) if trace else 0,
            "delivered_per_segment": ";".join(f"{m} msgs/{b} B" for m, b in self._delivered),
        }

    def _on_message(self, data: bytes) -> None:
        now = time.monotonic()
        if not self._started:
            self._started = True
            self._link.origin = now
        arrival = self._link.transmit(len(data), now)
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
                arrival, data = self._queue.popleft()
                # Published under the lock: destroy_node() cannot close the link between the check and the
                # publish. The subscription callback only waits for this one publish.
                self._pub.publish(data)
            self.counters.add("relayed")
            self.counters.add("bytes", len(data))
            trace = self._link.trace
            segment = self._delivered[trace.segment(arrival - self._link.origin) if trace else 0]
            segment[0] += 1
            segment[1] += len(data)

    def destroy_node(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=10)
        super().destroy_node()


def main(args=None) -> int:
    """Console entry point (`ros2 run tofc_ros uplink_node`)."""
    return run_node(UplinkNode, "uplink_node", args)


if __name__ == "__main__":
    sys.exit(main())
