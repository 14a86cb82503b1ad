"""Server (edge) node: CompressedFeatures + Question -> Answer; a thin shell around the pure ServerCore.

Threads: ROS callbacks (features, questions, the expiry timer) run on the node's executor and hand messages to the
core; one worker thread runs the model on paired questions in arrival order and publishes their answers. Every
question gets exactly one Answer: OK or an error status with a reason, whatever raises where.
"""

from __future__ import annotations

import queue
import sys
import threading

import rclpy
from rclpy.node import Node

from tofc_msgs.msg import Answer, CompressedFeatures, Question
from tofc_ros.config import ServerConfig
from tofc_ros.nodes import adapters
from tofc_ros.nodes.diagnostics import Counters, DiagnosticsPublisher
from tofc_ros.nodes.entry import StartupError, run_node
from tofc_ros.nodes.parameters import declare_config, qos
from tofc_ros.pipeline.answerer import build_server
from tofc_ros.pipeline.pairing import Refused
from tofc_ros.pipeline.records import AnswerRecord, Status
from tofc_ros.pipeline.server_core import Job, ServerCore

_EXPIRY_PERIOD_S = 0.02


class ServerNode(Node):
    """Subscribes to `features` and `questions`, publishes `answers`.

    Args:
        server: (decoder, answerer) to use instead of building them from the parameters (tests, offline tools).
    """

    def __init__(self, server=None, **kwargs) -> None:
        super().__init__("server_node", **kwargs)
        self.config: ServerConfig = declare_config(self, ServerConfig)
        cfg = self.config
        try:
            decoder, answerer = server or build_server(cfg)
        except (OSError, ValueError) as exc:
            raise StartupError(f"loading the model or codec failed: {exc}") from exc
        self.core = ServerCore(
            decoder,
            answerer,
            self._now_ns,
            cache_size=cfg.cache_size,
            max_cameras=cfg.max_cameras,
            queue_size=cfg.queue_size,
            stamp_tolerance_ns=int(cfg.stamp_tolerance_s * 1e9),
        )
        self.counters = Counters(
            "features_received", "features_refused", "questions", "payload_bytes", *(s.name.lower() for s in Status)
        )
        # SimpleQueue: get() blocks in C and put() wakes it directly (no Python-level Condition), so the worker
        # needs the GIL once instead of several times per hand-off. Bounded by the core (queue_size).
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._stopping = False
        self._answers = self.create_publisher(
            Answer, "answers", qos(cfg.answers_qos_reliability, cfg.answers_qos_depth)
        )
        self.create_subscription(
            CompressedFeatures, "features", self._on_features, qos(cfg.features_qos_reliability, cfg.features_qos_depth)
        )
        self.create_subscription(
            Question, "questions", self._on_question, qos(cfg.questions_qos_reliability, cfg.questions_qos_depth)
        )
        self.create_timer(_EXPIRY_PERIOD_S, self._expire)
        self._diagnostics = DiagnosticsPublisher(
            self,
            self.counters,
            cfg.diagnostics_period_s,
            extra=lambda: {
                "waiting": self.core.waiting,
                "in_flight": self.core.in_flight,
                "cached_frames": self.core.cached_frames,
            },
        )
        self._worker = threading.Thread(target=self._run, name="server-worker", daemon=True)
        self._worker.start()
        self.get_logger().info(f"serving answers on {self._answers.topic_name}")

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    # -- executor thread ------------------------------------------------------------------------------------
    def _on_features(self, msg: CompressedFeatures) -> None:
        self.counters.add("features_received")
        frame = adapters.received_frame(msg, self._now_ns(), self.config.max_payload_bytes)
        try:
            jobs = self.core.add_frame(frame)
        except Refused as exc:
            self.counters.error("features_refused", str(exc))
            self.get_logger().warning(f"features refused: {exc}", throttle_duration_sec=5.0)
            return
        for job in jobs:
            self._jobs.put(job)

    def _on_question(self, msg: Question) -> None:
        self.counters.add("questions")
        request = adapters.request(msg, self._now_ns(), self.config.default_camera, self.config.default_timeout_s)
        outcome = self.core.ask(request)
        if isinstance(outcome, Job):
            self._jobs.put(outcome)
        elif outcome is not None:
            self._publish(outcome, request)

    def _expire(self) -> None:
        for record in self.core.expire():
            self._publish(record)

    # -- worker thread --------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if self._stopping:
                record = self.core.abandon(job, "server shutting down")
            else:
                record = self.core.run(job)
            self._publish(record, job)

    # -- both threads ---------------------------------------------------------------------------------------
    def _publish(self, record: AnswerRecord, source=None) -> None:
        """Publish one answer; if that raises, publish INTERNAL_ERROR for the same question instead."""
        error = self._try_publish(record)
        if error is not None:
            if source is None or record.status == Status.INTERNAL_ERROR:
                return
            record = self.core.failed(source, error)
            if self._try_publish(record) is not None:
                return
        self.counters.add("payload_bytes", record.payload_bytes)
        self.counters.status(record.status.name.lower(), record.error)
        if record.status != Status.OK:
            self.get_logger().warning(
                f"question '{record.question_id}': {record.status.name}: {record.error}", throttle_duration_sec=2.0
            )

    def _try_publish(self, record: AnswerRecord) -> Exception | None:
        if rclpy.ok(context=self.context):  # after a signal the context is down: nothing can be published
            try:
                self._answers.publish(adapters.answer_msg(record, self._now_ns()))
            except Exception as exc:
                self.get_logger().error(f"publishing the answer to '{record.question_id}' failed: {exc!r}")
                return exc
        return None

    def destroy_node(self) -> None:
        # The worker finishes the answer in progress (a thread killed inside torch at exit aborts the process);
        # jobs queued behind it are answered TIMEOUT, and so are questions still waiting for a frame.
        self._stopping = True
        self._jobs.put(None)
        self._worker.join(timeout=60)
        for record in self.core.drain():
            self._publish(record)
        super().destroy_node()


def main(args=None) -> int:
    """Console entry point (`ros2 run tofc_ros server_node`)."""
    # The executor thread hands each question to the worker thread and then runs rclpy's Python wait-set code
    # while the worker waits for the GIL; a 0.1 ms switch interval (default 5 ms) lets the worker in sooner.
    sys.setswitchinterval(1e-4)
    return run_node(ServerNode, "server_node", args)


if __name__ == "__main__":
    sys.exit(main())
