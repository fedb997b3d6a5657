"""Broadcasts against the relay board and audio sink simulators (QUALITY ALM-7, ALM-8, ALM-10).

The zone sequencer runs in the test's event loop with the simulators; simulated durations
(siren seconds, clip lengths) pass 50 times faster than real ones.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fieldbus import FieldRig, background, field_rig, until
from services import PtyPairFactory

from gauged.alarm.types import BroadcastRequest
from gauged.field.zones import ZoneBroadcaster

SPEED = 50.0
SIREN, AMP = 0, 1  # coils of zone `riverside` in tests/data/fieldbus.toml


def request(station: str, stage: int, name: str, sequence: str) -> BroadcastRequest:
    return BroadcastRequest(time=datetime(2026, 7, 1, tzinfo=UTC), zone="riverside",
                            station=station, stage=stage, stage_name=name, sequence=sequence,
                            siren_s=0.0, clips=())


@contextlib.asynccontextmanager
async def zone_running(rig: FieldRig) -> AsyncIterator[ZoneBroadcaster]:
    zone = rig.daemon.zones["riverside"]
    async with background(zone.run(), name="zone:riverside"):
        yield zone


def coil_writes(rig: FieldRig, coil: int) -> list[dict[str, object]]:
    return [r for r in rig.fleet.relay_log if r["bus"] == "relays" and r["coil"] == coil]


async def test_alm_7_stuck_relay_is_a_fault_within_a_second(
        tmp_path: Path, pty_pair: PtyPairFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="gauged.field.zones")
    async with field_rig(tmp_path, pty_pair, speed=SPEED) as rig, zone_running(rig) as zone:
        rig.fleet.set_fault("relays", 1, stuck=True)  # acknowledges writes, coils stay put
        before = len(rig.fleet.relay_log)
        t0 = time.monotonic()
        zone.submit(request("tcp_1", 2, "warning", "warning"))
        await until(lambda: any("relay_fault" in f for f in rig.daemon.faults), 5.0,
                    "a relay_fault")
        assert time.monotonic() - t0 <= 1.0  # detected by read-back within a second
        await zone.idle()
        amp_on = [r for r in rig.fleet.relay_log[before:]
                  if r["coil"] == AMP and r["value"] is True]
        assert 1 <= len(amp_on) <= 3  # at most three attempts
        fault = next(f for f in rig.daemon.faults if "relay_fault" in f)
        assert "riverside.amplifier" in fault
        assert zone.last is not None
        assert zone.last.clips_played == ["warning"]  # the announcement still went out
        status = rig.daemon.snapshot()
        assert any("relay_fault" in f for f in status["faults"])
        # the board works again: the next broadcast logs the recovery, once
        rig.fleet.set_fault("relays", 1, stuck=False)
        zone.submit(request("tcp_1", 2, "warning", "warning"))
        await zone.idle()
        lines = [r.getMessage() for r in caplog.records if "relay_fault" in r.getMessage()]
        assert lines[-1] == ("relay_fault cleared zone=riverside relay=riverside.amplifier "
                             "want=on")
        assert sum("cleared" in line for line in lines) == 1


async def test_alm_8_missing_clip_still_sounds_the_siren(
        tmp_path: Path, pty_pair: PtyPairFactory) -> None:
    def edit(text: str) -> str:
        return text.replace("furukawa_warning_ja.wav", "no_such_clip.wav")

    async with field_rig(tmp_path, pty_pair, speed=SPEED, edit=edit) as rig, \
            zone_running(rig) as zone:
        zone.submit(request("tcp_1", 3, "overflow", "overflow"))
        await until(lambda: zone.last is not None, 10.0, "the broadcast to finish")
        await zone.idle()
        record = zone.last
        assert record is not None
        assert record.siren_on_s >= 10.0  # the siren sounded its configured time
        siren = coil_writes(rig, SIREN)
        assert [r["value"] for r in siren if r["value"] != r["previous"]] == [True, False]
        assert record.clips_played == []
        assert any(f.startswith("audio_fault") for f in record.faults)
        assert any("audio_fault" in f for f in rig.daemon.faults)  # published
        assert rig.fleet.coils("relays", 1)[SIREN] is False
        assert rig.fleet.coils("relays", 1)[AMP] is False


async def test_alm_8_no_audio_device_still_sounds_the_siren(
        tmp_path: Path, pty_pair: PtyPairFactory) -> None:
    def edit(text: str) -> str:  # an ALSA player whose program is not there
        return re.sub(r'\[players\.sink\]\nkind = "sink"\nport = \d+',
                      '[players.sink]\nkind = "aplay"\ncommand = "/nonexistent/aplay"\n'
                      'device = "hw:9"', text)

    async with field_rig(tmp_path, pty_pair, speed=SPEED, edit=edit) as rig, \
            zone_running(rig) as zone:
        zone.submit(request("tcp_1", 3, "overflow", "overflow"))
        await until(lambda: zone.last is not None, 10.0, "the broadcast to finish")
        record = zone.last
        assert record is not None
        assert record.siren_on_s >= 10.0
        assert any("audio_fault" in f and "cannot run" in f for f in record.faults)


async def test_alm_10_two_stations_on_one_zone_one_at_a_time_higher_first(
        tmp_path: Path, pty_pair: PtyPairFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="gauged.field.zones")
    async with field_rig(tmp_path, pty_pair, speed=SPEED) as rig, zone_running(rig) as zone:
        # 1. escalations decided in the same cycle: the higher stage goes first, and the
        #    lower one is superseded (never played after the overflow warning)
        zone.submit(request("tcp_1", 2, "warning", "warning"))
        zone.submit(request("tcp_2", 3, "overflow", "overflow"))
        await until(lambda: zone.last is not None, 10.0, "a broadcast to finish")
        await zone.idle()
        assert zone.last is not None
        assert zone.last.request.station == "tcp_2"
        # 2. a higher stage arriving while a lower one plays pre-empts it
        zone.submit(request("tcp_3", 2, "warning", "warning"))
        await until(lambda: zone.current is not None and zone.current.request.station ==
                    "tcp_3", 5.0, "the warning to start")
        zone.submit(request("tcp_4", 3, "overflow", "overflow"))
        await zone.idle()
        assert zone.last.request.station == "tcp_4"
        assert zone.last.outcome == "done"
        # one broadcast at a time: amplifier ON periods never overlap, audio never overlaps
        amp = [r for r in coil_writes(rig, AMP) if r["value"] != r["previous"]]
        assert [r["value"] for r in amp] == [True, False] * (len(amp) // 2)
        clips = [r for r in rig.fleet.audio_log if r["zone"] == "riverside"]
        for a, b in itertools.pairwise(clips):
            assert float(a["t_real"]) + float(a["duration_s"]) / SPEED <= \
                float(b["t_real"]) + 0.01
        assert rig.fleet.coils("relays", 1)[SIREN] is False
        assert rig.fleet.coils("relays", 1)[AMP] is False
    messages = [r.getMessage() for r in caplog.records]
    # nothing lost from the log: every request and what became of it
    assert sum("broadcast queued" in m for m in messages) == 4
    assert any("superseded" in m and "station=tcp_1" in m for m in messages)
    assert any("pre-empted" in m and "station=tcp_3" in m for m in messages)
    assert sum("broadcast done" in m for m in messages) == 2
