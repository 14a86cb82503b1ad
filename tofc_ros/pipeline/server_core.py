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

Two-stage answering (``TwoStage`` given): a first-pass answer whose uncertainty is above the threshold is held, and
``run_batch`` returns a ``RefineAsk`` in its place (the node publishes it as a RefineRequest). The device's reply
comes back through ``refined(RefineReply)`` (executor thread): a Job answered again from the first pass's tokens plus
the crop, or at once the first-pass record flagged FAILED; ``expire`` flags TIMED_OUT the held answers whose detail
did not come in time. A held question still counts against ``queue_size`` and still leaves exactly once.

Latency of an answer (milliseconds): device = the frame's own device time; transfer = arrival - sent (needs synced
clocks; 0 when the device did not say); wait = work started - question received; server = answer done - work
started; total = answer done - question asked (its header stamp, else its receipt).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from tofc_ros.pipeline.answerer import Answered, Answerer, AnswerTask
from tofc_ros.pipeline.decoder import FrameDecoder, FrameError
from tofc_ros.pipeline.pairing import LATEST, FrameCache, Pairing, Refused, Waiting
from tofc_ros.pipeline.records import AnswerRecord, DecodedFrame, ReceivedFrame, Refinement, Request, Status
from tofc_ros.pipeline.refine import RefineAsk, RefineReply

__all__ = ["Clock", "Hooks", "Job", "ServerCore", "TwoStage"]

Clock = Callable[[], int]  # nanoseconds


@dataclass(frozen=True)
class Job:
    """A question paired with its frame, ready for the worker; a second pass also carries the robot's crop
    (``detail``) and the first pass's record (what is published if the second pass fails)."""

    request: Request
    frame: ReceivedFrame
    detail: ReceivedFrame | None = None
    first: AnswerRecord | None = None


@dataclass(frozen=True)
class TwoStage:
    """Two-stage answering's settings (server parameters two_stage, refine_*).

    Attributes:
        threshold: ask for detail when the first-pass answer's min-entropy (nats) is above this.
        timeout_ns: longest wait for the detail (the question's own deadline also bounds it).
        max_area: the region's largest area as a fraction of the frame (0: the device's default).
        n_clusters: merged tokens per tile of the crop (0: the device's default).
    """

    threshold: float
    timeout_ns: int
    max_area: float = 0.0
    n_clusters: int = 0


@dataclass(frozen=True)
class _Held:
    """A first-pass answer waiting for its detail."""

    job: Job
    record: AnswerRecord
    deadline_ns: int


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
        two_stage: ask the robot for detail where the model is unsure (None: one pass).
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
        two_stage: TwoStage | None = None,
    ) -> None:
        self.decoder = decoder
        self.answerer = answerer
        self.clock = clock
        self.queue_size = queue_size
        self.two_stage = two_stage
        self._held: dict[str, _Held] = {}  # question_id -> first pass waiting for detail (under _lock)
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

    @property
    def refining(self) -> int:
        """First-pass answers waiting for the robot's detail."""
        with self._lock:
            return len(self._held)

    def _held_elsewhere(self) -> int:
        with self._lock:
            return self._in_flight + len(self._held)

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
            frame = self._pairing.ask(waiting, in_flight=self._held_elsewhere())
        except Refused as exc:
            return self.record(request, exc.status, error=str(exc))
        return None if frame is None else self._job(request, frame)

    def ask_with_frame(self, request: Request, frame: ReceivedFrame) -> Job | AnswerRecord:
        """A question that brings its own frame (an action goal's image): never cached, never waiting; a Job now, or
        an AnswerRecord when refused (it counts against the same bound as every other question)."""
        if not request.question_id or not request.text.strip():
            return self.record(request, Status.BAD_REQUEST, error="question_id and text must not be empty")
        held = self._pairing.waiting + self._held_elsewhere()
        if held >= self.queue_size:
            return self.record(request, Status.BUSY, error=f"{held} questions held, limit {self.queue_size}")
        return self._job(request, frame)

    def expire(self) -> list[AnswerRecord]:
        """NO_FRAME answers for the questions whose deadline has passed, and the first-pass answers (TIMED_OUT)
        whose detail did not come in time."""
        now = self.clock()
        with self._lock:
            late = [h for h in self._held.values() if h.deadline_ns <= now]
            for held in late:
                del self._held[held.record.question_id]
        out = [
            _flagged(held.record, Refinement.TIMED_OUT, "no detail from the device in time: the first-pass answer")
            for held in late
        ]
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
        """TIMEOUT answers for every question still waiting (shutdown); held first passes are published as they are,
        flagged TIMED_OUT."""
        with self._lock:
            held, self._held = list(self._held.values()), {}
        out = [self.record(w.request, Status.TIMEOUT, error="server shutting down") for w in self._pairing.drain()]
        why = "server shutting down before the detail came"
        return out + [_flagged(h.record, Refinement.TIMED_OUT, why) for h in held]

    def refined(self, reply: RefineReply) -> Job | AnswerRecord:
        """The device's reply to a RefineAsk: a Job for the second pass, or the first-pass record flagged FAILED.

        Raises:
            Refused: no answer is waiting for detail under that question_id (unknown, or already timed out).
        """
        with self._lock:
            held = self._held.get(reply.question_id)
            if held is None:
                raise Refused(Status.BAD_REQUEST, f"no answer is waiting for detail for question '{reply.question_id}'")
            first = held.job.frame
            if (reply.camera, reply.stamp_ns) != (first.camera, first.stamp_ns):
                raise Refused(
                    Status.BAD_REQUEST,
                    f"detail for question '{reply.question_id}' names {reply.camera!r} at {reply.stamp_ns} ns; "
                    f"its first pass was {first.camera!r} at {first.stamp_ns} ns",
                )
            del self._held[reply.question_id]
            if reply.ok:
                self._in_flight += 1
        if not reply.ok:
            return _flagged(held.record, Refinement.FAILED, f"the device sent no detail: {reply.error}")
        return Job(held.job.request, held.job.frame, detail=reply.frame, first=held.record)

    def _job(self, request: Request, frame: ReceivedFrame) -> Job:
        with self._lock:
            self._in_flight += 1
        return Job(request, frame)

    # ----------------------------------------------------------------------------------------- worker thread
    def run(self, job: Job, hooks: Hooks | None = None) -> AnswerRecord:
        """Decode the job's frame (once per frame) and answer; every failure becomes its status. Never raises."""
        return self.run_batch([job], {job.request.question_id: hooks} if hooks else None)[0]

    def run_batch(
        self, jobs: Sequence[Job], hooks: Mapping[str, Hooks] | None = None
    ) -> list[AnswerRecord | RefineAsk]:
        """Answer jobs together: one AnswerRecord per job, in order (a RefineAsk in place of a first-pass answer that
        is held for detail, see the module docstring). Never raises.

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
                    if job.first is not None and outcome.status != Status.OK:  # a second pass that cannot run
                        flag = Refinement.TIMED_OUT if outcome.status == Status.TIMEOUT else Refinement.FAILED
                        outcome = _flagged(job.first, flag, f"no second pass: {outcome.error}", job.detail)
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
                    records[i] = self._outcome(jobs[i], result, started, hooks)
            else:
                for i, task in tasks:
                    records[i] = self._outcome(jobs[i], self._answer_one(task), started, hooks)
        except Exception as exc:  # even the bookkeeping failed: still one answer each
            for i, job in enumerate(jobs):
                if records[i] is None:
                    req = job.request
                    records[i] = job.first or AnswerRecord(
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
        detail = None
        if job.detail is not None:  # a second pass: a crop that cannot be decoded leaves the first-pass answer
            try:
                if job.detail.refusal:
                    raise FrameError(job.detail.refusal)
                detail = self.decoder.decode(job.detail.payload, job.detail.format)
            except FrameError as exc:
                return _flagged(job.first, Refinement.FAILED, f"the detail could not be decoded: {exc}", job.detail)
        look_above = self.two_stage.threshold if self.two_stage is not None and job.detail is None else None
        deadline, clock = request.deadline_ns, self.clock

        def stop() -> bool:
            return (cancelled is not None and cancelled()) or clock() > deadline

        return AnswerTask(
            decoded_frame,
            request.text,
            request.max_new_tokens,
            _quiet(hooks.on_text) if hooks is not None and hooks.on_text is not None else None,
            stop,
            detail=detail,
            look_above=look_above,
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

    def _outcome(
        self, job: Job, result: Answered | Exception, started: int, hooks: Mapping[str, Hooks]
    ) -> AnswerRecord | RefineAsk:
        """The record of an answered task; for a second pass, flagged DONE (or the first pass flagged FAILED); for an
        unsure first pass with two-stage answering on, a RefineAsk (the record is held)."""
        record = self._answered(job, result, started, hooks)
        if job.first is not None:
            if record.status != Status.OK:
                return _flagged(job.first, Refinement.FAILED, f"answering with the detail failed: {record.error}",
                                job.detail)  # fmt: skip
            return dataclasses.replace(record, refinement=Refinement.DONE, refine_payload_bytes=job.detail.payload_size)
        weights = getattr(result, "token_weights", None)
        if self.two_stage is None or record.status != Status.OK or weights is None:
            return record
        request, two = job.request, self.two_stage
        with self._lock:
            self._held[request.question_id] = _Held(
                job, record, min(request.deadline_ns, self.clock() + two.timeout_ns)
            )
        return RefineAsk(
            request.question_id, job.frame.camera, job.frame.stamp_ns, weights, None, two.max_area, two.n_clusters
        )

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
            record = self.record(request, Status.OK, frame, started, text=result.text)
            known = result.uncertainty >= 0  # False for NaN: an answerer that reports none
            return dataclasses.replace(record, uncertainty=result.uncertainty if known else -1.0)
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
        """TIMEOUT for a job the worker will not run (shutdown); a second pass keeps its first answer, flagged."""
        try:
            if job.first is not None:
                return _flagged(job.first, Refinement.TIMED_OUT, f"no second pass: {why}", job.detail)
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


def _flagged(
    first: AnswerRecord, refinement: Refinement, why: str, detail: ReceivedFrame | None = None
) -> AnswerRecord:
    """The first-pass answer, published because the second pass did not happen (its status stays as it was)."""
    return dataclasses.replace(
        first, refinement=refinement, error=why, refine_payload_bytes=detail.payload_size if detail else 0
    )


def _quiet(callback: Callable[[str], None]) -> Callable[[str], None]:
    """``callback`` with its exceptions swallowed: a feedback that cannot be delivered must not end the answer."""

    def call(text: str) -> None:
        try:
            callback(text)
        except Exception:
            pass

    return call
