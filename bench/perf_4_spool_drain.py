"""PERF-4: spool drain rate into VictoriaMetrics after an outage, against raw influxdb-client
batch writes measured in the same run.

Setup: a real VictoriaMetrics (tests/services.py) in a throw-away folder. The points are the
daemon's own: `level` records of 50 stations (five fields each: level_m, freeboard_m,
quality, fault, stage), one line of line protocol per station and cycle.

- Outage: VictoriaMetrics is stopped; `InfluxSink.write` spools POINTS points in cycles of
  50 (each write one fsync'd transaction, as in the daemon; not timed), then the spool's
  write-ahead log is checkpointed, as the daemon's failing writer does at each attempt
  during an outage. VictoriaMetrics is started again.
- Value: the drain rate, points/s, from starting the sink's writer (`InfluxSink.run`) until
  `flush()` reports the spool empty, 5,000 points per batch: the daemon's writer as it is
  (a batch read from SQLite and encoded in a worker thread while the previous request is in
  flight, posted to /api/v2/write through aiohttp on one keep-alive connection, gzip off
  as by default, marked sent in one transaction before the next request goes out; the sent
  chunks are deleted after that, once the spool has nothing more to send: not timed, as
  `flush()` does not wait for it).
- Baseline: the same number of points (other series) written with influxdb-client's
  synchronous write API in 5,000-point batches, no gzip, nothing else: the raw client rate.
  VictoriaMetrics is stopped and started before it too, so that both meet the database in
  the same state (a freshly started one writes the first batches up to twice as slowly),
  and each side's points are flushed (`/internal/force_flush`) before the other side's
  measurement stops the database.

The machine is shared (2 CPUs, other work running), so both are measured in ROUNDS
alternating rounds (raw, then outage and drain), each on fresh series; the medians are
compared and the spread of each (min, max) and of the per-round ratios is printed.

influxdb-client is a dev dependency (DESIGN §4): the daemon never imports it.

Run: `.venv/bin/python bench/perf_4_spool_drain.py [points per round]`; prints the JSON line
last.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from _common import machine  # noqa: E402
from influxdb_client.client.influxdb_client import InfluxDBClient  # noqa: E402
from influxdb_client.client.write_api import SYNCHRONOUS  # noqa: E402
from services import VictoriaMetrics, free_port  # noqa: E402

from gauged.config.models import InfluxConfig  # noqa: E402
from gauged.uplinks.influx import InfluxSink  # noqa: E402
from gauged.uplinks.records import Record  # noqa: E402

STATIONS = 50
BATCH = 5000
GOAL = 1.0
ROUNDS = 7


def cycles(run: str, points: int) -> list[list[Record]]:
    """The daemon's level records, 50 per cycle, cycles 180 s apart ending now."""
    n = points // STATIONS
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=180 * n)
    return [[Record("level", {"gateway": "perf-4", "station": f"st{s:02d}", "run": run}, {
        "level_m": 1.0 + (c % 97) / 100 + s / 1000, "freeboard_m": 3.0 - (c % 97) / 100,
        "quality": 0, "fault": 0, "stage": 0}, t0 + timedelta(seconds=180 * c))
        for s in range(STATIONS)] for c in range(n)]


def raw_rate(tsdb: VictoriaMetrics, run: str, points: int) -> float:
    lines = [r.line() for cycle in cycles(run, points) for r in cycle]
    tsdb.stop()  # a freshly started VictoriaMetrics, as the drain meets it after an outage
    tsdb.start()
    with InfluxDBClient(url=tsdb.url, token="-", org="gauged", enable_gzip=False) as client:
        api = client.write_api(write_options=SYNCHRONOUS)
        t0 = time.perf_counter()
        for i in range(0, len(lines), BATCH):
            api.write(bucket="gauged", record="\n".join(lines[i:i + BATCH]),
                      write_precision="ms")
        return len(lines) / (time.perf_counter() - t0)


async def drain_rate(tsdb: VictoriaMetrics, folder: Path, run: str,
                     points: int) -> tuple[float, int]:
    sink = InfluxSink(InfluxConfig(enabled=True, url=tsdb.url, batch_points=BATCH,
                                   spool_max_bytes=1 << 30), folder / f"{run}.sqlite3")
    tsdb.stop()  # the outage
    with sink.opened():
        t0 = time.perf_counter()
        for cycle in cycles(run, points):
            sink.write(cycle)
        fill = time.perf_counter() - t0
        # The daemon's writer runs through an outage, failing and backing off (at most
        # backoff_max_s apart), and checkpoints the write-ahead log at each attempt: the
        # WAL holds a minute of points when the database returns, not the whole outage.
        assert sink.spool is not None
        sink.spool.maintain()
        held = sink.health().queued
        print(f"  outage: {held:,} points spooled ({sink.health().queued_bytes / 1e6:.1f} MB "
              f"of line protocol) in {fill:.1f} s, one transaction per cycle of {STATIONS}")
        tsdb.start()
        t0 = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            writer = tg.create_task(sink.run(), name="perf-4[influx].write")
            drained = await sink.flush(300.0)
            elapsed = time.perf_counter() - t0
            writer.cancel()
        if not drained:
            raise SystemExit("the spool did not drain within 300 s")
        h = sink.health()
        print(f"  drain: {h.written:,} points in {h.batches} batches in {elapsed:.2f} s, "
              f"{h.errors} errors: {held / elapsed:,.0f} points/s")
        return held / elapsed, held


def main() -> None:
    points = int(sys.argv[1]) if len(sys.argv) > 1 else 150_000
    print(f"machine: {machine()}")
    raws: list[float] = []
    drains: list[float] = []
    with tempfile.TemporaryDirectory(prefix="perf-4-") as tmp:
        folder = Path(tmp)
        tsdb = VictoriaMetrics(free_port(), folder / "victoria")
        tsdb.start()
        try:
            raw_rate(tsdb, "warm-up", 20_000)
            for k in range(ROUNDS):
                raws.append(raw_rate(tsdb, f"raw-{k}", points))
                # what the raw client wrote is flushed before the outage stops the database,
                # as the drain's points are (checked) before the next raw round: a database
                # stopped with 100,000 unflushed points merges them after its start, during
                # the drain, and made its requests 20 to 60 % slower than the raw client's
                tsdb.flush()
                print(f"round {k + 1}: raw influxdb-client, sync, {BATCH}-point batches, no "
                      f"gzip: {raws[-1]:,.0f} points/s")
                rate, held = asyncio.run(drain_rate(tsdb, folder, f"spool-{k}", points))
                drains.append(rate)
                tsdb.flush()
                got = sum(len(s["timestamps"]) for s in tsdb.export(
                    f'{{__name__="level_level_m",run="spool-{k}"}}'))
                if got != held:
                    raise SystemExit(f"{held - got} points missing after the drain")
        finally:
            tsdb.close()
    value, baseline = statistics.median(drains), statistics.median(raws)
    ratios = [d / r for d, r in zip(drains, raws, strict=True)]
    print(f"every spooled point checked in VictoriaMetrics; medians of {ROUNDS} rounds: "
          f"drain {value:,.0f} (min {min(drains):,.0f}, max {max(drains):,.0f}), "
          f"raw {baseline:,.0f} (min {min(raws):,.0f}, max {max(raws):,.0f}) points/s; "
          f"per-round ratios {' '.join(f'{r:.3f}' for r in ratios)}")
    ratio = value / baseline
    print(json.dumps({"id": "PERF-4", "value": round(value), "baseline": round(baseline),
                      "ratio": round(ratio, 3),
                      "spread": {"drain": [round(min(drains)), round(max(drains))],
                                 "raw": [round(min(raws)), round(max(raws))],
                                 "ratio": [round(min(ratios), 3), round(max(ratios), 3)]},
                      "goal": f"≥ {GOAL} × raw influxdb-client batch writes (points/s), "
                              f"medians of {ROUNDS} rounds",
                      "met": ratio >= GOAL}, ensure_ascii=False), flush=True)

if __name__ == "__main__":
    main()
