"""Adaptive concurrency, in the spirit of Vector's ARC: find how many requests a remote takes at once.

Additive increase (about +1 per window of `limit` healthy answers), multiplicative decrease (x0.9) when the remote
pushes back (429, 503) or its answers slow down well past their usual time. The limit stays within
[1, `concurrency`] and starts at the top (unlike ARC's start at 1): a healthy remote pays no ramp-up after every
restart, and a straining one brings it down within a few answers. Pure arithmetic; the forwarder feeds it.
"""

from __future__ import annotations

from dataclasses import dataclass

DECREASE = 0.9
# An answer this much slower than the running average counts as the remote straining...
SLOW_FACTOR = 2.5
# ...provided it is also slower than this: on loopback, scheduling noise alone doubles millisecond latencies.
SLOW_FLOOR = 0.05
EWMA_WEIGHT = 0.05


@dataclass(slots=True)
class AdaptiveLimit:
    maximum: int
    limit: float = 0.0
    average_rtt: float | None = None

    def __post_init__(self) -> None:
        self.limit = self.limit or float(self.maximum)

    @property
    def value(self) -> int:
        return max(1, min(self.maximum, int(self.limit)))

    def on_answer(self, rtt: float, pushed_back: bool) -> None:
        slow = self.average_rtt is not None and rtt > max(SLOW_FLOOR, self.average_rtt * SLOW_FACTOR)
        if pushed_back or slow:
            self.limit = max(1.0, self.limit * DECREASE)
        else:
            self.limit = min(float(self.maximum), self.limit + 1.0 / max(self.limit, 1.0))
        if not pushed_back:
            self.average_rtt = (
                rtt if self.average_rtt is None else self.average_rtt + EWMA_WEIGHT * (rtt - self.average_rtt)
            )
