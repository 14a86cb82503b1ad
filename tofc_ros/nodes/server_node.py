"""Server (edge) node: CompressedFeatures + Question -> Answer, and the Ask action; a thin shell around ServerCore.

Two ways to ask, one core: a Question on `questions` gets one Answer on `answers`; a goal of the `ask` action
(tofc_msgs/action/Ask) gets the answer so far as feedback after every token and one result carrying the same
Answer, and can be cancelled. Both pair with frames, wait, queue, batch and time out alike.

Threads: ROS callbacks (features, questions, goals, cancel requests, the expiry timer) run on the node's executor
and hand everything to the core; one worker thread collects the questions that are ready together (``Batcher``:
``max_batch_size``, ``batch_wait_ms``), answers them in one batched generation and publishes the topic answers;
goals get their feedback from it and their result from their execute coroutine, which the worker wakes. Every
question and every accepted goal gets exactly one answer: OK or an error status with a reason, whatever raises where.
"""

from __future__ import annotations

import queue
import sys
import threading

import rclpy
from rclpy.action import ActionServer, CancelResponse
from rclpy.node import Node
from rclpy.task import Future

from tofc_msgs.action import Ask
from tofc_msgs.msg import Answer, CompressedFeatures, Question
from tofc_ros.codec import load_codec
from tofc_ros.config import ServerConfig
from tofc_ros.nodes import adapters
from tofc_ros.nodes.diagnostics import Counters, DiagnosticsPublisher
from tofc_ros.nodes.entry import StartupError, run_node
from tofc_ros.nodes.images import ImageError, image_msg_to_rgb
from tofc_ros.nodes.parameters import declare_config, qos
from tofc_ros.pipeline.answerer import build_server
from tofc_ros.pipeline.batcher import Batcher
from tofc_ros.pipeline.pairing import Refused
from tofc_ros.pipeline.records import AnswerRecord, Request, Status
from tofc_ros.pipeline.server_core import Hooks, Job, ServerCore

_EXPIRY_PERIOD_S = 0.02
_EMPTY = object()  # the worker's "nothing arrived before the batch was due"


class _Goal:
    """An accepted Ask goal: its handle, the asker's cancel flag, the feedback count and its answer to come."""

    def __init__(self, handle) -> None:
        self.handle = handle
        self.cancel = threading.Event()
        self.tokens = 0
        self.answer: Future = Future()  # set once, with the goal's AnswerRecord


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
            "features_received",
            "features_refused",
            "questions",
            "goals",
            "payload_bytes",
            *(s.name.lower() for s in Status),
        )
        # SimpleQueue: get() blocks in C and put() wakes it directly (no Python-level Condition), so the worker
        # needs the GIL once instead of several times per hand-off. Bounded by the core (queue_size).
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._batcher: Batcher[Job] = Batcher(cfg.max_batch_size, int(cfg.batch_wait_ms * 1e6), self._now_ns)
        self._stopping = False
        self._goals: dict[str, _Goal] = {}  # question_id (the goal id) -> goal; the worker reads it too
        self._hooks: dict[str, Hooks] = {}  # what the core calls while generating a goal's answer
        # A goal's own picture travels to the decoder as an image payload: raw pixels for a model (its vision tower
        # answers them, or the decoder refuses them without one), the placeholder's format for the placeholder.
        self._goal_codec = load_codec("placeholder-zstd" if cfg.answerer == "placeholder" else "rgb8")
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
        # Goal, cancel and result services run in the node's default (mutually exclusive) callback group, like the
        # subscriptions, so the core keeps one owner on the executor side.
        self._ask = ActionServer(
            self,
            Ask,
            "ask",
            execute_callback=self._execute_goal,
            handle_accepted_callback=self._on_goal,
            cancel_callback=self._on_cancel,
        )
        self._diagnostics = DiagnosticsPublisher(
            self,
            self.counters,
            cfg.diagnostics_period_s,
            extra=lambda: {
                "waiting": self.core.waiting,
                "in_flight": self.core.in_flight,
                "cached_frames": self.core.cached_frames,
                "goals_active": len(self._goals),
            },
        )
        self._worker = threading.Thread(target=self._run, name="server-worker", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"serving answers on {self._answers.topic_name} and the action {self.resolve_topic_name('ask')}"
            + (f"; batches of up to {cfg.max_batch_size}" if cfg.max_batch_size > 1 else "")
        )

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
        if request.question_id in self._goals:
            # Answers are routed by question_id: a topic question may not take the id of a live goal (the goal's id
            # is its UUID, which only its own client knows in advance), else its answer would complete the goal.
            self._publish(
                self.core.record(request, Status.BAD_REQUEST, error="question_id is in use by an active Ask goal")
            )
            return
        outcome = self.core.ask(request)
        if isinstance(outcome, Job):
            self._jobs.put(outcome)
        elif outcome is not None:
            self._deliver(outcome, request)

    def _expire(self) -> None:
        for record in self.core.expire():
            self._deliver(record)

    def _on_goal(self, handle) -> None:
        """An accepted goal: hand its question (and its own picture, if any) to the core, then start executing.

        Whatever raises here, the goal still executes and gets its one result (BAD_REQUEST or INTERNAL_ERROR)."""
        self.counters.add("goals")
        goal = _Goal(handle)
        qid = bytes(handle.goal_id.uuid).hex()
        self._goals[qid] = goal
        self._hooks[qid] = Hooks(on_text=lambda text: self._feedback(goal, text), cancelled=goal.cancel.is_set)
        request = None
        try:
            cfg, now = self.config, self._now_ns()
            request = adapters.goal_request(handle.request, qid, now, cfg.default_camera, cfg.default_timeout_s)
            outcome = self._goal_outcome(handle.request, request, now)
            if isinstance(outcome, Job):
                self._jobs.put(outcome)
            elif outcome is not None:
                self._deliver(outcome)
        except Exception as exc:  # a malformed goal must not leave its client waiting forever
            self.get_logger().error(f"goal {qid}: {exc!r}")
            failed = request or Request(qid, "", "", 0, 0, 0, 0)
            self._deliver(self.core.record(failed, Status.INTERNAL_ERROR, error=f"accepting the goal: {exc!r}"))
        finally:
            handle.execute()

    def _goal_outcome(self, goal: Ask.Goal, request: Request, now: int) -> Job | AnswerRecord | None:
        """The core's verdict on a goal: paired with a cached frame (or waiting for one), or with its own picture.

        The picture is only unpacked and wrapped as an uncompressed payload here (a copy, a few ms at camera size);
        decoding and the vision tower run on the worker like any frame's."""
        if not adapters.has_image(goal):
            return self.core.ask(request)
        if not self.core.decoder.accept_images:  # say so before copying pixels nobody will look at
            return self.core.record(
                request,
                Status.MODEL_MISMATCH,  # as the decoder classes an image payload it will not take
                error="this server answers from features only; a goal's image needs the vision tower (load_vision)",
            )
        try:
            rgb = image_msg_to_rgb(goal.image, self.config.max_image_pixels)
        except ImageError as exc:
            return self.core.record(request, Status.BAD_REQUEST, error=f"the goal's image: {exc}")
        payload = self._goal_codec.encode(rgb)
        return self.core.ask_with_frame(
            request, adapters.goal_frame(goal, payload, self._goal_codec.format, request.camera, now)
        )

    def _on_cancel(self, handle) -> CancelResponse:
        """A cancel request: refused once the answer is complete; else the answer ends CANCELED where it is."""
        qid = bytes(handle.goal_id.uuid).hex()
        goal = self._goals.get(qid)
        if goal is None or goal.answer.done():
            return CancelResponse.REJECT
        goal.cancel.set()
        record = self.core.withdraw(qid, "cancelled by the asker while waiting for its frame")
        if record is not None:
            self._deliver(record)
        return CancelResponse.ACCEPT

    async def _execute_goal(self, handle) -> Ask.Result:
        """The goal's one result: awaits its answer (set by the worker, expiry or cancel), then ends the goal
        SUCCEEDED (OK), CANCELED (cancelled by its asker) or ABORTED (any other status, the reason in the answer)."""
        qid = bytes(handle.goal_id.uuid).hex()
        goal = self._goals[qid]
        record: AnswerRecord = await goal.answer
        self._goals.pop(qid, None)
        self._hooks.pop(qid, None)
        if record.status == Status.OK:
            handle.succeed()
        elif record.status == Status.CANCELED and handle.is_cancel_requested:
            handle.canceled()
        else:
            handle.abort()
        self._count(record)
        return adapters.ask_result(record, self._now_ns())

    # -- worker thread --------------------------------------------------------------------------------------
    def _run(self) -> None:
        """Collect the jobs that are ready together, answer each batch in one go, deliver every answer."""
        while True:
            due = self._batcher.due_in_ns()
            try:
                if due is None:
                    item = self._jobs.get()
                elif due > 0:
                    item = self._jobs.get(timeout=due / 1e9)
                else:
                    item = self._jobs.get_nowait()
            except queue.Empty:
                item = _EMPTY
            if item is None:  # shutting down
                for job in self._batcher.drain():
                    self._deliver(self.core.abandon(job, "server shutting down"), job)
                return
            if item is not _EMPTY:
                self._batcher.add(item)
                continue  # take whatever else is queued before deciding
            batch = self._batcher.take()
            if not batch:
                continue
            try:
                if self._stopping:
                    records = [self.core.abandon(job, "server shutting down") for job in batch]
                else:
                    records = self.core.run_batch(batch, self._hooks)
            except Exception as exc:  # run_batch never raises; if that promise breaks, the worker still lives on
                self.get_logger().error(f"a batch of {len(batch)} failed outside the core: {exc!r}")
                records = [self.core.record(j.request, Status.INTERNAL_ERROR, j.frame, error=repr(exc)) for j in batch]
            for record, job in zip(records, batch, strict=True):
                try:
                    self._deliver(record, job)
                except Exception as exc:  # one answer that cannot be delivered must not cost the others theirs
                    self.get_logger().error(f"delivering the answer to '{record.question_id}' failed: {exc!r}")

    def _feedback(self, goal: _Goal, text: str) -> None:
        goal.tokens += 1
        goal.handle.publish_feedback(adapters.ask_feedback(text, goal.tokens))

    # -- both threads ---------------------------------------------------------------------------------------
    def _deliver(self, record: AnswerRecord, source=None) -> None:
        """A goal's answer completes its goal (its execute coroutine sends the result); a question's is published."""
        goal = self._goals.get(record.question_id)
        if goal is None:
            self._publish(record, source)
            return
        if goal.answer.done():  # a goal has one answer; nothing produces a second, but never send one
            return
        goal.answer.set_result(record)
        executor = self.executor
        if executor is not None:
            executor.wake()  # the execute coroutine is resumed when the executor wakes

    def _count(self, record: AnswerRecord) -> None:
        self.counters.add("payload_bytes", record.payload_bytes)
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
        # The worker finishes the batch in progress (a thread killed inside torch at exit aborts the process);
        # jobs queued behind it are answered TIMEOUT, and so are questions still waiting for a frame. Goals get their
        # result only while an executor still spins the node.
        self._stopping = True
        self._jobs.put(None)
        self._worker.join(timeout=60)
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
