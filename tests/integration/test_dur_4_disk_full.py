"""DUR-4: the spool's disk is full (ENOSPC): polling, stages and sirens keep working; the
spool logs one ERROR on entering that state and one INFO on leaving it.

A full disk is simulated with SQLite's `PRAGMA max_page_count` set to the file's current
size and the room left in its pages filled: the next write fails with SQLITE_FULL, the very
error (and code path) a full file system gives SQLite. The daemon runs in the test's event
loop against the field-bus simulators (tests/fieldbus.py) and a real VictoriaMetrics.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fieldbus import LEVEL_STATIONS, FieldRig, background, field_rig, until
from services import PtyPairFactory, VictoriaMetrics

SPEED = 50.0
SIREN = 0  # coil of zone `riverside` (tests/data/fieldbus.toml)


def fill_disk(db: sqlite3.Connection) -> None:
    """No page more for the file, and no room left in the pages it has (a spool chunk
    could otherwise fit in a page that a removal freed, as on a real full disk once the
    spool drains: then the spool writes again, correctly, and leaves the state)."""
    db.execute("CREATE TABLE filler (x BLOB)")
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {pages}")
    db.execute("PRAGMA synchronous = OFF")  # a throw-away table: no fsync per row
    for size in (4000, 1000, 100, 10, 1):
        with contextlib.suppress(sqlite3.OperationalError):  # "database or disk is full"
            while True:
                db.execute("INSERT INTO filler VALUES (zeroblob(?))", (size,))
    db.execute("PRAGMA synchronous = FULL")


@contextlib.asynccontextmanager
async def tasks(rig: FieldRig) -> AsyncIterator[None]:
    daemon = rig.daemon
    assert daemon.influx is not None
    async with background(*(z.run() for z in daemon.zones.values()), daemon.influx.run(),
                          name="daemon"):
        yield


async def test_dur_4_full_spool_disk_degrades_storage_only(
        tmp_path: Path, pty_pair: PtyPairFactory, victoria: VictoriaMetrics,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="gauged.uplinks.spool")

    def edit(text: str) -> str:
        return text + (f'\n[influx]\nenabled = true\nurl = "{victoria.url}"\n'
                       'backoff_min_s = 0.05\nbackoff_max_s = 0.2\n')

    levels = dict.fromkeys(LEVEL_STATIONS, 1.0) | {"tcp_1": 4.1}  # above the crest
    async with field_rig(tmp_path, pty_pair, levels=levels, speed=SPEED, edit=edit) as rig, \
            tasks(rig):
        sink = rig.daemon.influx
        assert sink is not None
        assert sink.spool is not None
        assert sink.spool.db is not None
        assert sink.spool.path == tmp_path / "state" / "spool.sqlite3"  # beside the state
        db = sink.spool.db
        assert await sink.flush(10.0)  # the spool holds nothing whose removal frees space
        fill_disk(db)  # the disk is full from now on

        first = await rig.cycle()
        assert rig.state("tcp_1").stage_name == "overflow"  # stages go on
        assert [b.station for b in first.broadcasts] == ["tcp_1"]
        zone = rig.daemon.zones["riverside"]
        await until(lambda: zone.last is not None, 10.0, "the overflow broadcast")
        assert zone.last is not None
        assert zone.last.siren_on_s >= 10.0
        assert [r["value"] for r in rig.fleet.relay_log
                if r["coil"] == SIREN and r["value"] != r["previous"]] == [True, False]
        for _ in range(3):  # polling goes on, cycle after cycle
            result = await rig.cycle()
            assert len(result.states) == len(rig.config.stations)
        # The events' points are put from the sink's own thread, so the status follows a
        # moment later; `spool_on_disk` is false only while points wait in memory, which the
        # writer sends straight from there (the database is up), so the problem is what stays.
        await until(lambda: "full" in rig.daemon.snapshot()["uplinks"]["influx"][
            "spool_problem"], 10.0, "the spool to report the full disk")
        errors = [r for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 1, [r.getMessage() for r in errors]  # once, on entering

        db.execute("PRAGMA max_page_count = 1073741823")  # space again
        await rig.cycle()
        await rig.cycle()  # (the state is left after a few writes in a row succeeded)
        await until(lambda: sink.health().spool_problem == "", 10.0, "the spool to recover")
        infos = [r for r in caplog.records if r.levelname == "INFO"
                 and "again" in r.getMessage()]
        assert len(infos) == 1  # once, on leaving
        assert rig.daemon.snapshot()["uplinks"]["influx"]["spool_on_disk"] is True
        assert len([r for r in caplog.records if r.levelname == "ERROR"]) == 1
        assert await sink.flush(30.0)
        # nothing recorded while the disk was full was lost on the way
        series = await victoria.wait_for_async(
            '{__name__="level_level_m",station="tcp_1"}',
            lambda got: len(got) == 1 and len(got[0]["timestamps"]) == 6, timeout=30)
        assert series[0]["timestamps"] == [round(rig.time(i).timestamp() * 1000)
                                           for i in range(6)]
