"""Server (edge) node: CompressedFeatures + Question → Answer.

Threads: ROS callbacks (features, questions, the expiry timer) run on one single-threaded executor, so the
pairing state has one owner; one worker thread runs the model on paired questions in arrival order and
publishes their answers. Every question gets exactly one Answer: OK or an error status with a reason.
"""

from __future__ import annotations

import dataclasses
import queue
import sys
import threading

import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from tofc_msgs.msg import Answer, CompressedFeatures, Question

from tofc_ros.config import ServerConfig
from tofc_ros.nodes.diagnostics import Counters, DiagnosticsPublisher
from tofc_ros.nodes.entry import StartupError, run_node
from tofc_ros.nodes.parameters import declare_config, qos
from tofc_ros.pipeline.pairing import LATEST, FrameCache, Pairing, Refused, Waiting
from tofc_ros.pipeline.server import Answerer, DecodeError, ModelMismatch, ReceivedFrame, make_answerer

_STATUS = {
    "OK": Answer.STATUS_OK,
    "NO_FRAME": Answer.STATUS_NO_FRAME,
    "TIMEOUT": Answer.STATUS_TIMEOUT,
    "DECODE_ERROR": Answer.STATUS_DECODE_ERROR,
    "MODEL_MISMATCH": Answer.STATUS_MODEL_MISMATCH,
    "BUSY": Answer.STATUS_BUSY,
    "BAD_REQUEST": Answer.STATUS_BAD_REQUEST,
    "INTERNAL_ERROR": Answer.STATUS_INTERNAL_ERROR,
}
_EXPIRY_PERIOD_S = 0.02


@dataclasses.dataclass(frozen=True)
class Request:
    """A question as the server keeps it."""

    question_id: str
    text: str
    camera: str
    stamp_ns: int
    asked_ns: int  # the Question's header stamp (0 when the asker left it empty)
    received_ns: int
    deadline_ns: int


def _ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def _ms(ns: int) -> float:
    return ns / 1e6


class ServerNode(Node):
    """Subscribes to `features` and `questions`, publishes `answers`."""

    def __init__(self, answerer: Answerer | None = None, **kwargs) -> None:
        super().__init__("server_node", **kwargs)
        self.config: ServerConfig = declare_config(self, ServerConfig)
        cfg = self.config
        try:
            self._answerer = answerer or make_answerer(cfg)
        except (OSError, ValueError) as exc:
            raise StartupError(f"loading the model or codec failed: {exc}") from exc
        self._pairing: Pairing[ReceivedFrame] = Pairing(
            FrameCache(cfg.cache_size, cfg.max_cameras), cfg.queue_size, int(cfg.stamp_tolerance_s * 1e9))
        # Bounded through Pairing.ask(in_flight=...). SimpleQueue: its get() blocks in C and put() wakes it directly,
        # without queue.Queue's Python-level Condition, so the worker needs the GIL once instead of several times.
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._in_flight = 0
        self._stopping = False
        self._in_flight_lock = threading.Lock()
        self.counters = Counters("features_received", "features_refused", "questions", "answers_ok",
                                 "no_frame", "timeout", "decode_error", "model_mismatch", "busy", "bad_request",
                                 "internal_error", "payload_bytes")

        reliable = QoSProfile(depth=cfg.questions_qos_depth, reliability=ReliabilityPolicy.RELIABLE)
        self._answers = self.create_publisher(
            Answer, "answers", QoSProfile(depth=cfg.answers_qos_depth, reliability=ReliabilityPolicy.RELIABLE))
        self.create_subscription(CompressedFeatures, "features", self._on_features,
                                 qos(cfg.features_qos_reliability, cfg.features_qos_depth))
        self.create_subscription(Question, "questions", self._on_question, reliable)
        self.create_timer(_EXPIRY_PERIOD_S, self._expire)
        self._diagnostics = DiagnosticsPublisher(
            self, self.counters, cfg.diagnostics_period_s,
            extra=lambda: {"waiting": self._pairing.waiting, "in_flight": self._in_flight,
                           "cached_frames": len(self._pairing.cache)})
        self._worker = threading.Thread(target=self._run, name="server-worker", daemon=True)
        self._worker.start()
        self.get_logger().info(f"serving answers on {self._answers.topic_name}")

    # -- executor thread ------------------------------------------------------------------------------------
    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _on_features(self, msg: CompressedFeatures) -> None:
        frame = self._received_frame(msg)
        self.counters.add("features_received")
        try:
            ready = self._pairing.add_frame(frame.camera, frame.stamp_ns, frame)
        except Refused as exc:
            self.counters.error("features_refused", str(exc))
            self.get_logger().warning(f"features refused: {exc}", throttle_duration_sec=5.0)
            return
        for waiting in ready:
            self._enqueue(waiting.request, frame)

    def _received_frame(self, msg: CompressedFeatures) -> ReceivedFrame:
        size = len(msg.payload)
        oversize = size > self.config.max_payload_bytes
        return ReceivedFrame(
            camera=msg.camera, stamp_ns=_ns(msg.header.stamp), format=msg.format,
            codec_fingerprint=msg.codec_fingerprint, backbone_fingerprint=msg.backbone_fingerprint,
            image_height=msg.image_height, image_width=msg.image_width, grid_rows=msg.grid_rows,
            grid_cols=msg.grid_cols, n_tiles=msg.n_tiles, n_clusters=msg.n_clusters, feature_dim=msg.feature_dim,
            # An oversize payload is not kept: questions about it get DECODE_ERROR without it being read.
            payload=b"" if oversize else bytes(msg.payload), payload_size=size,
            refusal=f"payload of {size} B exceeds max_payload_bytes = {self.config.max_payload_bytes}"
            if oversize else "",
            device_ms=msg.device_ms, sent_ns=_ns(msg.sent), arrival_ns=self._now_ns())

    def _on_question(self, msg: Question) -> None:
        self.counters.add("questions")
        now = self._now_ns()
        timeout_s = msg.timeout_s if msg.timeout_s > 0 else self.config.default_timeout_s
        request = Request(
            question_id=msg.question_id, text=msg.text, camera=msg.camera or self.config.default_camera,
            stamp_ns=_ns(msg.image_stamp), asked_ns=_ns(msg.header.stamp), received_ns=now,
            deadline_ns=now + int(timeout_s * 1e9))
        if not msg.question_id or not msg.text.strip():
            self._publish(request, "BAD_REQUEST", error="question_id and text must not be empty")
            return
        waiting = Waiting(request.question_id, request.camera, request.stamp_ns, request.deadline_ns, request)
        try:
            frame = self._pairing.ask(waiting, in_flight=self._in_flight)
        except Refused as exc:
            self._publish(request, exc.status, error=str(exc))
            return
        if frame is not None:
            self._enqueue(request, frame)

    def _expire(self) -> None:
        for waiting in self._pairing.expire(self._now_ns()):
            request = waiting.request
            which = "the latest frame" if request.stamp_ns == LATEST else f"the frame stamped {request.stamp_ns} ns"
            self._publish(request, "NO_FRAME",
                          error=f"no features for camera '{request.camera}' ({which}) within "
                                f"{(request.deadline_ns - request.received_ns) / 1e9:.3g} s")

    def _enqueue(self, request: Request, frame: ReceivedFrame) -> None:
        with self._in_flight_lock:
            self._in_flight += 1
        self._jobs.put((request, frame))

    # -- worker thread --------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            request, frame = job
            try:
                if self._stopping:
                    if rclpy.ok(context=self.context):  # after a signal the context is already down
                        self._publish(request, "TIMEOUT", frame=frame, error="server shutting down")
                else:
                    self._answer(request, frame)
            finally:
                with self._in_flight_lock:
                    self._in_flight -= 1

    def _answer(self, request: Request, frame: ReceivedFrame) -> None:
        started = self._now_ns()
        if started > request.deadline_ns:
            self._publish(request, "TIMEOUT", frame=frame, started_ns=started,
                          error=f"waited {(started - request.received_ns) / 1e9:.3g} s in the queue, past its timeout")
            return
        if frame.refusal:
            self._publish(request, "DECODE_ERROR", frame=frame, started_ns=started, error=frame.refusal)
            return
        try:
            text = self._answerer.answer(frame, request.text)
        except DecodeError as exc:
            self._publish(request, "DECODE_ERROR", frame=frame, started_ns=started, error=str(exc))
        except ModelMismatch as exc:
            self._publish(request, "MODEL_MISMATCH", frame=frame, started_ns=started, error=str(exc))
        except Exception as exc:  # the model failing on one question must not stop the others
            self.get_logger().error(f"question '{request.question_id}' failed: {exc!r}")
            self._publish(request, "INTERNAL_ERROR", frame=frame, started_ns=started, error=repr(exc))
        else:
            self._publish(request, "OK", text=text, frame=frame, started_ns=started)

    # -- both threads ---------------------------------------------------------------------------------------
    def _publish(self, request: Request, status: str, *, text: str = "", error: str = "",
                 frame: ReceivedFrame | None = None, started_ns: int | None = None) -> None:
        now = self._now_ns()
        msg = Answer()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.question_id = request.question_id
        msg.status = _STATUS[status]
        msg.error = error
        msg.text = text
        msg.camera = request.camera
        if frame is not None:
            msg.image_stamp.sec, msg.image_stamp.nanosec = divmod(frame.stamp_ns, 1_000_000_000)
            msg.format = frame.format
            msg.payload_bytes = frame.payload_size
            msg.device_ms = frame.device_ms
            msg.transfer_ms = _ms(frame.arrival_ns - frame.sent_ns) if frame.sent_ns else 0.0
            self.counters.add("payload_bytes", frame.payload_size)
        started = started_ns if started_ns is not None else now
        msg.wait_ms = _ms(started - request.received_ns)
        msg.server_ms = _ms(now - started)
        msg.total_ms = _ms(now - (request.asked_ns or request.received_ns))
        if status == "OK":
            self.counters.add("answers_ok")
        else:
            self.counters.error(status.lower(), error)
            self.get_logger().warning(f"question '{request.question_id}': {status}: {error}",
                                      throttle_duration_sec=2.0)
        self._answers.publish(msg)

    def destroy_node(self) -> None:
        # The worker finishes the answer in progress (a thread killed inside torch at exit aborts the process);
        # questions still queued behind it are answered TIMEOUT by it once it sees the context is down.
        self._stopping = True
        self._jobs.put(None)
        self._worker.join(timeout=60)
        for waiting in self._pairing.drain():
            if rclpy.ok(context=self.context):
                self._publish(waiting.request, "TIMEOUT", error="server shutting down")
        super().destroy_node()


def main(args=None) -> int:
    """Console entry point (`ros2 run tofc_ros server_node`)."""
    # The executor thread hands each question to the worker thread and then runs rclpy's Python wait-set code
    # while the worker waits for the GIL; a 0.1 ms switch interval (default 5 ms) lets the worker in sooner.
    sys.setswitchinterval(1e-4)
    return run_node(ServerNode, "server_node", args)


if __name__ == "__main__":
    sys.exit(main())
