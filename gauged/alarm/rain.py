"""Rain derivations: tip counters to increments, increments to totals.

How rain is attributed to time (the daemon, one reading at a time, and `gauged replay`,
vectorised over a whole record, follow the same rules to the last digit):

- A reading of a tip counter gives the rain since the previous *reading*: its increment. The
  increment is stamped at the reading and covers the time since the previous reading, its
  *span* (one cycle normally; after missed cycles, the whole gap). The first reading of a
  station only sets the baseline: what it reports, if anything, covers an unknown span.
- A window total (rolling 10 min, 60 min and 24 h; the clock hour; the stage window) is the
  rain of the increments stamped in (start, now]. An increment counts only if its span is no
  longer than the window: then the rain certainly fell inside the window that ends at the
  reading. A longer increment is left out, never spread over the gap (a gap is a gap, never
  invented rain); an increment of 0 counts whatever its span (it did not rain).
- A reading whose rain a total does not count (left out, a bad reading, the baseline) is a
  *hole* in that total. While a hole lies inside the window, the total is *partial*: a lower
  bound, which may raise a stage but never lower it.
- A storm event starts with rain after a dry spell (`dry_s`, 6 h by default) and ends when the
  dry spell has passed; its total counts every good increment whatever its span.
- Effective rainfall with half-life T: R(t) = Σ r_i · 0.5^((t − t_i)/T). An increment whose
  span is longer than T is dated at the start of its span (it is at least that old), so that
  a gap never makes rain look more recent than it was; it is a hole for partiality.

Increments are kept in whole micrometres so that sums are exact; the effective rainfall is
computed in blocks of 8 half-lives with the same floating-point operations in both paths.
"""

from __future__ import annotations

import functools
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from gauged.alarm.quality import Quality

UM_PER_MM = 1000
BLOCK_HALF_LIVES = 8  # effective rainfall: rebase every 8 half-lives (factors ≤ 256)

# Window quantities: name → (length in seconds, aligned to the local clock)
WINDOWS: dict[str, tuple[float, bool]] = {
    "10m": (600.0, False), "60m": (3600.0, False), "24h": (86400.0, False),
    "hour": (3600.0, True),
}
QUANTITIES = ("total", "10m", "60m", "hour", "24h", "event", "effective_short",
              "effective_long")

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]


def to_um(mm: float) -> int:
    """Millimetres to whole micrometres (round half to even, as numpy's rint)."""
    return round(mm * UM_PER_MM)


def utc_offset_of(timezone: str) -> Callable[[float], float]:
    """Seconds east of UTC in `timezone` at a Unix time."""
    if timezone == "UTC":
        return lambda ts: 0.0
    zone = ZoneInfo(timezone)

    def offset(ts: float) -> float:
        delta = datetime.fromtimestamp(ts, zone).utcoffset()
        return delta.total_seconds() if delta is not None else 0.0

    return offset


def _later(ts: float | None, seconds: float) -> float | None:
    return None if ts is None else ts + seconds


def clock_start(now: float, window_s: float, offset: float) -> float:
    """Start of the local clock period of `window_s` that holds `now`.

    A reading exactly on a boundary closes the period before it (at 10:00 the hour is 9-10).
    """
    local = now + offset
    return (math.ceil(local / window_s) - 1) * window_s - offset


@dataclass(frozen=True)
class RainParams:
    """The rain settings of a configuration (see `Defaults`)."""

    window_s: float = 3600.0  # the stage window ("total")
    clock: bool = False  # the stage window follows the local clock
    dry_s: float = 6 * 3600.0
    half_lives_s: tuple[float, float] = (1.5 * 3600.0, 72 * 3600.0)
    timezone: str = "UTC"

    def windows(self) -> dict[str, tuple[float, bool]]:
        return {"total": (self.window_s, self.clock), **WINDOWS}


class CounterTracker:
    """Turns successive raw readings of a cumulative tip counter into rain increments.

    The counter wraps at 2**bits. A step of at most `max_step` tips modulo the counter's
    range is rain (across a wrap, too). A larger step to a small count (at most `max_step`)
    is a device reset: the count since the reset is the increment. Any other jump is not
    believable: it re-bases the counter and reports no increment (None), like the first
    reading, which only sets the baseline. No rain is invented either way.
    """

    def __init__(self, bits: int, mm_per_tip: float, max_step: int = 1000) -> None:
        self.modulus = 1 << bits
        self.mm_per_tip = mm_per_tip
        self.max_step = max_step
        self.last: int | None = None

    def update(self, raw: int) -> float | None:
        """Rain (mm) since the previous reading; None for the first reading."""
        raw = int(raw) % self.modulus
        last, self.last = self.last, raw
        if last is None:
            return None
        step = (raw - last) % self.modulus
        if step > self.max_step:
            if raw > self.max_step:
                return None  # neither rain nor a restart: unknown
            step = raw  # a reset: the counter restarted from zero
        return step * self.mm_per_tip


def counter_increments(raw: FloatArray, bits: int, mm_per_tip: float,
                       max_step: int = 1000) -> FloatArray:
    """`CounterTracker` over a series of raw readings (NaN: no reading): increments in mm,
    NaN for the first reading, for an unbelievable jump and where there is no reading."""
    out = np.full(raw.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(raw))
    if idx.size < 2:
        return out
    modulus = 1 << bits
    values = raw[idx].astype(np.int64) % modulus
    step = (values[1:] - values[:-1]) % modulus
    reset = step > max_step
    step = np.where(reset, values[1:], step)
    out[idx[1:]] = np.where(reset & (values[1:] > max_step), np.nan, step * mm_per_tip)
    return out


class RainWindow:
    """Rain of the increments stamped in (start, now], in whole micrometres.

    `start` is now − window_s, or with `offset` (the local clock's offset from UTC) the start
    of the current clock period of window_s.
    """

    def __init__(self, window_s: float, offset: Callable[[float], float] | None = None) -> None:
        self.window_s = window_s
        self.offset = offset
        self._items: deque[tuple[float, int]] = deque()
        self._sum = 0
        self.last_hole: float | None = None

    def start(self, now: float) -> float:
        if self.offset is None:
            return now - self.window_s
        return clock_start(now, self.window_s, self.offset(now))

    def add(self, ts: float, mm: float) -> None:
        self.add_um(ts, to_um(mm))

    def add_um(self, ts: float, um: int) -> None:
        self._items.append((ts, um))
        self._sum += um

    def hole(self, ts: float) -> None:
        """A reading whose rain this window does not count."""
        self.last_hole = ts

    def shift(self, seconds: float) -> None:
        """Re-date the increments and the last hole by `seconds` (the wall clock was
        stepped): the rain stays in the window it fell in."""
        self._items = deque((ts + seconds, um) for ts, um in self._items)
        self.last_hole = _later(self.last_hole, seconds)

    def total_um(self, now: float) -> int:
        start = self.start(now)
        if self.offset is None:
            while self._items and self._items[0][0] <= start:
                self._sum -= self._items.popleft()[1]
            return self._sum
        # a clock period may start earlier than the previous one did (a clock change):
        # keep a margin, and add up what lies in the period
        while self._items and self._items[0][0] <= now - self.window_s - 7200.0:
            self._items.popleft()
        return sum(um for ts, um in self._items if ts > start)

    def total(self, now: float) -> float:
        """Rain (mm) of the increments stamped in (start, now]."""
        return self.total_um(now) / UM_PER_MM

    def partial(self, now: float) -> bool:
        """A hole lies in the window: the total is a lower bound."""
        return self.last_hole is not None and self.last_hole > self.start(now)


class StormEvent:
    """Rain since the start of the current storm event."""

    def __init__(self, dry_s: float) -> None:
        self.dry_s = dry_s
        self.start: float | None = None
        self.last_rain: float | None = None
        self.um = 0
        self.last_hole: float | None = None

    def add_um(self, ts: float, um: int) -> None:
        if um <= 0:
            return
        if self.last_rain is None or ts - self.last_rain >= self.dry_s:
            self.start, self.um = ts, 0
        self.um += um
        self.last_rain = ts

    def hole(self, ts: float) -> None:
        self.last_hole = ts

    def shift(self, seconds: float) -> None:
        """Re-date the event by `seconds` (the wall clock was stepped)."""
        self.start = _later(self.start, seconds)
        self.last_rain = _later(self.last_rain, seconds)
        self.last_hole = _later(self.last_hole, seconds)

    def active(self, now: float) -> bool:
        return self.last_rain is not None and now - self.last_rain < self.dry_s

    def total(self, now: float) -> float:
        return self.um / UM_PER_MM if self.active(now) else 0.0

    def partial(self, now: float) -> bool:
        ref = self.start if self.active(now) and self.start is not None else now
        return self.last_hole is not None and self.last_hole > ref - self.dry_s


class EffectiveRainfall:
    """R(t) = Σ r_i · 0.5^((t − t_i)/T), kept as (carry + acc) · 2^(−(t − τ)/T) with τ the
    start of a block of 8 half-lives on a fixed grid (see `effective_series`)."""

    def __init__(self, half_life_s: float) -> None:
        self.half_life_s = half_life_s
        self.block_s = BLOCK_HALF_LIVES * half_life_s
        self.block: int | None = None
        self.carry = 0.0
        self.acc = 0.0
        self.last_hole: float | None = None

    def add(self, ts: float, mm: float) -> None:
        """Rain `mm` (> 0) dated `ts`."""
        k = math.floor(ts / self.block_s)
        if self.block is None:
            self.block = k
        elif k != self.block:
            self.carry = (self.carry + self.acc) * 2.0 ** (-BLOCK_HALF_LIVES * (k - self.block))
            self.acc = 0.0
            self.block = k
        self.acc += mm * 2.0 ** ((ts - k * self.block_s) / self.half_life_s)

    def hole(self, ts: float) -> None:
        self.last_hole = ts

    def shift(self, seconds: float) -> None:
        """Re-date the rain by `seconds` (the wall clock was stepped): R(t) is kept as
        S · 2^(−(t − τ)/T) with τ = block · block_s; τ + seconds is moved back onto the grid
        and S scaled to match (by a factor in [1, 256))."""
        self.last_hole = _later(self.last_hole, seconds)
        if self.block is None:
            return
        tau = self.block * self.block_s + seconds
        block = math.floor(tau / self.block_s)
        self.carry = (self.carry + self.acc) * 2.0 ** ((tau - block * self.block_s)
                                                       / self.half_life_s)
        self.acc = 0.0
        self.block = block

    def value(self, now: float) -> float:
        if self.block is None:
            return 0.0
        k = math.floor(now / self.block_s)
        shift: float = 2.0 ** (-BLOCK_HALF_LIVES * (k - self.block))
        decay: float = 2.0 ** (-(now - k * self.block_s) / self.half_life_s)
        return (self.carry + self.acc) * shift * decay

    def partial(self, now: float) -> bool:
        return self.last_hole is not None and self.last_hole > now - self.half_life_s


@dataclass(frozen=True)
class RainFigures:
    """Everything derived from one rain reading."""

    span_s: float | None  # the time the increment covers (None: first reading, or none)
    totals: dict[str, float]  # by quantity name (QUANTITIES), mm
    partial: dict[str, bool]  # by quantity name: the total is a lower bound
    event_start: float | None  # Unix time of the current storm event's first rain


class RainState:
    """The rain derivations of one station, one reading at a time (the daemon's path)."""

    def __init__(self, params: RainParams) -> None:
        self.params = params
        offset = utc_offset_of(params.timezone)
        self.windows = {name: RainWindow(w, offset if clock else None)
                        for name, (w, clock) in params.windows().items()}
        self.event = StormEvent(params.dry_s)
        self.effective = {"effective_short": EffectiveRainfall(params.half_lives_s[0]),
                          "effective_long": EffectiveRainfall(params.half_lives_s[1])}
        self.last_read: float | None = None

    def shift(self, seconds: float) -> None:
        """Re-date every reading by `seconds`: the wall clock was stepped (gauged/clock.py),
        and the totals go on as if it had always read the stepped time."""
        for window in self.windows.values():
            window.shift(seconds)
        self.event.shift(seconds)
        for eff in self.effective.values():
            eff.shift(seconds)
        self.last_read = _later(self.last_read, seconds)

    def update(self, ts: float, increment: float | None, quality: Quality) -> RainFigures:
        """One cycle's reading: `increment` in mm (None: none), judged `quality`."""
        read = quality is not Quality.MISSING
        span = ts - self.last_read if read and self.last_read is not None else None
        if read:
            self.last_read = ts
        um = to_um(increment) if (quality is Quality.GOOD and increment is not None
                                  and span is not None) else None
        for window in self.windows.values():
            if um is not None and (um == 0 or (span is not None and span <= window.window_s)):
                window.add_um(ts, um)
            elif read:
                window.hole(ts)
        if um is not None:
            self.event.add_um(ts, um)
        elif read:
            self.event.hole(ts)
        for eff in self.effective.values():
            if um is None:
                if read:
                    eff.hole(ts)
            elif um > 0:
                mm = um / UM_PER_MM
                if span is not None and span > eff.half_life_s:
                    mm *= 2.0 ** (-span / eff.half_life_s)
                    eff.hole(ts)
                eff.add(ts, mm)
        totals = {name: w.total(ts) for name, w in self.windows.items()}
        partial = {name: w.partial(ts) for name, w in self.windows.items()}
        totals["event"], partial["event"] = self.event.total(ts), self.event.partial(ts)
        for name, eff in self.effective.items():
            totals[name], partial[name] = eff.value(ts), eff.partial(ts)
        start = self.event.start if self.event.active(ts) else None
        return RainFigures(span, totals, partial, start)


# ---- the same over a whole record (replay) -------------------------------------------

@dataclass(frozen=True)
class RainHistory:
    """`RainState.update` for every reading of a station's record, as arrays."""

    good: BoolArray  # the reading is usable (the stage engine acts on it)
    totals: dict[str, FloatArray]
    partial: dict[str, BoolArray]


def _last_time(t: FloatArray, mark: BoolArray) -> FloatArray:
    """At each index, the time of the last marked index at or before it (−inf if none)."""
    return np.maximum.accumulate(np.where(mark, t, -np.inf))


def _pow2(x: FloatArray) -> FloatArray:
    """2.0 ** x element by element with Python's float power (the daemon's arithmetic); one
    call per distinct exponent."""
    if x.size == 0:
        return np.empty(0)
    uniq, inverse = np.unique(x, return_inverse=True)
    return np.array([2.0 ** float(v) for v in uniq])[inverse.reshape(-1)]


def local_offsets(t: FloatArray, timezone: str) -> FloatArray:
    """`utc_offset_of(timezone)` at every time (one zone look-up per UTC hour, and per
    reading only within an hour that holds a clock change)."""
    if timezone == "UTC" or t.size == 0:
        return np.zeros(t.shape)
    offset = utc_offset_of(timezone)
    hours, inverse = np.unique(np.floor(t / 3600.0), return_inverse=True)
    inverse = inverse.reshape(-1)
    at_start = np.array([_hour_offset(timezone, h, 0.0) for h in hours.tolist()])
    at_end = np.array([_hour_offset(timezone, h, 3599.999) for h in hours.tolist()])
    out = at_start[inverse]
    for i in np.flatnonzero(at_start != at_end):
        for j in np.flatnonzero(inverse == i):
            out[j] = offset(float(t[j]))
    return out


@functools.lru_cache(maxsize=1 << 16)
def _hour_offset(timezone: str, hour: float, into: float) -> float:
    return utc_offset_of(timezone)(hour * 3600.0 + into)


class TimeBasis:
    """What a rain record's derivations take from its reading times alone: each window's
    start and first index, each half-life's block and decay. Stations read at the same
    times (a scenario's rain gauges, normally) share one basis, so that replay computes
    these once rather than once per station."""

    def __init__(self, t: FloatArray, params: RainParams) -> None:
        self.t = t
        self.params = params
        self._offsets: FloatArray | None = None
        self._starts: dict[str, tuple[FloatArray, IntArray]] = {}
        self._decays: dict[float, tuple[FloatArray, FloatArray]] = {}

    def fits(self, t: FloatArray, params: RainParams) -> bool:
        return params == self.params and (t is self.t or np.array_equal(t, self.t))

    def window_start(self, name: str) -> tuple[FloatArray, IntArray]:
        """The start of window `name` at each time (entries with t <= start are out), and
        the index of the first entry inside it."""
        if name not in self._starts:
            t = self.t
            window_s, clock = self.params.windows()[name]
            if clock:
                if self._offsets is None:
                    self._offsets = local_offsets(t, self.params.timezone)
                offsets = self._offsets
                start = (np.ceil((t + offsets) / window_s) - 1.0) * window_s - offsets
            else:
                start = t - window_s
            self._starts[name] = start, np.searchsorted(t, start, side="right")
        return self._starts[name]

    def decay(self, half_life_s: float) -> tuple[FloatArray, FloatArray]:
        """Each time's block of 8 half-lives and its decay since the block's start."""
        if half_life_s not in self._decays:
            block_s = BLOCK_HALF_LIVES * half_life_s
            k = np.floor(self.t / block_s)
            self._decays[half_life_s] = k, _pow2(-(self.t - k * block_s) / half_life_s)
        return self._decays[half_life_s]


def effective_series(t: FloatArray, mm: FloatArray, half_life_s: float,
                     basis: TimeBasis | None = None) -> FloatArray:
    """`EffectiveRainfall.value` at every time after adding `mm` (> 0 where it rained)."""
    block_s = BLOCK_HALF_LIVES * half_life_s
    k, decay = (basis or TimeBasis(t, RainParams())).decay(half_life_s)
    rain = np.flatnonzero(mm > 0)
    if rain.size == 0:
        return np.zeros(t.shape)
    kr = k[rain]
    terms = mm[rain] * _pow2((t[rain] - kr * block_s) / half_life_s)
    carry_acc = np.empty(rain.size)  # (carry + acc) after each rain reading
    bounds = np.flatnonzero(np.diff(kr)) + 1
    carry, acc, prev = 0.0, 0.0, None
    for a, b in zip(np.concatenate([[0], bounds]), np.concatenate([bounds, [rain.size]]),
                    strict=True):
        block = int(kr[a])
        if prev is not None:
            carry = (carry + acc) * 2.0 ** (-BLOCK_HALF_LIVES * (block - prev))
        sums = np.cumsum(terms[a:b])  # sequential, as `acc +=` in the daemon
        carry_acc[a:b] = carry + sums
        acc, prev = float(sums[-1]), block
    last = np.cumsum(mm > 0) - 1  # position in `rain` of the last rain ≤ j
    seen = last >= 0
    last = np.maximum(last, 0)
    # 2.0 ** (−8 × whole blocks) is a power of two: ldexp gives it exactly, as pow does
    shift = np.ldexp(1.0, (-BLOCK_HALF_LIVES * (k - kr[last])).astype(np.int64))
    return np.where(seen, (carry_acc[last] * shift) * decay, 0.0)


def rain_history(t: FloatArray, increment: FloatArray, quality: npt.NDArray[np.int8],
                 params: RainParams, basis: TimeBasis | None = None) -> RainHistory:
    """Derive a station's whole rain record at once.

    `t`: reading times (Unix seconds, increasing); `increment`: mm (NaN: none); `quality`:
    `Quality.code` of each reading; `basis`: a `TimeBasis` of these times to share.
    """
    if basis is None or not basis.fits(t, params):
        basis = TimeBasis(t, params)
    n = t.size
    read = quality != Quality.MISSING.code
    good = quality == Quality.GOOD.code
    read_idx = np.flatnonzero(read)
    span = np.full(n, np.nan)
    span[read_idx[1:]] = t[read_idx[1:]] - t[read_idx[:-1]]
    has = good & np.isfinite(increment) & np.isfinite(span)
    um = np.where(has, np.rint(np.where(has, increment, 0.0) * UM_PER_MM), 0).astype(np.int64)
    totals: dict[str, FloatArray] = {}
    partial: dict[str, BoolArray] = {}
    last: tuple[BoolArray, FloatArray, BoolArray] | None = None
    for name, (window_s, _) in params.windows().items():
        counted = has & ((um == 0) | (span <= window_s))
        start, first = basis.window_start(name)
        if last is None or not np.array_equal(counted, last[0]):  # the windows usually
            sums = np.concatenate([[0], np.cumsum(np.where(counted, um, 0))])  # agree
            last = counted, sums, read & ~counted
        totals[name] = (last[1][1:] - last[1][first]) / UM_PER_MM
        partial[name] = _last_time(t, last[2]) > start
    totals["event"], partial["event"] = _event(t, um, has, read & ~has, params.dry_s)
    for name, half_life in zip(("effective_short", "effective_long"), params.half_lives_s,
                               strict=True):
        mm = np.where(has & (um > 0), um / UM_PER_MM, 0.0)
        late = has & (um > 0) & (span > half_life)
        if late.any():
            mm[late] = mm[late] * _pow2(-span[late] / half_life)
        totals[name] = effective_series(t, mm, half_life, basis)
        partial[name] = _last_time(t, (read & ~has) | late) > t - half_life
    return RainHistory(good, totals, partial)


def _event(t: FloatArray, um: IntArray, counted: BoolArray, hole: BoolArray,
           dry_s: float) -> tuple[FloatArray, BoolArray]:
    n = t.size
    rain = np.flatnonzero(counted & (um > 0))
    last_hole = _last_time(t, hole)
    if rain.size == 0:
        return np.zeros(n), last_hole > t - dry_s
    new = np.ones(rain.size, dtype=bool)
    new[1:] = t[rain[1:]] - t[rain[:-1]] >= dry_s
    start_of = rain[np.maximum.accumulate(np.where(new, np.arange(rain.size), 0))]
    last = np.cumsum(counted & (um > 0)) - 1  # position in `rain` of the last rain ≤ j
    seen = last >= 0
    last = np.maximum(last, 0)
    active = seen & (t - t[rain[last]] < dry_s)
    start = start_of[last]
    sums = np.concatenate([[0], np.cumsum(np.where(counted, um, 0))])
    total = np.where(active, (sums[np.arange(n) + 1] - sums[start]) / UM_PER_MM, 0.0)
    ref = np.where(active, t[start], t)
    return total, last_hole > ref - dry_s
