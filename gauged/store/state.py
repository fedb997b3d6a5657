"""State that survives restarts: one SQLite file in WAL mode with `synchronous=FULL`.

What is kept (all times are UNIX seconds, UTC, on the daemon's clock):

- `stages`: per station, the stage and when it was entered (for the dwell), as of the last
  cycle (`meta.last_cycle`);
- `rain_readings`: each rain station's readings (time, increment, quality) of the last
  24 hours, so that the rain totals and the stages that depend on them carry on where they
  stopped instead of starting again from zero;
- `counters`: the rain tip counters' baselines (raw count and the time it was read), so that
  the first reading after a short restart gives an increment, not a new baseline;
- `broadcasts`: the last broadcast per zone and its status: `started`, `finished` or
  `interrupted`;
- `inhibits`: maintenance inhibits per station or zone (the table; the logic lives with the
  broadcasts);
- `command_ids`, `command_audit`: the ids of the commands received while they may live
  (each runs at most once, across restarts) and the outcome of every authenticated command;
- `jobs`, `job_runs`: the scheduled tests: since when each calendar is armed, and every run
  by its scheduled fire time (at most one run per fire time, see gauged/field/prooftests.py).

Durability: each change is one small transaction, committed before the action that depends
on it: a cycle's stages before its broadcasts reach the zones, a broadcast's `started` row
before its first relay write, a test run's row before its first relay write. With
`synchronous=FULL` a commit survives a power cut (one WAL fsync, about 0.5 ms on a
development machine; more on an SD card).

Failure: a siren system never refuses to run because of its state file. A file that cannot
be opened as this database (corrupt, not SQLite, written by a newer gauged) is renamed
aside (`<name>.corrupt-<UTC time>`, with its `-wal` and `-shm`) with an ERROR log, and a
fresh one is started; when the folder cannot be written at all, the state lives in memory
(ERROR: nothing will survive the next restart). A write that fails later is logged at ERROR
once, shown in /status, and the daemon goes on.

Restart policy (gauged/daemon/daemon.py applies it; the store only remembers):

- Relays are driven OFF first, then stages are restored *without re-sounding*: a restored
  stage-3 station whose next reading is still stage 3 makes no transition and no broadcast;
  a reading at stage 4 broadcasts stage 4 only. Confirmation and clear counts start again
  (a restored stage is confirmed or cleared by fresh readings); counter baselines resume only
  after a short gap (a few cycles); stages older than `[state] max_age_s` are not restored
  at all (after a long outage the public hears the current stage again).
- An interrupted broadcast (a `started` row found at start: the daemon died while it played)
  is **not re-run**. It is marked `interrupted`, logged at WARNING at start, and shown in
  /status. Re-running it could only repeat an announcement the public may already have heard
  in part, and its stage is restored anyway; the next upward transition broadcasts as usual.
  So a crash produces 0 duplicate announcements, at the price of a message cut short. The
  same holds for a scheduled test cut short by a crash: it counts as run (`interrupted`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self, TypeVar

from gauged.alarm.quality import Quality
from gauged.store.sqlite_file import Unusable, open_wal, set_aside

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
T = TypeVar("T")
RAIN_KEEP_S = 86400.0  # rain readings kept for the longest rolling window (24 h)
AUDIT_KEEP = 10_000  # command audit rows kept

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE stages (
    station TEXT PRIMARY KEY, stage INTEGER NOT NULL, entered REAL, changed REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE counters (station TEXT PRIMARY KEY, raw INTEGER NOT NULL, read REAL NOT NULL)
    WITHOUT ROWID;
CREATE TABLE rain_readings (
    station TEXT NOT NULL, time REAL NOT NULL, increment_mm REAL, quality TEXT NOT NULL,
    PRIMARY KEY (station, time)
) WITHOUT ROWID;
CREATE INDEX rain_readings_time ON rain_readings (time);
CREATE TABLE broadcasts (
    zone TEXT PRIMARY KEY, station TEXT NOT NULL, stage INTEGER NOT NULL,
    stage_name TEXT NOT NULL, sequence TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('started', 'finished', 'interrupted')),
    outcome TEXT NOT NULL DEFAULT '', started REAL NOT NULL, finished REAL,
    siren_on_s REAL NOT NULL DEFAULT 0, clips_played TEXT NOT NULL DEFAULT '[]',
    faults TEXT NOT NULL DEFAULT '[]'
) WITHOUT ROWID;
CREATE TABLE inhibits (
    id INTEGER PRIMARY KEY, scope TEXT NOT NULL CHECK (scope IN ('station', 'zone')),
    target TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', created REAL NOT NULL,
    expires REAL, cleared REAL, by TEXT NOT NULL DEFAULT ''
);
CREATE TABLE command_ids (id TEXT PRIMARY KEY, received REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE command_audit (
    seq INTEGER PRIMARY KEY, time REAL NOT NULL, id TEXT, sender TEXT NOT NULL DEFAULT '',
    action TEXT NOT NULL DEFAULT '', status TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE jobs (job TEXT PRIMARY KEY, calendar TEXT NOT NULL, armed REAL NOT NULL)
    WITHOUT ROWID;
CREATE TABLE job_runs (
    job TEXT NOT NULL, fire_time REAL NOT NULL, started REAL NOT NULL, finished REAL,
    status TEXT NOT NULL, result TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (job, fire_time)
) WITHOUT ROWID;
"""

@dataclass(frozen=True)
class SavedStage:
    station: str
    stage: int
    entered: float | None  # when the stage was entered (None: unknown)
    changed: float  # the cycle that saved it


@dataclass(frozen=True)
class SavedBroadcast:
    zone: str
    station: str
    stage: int
    stage_name: str
    sequence: str
    status: str  # started, finished, interrupted
    outcome: str  # the sequencer's outcome (done, pre-empted …); "" until finished
    started: float
    finished: float | None
    siren_on_s: float
    clips_played: list[str]
    faults: list[str]

    def as_json(self) -> dict[str, Any]:
        return {"zone": self.zone, "station": self.station, "stage": self.stage,
                "stage_name": self.stage_name, "sequence": self.sequence,
                "status": self.status, "outcome": self.outcome, "started": _iso(self.started),
                "finished": _iso(self.finished), "siren_on_s": round(self.siren_on_s, 3),
                "clips_played": self.clips_played, "faults": self.faults}


@dataclass(frozen=True)
class Inhibit:
    id: int
    scope: str  # station or zone
    target: str
    reason: str
    created: float
    expires: float | None
    cleared: float | None
    by: str = ""  # who asked for it (a command's sender)


@dataclass(frozen=True)
class JobRun:
    job: str
    fire_time: float
    started: float
    finished: float | None
    status: str  # started, then ok, failed, skipped, aborted or interrupted
    result: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"job": self.job, "fire_time": _iso(self.fire_time),
                "started": _iso(self.started), "finished": _iso(self.finished),
                "status": self.status, "result": self.result}


class StateStore:
    """The daemon's state database. Use `StateStore.open(path)`; close it (or use `with`).

    Not thread-safe: the daemon calls it from its event loop only. Writers never raise: a
    failed write is logged and shown in `problem`.
    """

    def __init__(self, db: sqlite3.Connection, path: Path | None, *, fresh: bool,
                 problem: str = "") -> None:
        self._db = db
        self.path = path  # None: in memory
        self.fresh = fresh  # nothing was restored from a previous run
        self.problem = problem  # what went wrong with the file, for /status
        self._write_failed = False

    # ---- opening ---------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path) -> StateStore:
        """Open (or create) the state at `path`; never raises (see the module docstring)."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return cls._in_memory(f"cannot create the folder of {path}: {exc}")
        existed = path.exists()
        try:
            db = _connect(path)
        except (sqlite3.Error, Unusable) as exc:
            if not existed:
                return cls._in_memory(f"cannot create {path}: {exc}")
            aside = set_aside(path)
            if aside is None:
                return cls._in_memory(f"{path} is unusable ({exc}) and cannot be renamed")
            problem = f"{path} was unusable ({exc}); renamed to {aside.name}"
            log.error("state file unusable path=%s: %s; renamed to %s, starting with a "
                      "fresh state (stages are not restored)", path, exc, aside)
            try:
                return cls(_connect(path), path, fresh=True, problem=problem)
            except (sqlite3.Error, Unusable) as again:
                return cls._in_memory(f"{problem}; a fresh file failed too: {again}")
        store = cls(db, path, fresh=not existed)
        if existed and store.last_cycle() is None:
            store.fresh = True
        return store

    @classmethod
    def _in_memory(cls, problem: str) -> StateStore:
        log.error("state store: %s; keeping the state in memory: nothing will survive the "
                  "next restart", problem)
        db = sqlite3.connect(":memory:", isolation_level=None)
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        return cls(db, None, fresh=True, problem=problem)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- transactions ----------------------------------------------------------------

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:  # a failed COMMIT leaves it open
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            raise

    def _write(self, what: str, work: Callable[[sqlite3.Connection], T]) -> T | None:
        """`work` in one transaction; a failure is logged (once per failing spell) and
        shown in `problem`, never raised."""
        try:
            with self._tx() as db:
                done = work(db)
        except sqlite3.Error as exc:
            self.problem = f"cannot write {what}: {exc}"
            if not self._write_failed:
                log.error("state store: cannot write %s: %s (the daemon goes on; this will "
                          "not survive a restart)", what, exc)
            self._write_failed = True
            return None
        if self._write_failed:
            log.info("state store: writing again")
            self.problem = ""
        self._write_failed = False
        return done

    def _rows(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        try:
            return list(self._db.execute(sql, args))
        except sqlite3.Error as exc:
            log.error("state store: cannot read (%s): %s", sql.split()[3], exc)
            return []

    # ---- cycles: stages, rain readings, counter baselines -----------------------------

    def last_cycle(self) -> float | None:
        rows = self._rows("SELECT value FROM meta WHERE key = 'last_cycle'")
        return float(rows[0][0]) if rows else None

    def stages(self) -> dict[str, SavedStage]:
        return {r[0]: SavedStage(r[0], r[1], r[2], r[3])
                for r in self._rows("SELECT station, stage, entered, changed FROM stages")}

    def counters(self) -> dict[str, tuple[int, float]]:
        """Counter baselines: station → (raw count, when it was read)."""
        return {r[0]: (r[1], r[2]) for r in self._rows("SELECT station, raw, read FROM counters")}

    def rain_readings(self, since: float) -> dict[str, list[tuple[float, float | None, Quality]]]:
        """Rain readings after `since`, oldest first, by station."""
        out: dict[str, list[tuple[float, float | None, Quality]]] = {}
        for r in self._rows("SELECT station, time, increment_mm, quality FROM rain_readings "
                            "WHERE time > ? ORDER BY time", since):
            out.setdefault(r[0], []).append((r[1], r[2], Quality(r[3])))
        return out

    def save_cycle(self, when: float, *, stages: dict[str, tuple[int, float | None]],
                   counters: dict[str, tuple[int, float]],
                   rain: list[tuple[str, float | None, Quality]]) -> None:
        """One cycle, in one transaction: its time, the stages (stage, entered) and counter
        baselines (raw, read) that changed, and the rain readings (station, increment,
        quality) stamped `when`."""
        def work(db: sqlite3.Connection) -> None:
            db.execute("INSERT OR REPLACE INTO meta VALUES ('last_cycle', ?)", (when,))
            db.executemany("INSERT OR REPLACE INTO stages VALUES (?, ?, ?, ?)",
                           [(k, s, e, when) for k, (s, e) in stages.items()])
            db.executemany("INSERT OR REPLACE INTO counters VALUES (?, ?, ?)",
                           [(k, raw, t) for k, (raw, t) in counters.items()])
            db.executemany("INSERT OR REPLACE INTO rain_readings VALUES (?, ?, ?, ?)",
                           [(sid, when, mm, q.value) for sid, mm, q in rain])
            if rain:
                db.execute("DELETE FROM rain_readings WHERE time < ?", (when - RAIN_KEEP_S,))

        self._write("the cycle", work)

    # ---- broadcasts ------------------------------------------------------------------

    def broadcast_started(self, zone: str, station: str, stage: int, stage_name: str,
                          sequence: str, started: float) -> None:
        self._write(f"the start of a broadcast on {zone}", lambda db: db.execute(
            "INSERT OR REPLACE INTO broadcasts (zone, station, stage, stage_name, sequence, "
            "status, started) VALUES (?, ?, ?, ?, ?, 'started', ?)",
            (zone, station, stage, stage_name, sequence, started)))

    def broadcast_finished(self, zone: str, station: str, stage: int, stage_name: str,
                           sequence: str, *, outcome: str, started: float, finished: float,
                           siren_on_s: float, clips_played: list[str],
                           faults: list[str]) -> None:
        self._write(f"the end of a broadcast on {zone}", lambda db: db.execute(
            "INSERT OR REPLACE INTO broadcasts VALUES (?, ?, ?, ?, ?, 'finished', ?, ?, ?, ?, "
            "?, ?)", (zone, station, stage, stage_name, sequence, outcome, started, finished,
                      siren_on_s, json.dumps(clips_played), json.dumps(faults))))

    def last_broadcasts(self) -> dict[str, SavedBroadcast]:
        return {r[0]: SavedBroadcast(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8],
                                     r[9], json.loads(r[10]), json.loads(r[11]))
                for r in self._rows("SELECT * FROM broadcasts ORDER BY zone")}

    def interrupt_broadcasts(self) -> list[SavedBroadcast]:
        """Mark the broadcasts a previous run left `started` as `interrupted`; return them."""
        found = [b for b in self.last_broadcasts().values() if b.status == "started"]
        if found:
            self._write("interrupted broadcasts", lambda db: db.execute(
                "UPDATE broadcasts SET status = 'interrupted', outcome = 'interrupted' "
                "WHERE status = 'started'"))
        return [dataclasses.replace(b, status="interrupted", outcome="interrupted")
                for b in found]

    # ---- inhibits (the table; what they do is the broadcasts' business) ---------------

    def add_inhibit(self, scope: str, target: str, reason: str, created: float,
                    expires: float | None, by: str = "") -> int | None:
        return self._write("an inhibit", lambda db: db.execute(
            "INSERT INTO inhibits (scope, target, reason, created, expires, by) VALUES "
            "(?, ?, ?, ?, ?, ?)", (scope, target, reason, created, expires, by)).lastrowid)

    def clear_inhibit(self, inhibit_id: int, cleared: float) -> None:
        self._write("an inhibit", lambda db: db.execute(
            "UPDATE inhibits SET cleared = ? WHERE id = ? AND cleared IS NULL",
            (cleared, inhibit_id)))

    def inhibits(self, now: float) -> list[Inhibit]:
        """Inhibits in force at `now` (not cleared, not expired)."""
        return [Inhibit(*r) for r in self._rows(
            "SELECT id, scope, target, reason, created, expires, cleared, by FROM inhibits "
            "WHERE cleared IS NULL AND (expires IS NULL OR expires > ?) "
            "ORDER BY id", now)]

    # ---- commands: ids executed at most once, and the audit record --------------------

    def command_seen(self, command_id: str, received: float, keep_s: float) -> bool | None:
        """Record a command id: True when it is new (and now recorded), False when it was
        recorded before, None when it is not there and cannot be recorded (a full disk: the
        command handler decides what may run unrecorded). Ids are kept `keep_s` (longer than
        any command may live)."""
        def work(db: sqlite3.Connection) -> bool:
            cur = db.execute("INSERT OR IGNORE INTO command_ids (id, received) VALUES (?, ?)",
                             (command_id, received))
            # ids older than the longest TTL can no longer be replayed: forget them
            db.execute("DELETE FROM command_ids WHERE received < ?", (received - keep_s,))
            return cur.rowcount == 1
        recorded = self._write("a command id", work)
        if recorded is None and self._rows("SELECT 1 FROM command_ids WHERE id = ?",
                                           command_id):
            return False  # the write failed, but the id was recorded before
        return recorded

    def audit_command(self, when: float, command_id: str | None, sender: str, action: str,
                      status: str, reason: str, detail: dict[str, Any]) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.execute("INSERT INTO command_audit (time, id, sender, action, status, reason, "
                       "detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (when, command_id, sender, action, status, reason,
                        json.dumps(detail, ensure_ascii=False, default=str)))
            db.execute("DELETE FROM command_audit WHERE seq <= (SELECT max(seq) FROM "
                       "command_audit) - ?", (AUDIT_KEEP,))
        self._write("the command audit", work)

    def command_audit(self) -> list[dict[str, Any]]:
        return [{"time": _iso(r[0]), "id": r[1], "sender": r[2], "action": r[3],
                 "status": r[4], "reason": r[5], "detail": json.loads(r[6])}
                for r in self._rows("SELECT time, id, sender, action, status, reason, detail "
                                    "FROM command_audit ORDER BY seq")]

    # ---- scheduled jobs --------------------------------------------------------------

    def arm_job(self, job: str, calendar: str, now: float) -> float:
        """Since when `job` has followed `calendar`: kept across restarts, reset when the
        calendar changes (fire times before it are never caught up)."""
        rows = self._rows("SELECT calendar, armed FROM jobs WHERE job = ?", job)
        if rows and rows[0][0] == calendar:
            return float(rows[0][1])
        self._write(f"job {job}", lambda db: db.execute(
            "INSERT OR REPLACE INTO jobs VALUES (?, ?, ?)", (job, calendar, now)))
        return now

    def job_started(self, job: str, fire_time: float, started: float) -> bool:
        """Record that `job` runs for `fire_time`; False when that fire time already ran (or
        the record cannot be written: a test that cannot be recorded does not run)."""
        try:
            with self._tx() as db:
                db.execute("INSERT INTO job_runs (job, fire_time, started, status) "
                           "VALUES (?, ?, ?, 'started')", (job, fire_time, started))
        except sqlite3.IntegrityError:
            return False
        except sqlite3.Error as exc:
            log.error("state store: cannot record job %s: %s; not running it", job, exc)
            self.problem = f"cannot write job {job}: {exc}"
            return False
        return True

    def job_finished(self, job: str, fire_time: float, status: str, finished: float,
                     result: dict[str, Any]) -> None:
        self._write(f"job {job}", lambda db: db.execute(
            "UPDATE job_runs SET status = ?, finished = ?, result = ? WHERE job = ? AND "
            "fire_time = ?", (status, finished, json.dumps(result, ensure_ascii=False), job,
                              fire_time)))

    def job_runs(self, job: str) -> list[JobRun]:
        return [JobRun(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in self._rows(
            "SELECT * FROM job_runs WHERE job = ? ORDER BY fire_time", job)]

    def last_job_run(self, job: str) -> JobRun | None:
        runs = self.job_runs(job)
        return runs[-1] if runs else None

    def interrupt_jobs(self) -> list[JobRun]:
        """Mark the runs a previous run of the daemon left `started` as `interrupted`."""
        found = [JobRun(r[0], r[1], r[2], r[3], "interrupted", json.loads(r[5]))
                 for r in self._rows("SELECT * FROM job_runs WHERE status = 'started'")]
        if found:
            self._write("interrupted jobs", lambda db: db.execute(
                "UPDATE job_runs SET status = 'interrupted' WHERE status = 'started'"))
        return found


def _connect(path: Path) -> sqlite3.Connection:
    """Open `path` as the state database, creating the schema in a new file."""
    return open_wal(path, _SCHEMA, SCHEMA_VERSION, integrity_check=True)


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()
