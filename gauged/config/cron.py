"""Calendars of the scheduled tests: crontab lines as APScheduler 3 `CronTrigger`s.

Calendars are crontab lines in the gateway's time zone (`"0 10 * * 1"`: Mondays at 10:00).
Weekdays follow crontab (Sunday = 0 or 7), not `CronTrigger.from_crontab`, which counts from
Monday = 0 in APScheduler 3 (there `"0 10 * * 1"` would be Tuesday). A line restricting both
the day of the month and the weekday is refused: crontab fires on either, a CronTrigger only
on both. `plan` splits the fire times due by `misfire_grace_time` (gauged/field/prooftests.py
runs them on the daemon's clock).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where a calendar is built: a daemon without scheduled tests
    from apscheduler.triggers.cron import CronTrigger  # does not load APScheduler (2 MB)

_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_TICK = timedelta(microseconds=1)


def cron_trigger(expr: str, timezone: str) -> CronTrigger:
    """A crontab line (minute hour day month weekday; Sunday = 0 or 7) as a CronTrigger."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"{expr!r}: a crontab line has 5 fields (minute hour day month "
                         f"weekday), not {len(fields)}")
    minute, hour, day, month, weekday = fields
    if day != "*" and weekday != "*":
        raise ValueError(f"{expr!r}: give a day of the month or a weekday, not both")
    from apscheduler.triggers.cron import CronTrigger  # (see the top)

    try:
        return CronTrigger(minute=minute, hour=hour, day=day, month=month,
                           day_of_week=_weekdays(weekday), timezone=timezone)
    except (ValueError, LookupError) as exc:
        raise ValueError(f"{expr!r}: {exc}") from None


def _weekdays(spec: str) -> str:
    """A crontab weekday field as APScheduler day names ("1-5" → "mon,tue,wed,thu,fri")."""
    days: set[int] = set()
    for part in spec.lower().split(","):
        span, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"weekday step {step_text!r}")
        if span == "*":
            lo, hi = 0, 6
        elif "-" in span:
            a, b = span.split("-", 1)
            lo, hi = _day(a), _day(b)
        else:
            lo = hi = _day(span)
        if hi < lo:
            raise ValueError(f"weekday range {span!r} runs backwards")
        days |= {d % 7 for d in range(lo, hi + 1, step)}
    return "*" if len(days) == 7 else ",".join(_DAYS[d] for d in sorted(days))


def _day(text: str) -> int:
    if text in _DAYS:
        return _DAYS.index(text)
    if text.isdigit() and 0 <= int(text) <= 7:
        return int(text)
    raise ValueError(f"weekday {text!r} (0-7 or sun-sat)")


@dataclass(frozen=True)
class Plan:
    """What a calendar asks for at `now`, given the fire times already dealt with."""

    due: list[datetime]  # fire times within the grace, oldest first
    first_missed: datetime | None  # the first fire time beyond the grace, if any
    next: datetime | None  # the first fire time after now


def plan(trigger: CronTrigger, *, after: datetime, now: datetime, grace_s: float) -> Plan:
    """The fire times in (after, now], split by `misfire_grace_time`, and the next one."""
    horizon = now - timedelta(seconds=grace_s)
    first = trigger.get_next_fire_time(None, after + _TICK)
    missed = first if first is not None and first < horizon else None
    due: list[datetime] = []
    t = trigger.get_next_fire_time(None, max(after + _TICK, horizon))
    while t is not None and t <= now:
        due.append(t)
        t = trigger.get_next_fire_time(None, t + _TICK)
    return Plan(due, missed, t)

