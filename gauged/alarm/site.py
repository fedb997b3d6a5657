"""The site's own health: threshold rules with hysteresis, and the battery estimate.

Pure and synchronous. The field layer reads the inputs (gauged/field/site.py), the daemon
hands their values here once per cycle, and the events go to operators (the recorder): an
alarm of the site is an OPERATOR alarm. It never sounds a siren, never plays a clip and
never moves a station's stage; the alarm engine does not know it exists.

Each rule raises its alarm once when its value crosses the threshold and clears it once when
the value is back past the clear level (hysteresis: a battery at 11.79 V under a pulsing load
does not chatter). A missing value changes nothing: the alarm stays as it was; an input
without a reading for three cycles raises `input_missing` of its own (cleared by its next
reading), since a device holding only site inputs has no station to show a gauge_fault.

Battery estimate: a least-squares line through the battery voltage of the last
`battery_trend_min` minutes (at least three readings over at least ten minutes); when it
falls, the hours until it reaches the empty voltage at that rate ("about 3 h left").
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from gauged.config.site import ALARM_WHEN, SiteConfig

MIN_TREND_S = 600.0
MISSING_CYCLES = 3  # cycles without a reading before an input is an alarm of its own
MIN_FALL_V_PER_H = 0.005  # slower than this is no fall (a week for a 12 V bank's last volt)
GATEWAY = "gateway"  # the source prefix of the gateway's own readings


@dataclass(frozen=True, slots=True)
class SiteRule:
    """Raise `alarm` of `source` when its value goes below `below` (or above `above`); clear
    it when the value is back at or past `clear`."""

    alarm: str
    source: str
    text: str  # what operators read, e.g. "mains power lost"
    below: float | None = None
    above: float | None = None
    clear: float = 0.0
    unit: str = ""

    def enters(self, value: float) -> bool:
        return (self.below is not None and value < self.below) or \
            (self.above is not None and value > self.above)

    def leaves(self, value: float) -> bool:
        if self.below is not None:
            return value >= self.clear
        return value <= self.clear


@dataclass(frozen=True, slots=True)
class SiteEvent:
    """An alarm of the site entered (`active`) or left."""

    time: float
    alarm: str
    source: str
    active: bool
    value: float | None
    message: str
    hours_left: float | None = None

    @property
    def key(self) -> str:
        return f"{self.alarm}:{self.source}"

    def as_json(self) -> dict[str, object]:
        return {"alarm": self.alarm, "source": self.source, "active": self.active,
                "value": self.value, "message": self.message, "hours_left": self.hours_left}


def site_rules(site: SiteConfig) -> list[SiteRule]:
    """The rules of `[site]`: one per input, and the gateway's own when enabled."""
    low, clear, _ = site.battery_volts
    rules = []
    for name, inp in site.inputs.items():
        if inp.role == "battery_v":
            rules.append(SiteRule("battery_low", name, "battery low", below=low, clear=clear,
                                  unit="V"))
        elif inp.role == "cabinet_temp_c":
            rules.append(SiteRule("cabinet_temp_high", name, "cabinet temperature high",
                                  above=site.cabinet_temp_high_c,
                                  clear=site.cabinet_temp_clear_c, unit="°C"))
        else:  # a contact: 0 or 1 (the field layer applies `invert`)
            alarm, text = CONTACTS[inp.role]
            if ALARM_WHEN[inp.role]:
                rules.append(SiteRule(alarm, name, text, above=0.5, clear=0.5))
            else:
                rules.append(SiteRule(alarm, name, text, below=0.5, clear=0.5))
    if site.gateway_health:
        rules += [
            SiteRule("cpu_temp_high", f"{GATEWAY}:cpu_temp_c", "gateway CPU temperature high",
                     above=site.cpu_temp_high_c, clear=site.cpu_temp_clear_c, unit="°C"),
            SiteRule("disk_low", f"{GATEWAY}:disk_free_mb", "gateway disk nearly full",
                     below=site.disk_free_low_mb, clear=site.disk_free_clear_mb, unit="MB"),
        ]
        if site.clock_sync:
            rules.append(SiteRule("clock_unsynced", f"{GATEWAY}:clock_synced",
                                  "gateway clock not synchronised", below=0.5, clear=0.5))
    return rules


CONTACTS = {"mains": ("mains_lost", "mains power lost"),
            "charger_fault": ("charger_fault", "battery charger fault"),
            "door": ("door_open", "cabinet door open"),
            "ups_on_battery": ("ups_on_battery", "UPS on battery")}


class SiteMonitor:
    """The site's alarms as the readings come: `update` once per cycle returns the events."""

    def __init__(self, site: SiteConfig) -> None:
        self.rules = site_rules(site)
        self.empty_v = site.battery_volts[2]
        self.trend_s = site.battery_trend_min * 60
        self.batteries = {n for n, i in site.inputs.items() if i.role == "battery_v"}
        self.inputs = list(site.inputs)
        self._gaps = dict.fromkeys(self.inputs, 0)  # consecutive cycles without a reading
        self.active: dict[str, SiteEvent] = {}  # by event key: the entering event
        self.values: dict[str, float | None] = {}
        self.hours_left: dict[str, float | None] = {}
        self._history: dict[str, deque[tuple[float, float]]] = {
            b: deque(maxlen=4096) for b in self.batteries}

    def update(self, now: float, values: Mapping[str, float | None]) -> list[SiteEvent]:
        """Judge one cycle's readings (UNIX time `now`; None: no reading)."""
        self.values = dict(values)
        for b in self.batteries:
            v = values.get(b)
            if v is not None:
                self._history[b].append((now, v))
            self.hours_left[b] = self._estimate(b, now)
        events = self._missing(now, values)
        for rule in self.rules:
            value = values.get(rule.source)
            if value is None:
                continue
            key = f"{rule.alarm}:{rule.source}"
            if key not in self.active and rule.enters(value):
                event = self._event(rule, now, value, active=True)
                self.active[key] = event
                events.append(event)
            elif key in self.active and rule.leaves(value):
                del self.active[key]
                events.append(self._event(rule, now, value, active=False))
        return events

    def _missing(self, now: float, values: Mapping[str, float | None]) -> list[SiteEvent]:
        """A cabinet input without a reading for MISSING_CYCLES cycles is an alarm of its own
        (a dead UPS card has no station to show its gauge_fault); its first reading clears
        it. The gateway's own readings are not judged so (a board without a thermal zone)."""
        events = []
        for name in self.inputs:
            key = f"input_missing:{name}"
            if values.get(name) is None:
                self._gaps[name] += 1
                if self._gaps[name] == MISSING_CYCLES and key not in self.active:
                    event = SiteEvent(now, "input_missing", name, True, None,
                                      f"site input {name}: no reading for {MISSING_CYCLES} "
                                      f"cycles (its alarms hold as they were)")
                    self.active[key] = event
                    events.append(event)
            else:
                self._gaps[name] = 0
                if key in self.active:
                    del self.active[key]
                    events.append(SiteEvent(now, "input_missing", name, False, values[name],
                                            f"site input {name}: reading again"))
        return events

    def _event(self, rule: SiteRule, now: float, value: float, *, active: bool) -> SiteEvent:
        left = self.hours_left.get(rule.source) if rule.alarm == "battery_low" else None
        shown = f"{value:.2f} {rule.unit}".rstrip() if rule.unit else \
            ("on" if value >= 0.5 else "off")
        where = rule.source
        if active:
            message = f"{rule.text}: {where} reads {shown}"
            if rule.alarm == "battery_low":
                message += f"; {describe_hours(left)}"
        else:
            message = f"{rule.text} cleared: {where} reads {shown}"
        return SiteEvent(now, rule.alarm, rule.source, active, value, message, left)

    def _estimate(self, battery: str, now: float) -> float | None:
        points = [(t, v) for t, v in self._history[battery] if now - t <= self.trend_s]
        if len(points) < 3 or points[-1][0] - points[0][0] < MIN_TREND_S:
            return None
        t = np.array([p[0] for p in points]) - points[0][0]
        v = np.array([p[1] for p in points])
        fall_per_h = -float(np.polyfit(t, v, 1)[0]) * 3600
        if fall_per_h < MIN_FALL_V_PER_H:  # steady or charging: no estimate
            return None
        hours = (points[-1][1] - self.empty_v) / fall_per_h
        return max(0.0, hours)


def describe_hours(hours: float | None) -> str:
    """"about 3 h left at this rate", or that no trend is known yet."""
    if hours is None:
        return "time left unknown (no falling trend yet)"
    if hours < 1:
        return f"about {max(1, round(hours * 60))} min left at this rate"
    return f"about {round(hours)} h left at this rate"
