"""Cumulative buckets of observations: the daemon's side of a Prometheus histogram.

The poller times gauge reads with one, the metrics tally broadcast latency with another;
`gauged/ops/metrics.py` exposes both.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence


class Histogram:
    """Cumulative buckets of observations (the daemon's side of a Prometheus histogram)."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(sorted(bounds))
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        """(upper bound, cumulative count) pairs, `+Inf` last."""
        out, running = [], 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            running += n
            out.append((_le(bound), float(running)))
        out.append(("+Inf", float(self.count)))
        return out


def _le(bound: float) -> str:
    return repr(float(bound))
