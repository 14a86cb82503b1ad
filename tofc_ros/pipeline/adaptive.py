"""Adaptive operating points under a latency budget (design: "Adaptive"; after MSAO's state-driven offloading).

Pure and clock-injected: every method takes ``now`` (seconds, any monotonic clock) and nothing here reads a clock,
sleeps or imports rclpy. The device node, the closed-loop benchmark and the tests all drive this one object.

The policy, per frame (points ordered richest first, as their bundle lists them):

1. Predict each point's answer latency: ``device_ms + link delay + 8·bytes / link rate + server_ms + queue_ms``,
   from the online estimates below; ``queue_ms`` is the server's mean wait at question rate λ (M/D/1:
   ρ·server_ms / (2(1 − ρ)) with ρ = λ·server_ms; a point the server cannot keep up with, ρ >= 1, does not fit).
   λ is the highest rate of any ``rate_window_s`` window in the last ``burst_memory_s``: a frame sent in a quiet
   spell must still be answerable when the next burst of questions comes.
2. Down at once: if the current point no longer fits ``latency_budget_ms``, take the richest point that does.
3. Up with hysteresis: a richer point is taken only after it has fitted with ``up_margin`` to spare
   (prediction <= (1 - up_margin) · budget) for ``up_hold`` decisions in a row.
4. Never starve: when no point fits, send the cheapest one and count it (``starved``).
5. Speculative encoding: while questions arrive at >= ``speculate_on_hz`` (over the last ``rate_window_s``), encode
   every frame continuously so that features already wait at the server when a question comes; below
   ``speculate_off_hz`` encode on demand only. While speculative, a point must also fit the frame period
   (its transfer <= ``frame_period_s``), or the uplink's queue would grow without bound.

The estimates:

- Link: each answered frame gives (payload bytes, transfer ms) from its Answer. Transfer = delay + 8·bytes/rate
  (+ queueing). The delay starts at a prior and is re-fitted (least squares) whenever the recent samples' sizes
  differ by >= 2x and their wire times by at least half the delay; the rate is the median of the recent samples'
  rates (robust to noise, follows a step change within half a window). A transfer that is >= 90 % delay only says
  the link is at least that fast: it raises the estimate, at most fourfold per frame (richer points get tried
  again after a slow spell, and their transfers measure the rate). A frame that the server reports missing
  (NO_FRAME), or that a question awaits and that stays unanswered for ``late_factor`` times its predicted transfer
  + server time (at least ``loss_after_s``), bounds the rate by what would have delivered it by then: the window
  restarts from that bound, so a link that drops or dies shows within a few predicted transfer times, without
  waiting for the slow frame's own answer.
- Per point: payload bytes, device ms (measured by the device) and server ms (from the Answers), each the bundle's
  measured value until the first observation replaces it, then an exponential moving average.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import statistics
from collections.abc import Sequence

__all__ = [
    "PointPrior",
    "AdaptiveSettings",
    "Choice",
    "LinkEstimate",
    "QuestionRate",
    "select_point",
    "AdaptiveController",
    "settings_from_config",
    "priors",
]


@dataclasses.dataclass(frozen=True)
class PointPrior:
    """What is known of an operating point before it runs: its name and measured bytes / device / server ms."""

    name: str
    bytes: float
    device_ms: float
    server_ms: float


@dataclasses.dataclass(frozen=True)
class AdaptiveSettings:
    """The policy's parameters (the device node's, see config.DeviceConfig)."""

    latency_budget_ms: float
    up_margin: float = 0.2
    up_hold: int = 3
    speculate_on_hz: float = 0.5
    speculate_off_hz: float = 0.2
    rate_window_s: float = 10.0
    burst_memory_s: float = 60.0
    frame_period_s: float = 1.0
    loss_after_s: float = 1.0
    late_factor: float = 3.0
    initial_mbps: float = 10.0
    initial_delay_ms: float = 20.0
    link_window: int = 5
    smoothing: float = 0.3

    def __post_init__(self) -> None:
        if not self.latency_budget_ms > 0:
            raise ValueError(f"latency_budget_ms must be > 0, got {self.latency_budget_ms}")
        if not 0 <= self.up_margin < 1:
            raise ValueError(f"up_margin must be in [0, 1), got {self.up_margin}")
        if self.speculate_off_hz > self.speculate_on_hz:
            raise ValueError(
                f"speculate_off_hz ({self.speculate_off_hz}) must not exceed speculate_on_hz ({self.speculate_on_hz})"
            )
        if self.up_hold < 1 or self.link_window < 1 or not 0 < self.smoothing <= 1:
            raise ValueError("up_hold and link_window must be >= 1, smoothing in (0, 1]")
        if not (self.rate_window_s > 0 and self.frame_period_s > 0 and self.loss_after_s > 0):
            raise ValueError("rate_window_s, frame_period_s and loss_after_s must be > 0")
        if not self.late_factor >= 1:
            raise ValueError(f"late_factor must be >= 1, got {self.late_factor}")
        if not (self.initial_mbps > 0 and self.initial_delay_ms >= 0):
            raise ValueError("initial_mbps must be > 0 and initial_delay_ms >= 0")


@dataclasses.dataclass(frozen=True)
class Choice:
    """The point chosen for one frame and why."""

    index: int
    name: str
    predicted_ms: float
    starved: bool
    speculative: bool


class LinkEstimate:
    """Uplink rate (Mbit/s) and one-way delay (ms) from the transfers the server measured (module docstring)."""

    MIN_MBPS = 1e-4  # a dead link's estimate: nothing richer than the cheapest point fits, and nothing divides by 0
    MIN_WIRE_SHARE = 0.1  # a transfer that is >= 90 % delay measures the delay, not the rate

    def __init__(self, initial_mbps: float, initial_delay_ms: float, window: int = 5) -> None:
        self.rate_mbps = float(initial_mbps)
        self.delay_ms = float(initial_delay_ms)
        self._samples: collections.deque[tuple[float, float]] = collections.deque(maxlen=window)  # (bits, ms)
        self._rates: collections.deque[float] = collections.deque(maxlen=window)
        self.samples = 0
        self.losses = 0

    def observe(self, payload_bytes: int, transfer_ms: float) -> None:
        """One frame of ``payload_bytes`` took ``transfer_ms`` from the device's publish to the server."""
        if not (payload_bytes > 0 and 0 < transfer_ms < math.inf):
            return  # unknown transfer (unsynchronised clocks: 0), a bad value (NaN, inf) or an empty frame
        bits = 8.0 * payload_bytes
        self.samples += 1
        self._samples.append((bits, float(transfer_ms)))
        self._refit_delay()
        wire_ms = transfer_ms - self.delay_ms
        if wire_ms >= self.MIN_WIRE_SHARE * transfer_ms:
            self._rates.append(bits / (wire_ms * 1e3))
            self.rate_mbps = max(statistics.median(self._rates), self.MIN_MBPS)
            return
        # The delay dominates: the frame only says the link is at least this fast (a delay estimate a little high
        # must not divide by ~0). Raise the estimate towards that, at most fourfold per frame, so that after a
        # slow spell small frames let the richer points be tried again, whose own transfers then measure the rate.
        at_least = bits / (max(wire_ms, 0.01 * transfer_ms) * 1e3)
        if at_least > self.rate_mbps:
            self.rate_mbps = min(at_least, 4 * self.rate_mbps)
            self._rates.append(self.rate_mbps)

    def observe_loss(self, payload_bytes: int, elapsed_ms: float) -> None:
        """A frame of ``payload_bytes`` had not arrived ``elapsed_ms`` after it was sent: the rate is at most what
        would have carried it by then, and the window restarts from that bound."""
        self.losses += 1
        wire_ms = max(elapsed_ms - self.delay_ms, 1.0)
        bound = 8.0 * payload_bytes / (wire_ms * 1e3)
        self._rates.clear()
        self._samples.clear()
        self._rates.append(min(self.rate_mbps, bound))
        self.rate_mbps = max(self._rates[0], self.MIN_MBPS)

    def transfer_ms(self, payload_bytes: float) -> float:
        """Predicted transfer time of a payload."""
        return self.delay_ms + 8.0 * payload_bytes / (self.rate_mbps * 1e3)

    def _refit_delay(self) -> None:
        sizes = [b for b, _ in self._samples]
        if len(sizes) < 2 or max(sizes) < 2 * min(sizes):
            return  # one size: delay and rate cannot be told apart; keep the delay
        if (max(sizes) - min(sizes)) / (self.rate_mbps * 1e3) < 0.5 * self.delay_ms:
            return  # the sizes' wire times differ by less than the delay's noise could: an ill-posed fit
        mean_b = statistics.fmean(sizes)
        mean_t = statistics.fmean(t for _, t in self._samples)
        var = sum((b - mean_b) ** 2 for b in sizes)
        slope = sum((b - mean_b) * (t - mean_t) for b, t in self._samples) / var  # ms per bit
        if slope > 0:
            self.delay_ms = min(max(mean_t - slope * mean_b, 0.0), min(t for _, t in self._samples))


class QuestionRate:
    """Questions per second over the last ``window_s`` seconds, and the highest such rate of the last
    ``memory_s`` seconds (the bursts a point's server cost must survive)."""

    def __init__(self, window_s: float, memory_s: float = 60.0, max_events: int = 10_000) -> None:
        self.window_s = window_s
        self.memory_s = max(memory_s, window_s)
        self._times: collections.deque[float] = collections.deque(maxlen=max_events)

    def add(self, now: float) -> None:
        self._times.append(now)

    def _forget(self, now: float) -> None:
        while self._times and self._times[0] <= now - self.memory_s:
            self._times.popleft()

    def hz(self, now: float) -> float:
        self._forget(now)
        return sum(t > now - self.window_s for t in self._times) / self.window_s

    def peak_hz(self, now: float) -> float:
        """The most questions any ``window_s`` window of the last ``memory_s`` seconds held, per second."""
        self._forget(now)
        times, best, first = list(self._times), 0, 0
        for last, t in enumerate(times):  # two pointers: the window ending at each question
            while times[first] <= t - self.window_s:
                first += 1
            best = max(best, last - first + 1)
        return best / self.window_s


def select_point(
    predicted_ms: Sequence[float],
    budget_ms: float,
    current: int | None,
    up_streak: int,
    up_margin: float,
    up_hold: int,
    allowed: Sequence[bool] | None = None,
) -> tuple[int, int, bool]:
    """Steps 2-4 of the policy on one frame's predictions (index 0 = the richest point).

    ``allowed``: points also feasible for other reasons (the frame period while speculative); all by default.
    Returns (chosen index, the new up streak, starved).
    """
    n = len(predicted_ms)
    allowed = allowed if allowed is not None else [True] * n
    fits = [allowed[i] and predicted_ms[i] <= budget_ms for i in range(n)]
    if not any(fits):
        return n - 1, 0, True
    best = fits.index(True)
    if current is None or not fits[current]:
        return best, 0, False
    roomy = [i for i in range(current) if allowed[i] and predicted_ms[i] <= (1 - up_margin) * budget_ms]
    if not roomy:
        return current, 0, False
    if up_streak + 1 >= up_hold:
        return roomy[0], 0, False
    return current, up_streak + 1, False


class _Estimate:
    """One per-point quantity: the bundle's prior until the first observation replaces it, then an exponential
    moving average with weight ``smoothing`` on each new sample."""

    def __init__(self, prior: float, smoothing: float) -> None:
        self.value = float(prior)
        self._smoothing = smoothing
        self._observed = False

    def observe(self, sample: float) -> None:
        if not 0 <= sample < math.inf:  # a value from a message: NaN, inf or negative teaches nothing
            return
        a = self._smoothing if self._observed else 1.0
        self._observed = True
        self.value = (1 - a) * self.value + a * float(sample)


@dataclasses.dataclass
class _Sent:
    at: float
    index: int
    bytes: int
    asked: bool
    late_after_s: float  # unanswered this long after sending: lost (or the link is slower than estimated)
    settled: bool = False


class AdaptiveController:
    """The device's adaptive state: estimates, the current point, speculative or on-demand (module docstring).

    Args:
        points: the bundle's points, richest first, with their measured priors.
        settings: the policy's parameters.
        max_tracked: sent frames remembered for matching Answers (oldest forgotten first).
    """

    def __init__(self, points: Sequence[PointPrior], settings: AdaptiveSettings, max_tracked: int = 256) -> None:
        if not points:
            raise ValueError("an adaptive device needs at least one operating point")
        self.points = tuple(points)
        self.settings = settings
        self.link = LinkEstimate(settings.initial_mbps, settings.initial_delay_ms, settings.link_window)
        self.questions = QuestionRate(settings.rate_window_s, settings.burst_memory_s)
        self._bytes = [_Estimate(p.bytes, settings.smoothing) for p in points]
        self._device_ms = [_Estimate(p.device_ms, settings.smoothing) for p in points]
        self._server_ms = [_Estimate(p.server_ms, settings.smoothing) for p in points]
        self._current: int | None = None
        self._streak = 0
        self._speculative = False
        self._sent: collections.OrderedDict[tuple[str, int], _Sent] = collections.OrderedDict()
        self._max_tracked = max_tracked
        self.counts = collections.Counter()

    @property
    def current(self) -> int | None:
        """Index of the point chosen last (None before the first frame)."""
        return self._current

    # -- estimates -------------------------------------------------------------------------------------------------
    def predicted_ms(self, index: int, now: float) -> float:
        """Device + transfer + server (+ queue) milliseconds of one point, as estimated at ``now``."""
        server = self._server_ms[index].value
        load = self.questions.peak_hz(now) * server / 1e3  # sized for the bursts seen lately, not only this one
        queue = math.inf if load >= 1 else load * server / (2 * (1 - load))
        return self._device_ms[index].value + self.link.transfer_ms(self._bytes[index].value) + server + queue

    # -- events ----------------------------------------------------------------------------------------------------
    def question(self, now: float, camera: str, stamp_ns: int) -> None:
        """A question arrived (it counts towards the question rate and marks the frame it names as awaited)."""
        self.questions.add(now)
        sent = self._sent.get((camera, stamp_ns))
        if sent is not None:
            sent.asked = True

    def sent(self, now: float, camera: str, stamp_ns: int, index: int, payload_bytes: int, device_ms: float) -> None:
        """The device published a frame with point ``index``."""
        self._bytes[index].observe(payload_bytes)
        self._device_ms[index].observe(device_ms)
        expected_s = (self.link.transfer_ms(payload_bytes) + self._server_ms[index].value) / 1e3
        late = max(self.settings.loss_after_s, self.settings.late_factor * expected_s)
        self._sent[(camera, stamp_ns)] = _Sent(now, index, int(payload_bytes), not self._speculative, late)
        while len(self._sent) > self._max_tracked:
            self._sent.popitem(last=False)
        self.counts[f"sent_{self.points[index].name}"] += 1

    def answered(
        self,
        now: float,
        camera: str,
        stamp_ns: int,
        ok: bool,
        no_frame: bool,
        transfer_ms: float,
        server_ms: float,
    ) -> None:
        """An Answer named a frame (its camera and image stamp): learn its transfer and server time, or its loss."""
        sent = self._sent.get((camera, stamp_ns))
        if sent is None or sent.settled:
            if sent is not None and ok and server_ms > 0:
                self._server_ms[sent.index].observe(server_ms)
            return
        if ok:
            sent.settled = True
            self.link.observe(sent.bytes, transfer_ms)
            if server_ms > 0:
                self._server_ms[sent.index].observe(server_ms)
        elif no_frame:
            sent.settled = True
            self.link.observe_loss(sent.bytes, (now - sent.at) * 1e3)
            self.counts["losses"] += 1

    def expire(self, now: float) -> None:
        """Awaited frames unanswered for longer than they should take count as lost (a dead link answers
        nothing)."""
        for sent in self._sent.values():
            if sent.asked and not sent.settled and now - sent.at > sent.late_after_s:
                sent.settled = True
                self.link.observe_loss(sent.bytes, (now - sent.at) * 1e3)
                self.counts["losses"] += 1

    # -- decisions -------------------------------------------------------------------------------------------------
    def speculative(self, now: float) -> bool:
        """Encode continuously (True) or on demand, by the recent question rate with hysteresis."""
        hz = self.questions.hz(now)
        if not self._speculative and hz >= self.settings.speculate_on_hz:
            self._speculative = True
            self.counts["to_speculative"] += 1
        elif self._speculative and hz < self.settings.speculate_off_hz:
            self._speculative = False
            self.counts["to_on_demand"] += 1
        return self._speculative

    def choose(self, now: float) -> Choice:
        """The point for the next frame."""
        self.expire(now)
        speculative = self.speculative(now)
        predicted = [self.predicted_ms(i, now) for i in range(len(self.points))]
        allowed = None
        if speculative:
            period_ms = self.settings.frame_period_s * 1e3
            allowed = [self.link.transfer_ms(b.value) - self.link.delay_ms <= period_ms for b in self._bytes]
        s = self.settings
        index, self._streak, starved = select_point(
            predicted, s.latency_budget_ms, self._current, self._streak, s.up_margin, s.up_hold, allowed
        )
        if index != self._current and self._current is not None:
            self.counts["switches"] += 1
        self._current = index
        if starved:
            self.counts["starved"] += 1
        return Choice(index, self.points[index].name, predicted[index], starved, speculative)

    def snapshot(self, now: float) -> dict[str, object]:
        """The estimates and counts at ``now``, for diagnostics."""
        return {
            "point": self.points[self._current].name if self._current is not None else "",
            "speculative": self._speculative,
            "link_mbps": round(self.link.rate_mbps, 4),
            "link_delay_ms": round(self.link.delay_ms, 2),
            "link_samples": self.link.samples,
            "question_hz": round(self.questions.hz(now), 3),
            "question_peak_hz": round(self.questions.peak_hz(now), 3),
            **{f"predicted_ms_{p.name}": round(self.predicted_ms(i, now), 1) for i, p in enumerate(self.points)},
            **dict(self.counts),
        }


def settings_from_config(config) -> AdaptiveSettings:
    """The policy's settings from a DeviceConfig (its adaptive-mode parameters)."""
    return AdaptiveSettings(
        latency_budget_ms=config.latency_budget_ms,
        up_margin=config.adapt_up_margin,
        up_hold=config.adapt_up_hold,
        speculate_on_hz=config.speculate_on_hz,
        speculate_off_hz=config.speculate_off_hz,
        rate_window_s=config.question_rate_window_s,
        burst_memory_s=config.burst_memory_s,
        frame_period_s=1.0 / config.max_rate_hz,
        loss_after_s=config.loss_after_s,
        initial_mbps=config.link_prior_mbps,
        initial_delay_ms=config.link_prior_delay_ms,
        link_window=config.link_window,
    )


def priors(bundle) -> list[PointPrior]:
    """A bundle's points (``codec.points.OperatingPoints``) as the controller's priors."""
    return [PointPrior(p.name, p.bytes, p.device_ms, p.server_ms) for p in bundle.points]
