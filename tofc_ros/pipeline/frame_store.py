"""The device's frame store: newest frame per camera (continuous mode) and a short history (on-demand mode).

Thread-safe: the executor thread puts frames and requests, the encoder thread takes work. Memory is bounded by
construction: one pending frame per camera plus `history` recent frames per camera, whatever the camera rate.
Time comes from an injected clock (seconds), so the rate limit is tested without sleeping: ``poll`` never waits,
``take`` waits on a condition for ``poll`` to have work.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from tofc_ros.pipeline.pairing import LATEST


class Work(NamedTuple):
    """What the encoder thread does next: encode ``frame`` of ``camera`` stamped ``stamp_ns``, or, with ``refine``
    (a two-stage RefineAsk), crop it and encode the crop; ``frame`` is None when the frame that request names is not
    in the history (the device then refuses it)."""

    camera: str
    stamp_ns: int
    frame: Any
    refine: Any = None


class FrameStore:
    """Frames per camera, and the work the encoder thread should do next.

    Args:
        cameras: camera ids.
        history: recent frames kept per camera for on-demand requests (0: continuous mode only).
        continuous: start in continuous mode (default: when ``history`` is 0); an adaptive device switches modes
            with :meth:`set_continuous` and keeps its history in both.
        min_period_s: continuous mode: at least this long between two encodes of the same camera.
        max_requests: on-demand requests waiting at most (older ones are dropped first).
    """

    def __init__(
        self,
        cameras: list[str],
        history: int,
        min_period_s: float,
        max_requests: int = 32,
        clock: Callable[[], float] = time.monotonic,
        continuous: bool | None = None,
    ) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._pending: dict[str, tuple[int, Any] | None] = dict.fromkeys(cameras)
        self._recent = {c: collections.OrderedDict() for c in cameras}
        self._history = history
        self._period = min_period_s
        self._next_start = dict.fromkeys(cameras, 0.0)
        self._requests: collections.deque[tuple[str, int, float]] = collections.deque(maxlen=max_requests)
        self._refines: collections.deque[tuple[str, int, int, Any]] = collections.deque(maxlen=max_requests)
        self._published: dict[str, collections.OrderedDict] = {c: collections.OrderedDict() for c in cameras}
        self._closed = False
        self.continuous = history == 0 if continuous is None else continuous
        if not self.continuous and history == 0:
            raise ValueError("on-demand mode needs a history of at least one frame per camera")

    def set_continuous(self, continuous: bool) -> None:
        """Switch modes (adaptive devices): pending frames go when on-demand starts, waiting requests when
        continuous starts (its frames reach the server anyway)."""
        with self._cond:
            if continuous == self.continuous:
                return
            if not continuous and self._history == 0:
                raise ValueError("on-demand mode needs a history of at least one frame per camera")
            self.continuous = continuous
            if continuous:
                self._requests.clear()
            else:
                self._pending = dict.fromkeys(self._pending)
            self._cond.notify_all()

    def put(self, camera: str, stamp_ns: int, frame: Any) -> bool:
        """Store a frame; True when it replaced a continuous-mode frame nobody encoded (a dropped frame)."""
        with self._cond:
            dropped = False
            if self.continuous:
                dropped = self._pending[camera] is not None
                self._pending[camera] = (stamp_ns, frame)
            if self._history:
                recent = self._recent[camera]
                recent[stamp_ns] = frame
                while len(recent) > self._history:
                    recent.popitem(last=False)
            self._cond.notify_all()
            return dropped

    def request(self, camera: str, stamp_ns: int, tolerance_ns: int) -> bool:
        """On-demand: ask for the frame of `camera` nearest `stamp_ns` (LATEST: the newest) to be encoded.

        Returns False for an unknown camera.
        """
        with self._cond:
            if camera not in self._recent:
                return False
            self._requests.append((camera, stamp_ns, tolerance_ns))
            self._cond.notify_all()
            return True

    def refine(self, camera: str, stamp_ns: int, tolerance_ns: int, ask: Any) -> bool:
        """Two-stage: crop the frame of `camera` nearest `stamp_ns` for ``ask`` (before any other work: a question
        waits for it). Returns False for an unknown camera."""
        with self._cond:
            if camera not in self._recent:
                return False
            self._refines.append((camera, stamp_ns, tolerance_ns, ask))
            self._cond.notify_all()
            return True

    def poll(self) -> Work | None:
        """The next Work to do now, or None; never waits."""
        with self._cond:
            return None if self._closed else self._next_work()

    def take(self, timeout: float) -> Work | None:
        """The next Work, waiting up to `timeout` seconds; None if there is none."""
        deadline = self._clock() + timeout
        with self._cond:
            while not self._closed:
                work = self._next_work()
                if work is not None:
                    return work
                remaining = deadline - self._clock()
                if remaining <= 0:
                    return None
                self._cond.wait(min(remaining, self._soonest_start()))
            return None

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _soonest_start(self) -> float:
        waits = [self._next_start[c] - self._clock() for c, p in self._pending.items() if p is not None]
        return max(min(waits), 0.001) if waits else 3600.0

    def _next_work(self) -> Work | None:
        if self._refines:
            camera, stamp, tolerance, ask = self._refines.popleft()
            found = self._nearest(camera, stamp, tolerance)
            return Work(camera, stamp, None, ask) if found is None else Work(camera, found[0], found[1], ask)
        if self.continuous:
            now = self._clock()
            ready = [c for c, p in self._pending.items() if p is not None and self._next_start[c] <= now]
            if not ready:
                return None
            camera = min(ready, key=lambda c: self._next_start[c])  # round robin across cameras
            stamp, frame = self._pending[camera]
            self._pending[camera] = None
            self._next_start[camera] = now + self._period
            self._mark_published(camera, stamp)
            return Work(camera, stamp, frame)
        while self._requests:
            camera, stamp, tolerance = self._requests.popleft()
            found = self._nearest(camera, stamp, tolerance)
            if found is None:
                continue
            published = self._published[camera]
            if found[0] in published:  # already sent: the server has it cached
                continue
            self._mark_published(camera, found[0])
            return Work(camera, found[0], found[1])
        return None

    def _mark_published(self, camera: str, stamp: int) -> None:
        published = self._published[camera]
        published[stamp] = True
        while len(published) > max(self._history, 1) * 4:
            published.popitem(last=False)

    def _nearest(self, camera: str, stamp: int, tolerance: int) -> tuple[int, Any] | None:
        recent = self._recent[camera]
        if not recent:
            return None
        if stamp == LATEST:
            key = next(reversed(recent))
        else:
            key = min(recent, key=lambda s: abs(s - stamp))
            if abs(key - stamp) > tolerance:
                return None
        return key, recent[key]
