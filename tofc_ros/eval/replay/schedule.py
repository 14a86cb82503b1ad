"""When each recorded frame and question of a replay goes out: a pure scheduler with an injected clock (no rclpy).

Two modes:

* ``timed``: every event at its recorded log time relative to the first, divided by ``rate`` (2.0 = twice as fast);
* ``fast``: as fast as the graph keeps up: after a frame, wait for its features (up to ``frame_timeout_s``; not at
  all when ``wait_for_features`` is off, e.g. for an on-demand device); after a question, wait for its answer (up
  to ``answer_timeout_s``). Frames recorded before a question are played before it.

The replay node calls ``due(now)`` from a timer and publishes what it returns; ``features_seen`` and ``answered``
report what came back. Time is in seconds since ``start``; tests drive it with a fake clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tofc_ros.eval.replay.bags import BagQuestion, Frame

__all__ = ["ReplaySchedule"]


@dataclass
class _Waiting:
    kind: str  # "frame" or "question"
    key: object  # image stamp or question id
    deadline: float


class ReplaySchedule:
    """The order and timing of a replay's events.

    Args:
        frames: the camera frames (log time ``t_ns``, image stamp ``stamp_ns``).
        questions: the questions (log time ``t_ns``).
        mode: "timed" or "fast".
        rate: timed mode speed factor (> 0).
        frame_timeout_s, answer_timeout_s: fast mode waits; answer_timeout_s also ends the replay after the last
            question when answers are missing.
        wait_for_features: fast mode waits for each frame's features.
    """

    def __init__(
        self,
        frames: Sequence[Frame],
        questions: Sequence[BagQuestion],
        mode: str = "timed",
        rate: float = 1.0,
        frame_timeout_s: float = 2.0,
        answer_timeout_s: float = 30.0,
        wait_for_features: bool = True,
    ) -> None:
        if mode not in ("timed", "fast"):
            raise ValueError(f"mode must be 'timed' or 'fast', got {mode!r}")
        if not rate > 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        events = [(f.t_ns, 0, i, f) for i, f in enumerate(frames)]
        events += [(q.t_ns, 1, i, q) for i, q in enumerate(questions)]  # frames first at equal log times
        events.sort(key=lambda e: e[:3])
        self.events = [e[3] for e in events]
        self._t0 = events[0][0] if events else 0
        self.mode, self.rate = mode, rate
        self.frame_timeout_s, self.answer_timeout_s = frame_timeout_s, answer_timeout_s
        self.wait_for_features = wait_for_features
        self._next = 0
        self._waiting: _Waiting | None = None
        self._last_sent = 0.0
        self._features: set[int] = set()
        self._answered: set[str] = set()
        self._asked: set[str] = set()
        self.timeouts: list[str] = []  # what fast mode gave up waiting for, in order

    @property
    def sent(self) -> int:
        """Events handed out so far."""
        return self._next

    def features_seen(self, stamp_ns: int) -> None:
        """Features for the frame with this image stamp came back."""
        self._features.add(stamp_ns)

    def answered(self, question_id: str) -> None:
        """An answer to this question came back."""
        self._answered.add(question_id)

    def due_at(self, index: int) -> float:
        """Timed mode: seconds after the start at which event ``index`` goes out."""
        return (self.events[index].t_ns - self._t0) / 1e9 / self.rate

    def due(self, now: float) -> list[Frame | BagQuestion]:
        """The events to publish at ``now`` (seconds since the start), in order; marks them sent."""
        out: list[Frame | BagQuestion] = []
        while self._next < len(self.events):
            if self.mode == "timed":
                if self.due_at(self._next) > now:
                    break
            elif self._waiting is not None:
                w = self._waiting
                done = w.key in self._features if w.kind == "frame" else w.key in self._answered
                if not done and now < w.deadline:
                    break
                if not done:
                    self.timeouts.append(
                        f"no {'features' if w.kind == 'frame' else 'answer'} for {w.kind} {w.key} "
                        f"within the timeout; going on"
                    )
                self._waiting = None
            event = self.events[self._next]
            self._next += 1
            self._last_sent = now
            out.append(event)
            if isinstance(event, BagQuestion):
                self._asked.add(event.question_id)
                if self.mode == "fast":
                    self._waiting = _Waiting("question", event.question_id, now + self.answer_timeout_s)
            elif self.mode == "fast" and self.wait_for_features:
                self._waiting = _Waiting("frame", event.stamp_ns, now + self.frame_timeout_s)
        return out

    def finished(self, now: float) -> bool:
        """Every event is out and every question answered, or ``answer_timeout_s`` passed since the last event."""
        if self._next < len(self.events):
            return False
        return self._asked <= self._answered or now - self._last_sent > self.answer_timeout_s
