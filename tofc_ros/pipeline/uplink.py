"""A serialising link model: when does a message of N bytes arrive over a link of R bit/s and latency L?

Messages leave in order; a message starts transmitting when the link is free, takes N·8/R seconds on the wire
and arrives L seconds after its last bit left. A bounded backlog stands for the sender's buffer: a message that
would wait longer than `max_backlog_s` is dropped (counted), as a real radio link's queue would overflow.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class Link:
    """Bit rate in Mbit/s (> 0), one-way latency in seconds, backlog bound in seconds of queued transmission."""

    rate_mbps: float
    latency_s: float = 0.0
    max_backlog_s: float = 10.0
    _free_at: float = 0.0

    def __post_init__(self) -> None:
        if not self.rate_mbps > 0:
            raise ValueError(f"rate_mbps must be > 0, got {self.rate_mbps}")
        if self.latency_s < 0 or self.max_backlog_s < 0:
            raise ValueError("latency_s and max_backlog_s must be >= 0")

    def transmit(self, size_bytes: int, now: float) -> float | None:
        """Arrival time of a message handed to the link at `now`, or None when the backlog is full."""
        start = max(now, self._free_at)
        if start - now > self.max_backlog_s:
            return None
        self._free_at = start + size_bytes * 8 / (self.rate_mbps * 1e6)
        return self._free_at + self.latency_s
