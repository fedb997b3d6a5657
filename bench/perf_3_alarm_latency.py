"""PERF-3: alarm latency, from a gauge's answer to the first relay write, p50 and p99.

Setup, all on loopback in one process: the simulators (two Modbus TCP gauge gateways with
ten river gauges each, a relay board, an audio sink) and the daemon opened with its twenty
zone sequencers running. Each station drives a zone of its own. The scenario makes every
station escalate to `warning` every third cycle (and clear in between), so each escalation
cycle starts twenty broadcasts at once: the later ones queue behind the earlier ones on the
relay board's connection, which is the worst case the p99 shows. The river drops back in one
cycle and escalates again 6 minutes later, faster than a river moves and more often than a
zone repeats a stage: the gauges have the implausible-fall check off (`max_fall_m_per_h = 0`)
and the zones no escalation gap (`min_gap_min = 0`), so that every escalation sounds.

Latency of one broadcast: monotonic time of the first relay write issued minus the time the
triggering gauge answered (BroadcastRecord.latency_s). Baseline, measured in the same run: one
bare relay write-and-read-back through the same hub (the floor any broadcast pays).
Run: `.venv/bin/python bench/perf_3_alarm_latency.py [cycles]`; prints the JSON line last.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from services import free_port  # noqa: E402

from gauged.clock import Clock  # noqa: E402
from gauged.config.load import load_config  # noqa: E402
from gauged.daemon.daemon import Daemon  # noqa: E402
from simulators.clock import SimClock  # noqa: E402
from simulators.fleet import Fleet  # noqa: E402

STATIONS = 20
T0 = datetime(2026, 7, 1, tzinfo=UTC)
GOAL_MS = 50.0


def write_config(folder: Path) -> Path:
    ports = {name: free_port() for name in ("a", "b", "relays", "sink")}
    parts = ['[gateway]\nid = "perf-3"\npoll_interval_s = 180\n[status]\nport = 0\n']
    for bus in ("a", "b", "relays"):
        parts.append(f'[buses.{bus}]\nkind = "modbus_tcp"\nhost = "127.0.0.1"\n'
                     f'port = {ports[bus]}\ntimeout_s = 0.5\n')
    parts.append(f'[players.sink]\nkind = "sink"\nport = {ports["sink"]}\n'
                 '[sequences.warning]\nclips = ["c"]\n'
                 f'[clips.c]\nfile = "{ROOT}/config/clips/furukawa_warning_ja.wav"\n')
    for i in range(STATIONS):
        bus, unit = ("a", i + 1) if i < 10 else ("b", i - 9)
        parts.append(
            f'[gauges.g{i}]\nbus = "{bus}"\nunit = {unit}\nquantity = "level_m"\n'
            f'register = {{ kind = "holding", address = 0, data_type = "int16", '
            f'scale = 0.001 }}\nquality = {{ max_fall_m_per_h = 0 }}\n'
            f'[stations.s{i}]\nkind = "level"\ngauge = "g{i}"\ncrest_m = 4.0\n'
            f'zones = ["z{i}"]\nstages = [{{ name = "warning", threshold = 1.0, '
            f'sequence = "warning" }}]\n'
            f'[zones.z{i}]\namplifier_relay = {{ bus = "relays", unit = 1, coil = {i} }}\n'
            f'player = "sink"\nmin_gap_min = 0\n')
    path = folder / "perf3.toml"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def write_scenario(folder: Path, cycles: int) -> Path:
    rows = ["time,station,quantity,value"]
    for c in range(cycles):
        level = 3.5 if c % 3 == 0 else 1.0  # freeboard 0.5 m (warning), then 3 m twice
        rows += [f"{c * 180},s{i},level_m,{level}" for i in range(STATIONS)]
    path = folder / "perf3.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


async def measure(cycles: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ["GAUGED_STATE__PATH"] = str(folder / "state.sqlite3")  # not /var/lib
        config_path = write_config(folder)
        scenario = write_scenario(folder, cycles)
        now = [T0.timestamp()]
        # clips pass 1000× faster; the scenario's time is the injected cycle time
        speed, origin = 1000.0, T0.timestamp()
        fleet = Fleet(config_path, scenario, SimClock(
            # half a simulated second after the cycle's boundary, as a real read would be
            speed, T0, origin, wall_time=lambda: origin + (now[0] + 0.5 - origin) / speed))
        config = load_config(config_path)
        latencies: list[float] = []
        async with fleet, asyncio.TaskGroup() as tg:
            serve = tg.create_task(fleet.serve_forever(), name="bench[simulators].serve")
            daemon = Daemon(config, Clock(1000.0))
            async with daemon.opened():
                zones = [tg.create_task(z.run(), name=f"bench[zone:{zid}].broadcast")
                         for zid, z in daemon.zones.items()]
                relay = daemon.zones["z0"].amplifier
                assert relay is not None
                floor = []
                for _ in range(50):
                    started = time.monotonic()
                    await relay.set(False)
                    floor.append(time.monotonic() - started)
                for c in range(cycles):
                    when = T0 + timedelta(seconds=180 * c)
                    now[0] = when.timestamp()
                    result = await daemon.cycle(when)
                    for zone in daemon.zones.values():
                        await zone.idle()
                    if result.broadcasts:
                        latencies += [z.last.latency_s for z in daemon.zones.values()
                                      if z.last is not None and z.last.latency_s is not None
                                      and z.last.request.time == when]
                for task in zones:
                    task.cancel()
            serve.cancel()
    q = statistics.quantiles(latencies, n=100)
    f = statistics.quantiles(floor, n=100)
    return {"samples": len(latencies), "p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000,
            "max_ms": max(latencies) * 1000, "floor_p50_ms": f[49] * 1000,
            "floor_p99_ms": f[98] * 1000}


def main() -> None:
    cycles = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    r = asyncio.run(measure(cycles))
    print(f"broadcasts measured: {r['samples']}; latency p50 {r['p50_ms']:.2f} ms, "
          f"p99 {r['p99_ms']:.2f} ms, max {r['max_ms']:.2f} ms; one relay write + read-back "
          f"p50 {r['floor_p50_ms']:.2f} ms, p99 {r['floor_p99_ms']:.2f} ms")
    value, baseline = float(str(r["p99_ms"])), float(str(r["floor_p99_ms"]))
    print(json.dumps({"id": "PERF-3", "value": round(value, 2), "baseline": round(baseline, 2),
                      "ratio": round(value / baseline, 2),
                      "goal": f"p99 ≤ {GOAL_MS:g} ms from gauge answer to first relay write",
                      "met": value <= GOAL_MS, "p50_ms": round(float(str(r["p50_ms"])), 2),
                      "samples": r["samples"]}, ensure_ascii=False))


if __name__ == "__main__":
    main()
