"""Error barriers: an unexpected error in one station's path is that station's fault, not the
daemon's (QUALITY SYS-5).

A bug, or data no one foresaw (a custom serial `pattern` that lets `NaN` through to a rain
counter, say: `int(nan)`), raises where it is met: reading a gauge, decoding what it sent,
judging it, evaluating its station's stage. Every such place catches what it did not expect
for that one gauge or station and goes on with the others: the station is in `gauge_fault`
with the reason `internal: <type>: <message>` and holds its stage (a gauge_fault's rule:
uncertainty resolves toward safety, DESIGN §1), the rest of the cycle runs as usual. Without
the barrier one such error would end the process every cycle, and `Restart=always` would make
that a crash loop in which every start drives every relay OFF.

`Contained` is one caught error (plain data: the alarm core returns it, never logs it).
`Barrier` is what the daemon does with them, cycle by cycle: it counts every one (per station
and place, `gauged_internal_errors_total` in /metrics) and logs an *episode* once: at ERROR,
with the traceback, when a subject (a gauge, a station) first fails at a place with an error
of a type, at INFO when a cycle takes it through without one. Between, nothing: the same error
every three minutes is one episode, not a line per cycle (STYLE 9).

`CancelledError` is not an `Exception` and is never caught here (STYLE 3).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# the places a barrier stands, as the `where` label of the metric says them
READ, DECODE, JUDGE, EVALUATE, CYCLE = "read", "decode", "judge", "evaluate", "cycle"


def internal_reason(exc: BaseException) -> str:
    """What gauge_fault says: `internal: ValueError: cannot convert float NaN to integer`."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    name = type(exc).__name__
    return f"internal: {name}: {text}" if text else f"internal: {name}"


@dataclass(frozen=True)
class Contained:
    """One unexpected error caught for one station (and, at a station with two gauges, for
    one of its gauges)."""

    station: str
    where: str  # READ, DECODE, JUDGE, EVALUATE or CYCLE
    error: BaseException
    gauge: str = ""  # the gauge of a station with two (else "")

    @property
    def reason(self) -> str:
        return internal_reason(self.error)


class Barrier:
    """Counts contained errors and logs each episode once (see the module docstring).

    `counts` may be shared by several barriers (the poller's and the engine's), so that
    /metrics reads one table.
    """

    def __init__(self, logger: logging.Logger,
                 counts: Counter[tuple[str, str]] | None = None) -> None:
        self.log = logger
        self.counts: Counter[tuple[str, str]] = Counter() if counts is None else counts
        self.open: dict[str, Contained] = {}  # subject → the error its episode began with

    def report(self, subjects: Iterable[str], contained: Mapping[str, Contained]) -> None:
        """One cycle took `subjects` through this barrier; those in `contained` failed."""
        for subject, c in contained.items():
            self.counts[(c.station, c.where)] += 1
            first = self.open.get(subject)
            if first is not None and first.where == c.where and \
                    type(first.error) is type(c.error):
                continue
            self.open[subject] = c
            gauge = f" gauge={c.gauge}" if c.gauge else ""
            self.log.error("internal error station=%s%s where=%s: %s (%s; logged once while "
                           "it lasts)", c.station or "-", gauge, c.where, c.reason,
                           _CONSEQUENCE.get(c.where, _STATION),
                           exc_info=(type(c.error), c.error, c.error.__traceback__))
        for subject in subjects:
            if subject in self.open and subject not in contained:
                c = self.open.pop(subject)
                gauge = f" gauge={c.gauge}" if c.gauge else ""
                self.log.info("internal error cleared station=%s%s where=%s: a cycle went "
                              "through without it", c.station or "-", gauge, c.where)


_STATION = "contained: the station is in gauge_fault and holds its stage, the other " \
    "stations go on"
_CONSEQUENCE = {CYCLE: "contained: this cycle was abandoned, the next one runs as usual; "
                       "while no cycle completes the watchdog pings stop"}
