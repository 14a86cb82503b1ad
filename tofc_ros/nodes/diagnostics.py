"""Publish a node's counters on /diagnostics (diagnostic_msgs/DiagnosticArray) at a fixed period."""

from __future__ import annotations

import threading
from collections.abc import Callable

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node


class Counters:
    """Thread-safe named counters and the last error, read by the diagnostics timer."""

    def __init__(self, *names: str) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(names, 0)
        self.last_error = ""

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._values[name] += amount

    def error(self, name: str, message: str) -> None:
        with self._lock:
            self._values[name] += 1
            self.last_error = f"{name}: {message}"

    def status(self, name: str, error: str) -> None:
        """Count one answer under its status name; anything but "ok" also becomes the last error."""
        if name == "ok":
            self.add(name)
        else:
            self.error(name, error)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)


class DiagnosticsPublisher:
    """A timer that publishes one DiagnosticStatus with `counters` and whatever `extra` returns."""

    def __init__(
        self, node: Node, counters: Counters, period_s: float, extra: Callable[[], dict[str, object]] | None = None
    ) -> None:
        self._node = node
        self._counters = counters
        self._extra = extra or (lambda: {})
        self._pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._timer = node.create_timer(period_s, self._publish)

    def _publish(self) -> None:
        values = {**self._counters.snapshot(), **self._extra()}
        status = DiagnosticStatus(
            level=DiagnosticStatus.WARN if self._counters.last_error else DiagnosticStatus.OK,
            name=f"{self._node.get_fully_qualified_name()}",
            message=self._counters.last_error or "OK",
            hardware_id=self._node.get_name(),
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
        )
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self._node.get_clock().now().to_msg()
        self._pub.publish(msg)
