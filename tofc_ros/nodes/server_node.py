"""Server (edge) node: CompressedFeatures + Question -> Answer, and the Ask action; a thin shell around ServerCore.

Two ways to ask, one core (pipeline/server_core.py: pairing, deadlines, statuses, batching, latency): a Question on
`questions` gets one Answer on `answers`; a goal of the `ask` action gets feedback per token and one result
(nodes/ask_action.py). Threads: ROS callbacks (features, questions, goals, the expiry timer) run on the node's
executor and hand everything to the core; one worker thread (nodes/answer_worker.py) answers the questions that are
ready together and delivers every answer. Every question and every accepted goal gets exactly one answer: OK or an
error status with a reason, whatever raises where.
"""

from __future__ import annotations

import sys

import rclpy
from rclpy.node import Node

from tofc_msgs.msg import Answer, CompressedFeatures, Question, RefinedFeatures, RefineRequest
from tofc_ros.config import ServerConfig
from tofc_ros.nodes import adapters
from tofc_ros.nodes.answer_worker import AnswerWorker
from tofc_ros.nodes.ask_action import AskAction
from tofc_ros.nodes.diagnostics import Counters, DiagnosticsPublisher
from tofc_ros.nodes.entry import StartupError, run_node
from tofc_ros.nodes.parameters import declare_config, qos
from tofc_ros.pipeline.answerer import build_server
from tofc_ros.pipeline.batcher import Batcher
from tofc_ros.pipeline.pairing import Refused
from tofc_ros.pipeline.records import AnswerRecord, Refinement, Status
from tofc_ros.pipeline.refine import RefineAsk
from tofc_ros.pipeline.server_core import Job, ServerCore, TwoStage

_EXPIRY_PERIOD_S = 0.02


class ServerNode(Node):
    """Subscribes to `features` and `questions`, publishes `answers`, serves the `ask` action.

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
        limits = dict(cache_size=cfg.cache_size, max_cameras=cfg.max_cameras, queue_size=cfg.queue_size)
        tolerance_ns = int(cfg.stamp_tolerance_s * 1e9)
        two_stage = None
        if cfg.two_stage:
            two_stage = TwoStage(
                cfg.refine_threshold, int(cfg.refine_timeout_s * 1e9), cfg.refine_max_area, cfg.refine_n_clusters
            )
        self.core = ServerCore(
            decoder, answerer, self._now_ns, **limits, stamp_tolerance_ns=tolerance_ns, two_stage=two_stage
        )
        statuses = (s.name.lower() for s in Status)
        refine = ("refine_requests", "refined", "refine_timeouts", "refine_failures", "refine_bytes",
                  "refinements_refused")  # fmt: skip
        self.counters = Counters("features_received", "features_refused", "questions", "goals", "payload_bytes",
                                 *statuses, *refine)  # fmt: skip
        hooks = {}  # per goal, what the core calls while generating its answer (feedback, cancel)
        batcher: Batcher[Job] = Batcher(cfg.max_batch_size, int(cfg.batch_wait_ms * 1e6), self._now_ns)
        self._worker = AnswerWorker(self.core, batcher, hooks, self._deliver, self.get_logger().error)
        self._ask = AskAction(self, self.core, cfg, hooks, self._worker.put, self._count, self._now_ns)
        answers_qos = qos(cfg.answers_qos_reliability, cfg.answers_qos_depth)
        self._answers = self.create_publisher(Answer, "answers", answers_qos)
        features_qos = qos(cfg.features_qos_reliability, cfg.features_qos_depth)
        self.create_subscription(CompressedFeatures, "features", self._on_features, features_qos)
        questions_qos = qos(cfg.questions_qos_reliability, cfg.questions_qos_depth)
        self.create_subscription(Question, "questions", self._on_question, questions_qos)
        self._refine_requests = None
        if cfg.two_stage:  # the device's crops come on their own topic, with the features' QoS
            self._refine_requests = self.create_publisher(RefineRequest, "refine_requests", features_qos)
            self.create_subscription(RefinedFeatures, "refined_features", self._on_refined, features_qos)
        self.create_timer(_EXPIRY_PERIOD_S, self._expire)
        self._diagnostics = DiagnosticsPublisher(self, self.counters, cfg.diagnostics_period_s, extra=self._status)
        batches = f"; batches of up to {cfg.max_batch_size}" if cfg.max_batch_size > 1 else ""
        if cfg.two_stage:
            batches += (
                f"; two-stage: detail asked on {self._refine_requests.topic_name} above {cfg.refine_threshold:g} nats, "
                f"waited for {cfg.refine_timeout_s:g} s"
            )
        self.get_logger().info(
            f"serving answers on {self._answers.topic_name} and the action {self.resolve_topic_name('ask')}{batches}"
        )

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _status(self) -> dict[str, int]:
        core, goals = self.core, len(self._ask.goals)
        return {"waiting": core.waiting, "in_flight": core.in_flight, "cached_frames": core.cached_frames,
                "goals_active": goals, "refining": core.refining}  # fmt: skip

    # -- executor thread ------------------------------------------------------------------------------------
    def _on_features(self, msg: CompressedFeatures) -> None:
        self.counters.add("features_received")
        try:
            jobs = self.core.add_frame(adapters.received_frame(msg, self._now_ns(), self.config.max_payload_bytes))
        except Refused as exc:
            self.counters.error("features_refused", str(exc))
            self.get_logger().warning(f"features refused: {exc}", throttle_duration_sec=5.0)
            return
        for job in jobs:
            self._worker.put(job)

    def _on_question(self, msg: Question) -> None:
        self.counters.add("questions")
        request = adapters.request(msg, self._now_ns(), self.config.default_camera, self.config.default_timeout_s)
        if request.question_id in self._ask.goals:
            # Answers are routed by question_id: a topic question may not take the id of a live goal (the goal's id
            # is its UUID, which only its own client knows in advance), else its answer would complete the goal.
            error = "question_id is in use by an active Ask goal"
            self._publish(self.core.record(request, Status.BAD_REQUEST, error=error))
            return
        outcome = self.core.ask(request)
        if isinstance(outcome, Job):
            self._worker.put(outcome)
        elif outcome is not None:
            self._deliver(outcome, request)

    def _on_refined(self, msg: RefinedFeatures) -> None:
        """The device's crop (or refusal) for a held first-pass answer."""
        reply = adapters.refine_reply(msg, self._now_ns(), self.config.max_payload_bytes)
        try:
            outcome = self.core.refined(reply)
        except Refused as exc:  # unknown question id, timed out already, or another frame than its first pass
            self.counters.error("refinements_refused", str(exc))
            self.get_logger().warning(f"refined features refused: {exc}", throttle_duration_sec=5.0)
            return
        if isinstance(outcome, Job):
            self._worker.put(outcome)
        else:
            self._deliver(outcome)

    def _expire(self) -> None:
        for record in self.core.expire():
            self._deliver(record)

    # -- both threads ---------------------------------------------------------------------------------------
    def _deliver(self, record: AnswerRecord | RefineAsk, source=None) -> None:
        """A goal's answer completes its goal (its execute coroutine sends the result); a question's is published; a
        held first pass asks the device for detail (its answer comes later, or the core's expiry publishes it)."""
        if isinstance(record, RefineAsk):
            self._refine_requests.publish(adapters.refine_request_msg(record, self._now_ns()))
            self.counters.add("refine_requests")
            return
        if not self._ask.complete(record):
            self._publish(record, source)

    def _count(self, record: AnswerRecord) -> None:
        self.counters.add("payload_bytes", record.payload_bytes)
        self.counters.add("refine_bytes", record.refine_payload_bytes)
        refined = {Refinement.DONE: "refined", Refinement.TIMED_OUT: "refine_timeouts",
                   Refinement.FAILED: "refine_failures"}.get(record.refinement)  # fmt: skip
        if refined is not None:
            self.counters.add(refined)
        self.counters.status(record.status.name.lower(), record.error)
        if record.status not in (Status.OK, Status.CANCELED):
            self.get_logger().warning(
                f"question '{record.question_id}': {record.status.name}: {record.error}", throttle_duration_sec=2.0
            )

    def _publish(self, record: AnswerRecord, source=None) -> None:
        """Publish one answer; if that raises, publish INTERNAL_ERROR for the same question instead."""
        error = self._try_publish(record)
        if error is not None:
            if source is None or record.status == Status.INTERNAL_ERROR:
                return
            record = self.core.failed(source, error)
            if self._try_publish(record) is not None:
                return
        self._count(record)

    def _try_publish(self, record: AnswerRecord) -> Exception | None:
        if rclpy.ok(context=self.context):  # after a signal the context is down: nothing can be published
            try:
                self._answers.publish(adapters.answer_msg(record, self._now_ns()))
            except Exception as exc:
                self.get_logger().error(f"publishing the answer to '{record.question_id}' failed: {exc!r}")
                return exc
        return None

    def destroy_node(self) -> None:
        # The worker finishes the batch in progress; jobs queued behind it are answered TIMEOUT, and so are questions
        # still waiting for a frame. Goals get their result only while an executor still spins the node.
        self._worker.stop(timeout=60)
        for record in self.core.drain():
            self._deliver(record)
        self._ask.destroy()
        super().destroy_node()


def main(args=None) -> int:
    """Console entry point (`ros2 run tofc_ros server_node`)."""
    # The executor thread hands each question to the worker thread and then runs rclpy's Python wait-set code
    # while the worker waits for the GIL; a 0.1 ms switch interval (default 5 ms) lets the worker in sooner.
    sys.setswitchinterval(1e-4)
    return run_node(ServerNode, "server_node", args)


if __name__ == "__main__":
    sys.exit(main())
