"""The state store (gauged/store/state.py): what survives a restart; a bad file never stops us."""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gauged.alarm.quality import Quality
from gauged.alarm.types import BroadcastRequest
from gauged.store import writer
from gauged.store.state import (
    BUSY_TIMEOUT_MS,
    SCHEMA_VERSION,
    JournalEntry,
    RestartDecision,
    StateStore,
)

T0 = 1_782_000_000.0  # some UNIX time


def test_a_new_store_is_sqlite_in_wal_mode_fsynced_by_its_syncer(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "state.sqlite3"
    with StateStore.open(path) as store:
        assert store.path == path
        assert store.fresh
        assert store.problem == ""
        # commits reach the OS (NORMAL); the syncer thread fsyncs them (gauged/store/writer.py)
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 1
        assert store._db.execute("PRAGMA busy_timeout").fetchone()[0] == BUSY_TIMEOUT_MS
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"stages", "counters", "rain_readings", "journal", "inhibits", "jobs",
            "job_runs"} <= tables


def test_cycle_state_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    with StateStore.open(path) as store:
        store.save_cycle(T0, stages={"shin_hiroo": (3, T0 - 360), "rain_a": (0, None)},
                         counters={"rain_a": (65530, T0)},
                         rain=[("rain_a", 1.5, Quality.GOOD), ("rain_b", None, Quality.MISSING)])
        store.save_cycle(T0 + 180, stages={}, counters={"rain_a": (4, T0 + 180)},
                         rain=[("rain_a", 5.0, Quality.GOOD)])
    with StateStore.open(path) as store:
        assert not store.fresh
        assert store.last_cycle() == T0 + 180
        stages = store.stages()
        assert (stages["shin_hiroo"].stage, stages["shin_hiroo"].entered) == (3, T0 - 360)
        assert stages["rain_a"].entered is None
        assert store.counters() == {"rain_a": (4, T0 + 180)}
        assert store.rain_readings(T0 - 1) == {
            "rain_a": [(T0, 1.5, Quality.GOOD), (T0 + 180, 5.0, Quality.GOOD)],
            "rain_b": [(T0, None, Quality.MISSING)]}
        assert store.rain_readings(T0) == {"rain_a": [(T0 + 180, 5.0, Quality.GOOD)]}


def test_rain_readings_older_than_a_day_are_dropped(tmp_path: Path) -> None:
    with StateStore.open(tmp_path / "s.sqlite3") as store:
        store.save_cycle(T0, stages={}, counters={}, rain=[("r", 1.0, Quality.GOOD)])
        store.save_cycle(T0 + 86401, stages={}, counters={}, rain=[("r", 2.0, Quality.GOOD)])
        assert store.rain_readings(0) == {"r": [(T0 + 86401, 2.0, Quality.GOOD)]}


def request(zone: str, station: str, stage: int, sequence: str, at: float = T0,
            kind: str = "stage") -> BroadcastRequest:
    return BroadcastRequest(time=datetime.fromtimestamp(at, UTC), zone=zone, station=station,
                            stage=stage, stage_name=f"s{stage}", sequence=sequence,
                            siren_s=10.0, clips=("a_ja", "a_en"), kind=kind)


def test_the_journal_keeps_every_decision_and_its_fate_across_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    with StateStore.open(path) as store:
        rows = [JournalEntry.of(store.journal_id(), request("hiroo", "shin_hiroo", 4, "o"),
                                "queued"),
                JournalEntry.of(store.journal_id(), request("hiroo", "shin_hiroo", 3, "w"),
                                "queued"),
                JournalEntry.of(store.journal_id(), request("ward", "rain_a", 3, "r"),
                                "queued"),
                JournalEntry.of(store.journal_id(), request("ward", "rain_b", 3, "r"),
                                "merged", "into rain_a s3")]
        assert [r.id for r in rows] == [1, 2, 3, 4]
        store.save_cycle(T0, stages={"shin_hiroo": (4, T0)}, counters={}, rain=[],
                         journal=rows)
        store.journal_fate(1, "playing", started=T0 + 1)
        store.journal_fate(3, "playing", started=T0 + 1)
        store.journal_fate(3, "played", finished=T0 + 9, siren_on_s=0.0,
                           clips_played=["r_ja", "r_en"], faults=[])
        store.flush()
    with StateStore.open(path) as store:  # as after kill -9: 1 cut, 2 never started
        assert store.journal_id() == 5  # ids go on from the last
        unfinished = store.journal_unfinished()
        assert [(e.id, e.fate) for e in unfinished] == [(1, "playing"), (2, "queued")]
        assert unfinished[0].request() == rows[0].request()  # enough to play it again
        last = store.last_broadcasts()
        assert (last["hiroo"].status, last["ward"].status) == ("started", "finished")
        assert last["ward"].clips_played == ["r_ja", "r_en"]
        assert last["ward"].as_json()["started"].startswith("2026-")
        replay = dataclasses.replace(unfinished[1], id=store.journal_id(), replay_of=2)
        store.journal_restart([
            RestartDecision(unfinished[0], "interrupted", "reported", "too old"),
            RestartDecision(unfinished[1], "not-started", "replayed", "stands", replay)],
            T0 + 60)
    with StateStore.open(path) as store:
        assert [(e.id, e.fate, e.replay_of) for e in store.journal_unfinished()] == [
            (6, "queued", 2)]  # judged once: only the replay is left to play
        journal = {e.id: e for e in store.journal()}
        assert (journal[1].fate, journal[1].restart, journal[1].note) == (
            "interrupted", "reported", "too old")
        assert (journal[2].restart, journal[2].replay) == ("replayed", 6)
        assert journal[4].fate == "merged"
        assert store.last_broadcasts()["hiroo"].status == "interrupted"


def test_a_version_1_file_is_upgraded_its_broadcast_left_started_is_unfinished(
        tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    StateStore.open(path).close()
    with sqlite3.connect(path) as db:  # back to what version 1 held
        db.executescript("""
            DROP TABLE journal;
            CREATE TABLE broadcasts (
                zone TEXT PRIMARY KEY, station TEXT NOT NULL, stage INTEGER NOT NULL,
                stage_name TEXT NOT NULL, sequence TEXT NOT NULL, status TEXT NOT NULL,
                outcome TEXT NOT NULL DEFAULT '', started REAL NOT NULL, finished REAL,
                siren_on_s REAL NOT NULL DEFAULT 0, clips_played TEXT NOT NULL DEFAULT '[]',
                faults TEXT NOT NULL DEFAULT '[]') WITHOUT ROWID;
            PRAGMA user_version = 1;""")
        db.execute("INSERT INTO broadcasts (zone, station, stage, stage_name, sequence, "
                   "status, started) VALUES ('hiroo', 'shin_hiroo', 4, 'overflow', 'o', "
                   "'started', ?)", (T0,))
        db.execute("INSERT INTO broadcasts VALUES ('ward', 'rain_a', 3, 'warning', 'r', "
                   "'finished', 'done', ?, ?, 0, '[\"r_ja\"]', '[]')", (T0, T0 + 5))
    with StateStore.open(path) as store:
        assert store.problem == ""
        assert [(e.zone, e.fate) for e in store.journal_unfinished()] == [("hiroo", "playing")]
        assert store.last_broadcasts()["ward"].clips_played == ["r_ja"]
        assert store.last_broadcasts()["ward"].outcome == "done"
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2


def test_a_commit_does_not_wait_for_a_slow_fsync_a_durable_write_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = writer.os.fsync
    fsyncs: list[int] = []

    def slow_fsync(fd: int) -> None:  # an SD card: every fsync takes 200 ms
        time.sleep(0.2)
        fsyncs.append(fd)
        real(fd)

    monkeypatch.setattr(writer.os, "fsync", slow_fsync)
    with StateStore.open(tmp_path / "s.sqlite3") as store:
        t0 = time.monotonic()
        for i in range(5):  # each commit returns at once; the syncer groups their fsyncs
            store.save_cycle(T0 + i, stages={"s": (1, None)}, counters={}, rain=[])
        assert time.monotonic() - t0 < 0.15
        t0 = time.monotonic()
        assert store.command_seen("c1", T0, 60.0)  # must be on disk before the command runs
        assert time.monotonic() - t0 >= 0.2
        assert len(fsyncs) <= 4  # not one per commit


def test_a_write_waits_for_another_process_s_lock_briefly_then_fails_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "s.sqlite3"
    with StateStore.open(path) as store:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            t0 = time.monotonic()
            store.save_cycle(T0, stages={"s": (1, None)}, counters={}, rain=[])
            waited = time.monotonic() - t0
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert BUSY_TIMEOUT_MS / 1000 * 0.8 <= waited < 1.0  # not sqlite's 5 s
        assert "cannot write the cycle" in store.problem
        store.save_cycle(T0 + 1, stages={"s": (1, None)}, counters={}, rain=[])
        assert store.problem == ""
        assert store.last_cycle() == T0 + 1


def test_a_fire_time_runs_once_and_a_run_cut_short_is_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    with StateStore.open(path) as store:
        assert store.job_started("silent", T0, T0 + 1)
        assert not store.job_started("silent", T0, T0 + 2)  # the same fire time: no
        assert store.job_started("audible", T0, T0 + 1)  # another job: yes
        store.job_finished("audible", T0, "ok", T0 + 5, {"ok": True})
    with StateStore.open(path) as store:
        runs = store.interrupt_jobs()
        assert [(r.job, r.status) for r in runs] == [("silent", "interrupted")]
        assert not store.job_started("silent", T0, T0 + 100)  # still counts as run
        last = store.last_job_run("audible")
        assert last is not None
        assert last.status == "ok"
        assert last.result == {"ok": True}


def test_a_calendar_stays_armed_until_it_changes(tmp_path: Path) -> None:
    with StateStore.open(tmp_path / "s.sqlite3") as store:
        assert store.arm_job("silent", "0 10 * * 1", T0) == T0
        assert store.arm_job("silent", "0 10 * * 1", T0 + 99) == T0
        assert store.arm_job("silent", "0 11 * * 1", T0 + 99) == T0 + 99


def test_inhibits_table_holds_active_ones(tmp_path: Path) -> None:
    with StateStore.open(tmp_path / "s.sqlite3") as store:
        a = store.add_inhibit("zone", "ward", "maintenance", T0, T0 + 3600)
        b = store.add_inhibit("station", "shirokane", "gauge swap", T0, None)
        assert a is not None
        assert b is not None
        assert [i.target for i in store.inhibits(T0 + 10)] == ["ward", "shirokane"]
        assert [i.target for i in store.inhibits(T0 + 3600)] == ["shirokane"]  # expired
        store.clear_inhibit(b, T0 + 20)
        assert store.inhibits(T0 + 30) == [i for i in store.inhibits(T0 + 30)
                                           if i.target == "ward"]


def _aside(tmp_path: Path) -> list[Path]:
    return sorted(p for p in tmp_path.glob("state.sqlite3.corrupt-*")
                  if not p.name.endswith(("-wal", "-shm")))


def test_a_file_that_is_not_sqlite_is_set_aside(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "state.sqlite3"
    path.write_bytes(b"this is not a database\n" * 200)
    with caplog.at_level(logging.ERROR, "gauged.store.state"), StateStore.open(path) as store:
        assert store.fresh
        assert store.path == path
        assert "renamed to state.sqlite3.corrupt-" in store.problem
        store.save_cycle(T0, stages={"s": (1, None)}, counters={}, rain=[])
    assert any(r.levelno == logging.ERROR and "unusable" in r.getMessage()
               for r in caplog.records)
    assert len(_aside(tmp_path)) == 1
    assert _aside(tmp_path)[0].read_bytes().startswith(b"this is not a database")
    with StateStore.open(path) as store:  # the fresh one is a good one
        assert store.stages()["s"].stage == 1


def test_a_damaged_page_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    with StateStore.open(path) as store:
        for i in range(200):
            store.save_cycle(T0 + i, stages={f"station_{i}": (1, None)}, counters={},
                             rain=[])
        store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 3 * page
    data[-page + 8:] = b"\xa5" * (page - 8)  # scribble over the last page, where data are
    path.write_bytes(bytes(data))
    with StateStore.open(path) as store:
        assert store.fresh
        assert "unusable" in store.problem
        assert store.stages() == {}
    assert len(_aside(tmp_path)) == 1


def test_a_newer_schema_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    StateStore.open(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with StateStore.open(path) as store:
        assert "schema version" in store.problem
    assert len(_aside(tmp_path)) == 1


def test_an_unwritable_folder_keeps_the_state_in_memory(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    with caplog.at_level(logging.ERROR, "gauged.store.state"), \
            StateStore.open(blocker / "state.sqlite3") as store:
        assert store.path is None
        assert store.fresh
        assert store.problem
        store.save_cycle(T0, stages={"s": (2, None)}, counters={}, rain=[])
        assert store.stages()["s"].stage == 2  # works, for this run only
    assert any("in memory" in r.getMessage() for r in caplog.records)


def test_a_failing_write_is_logged_once_and_never_raised(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with StateStore.open(tmp_path / "s.sqlite3") as store, \
            caplog.at_level(logging.INFO, "gauged.store.state"):
        store._db.execute("PRAGMA query_only = 1")  # every write now fails
        for i in range(3):
            store.save_cycle(T0 + i, stages={"s": (1, None)}, counters={}, rain=[])
        store.journal_fate(1, "playing", started=T0)
        assert not store.job_started("silent", T0, T0)  # unrecorded tests do not run
        assert "cannot write" in store.problem
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len([r for r in errors if "cannot write" in r.getMessage()]) == 1
        store._db.execute("PRAGMA query_only = 0")
        store.save_cycle(T0 + 9, stages={"s": (1, None)}, counters={}, rain=[])
        assert store.problem == ""
        assert store.last_cycle() == T0 + 9
        assert any("writing again" in r.getMessage() for r in caplog.records)


def test_the_path_defaults_to_var_lib_and_the_environment_overrides_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gauged.config.load import load_config

    reference = Path(__file__).resolve().parents[2] / "config" / "minato-furukawa.toml"
    monkeypatch.delenv("GAUGED_STATE__PATH", raising=False)
    assert load_config(reference).state.path == Path("/var/lib/gauged/state.sqlite3")
    monkeypatch.setenv("GAUGED_STATE__PATH", str(tmp_path / "s.sqlite3"))
    assert load_config(reference).state.path == tmp_path / "s.sqlite3"
