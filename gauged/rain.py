"""Rain derivations: tip counters to increments, increments to rolling totals."""

from __future__ import annotations

from collections import deque


class CounterTracker:
    """Turns successive raw readings of a cumulative tip counter into rain increments.

    The counter wraps at 2**bits. A step that looks backwards is a wrap when it is small
    modulo the counter's range (at most `max_step` tips), otherwise a device reset: the
    count since the reset is taken as the increment. The first reading only sets the
    baseline (no rain is invented for the time before it).
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
            step = raw  # a reset: the counter restarted from zero
        return step * self.mm_per_tip


class RainWindow:
    """Rolling total of rain increments over the last `window_s` seconds.

    An increment stamped t counts for the windows ending in [t, t + window_s).
    """

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._items: deque[tuple[float, float]] = deque()
        self._sum = 0.0

    def add(self, ts: float, mm: float) -> None:
        self._items.append((ts, mm))
        self._sum += mm

    def total(self, now_ts: float) -> float:
        """Rain (mm) of the increments stamped in (now − window, now]."""
        while self._items and self._items[0][0] <= now_ts - self.window_s:
            self._sum -= self._items.popleft()[1]
        if not self._items:
            self._sum = 0.0  # drop the float residue
        return round(self._sum, 6)
