"""The server's logic without ROS: pair questions with frames, bound what is held, answer, account the latency.

    executor thread:  add_frame(ReceivedFrame) -> [Job]        questions waiting for that frame are now ready
                      ask(Request) -> Job | AnswerRecord | None  ready now, refused now, or waiting
                      expire() -> [AnswerRecord]                 NO_FRAME for questions past their deadline
    worker thread:    run(Job) -> AnswerRecord                   decode (once per frame) + answer; never raises
                      abandon(Job, why) -> AnswerRecord          TIMEOUT at shutdown
    either:           failed(Job, exc) -> AnswerRecord            INTERNAL_ERROR when publishing an answer failed
                      drain() -> [AnswerRecord]                  TIMEOUT for every question still waiting

Every question handed to ``ask`` leaves exactly once, as one AnswerRecord. Times come from an injected clock (integer
nanoseconds: the node passes its ROS clock, tests a fake one), so nothing here sleeps or reads the wall clock. The
frame cache and waiting questions have one owner (the executor thread); the in-flight count is shared with the
worker under a lock.

Latency of an answer (milliseconds): device = the frame's own device time; transfer = arrival - sent (needs synced
clocks; 0 when the device did not say); wait = work started - question received; server = answer done - work
started; total = answer done - question asked (its header stamp, else its receipt).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from tofc_ros.pipeline.answerer import Answerer
from tofc_ros.pipeline.decoder import FrameDecoder, FrameError
from tofc_ros.pipeline.pairing import LATEST, FrameCache, Pairing, Refused, Waiting
from tofc_ros.pipeline.records import AnswerRecord, DecodedFrame, ReceivedFrame, Request, Status

__all__ = ["Clock", "Job", "ServerCore"]

Clock = Callable[[], int]  # nanoseconds


@dataclass(frozen=True)
class Job:
    """A question paired with its frame, ready for the worker."""

    request: Request
    frame: ReceivedFrame


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

    def drain(self) -> list[AnswerRecord]:
        """TIMEOUT answers for every question still waiting (shutdown)."""
        return [self.record(w.request, Status.TIMEOUT, error="server shutting down") for w in self._pairing.drain()]

    def _job(self, request: Request, frame: ReceivedFrame) -> Job:
        with self._lock:
            self._in_flight += 1
        return Job(request, frame)

    # ----------------------------------------------------------------------------------------- worker thread
    def run(self, job: Job) -> AnswerRecord:
        """Decode the job's frame (once per frame) and answer; every failure becomes its status. Never raises."""
        request, frame = job.request, job.frame
        try:
            started = self.clock()
            if started > request.deadline_ns:
                return self.record(
                    request,
                    Status.TIMEOUT,
                    frame,
                    started,
                    error=(f"waited {(started - request.received_ns) / 1e9:.3g} s in the queue, past its timeout"),
                )
            if frame.refusal:
                return self.record(request, Status.DECODE_ERROR, frame, started, error=frame.refusal)
            try:
                text = self.answerer.answer(self._decode(frame), request.text)
            except FrameError as exc:
                return self.record(request, exc.status, frame, started, error=str(exc))
            except Exception as exc:  # the model failing on one question must not stop the others
                return self.record(request, Status.INTERNAL_ERROR, frame, started, error=repr(exc))
            return self.record(request, Status.OK, frame, started, text=text)
        except Exception as exc:  # even the bookkeeping failed: still one answer
            return AnswerRecord(request.question_id, Status.INTERNAL_ERROR, error=repr(exc), camera=request.camera)
        finally:
            self._done()

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

    def _decode(self, frame: ReceivedFrame) -> DecodedFrame:
        # Questions about one frame usually come together: decode it once (or refuse it once).
        if self._decoded is None or self._decoded[0] is not frame:
            try:
                result: DecodedFrame | FrameError = self.decoder.decode(frame.payload, frame.format)
            except FrameError as exc:
                result = exc
            self._decoded = (frame, result)
        result = self._decoded[1]
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
            text=text if status == Status.OK else "",
            camera=request.camera,
            wait_ms=(started - request.received_ns) / 1e6,
            server_ms=(now - started) / 1e6,
            total_ms=(now - (request.asked_ns or request.received_ns)) / 1e6,
            **fields,
        )
