"""The server node's Ask action (tofc_msgs/action/Ask): goals share the server core with the Question topic.

A goal is a question whose id is its goal id (32 hex digits). It pairs with a camera frame, or with the picture sent
with the goal (wrapped as an uncompressed image payload; decoding and the vision tower run on the worker like any
frame's). Feedback carries the answer so far after every generated token; the result carries the Answer. Every
accepted goal ends with exactly one result, whatever raises while accepting it: SUCCEEDED (OK), CANCELED (its asker
cancelled it, waiting or generating) or ABORTED (any other status, the reason in the answer).

Threads: goal, cancel and result callbacks run in the node's default (mutually exclusive) callback group, like the
subscriptions, so the core keeps one owner on the executor side; the worker completes a goal's answer and wakes the
executor, which resumes the goal's execute coroutine.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from rclpy.action import ActionServer, CancelResponse
from rclpy.node import Node
from rclpy.task import Future

from tofc_msgs.action import Ask
from tofc_ros.codec import load_codec
from tofc_ros.config import ServerConfig
from tofc_ros.nodes import adapters
from tofc_ros.nodes.images import ImageError, image_msg_to_rgb
from tofc_ros.pipeline.records import AnswerRecord, Request, Status
from tofc_ros.pipeline.server_core import Hooks, Job, ServerCore


class _Goal:
    """An accepted goal: its handle, the asker's cancel flag, the feedback count and its answer to come."""

    def __init__(self, handle) -> None:
        self.handle = handle
        self.cancel = threading.Event()
        self.tokens = 0
        self.answer: Future = Future()  # set once, with the goal's AnswerRecord


class AskAction:
    """Serves `ask` on ``node`` around ``core``.

    Args:
        hooks: per question id, what the core calls while generating (shared with the worker).
        submit: hands a ready job to the worker.
        count: counts (and logs) a finished answer, as the node does for topic answers.
        now_ns: the node's clock.
    """

    def __init__(
        self,
        node: Node,
        core: ServerCore,
        config: ServerConfig,
        hooks: dict[str, Hooks],
        submit: Callable[[Job], None],
        count: Callable[[AnswerRecord], None],
        now_ns: Callable[[], int],
    ) -> None:
        self._node, self._core, self._config = node, core, config
        self._submit, self._count, self._now_ns = submit, count, now_ns
        self.goals: dict[str, _Goal] = {}  # question_id (the goal id) -> goal; the worker reads it too
        self.hooks = hooks  # a goal's feedback and cancel flag, for the core while it generates
        # Raw pixels for a model (its vision tower answers them, or the decoder refuses them without one), the
        # placeholder's format for the placeholder.
        self.goal_codec = load_codec("placeholder-zstd" if config.answerer == "placeholder" else "rgb8")
        self._server = ActionServer(
            node,
            Ask,
            "ask",
            execute_callback=self._execute,
            handle_accepted_callback=self._on_goal,
            cancel_callback=self._on_cancel,
        )

    def complete(self, record: AnswerRecord) -> bool:
        """Complete the goal this answer belongs to (False: it is a topic question's). Either thread."""
        goal = self.goals.get(record.question_id)
        if goal is None:
            return False
        if not goal.answer.done():  # a goal has one answer; nothing produces a second, but never send one
            goal.answer.set_result(record)
            executor = self._node.executor
            if executor is not None:
                executor.wake()  # the execute coroutine is resumed when the executor wakes
        return True

    def feedback(self, goal: _Goal, text: str) -> None:
        goal.tokens += 1
        goal.handle.publish_feedback(adapters.ask_feedback(text, goal.tokens))

    def destroy(self) -> None:
        self._server.destroy()

    # -- executor thread ------------------------------------------------------------------------------------
    def _on_goal(self, handle) -> None:
        """Hand the goal's question (and its own picture, if any) to the core, then start executing it."""
        self._node.counters.add("goals")
        goal = _Goal(handle)
        qid = bytes(handle.goal_id.uuid).hex()
        self.goals[qid] = goal
        self.hooks[qid] = Hooks(on_text=lambda text: self.feedback(goal, text), cancelled=goal.cancel.is_set)
        request = None
        try:
            cfg, now = self._config, self._now_ns()
            request = adapters.goal_request(handle.request, qid, now, cfg.default_camera, cfg.default_timeout_s)
            outcome = self._outcome(handle.request, request, now)
            if isinstance(outcome, Job):
                self._submit(outcome)
            elif outcome is not None:
                self.complete(outcome)
        except Exception as exc:  # a malformed goal must not leave its client waiting forever
            self._node.get_logger().error(f"goal {qid}: {exc!r}")
            failed = request or Request(qid, "", "", 0, 0, 0, 0)
            self.complete(self._core.record(failed, Status.INTERNAL_ERROR, error=f"accepting the goal: {exc!r}"))
        finally:
            handle.execute()

    def _outcome(self, goal: Ask.Goal, request: Request, now: int) -> Job | AnswerRecord | None:
        """The core's verdict: paired with a cached frame (or waiting for one), or with the goal's own picture."""
        if not adapters.has_image(goal):
            return self._core.ask(request)
        if not self._core.decoder.accept_images:  # say so before copying pixels nobody will look at
            return self._core.record(
                request,
                Status.MODEL_MISMATCH,  # as the decoder classes an image payload it will not take
                error="this server answers from features only; a goal's image needs the vision tower (load_vision)",
            )
        try:
            rgb = image_msg_to_rgb(goal.image, self._config.max_image_pixels)
        except ImageError as exc:
            return self._core.record(request, Status.BAD_REQUEST, error=f"the goal's image: {exc}")
        payload = self.goal_codec.encode(rgb)
        return self._core.ask_with_frame(
            request, adapters.goal_frame(goal, payload, self.goal_codec.format, request.camera, now)
        )

    def _on_cancel(self, handle) -> CancelResponse:
        """Refused once the answer is complete; else the answer ends CANCELED where it is."""
        qid = bytes(handle.goal_id.uuid).hex()
        goal = self.goals.get(qid)
        if goal is None or goal.answer.done():
            return CancelResponse.REJECT
        goal.cancel.set()
        record = self._core.withdraw(qid, "cancelled by the asker while waiting for its frame")
        if record is not None:
            self.complete(record)
        return CancelResponse.ACCEPT

    async def _execute(self, handle) -> Ask.Result:
        """Await the goal's answer (set by the worker, expiry or cancel), then end the goal by its status."""
        qid = bytes(handle.goal_id.uuid).hex()
        goal = self.goals[qid]
        record: AnswerRecord = await goal.answer
        self.goals.pop(qid, None)
        self.hooks.pop(qid, None)
        if record.status == Status.OK:
            handle.succeed()
        elif record.status == Status.CANCELED and handle.is_cancel_requested:
            handle.canceled()
        else:
            handle.abort()
        self._count(record)
        return adapters.ask_result(record, self._now_ns())
