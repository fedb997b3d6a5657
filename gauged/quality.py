"""Data quality of a reading: decided before anything acts on it.

good: usable; suspect: usable with care (not produced yet); bad: read but implausible
(out of physical range); missing: no value (read failed, NaN). Only good readings move a
stage; the others are stored and shown, never acted on.
"""

from __future__ import annotations

import enum
import math


class Quality(enum.StrEnum):
    GOOD = "good"
    SUSPECT = "suspect"
    BAD = "bad"
    MISSING = "missing"

    @property
    def code(self) -> int:
        """A number for time-series storage: 0 good, 1 suspect, 2 bad, 3 missing."""
        return _CODES[self]

    @property
    def usable(self) -> bool:
        return self is Quality.GOOD


_CODES = {Quality.GOOD: 0, Quality.SUSPECT: 1, Quality.BAD: 2, Quality.MISSING: 3}


def assess(value: float | None, valid_range: tuple[float, float] | None) -> Quality:
    """The quality of one value against its gauge's physical range."""
    if value is None or not math.isfinite(value):
        return Quality.MISSING
    if valid_range is not None and not valid_range[0] <= value <= valid_range[1]:
        return Quality.BAD
    return Quality.GOOD
