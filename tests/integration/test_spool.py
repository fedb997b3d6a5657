"""The spool and its writer against a real VictoriaMetrics (QUALITY DUR-1, DUR-2, DUR-5,
DUR-6): outages are the TSDB really stopped and started; the data's clock is accelerated
(a day of cycles is written in seconds, each point with its own original timestamp).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fieldbus import background, until
from services import VictoriaMetrics, free_port
from tsdb_proxy import TsdbProxy

from gauged.config.models import InfluxConfig
from gauged.uplinks import spool as spool_module
from gauged.uplinks.influx import InfluxSink
from gauged.uplinks.records import Record
from gauged.uplinks.spool import Point, Spool
from gauged.uplinks.spool_file import CHUNK_POINTS

STATIONS = 50
CYCLES = 480  # 24 h of 3-minute cycles


def sink_config(url: str, **kw: Any) -> InfluxConfig:
    return InfluxConfig(enabled=True, url=url, backoff_min_s=kw.pop("backoff_min_s", 0.05),
                        backoff_max_s=kw.pop("backoff_max_s", 0.2), **kw)


@contextlib.asynccontextmanager
async def running(sink: InfluxSink) -> AsyncIterator[InfluxSink]:
    sink.open()
    try:
        async with background(sink.run(), name="influx"):
            yield sink
    finally:
        sink.close()


def cycle(run: str, when: datetime, value: float, measurement: str = "level") -> list[Record]:
    return [Record(measurement, {"run": run, "station": f"s{i:02d}"},
                   {"level_m": value + i / 1000}, when) for i in range(STATIONS)]


def samples(series: list[dict[str, Any]]) -> dict[tuple[str, str], dict[int, float]]:
    """{(name, station): {timestamp ms: value}} (duplicates would collapse: see counts)."""
    return {(s["metric"]["__name__"], s["metric"].get("station", "")):
            dict(zip(s["timestamps"], s["values"], strict=True)) for s in series}


def total(series: list[dict[str, Any]]) -> int:
    return sum(len(s["timestamps"]) for s in series)


# ---- the spool alone (pure SQLite, no network) ------------------------------------------


def test_spool_keeps_points_across_reopen_and_sends_live_first(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite3"
    with Spool.open(path, 10**6) as spool:
        for i in range(5):  # one put per cycle: one chunk each
            spool.put([Point(f"m v={i} {i}", False, float(i))])
    with Spool.open(path, 10**6) as spool:  # what the last run left is backlog
        assert spool.points == 5
        spool.put([Point("m v=9 9", True, 9.0)])
        batch = spool.take(3)
        assert batch.lines == ["m v=9 9", "m v=0 0", "m v=1 1"]
        spool.remove(batch)
        assert spool.take(10).lines == ["m v=2 2", "m v=3 3", "m v=4 4"]
        assert spool.health.oldest_time == 2.0
        assert spool.points == 3


def test_spool_cap_drops_oldest_routine_exactly_and_persists_the_count(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite3"
    line = "m v=1 {:06d}"  # 12 bytes each
    with Spool.open(path, 120) as spool:
        spool.put([Point(line.format(i), i % 3 == 0, float(i)) for i in range(20)])
        kept = spool.take(100).lines
        assert spool.bytes <= 120
        assert all(line.format(i) in kept for i in range(0, 20, 3))  # never dropped
        dropped = 20 - len(kept)
        assert spool.health.dropped_routine == dropped
        routine_left = [int(x.rsplit(" ", 1)[1]) for x in kept if int(x.rsplit(" ", 1)[1]) % 3]
        assert routine_left == sorted(routine_left)
        assert min(routine_left) > max(i for i in range(20) if i % 3 and
                                       line.format(i) not in kept)  # oldest went first
    with Spool.open(path, 120) as spool:
        assert spool.health.dropped_routine == dropped


def test_spool_batches_are_whole_chunks_of_at_most_chunk_points(tmp_path: Path) -> None:
    with Spool.open(tmp_path / "spool.sqlite3", 10**7) as spool:
        spool.put([Point(f"m v=1 {i}", False, float(i)) for i in range(2 * CHUNK_POINTS + 7)])
        assert spool.take(CHUNK_POINTS + 100).lines == [f"m v=1 {i}"
                                                         for i in range(CHUNK_POINTS)]
        assert len(spool.take(10)) == CHUNK_POINTS  # at least one chunk, never half of one
        assert len(spool.take(10**6)) == 2 * CHUNK_POINTS + 7


def test_spool_a_batch_marked_sent_is_never_sent_again_even_after_a_crash(
        tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite3"
    spool = Spool.open(path, 10**6)
    for i in range(4):
        spool.put([Point(f"m v={i} {i}", False, float(i))])
    spool.remove(spool.take(2))  # marked sent; the chunks are deleted later
    assert (spool.points, spool.health.oldest_time) == (2, 2.0)
    assert spool.take(10).lines == ["m v=2 2", "m v=3 3"]
    spool.remove(spool.take(1))
    assert spool.db is not None
    assert spool.db.execute("SELECT count(*) FROM sent").fetchone() == (1,)
    spool.db.close()  # a crash: no purge, no clean close
    spool.db = None
    with Spool.open(path, 10**6) as again:
        assert again.points == 1
        assert again.take(10).lines == ["m v=3 3"]
        assert again.db is not None
        assert again.db.execute("SELECT count(*) FROM chunks").fetchone() == (1,)


def test_spool_what_was_sent_is_deleted_after_the_drain_in_bounded_steps(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_module, "PURGE_POINTS", 3)
    with Spool.open(tmp_path / "spool.sqlite3", 10**6) as spool:
        for i in range(6):
            spool.put([Point(f"m v={i} {i}", False, float(i))])
        assert spool.db is not None
        db = spool.db
        batch = None
        for size in (2, 2, 1):  # a drain: 2 + 2 + 1 points marked sent, nothing deleted
            batch = spool.take(size, after=batch)
            spool.remove(batch)
        assert db.execute("SELECT count(*) FROM chunks").fetchone() == (6,)
        assert spool.points == 1
        left: list[int] = []
        tx = spool._tx

        @contextlib.contextmanager
        def counted(fsync: bool = True) -> Iterator[sqlite3.Connection]:
            with tx(fsync) as inside:
                yield inside
            left.append(db.execute("SELECT count(*) FROM chunks").fetchone()[0])

        monkeypatch.setattr(spool, "_tx", counted)
        spool.purge()
        assert left == [4, 1]  # at most 3 points per transaction: 2, then 2 + 1
        assert db.execute("SELECT count(*) FROM sent").fetchone() == (0,)
        assert spool.points == 1
        assert spool.take(10).lines == ["m v=5 5"]


def test_spool_cap_counts_exactly_with_a_batch_marked_sent_and_not_yet_deleted(
        tmp_path: Path) -> None:
    line = "m v=1 {:06d}"  # 12 bytes each
    with Spool.open(tmp_path / "spool.sqlite3", 120) as spool:
        for i in range(10):
            spool.put([Point(line.format(i), False, float(i))])
        spool.remove(spool.take(3))  # sent: 7 points (84 bytes) held
        spool.put([Point(line.format(10 + i), False, 10.0 + i) for i in range(5)])  # 144
        assert (spool.points, spool.bytes) == (10, 120)
        assert spool.health.dropped_routine == 2  # the oldest unsent, not the sent ones
        assert spool.take(100).lines == [line.format(i) for i in range(5, 15)]


def test_spool_of_version_1_is_upgraded_keeping_every_point_in_order(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite3"
    db = sqlite3.connect(path)
    db.executescript("""
        PRAGMA journal_mode = WAL;
        CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
        CREATE TABLE points (id INTEGER PRIMARY KEY AUTOINCREMENT, kept INTEGER NOT NULL,
                             time REAL NOT NULL, line TEXT NOT NULL);
        CREATE TABLE quarantine (id INTEGER PRIMARY KEY, line TEXT NOT NULL,
                                 reason TEXT NOT NULL, at REAL NOT NULL);
        INSERT INTO meta VALUES ('dropped_routine', 4);
        INSERT INTO points (kept, time, line) VALUES (0, 1, 'm v=1 1'), (1, 2, 'e v=2 2'),
                                                     (0, 3, 'm v=3 3');
        PRAGMA user_version = 1;
    """)
    db.close()
    with Spool.open(path, 10**6) as spool:
        assert spool.db is not None  # not set aside
        assert (spool.points, spool.bytes, spool.health.dropped_routine) == (3, 21, 4)
        assert spool.take(10).lines == ["m v=1 1", "e v=2 2", "m v=3 3"]


# ---- DUR-1 ------------------------------------------------------------------------------


async def test_dur_1_a_day_of_fleet_data_with_the_tsdb_down_arrives_complete(
        tmp_path: Path, victoria: VictoriaMetrics) -> None:
    run = uuid.uuid4().hex[:8]
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(days=1)
    sink = InfluxSink(sink_config(victoria.url, batch_points=500), tmp_path / "spool.sqlite3")
    victoria.stop()  # the TSDB is down for the whole day
    async with running(sink):
        for i in range(CYCLES):
            sink.write(cycle(run, start + timedelta(seconds=180 * i), float(i)))
        await until(lambda: sink.health().errors > 0, 10.0, "the writer to notice the outage")
        h = sink.health()
        assert (h.queued, h.dropped, h.connected) == (STATIONS * CYCLES, 0, False)

        victoria.start()
        live = now + timedelta(seconds=1)
        sink.write(cycle(run, live, 99.0))  # spooled after the outage: sent first
        await until(lambda: sink.health().written > 0, 30.0, "the first batch after recovery")
        assert sink.spool is not None
        held = set(sink.spool.take(10**6).lines)
        assert not any(f" {round(live.timestamp() * 1000)}" in x for x in held)  # live gone
        assert sink.health().queued > 0  # ... while the backlog still drains

        # and live points keep flowing during the drain
        later = [live + timedelta(seconds=k + 1) for k in range(5)]
        for k, when in enumerate(later):
            sink.write(cycle(run, when, 100.0 + k))
            await asyncio.sleep(0)
        assert await sink.flush(60.0)

    want = {("level_level_m", f"s{s:02d}"): {
        round((start + timedelta(seconds=180 * i)).timestamp() * 1000): float(i) + s / 1000
        for i in range(CYCLES)} for s in range(STATIONS)}
    for k, when in enumerate([live, *later]):
        for s in range(STATIONS):
            want[("level_level_m", f"s{s:02d}")][round(when.timestamp() * 1000)] = \
                (99.0 if k == 0 else 100.0 + k - 1) + s / 1000
    series = await victoria.wait_for_async(
        f'{{run="{run}"}}', lambda got: total(got) >= STATIONS * (CYCLES + 6), timeout=30)
    assert samples(series) == want  # every point, with its original timestamp and value
    assert total(series) == STATIONS * (CYCLES + 6)


# ---- DUR-2 ------------------------------------------------------------------------------


async def test_dur_2_at_the_byte_cap_oldest_telemetry_goes_first_events_never(
        tmp_path: Path, victoria: VictoriaMetrics) -> None:
    run = uuid.uuid4().hex[:8]
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=6)
    cap = 40_000
    sink = InfluxSink(sink_config(victoria.url, spool_max_bytes=cap),
                      tmp_path / "spool.sqlite3")
    victoria.stop()
    cycles = 100
    async with running(sink):
        for i in range(cycles):
            when = t0 + timedelta(seconds=180 * i)
            sink.write(cycle(run, when, float(i)))  # routine, ≈ 65 bytes each
            sink.write([Record("stage_change", {"run": run, "station": "s00",
                                                "quantity": "level"},
                               {"from_stage": i, "to_stage": i + 1, "value": 0.5}, when)])
            assert sink.health().queued_bytes <= cap  # under the cap while routine is left
        h = sink.health()
        assert h.dropped > 0
        assert h.queued == STATIONS * cycles + cycles - h.dropped
        dropped = h.dropped
        victoria.start()
        assert await sink.flush(30.0)
        assert sink.health().dropped == dropped  # nothing more dropped on the way out

    series = await victoria.wait_for_async(
        f'{{run="{run}"}}', lambda got: total(got) >= STATIONS * cycles + cycles - dropped,
        timeout=30)
    got = samples(series)
    events = got[("stage_change_to_stage", "s00")]
    assert len(events) == cycles  # every event arrived
    routine = sorted((ts, st) for (name, st), pts in got.items() if name == "level_level_m"
                     for ts in pts)
    assert len(routine) == STATIONS * cycles - dropped  # counted exactly
    everything = sorted((round((t0 + timedelta(seconds=180 * i)).timestamp() * 1000),
                         f"s{s:02d}") for i in range(cycles) for s in range(STATIONS))
    assert routine == everything[dropped:]  # and the oldest went first


# ---- DUR-5 ------------------------------------------------------------------------------


async def test_dur_5_one_rejected_point_is_quarantined_the_rest_written_no_retry_loop(
        tmp_path: Path, victoria: VictoriaMetrics) -> None:
    run = uuid.uuid4().hex[:8]
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    async with TsdbProxy(victoria.url, reject="poison") as proxy:
        sink = InfluxSink(sink_config(proxy.url), tmp_path / "spool.sqlite3")
        records = [r for i in range(20) for r in cycle(run, t0 + timedelta(seconds=i), i)]
        bad = Record("poison", {"run": run}, {"v": 1}, t0)
        records.insert(437, bad)
        sink.write(records)  # one batch of 1,001 points
        async with running(sink):
            assert await sink.flush(30.0)
            requests = len(proxy.requests)
            assert sink.health().quarantined == 1
            assert sink.spool is not None
            quarantined = sink.spool.quarantined()
            assert [line for line, _ in quarantined] == [bad.line()]
            assert "HTTP 400" in quarantined[0][1]
            # bisection: at most 2 requests per halving, then nothing more
            assert requests <= 1 + 2 * 10
            sink.write(cycle(run, t0 + timedelta(minutes=5), 50.0))
            assert await sink.flush(10.0)
            assert len(proxy.requests) == requests + 1  # the next batch: one request
        assert proxy.max_in_flight == 1
    series = await victoria.wait_for_async(
        f'{{run="{run}"}}', lambda got: total(got) >= 21 * STATIONS, timeout=30)
    assert total(series) == 21 * STATIONS
    assert not any(s["metric"]["__name__"].startswith("poison") for s in series)
    with sqlite3.connect(tmp_path / "spool.sqlite3") as db:  # the count survives a restart
        assert db.execute("SELECT value FROM meta WHERE key = 'quarantined'").fetchone() == (1,)


# ---- DUR-6 ------------------------------------------------------------------------------


async def test_dur_6_busy_tsdb_backoff_exponential_jittered_capped_one_in_flight(
        tmp_path: Path, victoria: VictoriaMetrics) -> None:
    run = uuid.uuid4().hex[:8]
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    lo, hi = 0.05, 0.4
    async with TsdbProxy(victoria.url) as proxy:
        proxy.faults.extend([(429, "1")] + [(503, None)] * 7 + [(429, None)] * 2)
        sink = InfluxSink(sink_config(proxy.url, backoff_min_s=lo, backoff_max_s=hi,
                                      batch_points=100), tmp_path / "spool.sqlite3")
        async with running(sink):
            for i in range(40):  # points keep coming while the TSDB is busy
                sink.write(cycle(run, t0 + timedelta(seconds=i), float(i)))
                await asyncio.sleep(0.05)
            assert await sink.flush(30.0)
        assert proxy.max_in_flight == 1  # one request in flight, always
    reqs = proxy.requests
    assert [r.status for r in reqs[:10]] == [429] + [503] * 7 + [429] * 2
    assert all(r.status == 204 for r in reqs[10:])
    assert all(b.started >= a.ended for a, b in itertools.pairwise(reqs))
    waits = [b.started - a.ended for a, b in itertools.pairwise(reqs[:11])]
    assert waits[0] >= 1.0  # Retry-After: 1 honoured (the backoff alone would be ≤ 0.05 s)
    for k, wait in enumerate(waits[1:], start=1):
        full = min(hi, lo * 2 ** k)
        assert 0.5 * full - 0.01 <= wait <= full + 0.25, (k, wait, full)  # jitter in [½, 1]
    capped = waits[4:]  # full delay reached the cap from the fifth failure on
    assert max(capped) <= hi + 0.25
    # jitter: the waits at the cap are not all the same
    assert max(capped) - min(capped) > 0.01
    series = await victoria.wait_for_async(
        f'{{run="{run}"}}', lambda got: total(got) >= 40 * STATIONS, timeout=30)
    assert total(series) == 40 * STATIONS


async def test_unreachable_tsdb_counts_errors_and_keeps_points(tmp_path: Path) -> None:
    sink = InfluxSink(sink_config(f"http://127.0.0.1:{free_port()}"),
                      tmp_path / "spool.sqlite3")
    async with running(sink):
        sink.write(cycle("x", datetime.now(UTC), 1.0))
        await until(lambda: sink.health().errors >= 2, 10.0, "two failed attempts")
        h = sink.health()
        assert (h.connected, h.queued, h.written) == (False, STATIONS, 0)
        assert h.last_error
    assert h.oldest_age_s is not None
    assert 0 <= h.oldest_age_s < 30


async def test_writer_stops_when_cancelled_just_as_points_arrive(tmp_path: Path) -> None:
    # Python 3.11's asyncio.wait_for returns the inner result when a cancellation meets it:
    # the idle writer, woken by a write in the same tick as its cancellation, ran on forever
    # (and a daemon's shutdown with it)
    sink = InfluxSink(sink_config(f"http://127.0.0.1:{free_port()}"),
                      tmp_path / "spool.sqlite3")
    with sink.opened():
        task = asyncio.create_task(sink.run(), name="test[influx].write")
        assert await sink.flush(5.0)  # idle, waiting for points
        await asyncio.sleep(0)  # one tick (not a wait): its wait for points has begun
        sink.write(cycle("x", datetime.now(UTC), 1.0))
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=10.0)
        assert task in done
        assert task.cancelled()


def test_spool_that_cannot_open_keeps_points_in_memory_and_never_raises(
        tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the spool's folder should be")
    with Spool.open(blocker / "spool.sqlite3", 200) as spool:
        assert spool.db is None
        assert "cannot open" in spool.health.problem
        spool.put([Point(f"m v=1 {i:03d}", i == 0, float(i)) for i in range(30)])
        assert spool.health.on_disk is False
        assert spool.bytes <= 200  # the cap holds in memory too
        assert spool.take(100).lines[0] == "m v=1 000"  # the kept point is still there
        assert spool.health.dropped_routine == 30 - spool.points


def test_perf_5_the_spools_page_cache_is_bounded_so_an_outage_does_not_grow_rss(
        tmp_path: Path) -> None:
    # SQLite keeps every page it cached until the connection closes: at 16 MiB a day-long
    # outage held 16 MB more RSS (bench/RESULTS.md, issue 15); 2 MiB bounds it
    with Spool.open(tmp_path / "spool.sqlite3", 10**9) as spool:
        assert spool.db is not None
        assert spool.db.execute("PRAGMA cache_size").fetchone() == (-2048,)
