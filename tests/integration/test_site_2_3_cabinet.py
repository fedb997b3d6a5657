"""The site's health through the daemon (QUALITY SITE-2, SITE-3), against the logger rig:
the cabinet's battery, mains and door come from the simulated logger over Modbus TCP, the
gateway's CPU temperature from a thermal folder and its clock state from a program (both
pointed at files the test writes, as /sys and timedatectl would report them).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from loggerbus import UNIT, logger_rig
from services import PtyPairFactory

from gauged.ops.metrics import DaemonCollector, exposition
from gauged.ops.statusview import render

NO_GATEWAY = ("[site]\nsystem_v = 12\n",
              "[site]\nsystem_v = 12\ngateway_health = false\non_battery_page = false\n")


def site_events(faults: list[str]) -> Counter[tuple[str, str]]:
    """(kind, alarm:source) of each site event the recorder told operators about."""
    out: Counter[tuple[str, str]] = Counter()
    for f in faults:
        kind, what, _ = f.split(": ", 2)
        if kind in ("site", "site_cleared"):
            out[(kind, what)] += 1
    return out


async def test_site_2_falling_battery_alarms_once_with_an_estimate_never_a_siren(
        tmp_path: Path, pty_pair: PtyPairFactory) -> None:
    async with logger_rig(tmp_path, pty_pair, edit=lambda t: t.replace(*NO_GATEWAY)) as rig:
        for _ in range(2):
            await rig.cycle()
        stages = {sid: s.stage for sid, s in rig.daemon.states.items()}
        assert site_events(rig.daemon.faults) == Counter()
        rig.fleet.set_fault("tcp", UNIT, mains_off=True, drain_v_per_h=2.0)
        broadcasts = 0
        for _ in range(20):  # 12.7 V → 11.8 V at 2 V/h: about nine cycles of 3 min
            result = await rig.cycle()
            broadcasts += len(result.broadcasts)
            if ("site", "battery_low:tcp_battery") in site_events(rig.daemon.faults):
                break
        site = rig.daemon.snapshot()["site"]
        assert site["mains_lost"] is True
        assert "the site runs on its battery" in rig.daemon.page()  # on_battery_page = false
        assert 0 < site["battery_hours_left"]["tcp_battery"] <= 0.5
        for _ in range(5):  # still falling: no second alarm
            broadcasts += len((await rig.cycle()).broadcasts)
        events = site_events(rig.daemon.faults)
        assert events == Counter({("site", "mains_lost:tcp_mains"): 1,
                                  ("site", "ups_on_battery:tcp_ups"): 1,
                                  ("site", "battery_low:tcp_battery"): 1})
        (low,) = [f for f in rig.daemon.faults if "battery_low:tcp_battery" in f]
        assert "battery low: tcp_battery reads 11." in low
        assert "min left at this rate" in low  # (11.8 − 10.8) V at 2 V/h: about 30 min
        # an operator alarm only: no broadcast, no stage moved
        assert broadcasts == 0
        assert {sid: s.stage for sid, s in rig.daemon.states.items()} == stages
        rig.fleet.clear_faults("tcp", UNIT)  # mains back: the charger lifts the battery
        for _ in range(20):
            await rig.cycle()
        events = site_events(rig.daemon.faults)
        for what in ("mains_lost:tcp_mains", "ups_on_battery:tcp_ups",
                     "battery_low:tcp_battery"):
            assert events[("site", what)] == 1, what
            assert events[("site_cleared", what)] == 1, what
        assert rig.daemon.snapshot()["site"]["alarms"] == []
        assert "Site health" in rig.daemon.page()  # the full page again


async def test_site_3_door_temperature_clock_each_once_each_way_on_page_and_metrics(
        tmp_path: Path, pty_pair: PtyPairFactory) -> None:
    thermal = tmp_path / "thermal"
    (thermal / "thermal_zone0").mkdir(parents=True)
    cpu = thermal / "thermal_zone0" / "temp"
    cpu.write_text("45000\n")
    ntp = tmp_path / "ntp"
    ntp.write_text("yes\n")
    gateway = (f'[site]\nsystem_v = 12\nthermal_dir = "{thermal}"\n'
               f'clock_sync_command = ["cat", "{ntp}"]\ndisk_free_low_mb = 0\n'
               f"disk_free_clear_mb = 1\n")
    async with logger_rig(tmp_path, pty_pair,
                          edit=lambda t: t.replace("[site]\nsystem_v = 12\n", gateway)) as rig:
        d = rig.daemon
        metrics = exposition(DaemonCollector(
            d.snapshot, d.poller.read_latency, d.recorder.broadcast_tally,
            lambda: {u.name: u.health() for u in d.uplinks}, channels=d.poller.channels,
            gauges=d.poller.health, internal_errors=d.internal_errors))
        await rig.cycle()
        assert site_events(d.faults) == Counter()
        assert 'gauged_site_value{source="gateway:clock_synced"} 1.0' in metrics().decode()
        rig.fleet.set_fault("tcp", UNIT, door_open=True, cabinet_temp_c=58.0)
        ntp.write_text("no\n")
        cpu.write_text("86000\n")
        for _ in range(3):
            await rig.cycle()
        entered = {("site", w) for w in ("door_open:tcp_door", "cabinet_temp_high:tcp_temp",
                                         "clock_unsynced:gateway:clock_synced",
                                         "cpu_temp_high:gateway:cpu_temp_c")}
        assert site_events(d.faults) == Counter(dict.fromkeys(entered, 1))
        page, text = d.page(), metrics().decode()
        for words in ("cabinet door open", "cabinet temperature high",
                      "gateway clock not synchronised", "gateway CPU temperature high"):
            assert words in page, words
        assert 'gauged_site_alarm{alarm="door_open",source="tcp_door"} 1.0' in text
        assert 'gauged_site_alarm{alarm="clock_unsynced",source="gateway:clock_synced"} 1.0' \
            in text
        assert 'gauged_site_value{source="tcp_temp"} 58.0' in text
        (line,) = [t for t in render(d.snapshot()).splitlines() if t.startswith("SITE ")]
        assert "cabinet door open: tcp_door reads on" in line
        rig.fleet.clear_faults("tcp", UNIT)
        ntp.write_text("yes\n")
        cpu.write_text("60000\n")
        for _ in range(3):
            await rig.cycle()
        left = {("site_cleared", w) for _, w in entered}
        assert site_events(d.faults) == Counter(dict.fromkeys(entered | left, 1))
        assert "gauged_site_alarm{" not in metrics().decode()
        assert "no site alarm" in d.page()
