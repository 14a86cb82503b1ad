"""A serialising link model: when does a message of N bytes arrive over a link of R bit/s and latency L?

Messages leave in order; a message starts transmitting when the link is free, takes N·8/R seconds on the wire
and arrives L seconds after its last bit left. A bounded backlog stands for the sender's buffer: a message that
would wait longer than `max_backlog_s` is dropped (counted), as a real radio link's queue would overflow.

The rate may follow a :class:`RateTrace` (a robot moving from Wi-Fi to a weak cellular link): piecewise-constant
rates from given offsets, a message's bits leaving at whatever rate holds while they are on the wire. A rate of 0
is a dead link; a message that could never finish (a dead last segment) is dropped.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import os
from pathlib import Path

__all__ = ["RateTrace", "Link"]

_MAX_SEGMENTS = 100_000


@dataclasses.dataclass(frozen=True)
class RateTrace:
    """Rates in Mbit/s from offsets in seconds: ``starts[i]`` .. ``starts[i+1]`` runs at ``rates[i]``; the last
    rate holds for ever. ``starts[0]`` is 0 and the offsets increase."""

    starts: tuple[float, ...]
    rates: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.starts or len(self.starts) != len(self.rates):
            raise ValueError("a rate trace needs one rate per start offset, at least one")
        if len(self.starts) > _MAX_SEGMENTS:
            raise ValueError(f"a rate trace has at most {_MAX_SEGMENTS} segments, got {len(self.starts)}")
        if self.starts[0] != 0:
            raise ValueError(f"a rate trace starts at offset 0, not {self.starts[0]}")
        if any(b <= a for a, b in zip(self.starts, self.starts[1:])):
            raise ValueError(f"rate trace offsets must increase: {list(self.starts)}")
        if any(not (math.isfinite(r) and r >= 0) for r in self.rates):
            raise ValueError(f"rate trace rates must be finite and >= 0 Mbit/s: {list(self.rates)}")

    @classmethod
    def parse(cls, spec: str) -> RateTrace:
        """A trace from text: ``"0:50, 30:2, 60:10, 90:0.5"`` (offset_s:rate_mbps pairs, by commas or lines), or
        the path of a file holding such pairs (one per line, ``#`` comments, ``offset,rate`` also accepted)."""
        text = spec
        if ":" not in spec or os.path.isfile(spec):
            path = Path(spec)
            if not path.is_file():
                raise ValueError(f"rate trace {spec!r} is neither 'offset_s:rate_mbps, ...' nor a file")
            if path.stat().st_size > 1 << 22:
                raise ValueError(f"rate trace file {spec} is larger than 4 MiB")
            text = path.read_text(encoding="utf-8")
        starts, rates = [], []
        entries = [e.strip() for raw in text.splitlines() for e in raw.split("#", 1)[0].split(",")]
        if all(":" not in e for e in entries):  # a file of "offset,rate" lines
            entries = [" ".join(raw.split("#", 1)[0].split(",")).strip() for raw in text.splitlines()]
        for line in entries:
            if not line:
                continue
            pair = line.replace(":", " ").split()
            if len(pair) != 2:
                raise ValueError(f"rate trace entry {line!r} is not offset_s:rate_mbps")
            try:
                starts.append(float(pair[0]))
                rates.append(float(pair[1]))
            except ValueError:
                raise ValueError(f"rate trace entry {line!r} is not two numbers") from None
        return cls(tuple(starts), tuple(rates))

    def segment(self, t: float) -> int:
        """Index of the segment holding offset ``t`` (0 before the start)."""
        return max(bisect.bisect_right(self.starts, t) - 1, 0)

    def rate_at(self, t: float) -> float:
        """Mbit/s at offset ``t``."""
        return self.rates[self.segment(t)]

    def finish(self, start: float, bits: float) -> float:
        """Offset at which ``bits`` handed to the wire at offset ``start`` have all left (inf: never)."""
        i = self.segment(start)
        t = max(start, 0.0)
        left = float(bits)
        while True:
            rate = self.rates[i] * 1e6
            end = self.starts[i + 1] if i + 1 < len(self.starts) else math.inf
            if rate > 0:
                done = t + left / rate
                if done <= end:
                    return done
                left -= (end - t) * rate
            if end == math.inf:
                return math.inf
            t, i = end, i + 1


@dataclasses.dataclass
class Link:
    """Bit rate in Mbit/s (> 0), one-way latency in seconds, backlog bound in seconds of queued transmission.

    With ``trace`` the rate follows it from ``origin`` (the clock's time of the trace's offset 0) and ``rate_mbps``
    is unused.
    """

    rate_mbps: float
    latency_s: float = 0.0
    max_backlog_s: float = 10.0
    trace: RateTrace | None = None
    origin: float = 0.0
    _free_at: float = 0.0

    def __post_init__(self) -> None:
        if self.trace is None and not self.rate_mbps > 0:
            raise ValueError(f"rate_mbps must be > 0, got {self.rate_mbps}")
        if self.latency_s < 0 or self.max_backlog_s < 0:
            raise ValueError("latency_s and max_backlog_s must be >= 0")

    def rate_at(self, now: float) -> float:
        """The link's rate in Mbit/s at clock time ``now``."""
        return self.rate_mbps if self.trace is None else self.trace.rate_at(now - self.origin)

    def transmit(self, size_bytes: int, now: float) -> float | None:
        """Arrival time of a message handed to the link at `now`, or None when the backlog is full (or the link
        stays dead for ever)."""
        start = max(now, self._free_at)
        if start - now > self.max_backlog_s:
            return None
        if self.trace is None:
            done = start + size_bytes * 8 / (self.rate_mbps * 1e6)
        else:
            done = self.trace.finish(start - self.origin, size_bytes * 8) + self.origin
            if done == math.inf:
                return None
        self._free_at = done
        return done + self.latency_s
