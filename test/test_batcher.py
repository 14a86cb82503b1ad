"""The batcher with a fake clock: full batches go at once, a partial one after its oldest job's wait, no sleeps."""

from __future__ import annotations

import pytest

from tofc_ros.pipeline.batcher import Batcher

MS = 1_000_000


class FakeClock:
    def __init__(self) -> None:
        self.now = 5_000 * MS

    def __call__(self) -> int:
        return self.now


def test_size_one_is_one_job_at_a_time_without_waiting():
    batcher = Batcher(1, 50 * MS, FakeClock())
    assert batcher.due_in_ns() is None and batcher.take() == []
    batcher.add("a")
    batcher.add("b")
    assert batcher.due_in_ns() == 0
    assert batcher.take() == ["a"] and batcher.take() == ["b"] and batcher.take() == []


def test_a_full_batch_goes_at_once_oldest_first():
    batcher = Batcher(3, 50 * MS, FakeClock())
    for job in "abcd":
        batcher.add(job)
    assert batcher.take() == ["a", "b", "c"] and len(batcher) == 1


def test_a_partial_batch_waits_for_its_oldest_jobs_wait_and_no_longer():
    clock = FakeClock()
    batcher = Batcher(4, 30 * MS, clock)
    batcher.add("a")
    clock.now += 10 * MS
    batcher.add("b")  # joins a's batch: the wait counts from the oldest job
    assert batcher.due_in_ns() == 20 * MS and batcher.take() == []
    clock.now += 19 * MS
    assert batcher.take() == []
    clock.now += 1 * MS
    assert batcher.due_in_ns() == 0 and batcher.take() == ["a", "b"]
    assert batcher.due_in_ns() is None


def test_wait_zero_batches_exactly_what_queued_up_meanwhile():
    batcher = Batcher(8, 0, FakeClock())
    batcher.add("a")
    batcher.add("b")
    assert batcher.take() == ["a", "b"]


def test_drain_returns_every_waiting_job_and_bad_bounds_are_refused():
    batcher = Batcher(4, 30 * MS, FakeClock())
    batcher.add("a")
    batcher.add("b")
    assert batcher.drain() == ["a", "b"] and len(batcher) == 0 and batcher.due_in_ns() is None
    with pytest.raises(ValueError, match="max_size must be >= 1"):
        Batcher(0, 0, FakeClock())
    with pytest.raises(ValueError, match="wait_ns must be >= 0"):
        Batcher(1, -1, FakeClock())
