"""Group the questions that are ready together into batches: at most ``max_size``, waiting at most ``wait_ns``.

    add(job)  add(job)   add(job) ...                    (jobs as the core makes them ready)
      │ the oldest job's wait starts       │
      ▼                                    ▼
    take() -> [] until the batch is full or the oldest job has waited ``wait_ns``, then up to ``max_size`` jobs,
              oldest first

``max_size`` 1 is one question at a time (a job never waits); ``wait_ns`` 0 batches exactly the jobs that queued up
while the previous batch ran, never delaying one. Single-threaded by contract (the server's worker owns it); times
come from an injected clock in integer nanoseconds, so nothing here sleeps.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Batcher"]

T = TypeVar("T")


class Batcher(Generic[T]):
    """Jobs waiting for a batch, oldest first.

    Args:
        max_size: most jobs in one batch (>= 1).
        wait_ns: longest time the oldest job waits for others before its batch goes anyway (>= 0).
        clock: current time in integer nanoseconds.
    """

    def __init__(self, max_size: int, wait_ns: int, clock: Callable[[], int]) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        if wait_ns < 0:
            raise ValueError(f"wait_ns must be >= 0, got {wait_ns}")
        self.max_size = max_size
        self.wait_ns = wait_ns
        self.clock = clock
        self._jobs: collections.deque[tuple[T, int]] = collections.deque()

    def __len__(self) -> int:
        return len(self._jobs)

    def add(self, job: T) -> None:
        """Queue a job that is ready; its wait starts now."""
        self._jobs.append((job, self.clock()))

    def due_in_ns(self) -> int | None:
        """Nanoseconds until ``take`` returns a batch: 0 when one is due now, None when no job waits."""
        if not self._jobs:
            return None
        if len(self._jobs) >= self.max_size:
            return 0
        return max(0, self._jobs[0][1] + self.wait_ns - self.clock())

    def take(self) -> list[T]:
        """The next batch (up to ``max_size`` jobs, oldest first) if one is due, else an empty list."""
        if self.due_in_ns() != 0:
            return []
        return [self._jobs.popleft()[0] for _ in range(min(self.max_size, len(self._jobs)))]

    def drain(self) -> list[T]:
        """Every waiting job, oldest first (shutdown: each still gets its answer)."""
        jobs = [job for job, _ in self._jobs]
        self._jobs.clear()
        return jobs
