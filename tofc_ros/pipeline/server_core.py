"""The server's logic without ROS: pair questions with frames, bound what is held, answer, account the latency.

    executor thread:  add_frame(ReceivedFrame) -> [Job]        questions waiting for that frame are now ready
                      ask(Request) -> Job | AnswerRecord | None  ready now, refused now, or waiting
                      ask_with_frame(Request, ReceivedFrame)     a question that brings its own frame (an action
                          -> Job | AnswerRecord                  goal's image): ready now or refused now
                      expire() -> [AnswerRecord]                 NO_FRAME for questions past their deadline
                      withdraw(question_id, why)                 CANCELED for a question still waiting for its
                          -> AnswerRecord | None                 frame (its asker cancelled)
    worker thread:    run_batch([Job], hooks) -> [AnswerRecord]  decode (once per frame) + answer the jobs together
                                                                 (one batched generation when the answerer has
                                                                 answer_batch); never raises
                      run(Job, hooks) -> AnswerRecord            the same for one job
                      abandon(Job, why) -> AnswerRecord          TIMEOUT at shutdown
    either:           failed(Job, exc) -> AnswerRecord            INTERNAL_ERROR when publishing an answer failed
                      drain() -> [AnswerRecord]                  TIMEOUT for every question still waiting

Every question handed to ``ask`` or ``ask_with_frame`` leaves exactly once, as one AnswerRecord. Times come from an
injected clock (integer nanoseconds: the node passes its ROS clock, tests a fake one), so nothing here sleeps or reads
the wall clock. The frame cache and waiting questions have one owner (the executor thread); the in-flight count is
shared with the worker under a lock.

A question's deadline bounds all of it: waiting for its frame (then NO_FRAME), waiting in the queue and generating
(then TIMEOUT; generation stops at the deadline and the record keeps the text so far). ``Hooks`` let the asker follow
the answer token by token (``on_text``) and cancel it (``cancelled``: CANCELED with the text so far); the node turns
them into action feedback and cancel requests, and nothing here knows about actions.

Latency of an answer (milliseconds): device = the frame's own device time; transfer = arrival - sent (needs synced
clocks; 0 when the device did not say); wait = work started - question received; server = answer done - work
started; total = answer done - question asked (its header stamp, else its receipt).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from tofc_ros.pipeline.answerer import Answered, Answerer, AnswerTask
from tofc_ros.pipeline.decoder import FrameDecoder, FrameError
from tofc_ros.pipeline.pairing import LATEST, FrameCache, Pairing, Refused, Waiting
from tofc_ros.pipeline.records import AnswerRecord, DecodedFrame, ReceivedFrame, Request, Status

__all__ = ["Clock", "Hooks", "Job", "ServerCore"]

Clock = Callable[[], int]  # nanoseconds


@dataclass(frozen=True)
class Job:
    """A question paired with its frame, ready for the worker."""

    request: Request
    frame: ReceivedFrame


@dataclass(frozen=True)
class Hooks:
    """How one question's answer is followed and ended from outside (an action goal's feedback and cancel).

    Attributes:
        on_text: called with the answer so far after every generated token (once with the whole answer for an
            answerer that does not stream); an exception it raises is ignored (feedback is best effort).
        cancelled: polled before and during generation; True ends the answer as CANCELED with the text so far.
    """

    on_text: Callable[[str], None] | None = None
    cancelled: Callable[[], bool] | None = None


class ServerCore:
    """Pairing, bounds, statuses and latency arithmetic of one server.

    Args:
        decoder: validates and decodes payloads (``FrameDecoder``).
        answerer: answers a decoded frame (``Answerer``).
        clock: current time in integer nanoseconds.
        cache_size: frames kept per camera.
        max_cameras: cameras tracked at once.
        queue_size: questions held at once (waiting for a frame or queued for the worker); beyond: BUSY.
        stamp_tolerance_ns: largest stamp gap that still pairs a question with a frame (0: exact).
    """

    def __init__(
        self,
        decoder: FrameDecoder,
        answerer: Answerer,
        clock: Clock,
        *,
        cache_size: int = 30,
        max_cameras: int = 64,
        queue_size: int = 8,
        stamp_tolerance_ns: int = 0,
    ) -> None:
        self.decoder = decoder
        self.answerer = answerer
        self.clock = clock
        self.queue_size = queue_size
        self._pairing: Pairing[ReceivedFrame] = Pairing(
            FrameCache(cache_size, max_cameras), queue_size, stamp_tolerance_ns
        )
        self._lock = threading.Lock()
        self._in_flight = 0
        self._decoded: tuple[ReceivedFrame, DecodedFrame | FrameError] | None = None  # worker's one-frame cache

    # ------------------------------------------------------------------------------------------ introspection
    @property
    def waiting(self) -> int:
        """Questions waiting for their frame."""
        return self._pairing.waiting

    @property
    def in_flight(self) -> int:
        """Questions paired and not yet answered."""
        return self._in_flight

    @property
    def cached_frames(self) -> int:
        return len(self._pairing.cache)

    # --------------------------------------------------------------------------------------- executor thread
    def add_frame(self, frame: ReceivedFrame) -> list[Job]:
        """Cache a frame; return the jobs of the questions that were waiting for it.

        Raises:
            Refused: a camera beyond ``max_cameras`` (the frame is not kept).
        """
        ready = self._pairing.add_frame(frame.camera, frame.stamp_ns, frame)
        return [self._job(w.request, frame) for w in ready]

    def ask(self, request: Request) -> Job | AnswerRecord | None:
        """A new question: a Job when its frame is here, an AnswerRecord when refused, None while it waits."""
        if not request.question_id or not request.text.strip():
            return self.record(request, Status.BAD_REQUEST, error="question_id and text must not be empty")
        waiting = Waiting(request.question_id, request.camera, request.stamp_ns, request.deadline_ns, request)
        try:
            frame = self._pairing.ask(waiting, in_flight=self._in_flight)
        except Refused as exc:
            return self.record(request, exc.status, error=str(exc))
        return None if frame is None else self._job(request, frame)

    def ask_with_frame(self, request: Request, frame: ReceivedFrame) -> Job | AnswerRecord:
        """A question that brings its own frame (an action goal's image): never cached, never waiting; a Job now, or
        an AnswerRecord when refused (it counts against the same bound as every other question)."""
        if not request.question_id or not request.text.strip():
            return self.record(request, Status.BAD_REQUEST, error="question_id and text must not be empty")
        held = self._pairing.waiting + self._in_flight
        if held >= self.queue_size:
            return self.record(request, Status.BUSY, error=f"{held} questions held, limit {self.queue_size}")
        return self._job(request, frame)

    def expire(self) -> list[AnswerRecord]:
        """NO_FRAME answers for the questions whose deadline has passed."""
        out = []
        for waiting in self._pairing.expire(self.clock()):
            request = waiting.request
            which = "the latest frame" if request.stamp_ns == LATEST else f"the frame stamped {request.stamp_ns} ns"
            out.append(
                self.record(
                    request,
                    Status.NO_FRAME,
                    error=(
                        f"no features for camera '{request.camera}' ({which}) within "
                        f"{(request.deadline_ns - request.received_ns) / 1e9:.3g} s"
                    ),
                )
            )
        return out

    def withdraw(self, question_id: str, why: str) -> AnswerRecord | None:
        """CANCELED for a question still waiting for its frame; None when it is not waiting (queued or generating:
        its ``Hooks.cancelled`` ends it there, or it is answered already)."""
        waiting = self._pairing.withdraw(question_id)
        return None if waiting is None else self.record(waiting.request, Status.CANCELED, error=why)

    def drain(self) -> list[AnswerRecord]:
        """TIMEOUT answers for every question still waiting (shutdown)."""
        return [self.record(w.request, Status.TIMEOUT, error="server shutting down") for w in self._pairing.drain()]

    def _job(self, request: Request, frame: ReceivedFrame) -> Job:
        with self._lock:
            self._in_flight += 1
        return Job(request, frame)

    # ----------------------------------------------------------------------------------------- worker thread
    def run(self, job: Job, hooks: Hooks | None = None) -> AnswerRecord:
        """Decode the job's frame (once per frame) and answer; every failure becomes its status. Never raises."""
        return self.run_batch([job], {job.request.question_id: hooks} if hooks else None)[0]

    def run_batch(self, jobs: Sequence[Job], hooks: Mapping[str, Hooks] | None = None) -> list[AnswerRecord]:
        """Answer jobs together: one AnswerRecord per job, in order. Never raises.

        Each job is checked and its frame decoded on its own (once per frame; a refusal is that job's status), then
        the answerable ones go to the answerer in one ``answer_batch`` call when it has one (one batched prefill
        and decode), else one by one. Every job's work starts when the batch's does: its ``wait_ms`` ends there and
        its ``server_ms`` covers the batch.

        Args:
            jobs: from ``ask``, ``ask_with_frame`` or ``add_frame``.
            hooks: question_id -> Hooks for the questions someone follows (streaming, cancel).
        """
        hooks = hooks or {}
        records: list[AnswerRecord | None] = [None] * len(jobs)
        try:
            started = self.clock()
            decoded: dict[int, DecodedFrame | FrameError] = {}  # this batch's frames, by identity
            tasks: list[tuple[int, AnswerTask]] = []
            for i, job in enumerate(jobs):
                try:
                    outcome = self._task(job, started, decoded, hooks.get(job.request.question_id))
                except Exception as exc:  # the checks themselves failed: still this job's answer
                    outcome = self.record(job.request, Status.INTERNAL_ERROR, job.frame, started, error=repr(exc))
                if isinstance(outcome, AnswerRecord):
                    records[i] = outcome
                else:
                    tasks.append((i, outcome))
            batch_answer = getattr(self.answerer, "answer_batch", None)
            if batch_answer is not None and tasks:
                try:
                    results = batch_answer([task for _, task in tasks])
                except Exception as exc:  # answer_batch should return failures, not raise them
                    results = [exc] * len(tasks)
                for (i, _), result in zip(tasks, results, strict=True):  # a short list is a failure, not a gap
                    records[i] = self._answered(jobs[i], result, started, hooks)
            else:
                for i, task in tasks:
                    records[i] = self._answered(jobs[i], self._answer_one(task), started, hooks)
        except Exception as exc:  # even the bookkeeping failed: still one answer each
            for i, job in enumerate(jobs):
                if records[i] is None:
                    req = job.request
                    records[i] = AnswerRecord(
                        req.question_id, Status.INTERNAL_ERROR, error=repr(exc), camera=req.camera
                    )
        finally:
            for _ in jobs:
                self._done()
        return records

    def _task(self, job: Job, started: int, decoded: dict, hooks: Hooks | None) -> AnswerTask | AnswerRecord:
        """The job's AnswerTask, or its AnswerRecord when it ends before the answerer (late, cancelled, refused)."""
        request, frame = job.request, job.frame
        if started > request.deadline_ns:
            return self.record(
                request,
                Status.TIMEOUT,
                frame,
                started,
                error=f"waited {(started - request.received_ns) / 1e9:.3g} s in the queue, past its timeout",
            )
        cancelled = hooks.cancelled if hooks is not None and hooks.cancelled is not None else None
        if cancelled is not None and cancelled():
            return self.record(request, Status.CANCELED, frame, started, error="cancelled before generation began")
        if frame.refusal:
            return self.record(request, Status.DECODE_ERROR, frame, started, error=frame.refusal)
        try:
            decoded_frame = self._decode(frame, decoded)
        except FrameError as exc:
            return self.record(request, exc.status, frame, started, error=str(exc))
        deadline, clock = request.deadline_ns, self.clock

        def stop() -> bool:
            return (cancelled is not None and cancelled()) or clock() > deadline

        return AnswerTask(
            decoded_frame,
            request.text,
            request.max_new_tokens,
            _quiet(hooks.on_text) if hooks is not None and hooks.on_text is not None else None,
            stop,
        )

    def _answer_one(self, task: AnswerTask) -> Answered | Exception:
        """An answerer without ``answer_batch``: one ``answer`` call (it cannot stream or stop midway)."""
        if task.stop is not None and task.stop():
            return Answered("", stopped=True)
        try:
            text = self.answerer.answer(task.frame, task.question)
        except Exception as exc:  # the model failing on one question must not stop the others
            return exc
        if task.on_text is not None:
            task.on_text(text)
        return Answered(text)

    def _answered(
        self, job: Job, result: Answered | Exception, started: int, hooks: Mapping[str, Hooks]
    ) -> AnswerRecord:
        """The record of an answered (or failed, or stopped) task."""
        request, frame = job.request, job.frame
        if isinstance(result, FrameError):
            return self.record(request, result.status, frame, started, error=str(result))
        if isinstance(result, Exception):
            return self.record(request, Status.INTERNAL_ERROR, frame, started, error=repr(result))
        if not result.stopped:
            return self.record(request, Status.OK, frame, started, text=result.text)
        hook = hooks.get(request.question_id)
        if hook is not None and hook.cancelled is not None and hook.cancelled():
            return self.record(
                request,
                Status.CANCELED,
                frame,
                started,
                text=result.text,
                error=f"cancelled by the asker after {result.tokens} generated tokens",
            )
        timeout_s = (request.deadline_ns - request.received_ns) / 1e9
        return self.record(
            request,
            Status.TIMEOUT,
            frame,
            started,
            text=result.text,
            error=f"generation passed the question's timeout of {timeout_s:.3g} s after {result.tokens} tokens",
        )

    def abandon(self, job: Job, why: str) -> AnswerRecord:
        """TIMEOUT for a job the worker will not run (shutdown)."""
        try:
            return self.record(job.request, Status.TIMEOUT, job.frame, error=why)
        finally:
            self._done()

    def failed(self, job_or_request: Job | Request, exc: BaseException) -> AnswerRecord:
        """INTERNAL_ERROR for a question whose answer could not be delivered (e.g. publishing raised)."""
        request = job_or_request.request if isinstance(job_or_request, Job) else job_or_request
        frame = job_or_request.frame if isinstance(job_or_request, Job) else None
        return self.record(request, Status.INTERNAL_ERROR, frame, error=f"answer could not be published: {exc!r}")

    def _done(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _decode(self, frame: ReceivedFrame, decoded: dict) -> DecodedFrame:
        # Questions about one frame usually come together (in one batch, or in batches one after the other): decode
        # it once (or refuse it once).
        result = decoded.get(id(frame))
        if result is None:
            if self._decoded is None or self._decoded[0] is not frame:
                try:
                    result = self.decoder.decode(frame.payload, frame.format)
                except FrameError as exc:
                    result = exc
                self._decoded = (frame, result)
            result = decoded[id(frame)] = self._decoded[1]
        if isinstance(result, FrameError):
            raise result
        return result

    # ------------------------------------------------------------------------------------------------ records
    def record(
        self,
        request: Request,
        status: Status,
        frame: ReceivedFrame | None = None,
        started_ns: int | None = None,
        *,
        text: str = "",
        error: str = "",
    ) -> AnswerRecord:
        """The AnswerRecord of ``request`` with the latency split as of now (see the module docstring)."""
        now = self.clock()
        started = started_ns if started_ns is not None else now
        fields = {}
        if frame is not None:
            fields = dict(
                image_stamp_ns=frame.stamp_ns,
                format=frame.format,
                payload_bytes=frame.payload_size,
                device_ms=frame.device_ms,
                transfer_ms=(frame.arrival_ns - frame.sent_ns) / 1e6 if frame.sent_ns else 0.0,
            )
        return AnswerRecord(
            question_id=request.question_id,
            status=Status(status),
            error=error,
            text=text,  # OK: the answer; CANCELED or TIMEOUT during generation: what was generated until then
            camera=request.camera,
            wait_ms=(started - request.received_ns) / 1e6,
            server_ms=(now - started) / 1e6,
            total_ms=(now - (request.asked_ns or request.received_ns)) / 1e6,
            **fields,
        )


def _quiet(callback: Callable[[str], None]) -> Callable[[str], None]:
    """``callback`` with its exceptions swallowed: a feedback that cannot be delivered must not end the answer."""

    def call(text: str) -> None:
        try:
            callback(text)
        except Exception:
            pass

    return call
