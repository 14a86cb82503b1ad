"""Pair questions with the camera frames they name: a bounded frame cache and bounded waiting questions.

Pure and single-threaded by contract: the server node calls it from one callback group only. Times are
integers in nanoseconds (ROS time), so nothing here reads a clock.

Every question handed to `ask` leaves exactly once: paired with a frame (returned by `ask` or `add_frame`),
expired (returned by `expire`) or withdrawn (returned by `withdraw`), or refused at once by `ask` raising `Refused`.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Generic, TypeVar

from tofc_ros.pipeline.records import Status

F = TypeVar("F")  # the frame type the cache holds (the server's ReceivedFrame)

LATEST = 0  # image_stamp zero = the newest frame of that camera


class Refused(Exception):
    """A question (or a frame) turned away at once; `status` is the Answer status to send."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclasses.dataclass
class Waiting:
    """A question waiting for its frame."""

    question_id: str
    camera: str
    stamp_ns: int
    deadline_ns: int
    request: object  # the node's own record of the question, handed back untouched


class FrameCache(Generic[F]):
    """The newest `per_camera` frames of at most `max_cameras` cameras, each keyed by its image stamp."""

    def __init__(self, per_camera: int, max_cameras: int) -> None:
        if per_camera < 1 or max_cameras < 1:
            raise ValueError(f"per_camera ({per_camera}) and max_cameras ({max_cameras}) must be >= 1")
        self._per_camera = per_camera
        self._max_cameras = max_cameras
        self._frames: dict[str, collections.OrderedDict[int, F]] = {}

    def add(self, camera: str, stamp_ns: int, frame: F) -> None:
        """Keep `frame`; the oldest frame of that camera goes when the camera's slots are full.

        Raises:
            Refused: a new camera beyond max_cameras.
        """
        frames = self._frames.get(camera)
        if frames is None:
            if len(self._frames) >= self._max_cameras:
                raise Refused(Status.BAD_REQUEST, f"already tracking {self._max_cameras} cameras; '{camera}' refused")
            frames = self._frames[camera] = collections.OrderedDict()
        frames[stamp_ns] = frame
        frames.move_to_end(stamp_ns)
        while len(frames) > self._per_camera:
            frames.popitem(last=False)

    def get(self, camera: str, stamp_ns: int, tolerance_ns: int = 0) -> F | None:
        """The frame nearest this stamp within `tolerance_ns` (exact by default), or the newest one for LATEST;
        None when absent."""
        frames = self._frames.get(camera)
        if not frames:
            return None
        if stamp_ns == LATEST:
            return next(reversed(frames.values()))
        if tolerance_ns == 0:
            return frames.get(stamp_ns)
        nearest = min(frames, key=lambda s: abs(s - stamp_ns))
        return frames[nearest] if abs(nearest - stamp_ns) <= tolerance_ns else None

    def __len__(self) -> int:
        return sum(len(f) for f in self._frames.values())


class Pairing(Generic[F]):
    """Questions waiting (bounded, with deadlines) for the frames they name."""

    def __init__(self, cache: FrameCache[F], max_waiting: int, tolerance_ns: int = 0) -> None:
        self.cache = cache
        self._max_waiting = max_waiting
        self._tolerance = tolerance_ns
        self._waiting: dict[str, Waiting] = {}

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def ask(self, waiting: Waiting, in_flight: int = 0) -> F | None:
        """Return the question's frame if cached, else keep the question waiting.

        Args:
            waiting: the question.
            in_flight: questions accepted but not yet answered elsewhere (the worker's queue); counts
                against the same bound, so the server holds at most `max_waiting` questions in all.

        Raises:
            Refused: duplicate question id (BAD_REQUEST) or too many questions held (BUSY).
        """
        if waiting.question_id in self._waiting:
            raise Refused(Status.BAD_REQUEST, f"question_id '{waiting.question_id}' is already waiting")
        frame = self.cache.get(waiting.camera, waiting.stamp_ns, self._tolerance)
        if len(self._waiting) + in_flight >= self._max_waiting:
            raise Refused(Status.BUSY, f"{len(self._waiting) + in_flight} questions held, limit {self._max_waiting}")
        if frame is not None:
            return frame
        self._waiting[waiting.question_id] = waiting
        return None

    def add_frame(self, camera: str, stamp_ns: int, frame: F) -> list[Waiting]:
        """Cache a frame and return the waiting questions it answers (removed from waiting)."""
        self.cache.add(camera, stamp_ns, frame)
        ready = [
            w
            for w in self._waiting.values()
            if w.camera == camera and (w.stamp_ns == LATEST or abs(w.stamp_ns - stamp_ns) <= self._tolerance)
        ]
        for w in ready:
            del self._waiting[w.question_id]
        return ready

    def withdraw(self, question_id: str) -> Waiting | None:
        """Remove and return a waiting question (its asker gave up on it), or None when it is not waiting."""
        return self._waiting.pop(question_id, None)

    def expire(self, now_ns: int) -> list[Waiting]:
        """Remove and return the questions whose deadline has passed."""
        late = [w for w in self._waiting.values() if w.deadline_ns <= now_ns]
        for w in late:
            del self._waiting[w.question_id]
        return late

    def drain(self) -> list[Waiting]:
        """Remove and return every waiting question (shutdown: each still gets an answer)."""
        out = list(self._waiting.values())
        self._waiting.clear()
        return out
