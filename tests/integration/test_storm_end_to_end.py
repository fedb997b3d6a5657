"""The walking skeleton end to end: the design storm through the real daemon.

Processes: `gauged simulate` (gauges over Modbus TCP, relay board, audio sink) and
`gauged run`, sharing an accelerated clock, with a real VictoriaMetrics and a real mosquitto.
The storm runs once per module; each test checks one thing that came out of it. The
reference for "what should have happened" is `gauged replay` on the same scenario, and the
thresholds of DESIGN §1.
"""

from __future__ import annotations

import asyncio
import csv
import json
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from hil import INTERVAL, ROOT, SCENARIOS, Rig, actuation_timeline, expected_timeline
from services import Mosquitto, VictoriaMetrics, start_on_free_port

SPEED = 180.0  # one 3-minute cycle per real second
STORM = SCENARIOS / "design_storm_50mm.csv"
GATEWAY = "minato-furukawa"
LEVEL_STAGES = ["normal", "watch", "notice", "warning", "overflow"]
SIREN_COILS = {"furukawa_hiroo": 0, "furukawa_shirokane": 2}
AMP_COILS = {"furukawa_hiroo": 1, "furukawa_shirokane": 3, "ward": 5}
STATION_ZONE = {"shin_hiroo": "furukawa_hiroo", "shirokane": "furukawa_shirokane"}


@dataclass
class StormRun:
    rig: Rig
    tsdb: VictoriaMetrics
    exit_code: int
    final_status: dict[str, Any]
    retained: dict[str, str]
    replay: list[dict[str, Any]]
    cycles: int  # number of cycles the scenario spans


def played_broadcasts(replay: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The broadcasts replay says the zones play (not merged, superseded or dropped)."""
    return [e for e in replay if e["event"] == "broadcast"
            and e.get("outcome", "done") in ("done", "pre-empted")]


def scenario_length_s(path: Path) -> float:
    with path.open(newline="") as f:
        return max(float(row["time"]) for row in csv.DictReader(f))


async def read_retained(port: int, prefix: str, want: set[str],
                        deadline_s: float) -> dict[str, str]:
    """Subscribe as a separate client and collect the retained messages under `prefix`."""
    got: dict[str, str] = {}
    async with aiomqtt.Client("127.0.0.1", port, identifier="test-reader") as client:
        await client.subscribe(f"{prefix}/#", qos=1)
        async with asyncio.timeout(deadline_s):
            async for message in client.messages:
                if message.retain:
                    got[str(message.topic)] = bytes(message.payload).decode()  # type: ignore[arg-type]
                if want <= got.keys():
                    break
    return got


@pytest.fixture(scope="module")
def storm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StormRun]:
    tsdb = start_on_free_port(
        lambda port: VictoriaMetrics(port, tmp_path_factory.mktemp("victoria")))
    broker = start_on_free_port(
        lambda port: Mosquitto(port, tmp_path_factory.mktemp("mosquitto")))
    rig = Rig(tmp_path_factory.mktemp("storm"), speed=SPEED, influx_url=tsdb.url,
              mqtt_port=broker.port)
    try:
        rig.start_simulators(STORM)
        rig.start_daemon()
        length = scenario_length_s(STORM)
        cycles = int(length // INTERVAL) + 1
        end = rig.start_ts + length
        rig.wait_for_status(
            lambda s: s["last_cycle"] is not None
            and datetime.fromisoformat(s["last_cycle"]).timestamp() >= end
            and not any(z["busy"] for z in s["zones"].values()),
            timeout=rig.lead_s + length / SPEED + 60, what="the storm to play out")
        final_status = rig.status() or {}
        exit_code = rig.stop("daemon")
        want = {f"gauged/{GATEWAY}/availability"} | {
            f"gauged/{GATEWAY}/station/{sid}/state" for sid in final_status["stations"]}
        retained = asyncio.run(read_retained(broker.port, f"gauged/{GATEWAY}", want, 10.0))
        proc = subprocess.run(
            [sys.executable, "-m", "gauged", "replay", "--config", str(rig.config),
             "--start", rig.start.isoformat(), "--json", str(STORM)],
            capture_output=True, text=True, timeout=60, cwd=ROOT, check=True)
        replay = [json.loads(line) for line in proc.stdout.splitlines()]
        yield StormRun(rig, tsdb, exit_code, final_status, retained, replay, cycles)
    finally:
        rig.close()
        tsdb.close()
        broker.close()


def replay_stages(run: StormRun) -> list[tuple[str, str, str, str]]:
    return sorted((e["time"], e["station"], e["from"], e["to"]) for e in run.replay
                  if e["event"] == "stage")


def live_stages(run: StormRun) -> list[tuple[str, str, str, str]]:
    """Stage transitions as the daemon stored them in VictoriaMetrics."""
    series = run.tsdb.export('{__name__=~"stage_change_(from|to)_stage"}')
    by_key: dict[tuple[int, str], dict[str, int]] = defaultdict(dict)
    for s in series:
        field = s["metric"]["__name__"].removeprefix("stage_change_")
        for ts, value in zip(s["timestamps"], s["values"], strict=True):
            by_key[(ts, s["metric"]["station"])][field] = int(value)
    config_stages = _stage_names(run.rig.config)
    out = []
    for (ts, station), f in sorted(by_key.items()):
        names = config_stages[station]
        out.append((datetime.fromtimestamp(ts / 1000, UTC).isoformat(), station,
                    names[f["from_stage"]], names[f["to_stage"]]))
    return out


def _stage_names(config_path: Path) -> dict[str, list[str]]:
    from gauged.config.load import load_config

    config = load_config(config_path)
    return {sid: ["normal", *(s.name for s in st.stages)]
            for sid, st in config.stations.items()}


def test_daemon_ran_the_whole_storm_and_stopped_cleanly(storm: StormRun) -> None:
    assert storm.exit_code == 0, storm.rig.log("daemon")[-3000:]
    assert storm.final_status["cycles"] >= storm.cycles
    log = storm.rig.log("daemon")
    assert "Traceback" not in log
    assert "relay_fault" not in log
    assert "audio_fault" not in log


def test_river_stations_climb_every_stage_and_come_back(storm: StormRun) -> None:
    live = live_stages(storm)
    for station in ("shin_hiroo", "shirokane"):
        steps = [(f, t) for _, s, f, t in live if s == station]
        ups = [t for f, t in steps if LEVEL_STAGES.index(t) > LEVEL_STAGES.index(f)]
        assert ups == ["watch", "notice", "warning", "overflow"], steps
        assert steps[-1][1] == "normal", steps  # and back down by the end
    assert storm.final_status["stations"]["shin_hiroo"]["stage_name"] == "normal"


def test_live_transitions_match_replay(storm: StormRun) -> None:
    live = live_stages(storm)
    assert live, "no transitions stored"
    assert live == replay_stages(storm)


def test_relay_timeline_sirens_only_at_overflow_amplifier_around_every_broadcast(
        storm: StormRun) -> None:
    log = storm.rig.relay_log()
    by_coil: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for rec in log:
        by_coil[rec["coil"]].append(rec)
    broadcasts = played_broadcasts(storm.replay)
    overflow = {e["station"]: e for e in storm.replay
                if e["event"] == "stage" and e["to"] == "overflow"}
    for zone, coil in SIREN_COILS.items():
        station = next(s for s, z in STATION_ZONE.items() if z == zone)
        ons = [r for r in by_coil[coil] if r["value"] and not r["previous"]]
        offs = [r for r in by_coil[coil] if not r["value"] and r["previous"]]
        assert len(ons) == 1, by_coil[coil]  # one siren, at stage 4 only
        assert len(offs) == 1
        on_sim = datetime.fromisoformat(ons[0]["t_sim"]).timestamp()
        stage4 = datetime.fromisoformat(overflow[station]["time"]).timestamp()
        assert stage4 <= on_sim < stage4 + INTERVAL  # in the cycle that reached stage 4
        on_real = offs[0]["t_real"] - ons[0]["t_real"]
        assert on_real * SPEED >= 10.0, on_real * SPEED  # the configured 10 s …
        assert on_real < 10.0 / SPEED + 0.5  # … and not a whole extra cycle
        # the siren sounds inside an amplifier ON period of its zone
        amp = by_coil[AMP_COILS[zone]]
        on_t, off_t = ons[0]["t_real"], offs[0]["t_real"]
        amp_on = max(r["t_real"] for r in amp if r["value"] and r["t_real"] <= on_t)
        amp_off = min(r["t_real"] for r in amp if not r["value"] and r["t_real"] >= off_t)
        assert amp_on <= ons[0]["t_real"]
        assert offs[0]["t_real"] <= amp_off
    for zone, coil in AMP_COILS.items():
        ons = [r for r in by_coil[coil] if r["value"] and not r["previous"]]
        assert len(ons) == sum(1 for b in broadcasts if b["zone"] == zone), zone
    # every coil ends OFF, and the board agrees
    for coil, recs in by_coil.items():
        assert recs[-1]["value"] is False, (coil, recs[-1])
    assert not any(r["value"] for r in log if r["coil"] not in
                   set(SIREN_COILS.values()) | set(AMP_COILS.values()))


def test_clips_played_in_order_per_zone(storm: StormRun) -> None:
    expected: dict[str, list[str]] = defaultdict(list)
    for e in played_broadcasts(storm.replay):
        expected[e["zone"]] += e["clips"]
    played: dict[str, list[str]] = defaultdict(list)
    for rec in storm.rig.audio_log():
        played[rec["zone"]].append(rec["clip"])
    assert played == expected
    assert played["furukawa_hiroo"][-2:] == ["furukawa_overflow_ja", "furukawa_overflow_en"]
    assert "heavy_rain_ja" in played["ward"]


def test_every_cycle_is_stored_with_its_timestamp(storm: StormRun) -> None:
    rig = storm.rig
    expected = [int((rig.start_ts + INTERVAL * i) * 1000) for i in range(storm.cycles)]

    def from_start(timestamps: list[int]) -> list[int]:
        # the daemon may start cycling a little before the scenario's second 0
        return [t for t in timestamps if t >= expected[0]][:len(expected)]

    for name in ("level_freeboard_m", "level_level_m"):
        for station in ("shin_hiroo", "shirokane"):
            series = storm.tsdb.export(f'{name}{{station="{station}"}}')
            assert len(series) == 1
            assert from_start(series[0]["timestamps"]) == expected, (name, station)
    for station in ("rain_ward_office", "rain_placeholder_8"):
        series = storm.tsdb.export(f'rain_total_60m_mm{{station="{station}"}}')
        assert from_start(series[0]["timestamps"]) == expected
    # the stored freeboard is crest − level, cycle by cycle
    level = storm.tsdb.export('level_level_m{station="shin_hiroo"}')[0]["values"]
    freeboard = storm.tsdb.export('level_freeboard_m{station="shin_hiroo"}')[0]["values"]
    assert all(abs(f - (4.60 - lv)) < 1e-6 for lv, f in zip(level, freeboard, strict=True))
    assert min(freeboard) <= 0.0  # the water reached the top of the wall
    rain = storm.tsdb.export('rain_total_60m_mm{station="rain_ward_office"}')[0]["values"]
    assert max(rain) >= 50.0


def test_retained_station_state_read_back_by_another_client(storm: StormRun) -> None:
    base = f"gauged/{GATEWAY}"
    assert storm.retained[f"{base}/availability"] == "offline"  # said at a clean stop
    state = json.loads(storm.retained[f"{base}/station/shin_hiroo/state"])
    assert state["stage_name"] == "normal"
    assert state["quality"] == "good"
    assert state["time"] == storm.final_status["last_cycle"]
    rain = json.loads(storm.retained[f"{base}/station/rain_ward_office/state"])
    assert rain["stage_name"] == storm.final_status["stations"]["rain_ward_office"]["stage_name"]


def test_alm_1_relay_write_issued_in_the_cycle_of_the_transition(storm: StormRun) -> None:
    """The functional half of ALM-1 (the latency half is PERF-3, a benchmark)."""
    log = storm.rig.relay_log()
    for b in played_broadcasts(storm.replay):
        decided = datetime.fromisoformat(b["time"]).timestamp()
        coil = AMP_COILS[b["zone"]]
        first = min(datetime.fromisoformat(r["t_sim"]).timestamp() for r in log
                    if r["coil"] == coil and r["value"]
                    and datetime.fromisoformat(r["t_sim"]).timestamp() >= decided)
        assert first < decided + INTERVAL, b


def test_relay_timeline_is_the_one_replay_calls_for(storm: StormRun) -> None:
    """The connected run's side of ALM-9 (test_alm_9_network_down.py holds the other)."""
    assert actuation_timeline(storm.rig) == expected_timeline(
        storm.replay, storm.rig.start_ts, AMP_COILS, SIREN_COILS)
