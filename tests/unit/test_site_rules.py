"""The site's health rules (gauged/alarm/site.py): once on entering, once on leaving, the
battery estimate from the voltage trend, the 12 V / 24 V defaults, and the `site` points."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from drivers.configs import RegisterSpec
from gauged.alarm.site import SiteMonitor, describe_hours
from gauged.alarm.types import CycleResult
from gauged.config.site import SiteConfig, SiteInputConfig
from gauged.uplinks import records
from gauged.uplinks.base import CycleReport

REG = RegisterSpec(address=0)


def site(system_v: int = 12, **inputs: str) -> SiteConfig:
    return SiteConfig(system_v=system_v, gateway_health=False,  # type: ignore[arg-type]
                      inputs={n: SiteInputConfig(role=r, device="d", spec=REG)  # type: ignore[arg-type]
                              for n, r in inputs.items()})


def test_defaults_for_12_and_24_volt_banks() -> None:
    assert site(12).battery_volts == (11.8, 12.4, 10.8)
    assert site(24).battery_volts == (23.6, 24.8, 21.6)
    with pytest.raises(ValueError, match="empty < low < clear"):
        SiteConfig(battery_low_v=12.5)


def test_falling_battery_alarms_once_with_an_estimate_and_clears_once() -> None:
    m = SiteMonitor(site(bat="battery_v"))
    events = []
    volts = [12.75 - 0.1 * i for i in range(12)]  # 0.1 V a cycle of 3 min: 2 V/h
    volts += [11.79, 11.81, 11.78, 11.82, 12.0, 12.39]  # chatter under the clear level
    volts += [13.5, 13.5]
    for i, v in enumerate(volts):
        events += m.update(i * 180.0, {"bat": v})
    assert [(e.alarm, e.active) for e in events] == [("battery_low", True),
                                                     ("battery_low", False)]
    entered = events[0]
    assert entered.value == pytest.approx(11.75)
    # (11.75 − 10.8) V at 2 V/h: about half an hour
    assert entered.hours_left == pytest.approx(0.475, abs=0.01)
    assert entered.message.endswith(("about 28 min left at this rate",
                                      "about 29 min left at this rate"))


def test_contacts_and_temperature_each_once_each_way_and_a_gap_holds() -> None:
    m = SiteMonitor(site(mains="mains", door="door", temp="cabinet_temp_c"))
    seq = [{"mains": 1.0, "door": 0.0, "temp": 30.0},
           {"mains": 0.0, "door": 1.0, "temp": 51.0},
           {"mains": None, "door": None, "temp": None},  # the logger is silent: no change
           {"mains": 0.0, "door": 1.0, "temp": 47.0},  # between clear and high: still high
           {"mains": 1.0, "door": 0.0, "temp": 44.0}]
    got = [[(e.alarm, e.active) for e in m.update(i * 180.0, v)] for i, v in enumerate(seq)]
    assert got == [[], [("mains_lost", True), ("door_open", True), ("cabinet_temp_high", True)],
                   [], [], [("mains_lost", False), ("door_open", False),
                            ("cabinet_temp_high", False)]]


def test_no_estimate_without_a_falling_trend() -> None:
    m = SiteMonitor(site(bat="battery_v"))
    for i in range(5):
        m.update(i * 180.0, {"bat": 12.6})
    assert m.hours_left["bat"] is None
    assert describe_hours(None).startswith("time left unknown")
    assert describe_hours(3.4) == "about 3 h left at this rate"


def test_the_site_is_stored_each_cycle_with_its_standing_alarms() -> None:
    when = datetime(2026, 7, 1, tzinfo=UTC)
    report = CycleReport(when, CycleResult(), {}, {}, frozenset(),
                         {"bat": 11.7, "mains": 0.0, "gateway:clock_synced": None},
                         frozenset({"battery_low:bat", "mains_lost:mains"}))
    lines = sorted(r.line() for r in records.cycle("gw", report, {}))
    ms = round(when.timestamp() * 1000)
    assert lines == [
        f"site,alarm=battery_low,gateway=gw,source=bat value=11.7,alarm_active=1i {ms}",
        f"site,alarm=mains_lost,gateway=gw,source=mains value=0,alarm_active=1i {ms}",
        f"site,gateway=gw,source=gateway:clock_synced alarm_active=0i {ms}"]
    assert not any(r.routine for r in records.cycle("gw", report, {}))


def test_an_input_silent_for_three_cycles_is_an_alarm_of_its_own() -> None:
    m = SiteMonitor(site(ups="ups_on_battery"))
    got = [[(e.alarm, e.active) for e in m.update(i * 180.0, {"ups": v})]
           for i, v in enumerate([0.0, None, None, None, None, 0.0, None])]
    assert got == [[], [], [], [("input_missing", True)], [], [("input_missing", False)], []]
