"""River level derivations: freeboard, rate of rise, minutes to the next stage.

The rate of rise (m/h, positive when the water rises) is the least-squares slope of the level
over the last `readings` good readings that lie within the last `window_s` seconds; it needs
at least `MIN_POINTS` of them (fewer: no rate). The daemon (`LevelTrend`, one reading at a
time) and `gauged replay` (`rise_rates`, a whole record) compute it with the same
floating-point operations in the same order, and round it to 1 µm/h, so that a rate-of-rise
trigger fires on the same reading in both.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

MIN_POINTS = 3  # a slope through two readings is a difference, too easily a spike
FLAT_M_PER_H = 0.001  # below 1 mm/h the river is flat: no time to the next stage

FloatArray = npt.NDArray[np.float64]


def freeboard(crest_m: float, level_m: float) -> float:
    """Distance from the water surface down to the top of the river wall (m).

    The smaller, the more dangerous; negative when the water is over the top.
    """
    return crest_m - level_m


def _slope(xs: Sequence[float], ys: Sequence[float], n: float) -> float:
    """Least-squares slope through (xs, ys); masked points are x = y = 0 and not in `n`.

    Written with elementwise operations only, so that it gives the same bits on floats
    and, column by column, on numpy arrays.
    """
    sx, sy = 0.0, 0.0
    for x, y in zip(xs, ys, strict=True):
        sx = sx + x
        sy = sy + y
    mx, my = sx / n, sy / n
    sxy, sxx = 0.0, 0.0
    for x, y in zip(xs, ys, strict=True):
        dx = x - mx
        sxy = sxy + dx * (y - my)
        sxx = sxx + dx * dx
    return sxy / sxx


class LevelTrend:
    """The last good readings of one level gauge and the rate of rise they show."""

    def __init__(self, readings: int = 5, window_s: float = 900.0) -> None:
        self.window_s = window_s
        self.min_points = min(MIN_POINTS, readings)
        self._points: deque[tuple[float, float]] = deque(maxlen=readings)

    def add(self, ts: float, level_m: float) -> None:
        """A good reading."""
        self._points.append((ts, level_m))

    def shift(self, seconds: float) -> None:
        """Re-date the readings by `seconds` (the wall clock was stepped)."""
        self._points = deque(((t + seconds, v) for t, v in self._points),
                             maxlen=self._points.maxlen)

    def rate(self, now: float) -> float | None:
        """Rate of rise (m/h) at `now`, or None without enough recent good readings."""
        points = [(t, v) for t, v in self._points if t > now - self.window_s]
        if len(points) < self.min_points:
            return None
        xs = [(t - now) / 3600.0 for t, _ in points]
        return round(_slope(xs, [v for _, v in points], float(len(points))), 6)


def rise_rates(t: FloatArray, level: FloatArray, good: npt.NDArray[np.bool_],
               readings: int = 5, window_s: float = 900.0) -> FloatArray:
    """`LevelTrend.rate` at every reading of a record (NaN where there is none)."""
    n = t.size
    rates = np.full(n, np.nan)
    good_idx = np.flatnonzero(good)
    if good_idx.size == 0:
        return rates
    last = np.cumsum(good) - 1  # position in good_idx of the last good reading ≤ j
    cols = []
    count = np.zeros(n)
    for back in range(readings - 1, -1, -1):  # oldest first, as the deque holds them
        pos = last - back
        ok = pos >= 0
        idx = good_idx[np.maximum(pos, 0)]
        ok &= t[idx] > t - window_s
        cols.append((ok, idx))
        count += ok
    enough = count >= min(MIN_POINTS, readings)
    if not enough.any():
        return rates
    sel = np.flatnonzero(enough)
    oks = [ok[sel] for ok, _ in cols]
    xs = [np.where(ok, (t[idx[sel]] - t[sel]) / 3600.0, 0.0) for ok, (_, idx) in
          zip(oks, cols, strict=True)]
    ys = [np.where(ok, level[idx[sel]], 0.0) for ok, (_, idx) in zip(oks, cols, strict=True)]
    slopes = _slope_columns(xs, ys, oks, count[sel])
    rates[sel] = round_like_python(slopes, 6)
    return rates


def round_like_python(x: FloatArray, digits: int) -> FloatArray:
    """`round(v, digits)` of every element, bit for bit as Python's correctly rounded
    `round`: numpy's scale-and-rint agrees except next to a half-way point, where Python's
    own `round` decides."""
    scale = 10.0 ** digits
    y = x * scale
    out: FloatArray = np.rint(y) / scale
    near = np.abs(np.abs(y - np.floor(y)) - 0.5) < 1e-6
    near |= np.abs(y) >= 2.0 ** 50  # too big to scale exactly
    for i in np.flatnonzero(near & np.isfinite(x)).tolist():
        out[i] = round(float(x[i]), digits)
    return out


def _slope_columns(xs: list[FloatArray], ys: list[FloatArray],
                   oks: list[npt.NDArray[np.bool_]], n: FloatArray) -> FloatArray:
    """`_slope` on columns; masked entries (x = y = 0) are skipped in the second pass."""
    sx, sy = np.zeros(n.size), np.zeros(n.size)
    for x, y in zip(xs, ys, strict=True):
        sx = sx + x
        sy = sy + y
    mx, my = sx / n, sy / n
    sxy, sxx = np.zeros(n.size), np.zeros(n.size)
    for x, y, ok in zip(xs, ys, oks, strict=True):
        dx = x - mx
        sxy = np.where(ok, sxy + dx * (y - my), sxy)
        sxx = np.where(ok, sxx + dx * dx, sxx)
    result: FloatArray = sxy / sxx
    return result


def minutes_to(freeboard_m: float, threshold_m: float, rate_m_per_h: float | None) -> float | None:
    """Minutes until the freeboard reaches `threshold_m` at the rate of rise (None when the
    river is falling or flat); 0 when it is already there."""
    if rate_m_per_h is None or rate_m_per_h < FLAT_M_PER_H:
        return None
    if freeboard_m <= threshold_m:
        return 0.0
    return round((freeboard_m - threshold_m) / rate_m_per_h * 60.0, 1)
