"""Maintenance inhibits, repeats and the all-clear through the daemon's cycle, against the
relay board and audio sink simulators (tests/fieldbus.py rig, injected time)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fieldbus import FieldRig, background, field_rig
from services import PtyPairFactory

from gauged.alarm.types import BroadcastRecord
from gauged.field.zones import ZoneBroadcaster
from gauged.ops.inhibits import InhibitError

SPEED = 50.0
SIREN, AMP = 0, 1  # coils of zone `riverside` in tests/data/fieldbus.toml
WARNING_LEVEL = 3.5  # freeboard 0.5 m: warning (≤ 1.0 m) at every tcp station
CALM = 1.0


@contextlib.asynccontextmanager
async def zone_recording(rig: FieldRig) -> AsyncIterator[list[BroadcastRecord]]:
    """Run zone `riverside` and collect every broadcast it finishes."""
    zone: ZoneBroadcaster = rig.daemon.zones["riverside"]
    done: list[BroadcastRecord] = []
    on_done = zone.on_done

    def record(r: BroadcastRecord) -> None:
        done.append(r)
        on_done(r)

    zone.on_done = record
    async with background(zone.run(), name="zone:riverside"):
        yield done


def relay_on_writes(rig: FieldRig) -> list[dict[str, object]]:
    return [r for r in rig.fleet.relay_log if r["bus"] == "relays" and r["value"] is True]


async def test_zone_inhibit_withholds_the_zone_broadcasts_and_keeps_the_stages(
        tmp_path: Path, pty_pair: PtyPairFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", logger="gauged.ops.inhibits")
    levels = {"tcp_1": WARNING_LEVEL}
    async with field_rig(tmp_path, pty_pair, levels=levels, speed=SPEED) as rig, \
            zone_recording(rig) as done:
        added = rig.daemon.inhibit("zone", "riverside", minutes=30, reason="speaker repair",
                                   by="ops-1")
        result = await rig.cycle()
        await rig.daemon.zones["riverside"].idle()
        # the engine decided the warning broadcast; the inhibit withheld it
        assert [(b.station, b.stage_name) for b in result.withheld] == [("tcp_1", "warning")]
        assert result.broadcasts == []
        assert rig.state("tcp_1").stage_name == "warning"  # the stage stands, visibly
        assert done == []
        assert relay_on_writes(rig) == []  # not a single relay moved to ON
        status = rig.daemon.snapshot()
        assert status["zones"]["riverside"]["inhibited"] is True
        [shown] = status["inhibits"]
        assert shown["target"] == "zone:riverside"
        assert shown["by"] == "ops-1"
        assert shown["until"] == added["until"]
        assert shown["withheld"] == 1
        assert "broadcast inhibited zone=riverside station=tcp_1" in caplog.text
        # released: not re-sounded now, but the operator is told what was withheld
        rig.daemon.release("zone", "riverside", by="ops-1")
        assert "inhibit ended with withheld broadcasts scope=zone target=riverside " \
               "stations=tcp_1" in caplog.text
        await rig.cycle()  # the station still stands at warning: no transition, no sound
        await rig.daemon.zones["riverside"].idle()
        assert done == []
        assert relay_on_writes(rig) == []
        assert rig.daemon.snapshot()["inhibits"] == []
        with pytest.raises(InhibitError, match="no inhibit in force"):
            rig.daemon.release("zone", "riverside")


async def test_station_inhibit_withholds_that_station_only(
        tmp_path: Path, pty_pair: PtyPairFactory) -> None:
    levels = {"tcp_1": WARNING_LEVEL, "tcp_2": WARNING_LEVEL}
    async with field_rig(tmp_path, pty_pair, levels=levels, speed=SPEED) as rig, \
            zone_recording(rig) as done:
        rig.daemon.inhibit("station", "tcp_1", minutes=60, reason="gauge swap")
        await rig.cycle()
        await rig.daemon.zones["riverside"].idle()
        assert [r.request.station for r in done] == ["tcp_2"]  # the other station sounds
        assert done[0].outcome == "done"
        assert rig.state("tcp_1").stage_name == "warning"
        status = rig.daemon.snapshot()
        assert status["stations"]["tcp_1"]["inhibited_until"] is not None
        assert status["stations"]["tcp_2"]["inhibited_until"] is None
        assert status["zones"]["riverside"]["inhibited"] is False


async def test_inhibits_are_checked_before_they_are_kept(
        tmp_path: Path, pty_pair: PtyPairFactory) -> None:
    async with field_rig(tmp_path, pty_pair, speed=SPEED) as rig:
        with pytest.raises(InhibitError, match="unknown zone 'nowhere'"):
            rig.daemon.inhibit("zone", "nowhere")
        with pytest.raises(InhibitError, match="at most 1440"):
            rig.daemon.inhibit("station", "tcp_1", minutes=3 * 24 * 60)  # every one expires
        with pytest.raises(InhibitError, match="scope"):
            rig.daemon.inhibit("gateway", "tcp_1")
        assert rig.daemon.snapshot()["inhibits"] == []


# The all-clear test drops the river in one cycle (it is about repeats and the all-clear,
# not data quality): tcp_1's gauge has the implausible-fall check off.
NO_FALL = ("quality = { max_step = 0.5, stale_cycles = 2 }",
           "quality = { max_step = 0.5, stale_cycles = 2, max_fall_m_per_h = 0 }")


async def test_a_standing_stage_repeats_and_the_return_to_normal_plays_the_all_clear(
        tmp_path: Path, pty_pair: PtyPairFactory) -> None:
    def edit(text: str) -> str:
        text = text.replace(
            'zones = ["riverside"]\nstages = [\n    { name = "notice", threshold = 2.0 },\n'
            '    { name = "warning", threshold = 1.0, sequence = "warning" },',
            'zones = ["riverside"]\nall_clear = "all_clear"\nstages = [\n'
            '    { name = "notice", threshold = 2.0 },\n'
            '    { name = "warning", threshold = 1.0, sequence = "warning", repeat_min = 9 },',
            1)  # the first station, tcp_1
        text = text.replace(*NO_FALL, 1)  # the river drops in one cycle: tcp_1 only
        return text + '\n[sequences.all_clear]\nclips = ["warning"]\n'

    def tcp_1(cycle: int) -> float:  # calm, warning for cycles 2..9, calm again
        return WARNING_LEVEL if 2 <= cycle <= 9 else CALM

    async with field_rig(tmp_path, pty_pair, speed=SPEED, edit=edit,
                         profiles={"tcp_1": tcp_1}) as rig, zone_recording(rig) as done:
        assert rig.config.stations["tcp_1"].all_clear == "all_clear"
        for _ in range(13):
            result = await rig.cycle()
            assert all(b.station == "tcp_1" for b in result.broadcasts)
            await rig.daemon.zones["riverside"].idle()
        played = [(rig.results.index(next(res for res in rig.results
                                          if r.request in res.broadcasts)),
                   r.request.kind, r.outcome) for r in done]
        # a 2.5 m jump counts once a second reading confirms it (the spike rule): warning at
        # cycle 3, repeated every 9 min (3 cycles) while it stands, and the all-clear when two
        # good calm readings (cycles 11, 12, after the drop is confirmed) clear the stage
        assert played == [(3, "stage", "done"), (6, "repeat", "done"), (9, "repeat", "done"),
                          (12, "all_clear", "done")]
        assert rig.state("tcp_1").stage_name == "normal"
        assert rig.fleet.coils("relays", 1)[AMP] is False


async def test_the_silent_test_leaves_an_inhibited_zone_alone(
        tmp_path: Path, pty_pair: PtyPairFactory) -> None:
    async with field_rig(tmp_path, pty_pair, speed=SPEED) as rig:
        rig.daemon.inhibit("zone", "riverside", minutes=10, reason="speaker repair")
        result = await rig.daemon.test_runner.silent()
        assert result == {"ok": True, "relays": [{"zone": "riverside", "skipped": "inhibited"}]}
        assert relay_on_writes(rig) == []
        rig.daemon.release("zone", "riverside")
        result = await rig.daemon.test_runner.silent()
        assert [(e["relay"], e["on"], e["off"]) for e in result["relays"]] == [
            ("riverside.siren", True, True), ("riverside.amplifier", True, True)]
        assert len(relay_on_writes(rig)) == 2
