"""The server node's one worker thread: collect the jobs that are ready together, answer each batch, deliver.

Jobs come from the executor thread (a frame arrived for a waiting question, a question found its frame, a goal was
accepted) through a SimpleQueue: get() blocks in C and put() wakes it directly (no Python-level Condition), so the
worker needs the GIL once instead of several times per hand-off; the core bounds how many there are (queue_size).
Batches form in the ``Batcher`` (``max_batch_size``, ``batch_wait_ms``). Every job's answer is delivered whatever
raises: the core's ``run_batch`` turns failures into statuses, and a failure outside it (or while delivering one
answer) is logged and costs no other question its answer.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from tofc_ros.pipeline.batcher import Batcher
from tofc_ros.pipeline.records import AnswerRecord, Status
from tofc_ros.pipeline.server_core import Hooks, Job, ServerCore

_EMPTY = object()  # "nothing arrived before the batch was due"


class AnswerWorker:
    """Runs ``core.run_batch`` on a thread of its own.

    Args:
        core: the server core (its ``run_batch``, ``abandon`` and ``record``).
        batcher: groups the ready jobs.
        hooks: per question id, what the core calls while generating (goals' feedback and cancel flags).
        deliver: ``deliver(record, job)`` publishes a question's answer or completes a goal (either thread).
        log_error: one line for the node's log.
    """

    def __init__(
        self,
        core: ServerCore,
        batcher: Batcher[Job],
        hooks: dict[str, Hooks],
        deliver: Callable[[AnswerRecord, Job], None],
        log_error: Callable[[str], None],
    ) -> None:
        self._core = core
        self._batcher = batcher
        self._hooks = hooks
        self._deliver = deliver
        self._log_error = log_error
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="server-worker", daemon=True)
        self._thread.start()

    def put(self, job: Job) -> None:
        self._jobs.put(job)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float) -> None:
        """Finish the batch in progress (a thread killed inside torch at exit aborts the process); jobs queued
        behind it are answered TIMEOUT ("server shutting down")."""
        self._stopping = True
        self._jobs.put(None)
        self._thread.join(timeout=timeout)

    def _next(self):
        due = self._batcher.due_in_ns()
        try:
            if due is None:
                return self._jobs.get()
            if due > 0:
                return self._jobs.get(timeout=due / 1e9)
            return self._jobs.get_nowait()
        except queue.Empty:
            return _EMPTY

    def _run(self) -> None:
        while True:
            item = self._next()
            if item is None:  # shutting down
                for job in self._batcher.drain():
                    self._deliver(self._core.abandon(job, "server shutting down"), job)
                return
            if item is not _EMPTY:
                self._batcher.add(item)
                continue  # take whatever else is queued before deciding
            batch = self._batcher.take()
            if batch:
                self._answer(batch)

    def _answer(self, batch: list[Job]) -> None:
        try:
            if self._stopping:
                records = [self._core.abandon(job, "server shutting down") for job in batch]
            else:
                records = self._core.run_batch(batch, self._hooks)
        except Exception as exc:  # run_batch never raises; if that promise breaks, the worker still lives on
            self._log_error(f"a batch of {len(batch)} failed outside the core: {exc!r}")
            records = [self._core.record(j.request, Status.INTERNAL_ERROR, j.frame, error=repr(exc)) for j in batch]
        for record, job in zip(records, batch, strict=True):
            try:
                self._deliver(record, job)
            except Exception as exc:  # one answer that cannot be delivered must not cost the others theirs
                self._log_error(f"delivering the answer to '{record.question_id}' failed: {exc!r}")
