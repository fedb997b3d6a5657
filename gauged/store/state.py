"""State that survives restarts: one SQLite file in WAL mode, written by a thread of its own.

What is kept (all times are UNIX seconds, UTC, on the daemon's clock):

- `stages`: per station, the stage and when it was entered (for the dwell), as of the last
  cycle (`meta.last_cycle`);
- `rain_readings`: each rain station's readings (time, increment, quality) of the last
  24 hours, so that the rain totals and the stages that depend on them carry on where they
  stopped instead of starting again from zero;
- `counters`: the rain tip counters' baselines (raw count and the time it was read), so that
  the first reading after a short restart gives an increment, not a new baseline;
- `journal`: the broadcast journal: every broadcast decided (by a cycle, a command or a
  restart), written before it reaches its zone, and its fate: `queued`, `playing`, then
  `played`, `pre-empted`, `superseded`, `dropped`, `merged`, `inhibited`, `silenced`,
  `failed`, `interrupted` (cut by a stop or a crash) or `not-started` (still queued at a
  stop or a crash), and for the last two what the restart after it did (`restart`:
  `replayed` by the row `replay`, `reported` or `superseded`, with a `note`). Rows are kept
  JOURNAL_KEEP_S. The last broadcast of each zone (`last_broadcasts`) is read from it;
- `inhibits`: maintenance inhibits per station or zone (the table; the logic lives with the
  broadcasts);
- `command_ids`, `command_audit`: the ids of the commands received while they may live
  (each runs at most once, across restarts) and the outcome of every authenticated command;
- `jobs`, `job_runs`: the scheduled tests: since when each calendar is armed, and every run
  by its scheduled fire time (at most one run per fire time, see gauged/field/prooftests.py).

Threads: every statement runs in the store's writer thread (gauged/store/writer.py), never
on the event loop. The methods here may be called from any thread: most wait for their
statement (a few hundred microseconds plus whatever is queued before it); the journal's fate
updates (`journal_fate`) and the cycle's commit (`submit_cycle`) return a Future at once, and
the daemon waits for the cycle's commit with a bound (`writer.settled`). A busy database
(another process holding its lock) is waited for at most BUSY_TIMEOUT_MS, then the write
fails (logged), never the daemon.

Durability: each change is one small transaction, committed before the action that depends
on it: a cycle's stages and its broadcasts' journal rows before the broadcasts reach the
zones, a test run's row before its first relay write. A commit is in the operating system
when it returns (WAL, `synchronous = NORMAL`): it survives a crash of the daemon, `kill -9`
and a watchdog abort without waiting for the disk. The writer's syncer thread fsyncs it a
moment later (one fsync for all commits before it), so that it survives a power cut too;
the writes that must be on disk before their caller goes on (a command id, a test run, an
inhibit) wait for that fsync (`durable=True` below). What a power cut can cost is the last
fsync's worth of commits (on an SD card, about 100 ms): a stage then re-sounds after the
restart rather than go unheard (the stage and the journal row of its broadcast are one
transaction).

Failure: a siren system never refuses to run because of its state file. A file that cannot
be opened as this database (corrupt, not SQLite, written by a newer gauged) is renamed
aside (`<name>.corrupt-<UTC time>`, with its `-wal` and `-shm`) with an ERROR log, and a
fresh one is started; when the folder cannot be written at all, the state lives in memory
(ERROR: nothing will survive the next restart). A write that fails later is logged at ERROR
once, shown in /status, and the daemon goes on.

Restart policy (gauged/daemon/restore.py applies it; the store only remembers):

- Relays are driven OFF first, then stages are restored *without re-sounding*: a restored
  stage-3 station whose next reading is still stage 3 makes no transition and no broadcast;
  a reading at stage 4 broadcasts stage 4 only. Confirmation and clear counts start again
  (a restored stage is confirmed or cleared by fresh readings); counter baselines resume only
  after a short gap (a few cycles); stages older than `[state] max_age_s` are not restored
  at all (after a long outage the public hears the current stage again).
- A broadcast the journal shows decided but never started, or cut short (by a stop, a crash,
  a watchdog abort), is played again from its start if its stage still stands and it was
  decided at most `[state] replay_max_age_min` ago (15 min), unless a higher stage was
  broadcast on its zone since; otherwise it is reported (log, MQTT `event/broadcast_missed`,
  /status). A broadcast that finished is never replayed, and a replay that is cut short
  again is reported, not replayed a second time. README "State, restarts and scheduled
  tests" states the policy for operators.
- A scheduled test cut short by a crash counts as run (`interrupted`): not re-run.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self, TypeVar

from gauged.alarm.quality import Quality
from gauged.alarm.types import BroadcastRequest
from gauged.store.sqlite_file import Unusable, open_wal, set_aside
from gauged.store.writer import Writer

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
T = TypeVar("T")
RAIN_KEEP_S = 86400.0  # rain readings kept for the longest rolling window (24 h)
AUDIT_KEEP = 10_000  # command audit rows kept
JOURNAL_KEEP_S = 30 * 86400.0  # journal rows kept (those a restart has yet to judge: all)
BUSY_TIMEOUT_MS = 250  # how long a write waits for another process's lock, then fails
DURABLE_WAIT_S = 1.0  # how long a `durable` write waits for its fsync (then goes on, logged)

# The fates of a broadcast that a stop or a crash leaves unfinished: a restart judges them.
UNFINISHED = ("queued", "playing", "interrupted", "not-started")
# What became of a played broadcast (BroadcastRecord.outcome) in the journal's words.
FATES = {"done": "played"}

_JOURNAL = """
CREATE TABLE journal (
    id INTEGER PRIMARY KEY, decided REAL NOT NULL,
    zone TEXT NOT NULL, station TEXT NOT NULL, stations TEXT NOT NULL DEFAULT '[]',
    stage INTEGER NOT NULL, stage_name TEXT NOT NULL, sequence TEXT NOT NULL,
    kind TEXT NOT NULL, siren_s REAL NOT NULL DEFAULT 0, clips TEXT NOT NULL DEFAULT '[]',
    fate TEXT NOT NULL, started REAL, finished REAL, siren_on_s REAL NOT NULL DEFAULT 0,
    clips_played TEXT NOT NULL DEFAULT '[]', faults TEXT NOT NULL DEFAULT '[]',
    replay_of INTEGER, cut_before INTEGER NOT NULL DEFAULT 0,
    restart TEXT, replay INTEGER, note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX journal_zone ON journal (zone, id);
"""

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
""" + _JOURNAL

# Version 1 kept only the last broadcast per zone (`broadcasts`): its rows become journal rows
# (one left `started` by a crash is judged by the next start like any unfinished one).
_UPGRADES = {1: _JOURNAL + """
INSERT INTO journal (decided, zone, station, stage, stage_name, sequence, kind, fate, started,
                     finished, siren_on_s, clips_played, faults, restart, note)
    SELECT started, zone, station, stage, stage_name, sequence, 'stage',
           CASE status WHEN 'started' THEN 'playing' WHEN 'interrupted' THEN 'interrupted'
                ELSE CASE outcome WHEN 'done' THEN 'played' ELSE outcome END END,
           started, finished, siren_on_s, clips_played, faults,
           CASE status WHEN 'interrupted' THEN 'reported' END,
           CASE status WHEN 'interrupted' THEN 'reported by gauged before the journal' ELSE ''
           END
    FROM broadcasts ORDER BY started;
DROP TABLE broadcasts;
"""}


@dataclass(frozen=True)
class SavedStage:
    station: str
    stage: int
    entered: float | None  # when the stage was entered (None: unknown)
    changed: float  # the cycle that saved it


@dataclass(frozen=True)
class SavedBroadcast:
    """A zone's last broadcast that started, as /status shows it after a restart."""

    zone: str
    station: str
    stage: int
    stage_name: str
    sequence: str
    status: str  # started (playing), finished, interrupted
    outcome: str  # the sequencer's outcome (done, pre-empted …)
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
class JournalEntry:
    """One row of the broadcast journal (see the module docstring)."""

    id: int
    decided: float  # the time of the cycle (or command) that decided it
    zone: str
    station: str
    stations: tuple[str, ...]
    stage: int
    stage_name: str
    sequence: str
    kind: str
    siren_s: float
    clips: tuple[str, ...]
    fate: str
    started: float | None = None
    finished: float | None = None
    siren_on_s: float = 0.0
    clips_played: list[str] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    replay_of: int | None = None  # the row first decided, when this one replays it
    cut_before: bool = False  # an earlier row of its decision was cut short
    restart: str | None = None  # what a restart did with it: replayed, reported, superseded
    replay: int | None = None  # the row that replays it
    note: str = ""

    @classmethod
    def of(cls, id: int, request: BroadcastRequest, fate: str, note: str = "") -> JournalEntry:
        return cls(id, request.time.timestamp(), request.zone, request.station,
                   request.stations, request.stage, request.stage_name, request.sequence,
                   request.kind, request.siren_s, request.clips, fate, note=note)

    def request(self) -> BroadcastRequest:
        """The broadcast again (a replay plays this)."""
        return BroadcastRequest(
            time=datetime.fromtimestamp(self.decided, UTC), zone=self.zone,
            station=self.station, stage=self.stage, stage_name=self.stage_name,
            sequence=self.sequence, siren_s=self.siren_s, clips=self.clips, kind=self.kind,
            stations=self.stations)

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "decided": _iso(self.decided), "zone": self.zone,
                "station": self.station, "stations": list(self.stations or (self.station,)),
                "stage": self.stage, "stage_name": self.stage_name, "sequence": self.sequence,
                "kind": self.kind, "fate": self.fate, "started": _iso(self.started),
                "finished": _iso(self.finished), "siren_on_s": round(self.siren_on_s, 3),
                "clips_played": self.clips_played, "faults": self.faults,
                "replay_of": self.replay_of, "restart": self.restart, "replay": self.replay,
                "note": self.note}

    def saved(self) -> SavedBroadcast:
        status = {"playing": "started", "interrupted": "interrupted"}.get(self.fate, "finished")
        outcome = {"played": "done"}.get(self.fate, self.fate)
        return SavedBroadcast(self.zone, self.station, self.stage, self.stage_name,
                              self.sequence, status, outcome, self.started or self.decided,
                              self.finished, self.siren_on_s, self.clips_played, self.faults)

    def _row(self) -> tuple[Any, ...]:
        return (self.id, self.decided, self.zone, self.station, json.dumps(self.stations),
                self.stage, self.stage_name, self.sequence, self.kind, self.siren_s,
                json.dumps(self.clips, ensure_ascii=False), self.fate, self.started,
                self.finished, self.siren_on_s,
                json.dumps(self.clips_played, ensure_ascii=False),
                json.dumps(self.faults, ensure_ascii=False), self.replay_of,
                int(self.cut_before), self.restart, self.replay, self.note)


_JOURNAL_COLUMNS = ("id, decided, zone, station, stations, stage, stage_name, sequence, kind, "
                    "siren_s, clips, fate, started, finished, siren_on_s, clips_played, faults, "
                    "replay_of, cut_before, restart, replay, note")
_INSERT_JOURNAL = f"INSERT INTO journal ({_JOURNAL_COLUMNS}) VALUES ({', '.join('?' * 22)})"


def _entry(r: sqlite3.Row | tuple[Any, ...]) -> JournalEntry:
    return JournalEntry(r[0], r[1], r[2], r[3], tuple(json.loads(r[4])), r[5], r[6], r[7], r[8],
                        r[9], tuple(json.loads(r[10])), r[11], r[12], r[13], r[14],
                        json.loads(r[15]), json.loads(r[16]), r[17], bool(r[18]), r[19], r[20],
                        r[21])


@dataclass(frozen=True)
class RestartDecision:
    """What a start does with an unfinished journal row: its fate now (`interrupted` or
    `not-started`), `restart` (replayed, reported, superseded), why, and the replay's row."""

    entry: JournalEntry
    fate: str
    restart: str
    note: str
    replay: JournalEntry | None = None


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

    Thread-safe: every statement runs in the store's writer thread. Writers never raise: a
    failed write is logged and shown in `problem`.
    """

    def __init__(self, db: sqlite3.Connection, path: Path | None, *, fresh: bool,
                 problem: str = "") -> None:
        self._db = db  # (tests reach it; the daemon never does)
        self.path = path  # None: in memory
        self.fresh = fresh  # nothing was restored from a previous run
        self.problem = problem  # what went wrong with the file, for /status
        self._write_failed = False
        self.writer = Writer(db, path, name="gauged-state", restart=self._restart_wal)
        self._ids_lock = threading.Lock()
        self._ids = itertools.count(1 + int(self._read(
            "the journal", lambda db: db.execute(
                "SELECT coalesce(max(id), 0) FROM journal").fetchone()[0], 0)))

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
        db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        return cls(db, None, fresh=True, problem=problem)

    def close(self) -> None:
        """Write what was submitted, fsync it, close the file."""
        self.writer.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def flush(self) -> None:
        """Wait until every statement submitted so far has run (tests; start-up)."""
        self.writer.call(lambda db: None)

    # ---- transactions (in the writer thread) -----------------------------------------

    @staticmethod
    @contextlib.contextmanager
    def _tx(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # a failed COMMIT leaves it open
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise

    def _job(self, what: str, work: Callable[[sqlite3.Connection], T]
             ) -> Callable[[sqlite3.Connection], T | None]:
        """`work` in one transaction; a failure is logged (once per failing spell) and
        shown in `problem`, never raised."""
        def run(db: sqlite3.Connection) -> T | None:
            try:
                with self._tx(db):
                    done = work(db)
            except sqlite3.Error as exc:
                self._failed(f"cannot write {what}: {exc}")
                return None
            if self._write_failed:
                log.info("state store: writing again")
                self.problem = ""
            self._write_failed = False
            return done
        return run

    def _failed(self, problem: str) -> None:
        self.problem = problem
        if not self._write_failed:
            log.error("state store: %s (the daemon goes on; this will not survive a "
                      "restart)", problem)
        self._write_failed = True

    def _write(self, what: str, work: Callable[[sqlite3.Connection], T], *,
               durable: bool = False) -> T | None:
        """Run `work` in a transaction and wait for it; with `durable`, for its fsync too."""
        done = self.writer.call(self._job(what, work))
        if durable and not self.writer.durable(DURABLE_WAIT_S):
            log.warning("state store: %s not on disk after %g s (slow disk?); going on",
                        what, DURABLE_WAIT_S)
        return done

    def _post(self, what: str, work: Callable[[sqlite3.Connection], T]) -> Future[T | None]:
        """Run `work` in a transaction in its turn; do not wait."""
        return self.writer.submit(self._job(what, work))

    def _read(self, what: str, work: Callable[[sqlite3.Connection], T], default: T) -> T:
        def run(db: sqlite3.Connection) -> T:
            try:
                return work(db)
            except sqlite3.Error as exc:
                log.error("state store: cannot read %s: %s", what, exc)
                return default
        return self.writer.call(run)

    def _rows(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        return self._read(f"({sql.split()[3]})", lambda db: list(db.execute(sql, args)), [])

    def _restart_wal(self, db: sqlite3.Connection) -> None:
        """After a checkpoint: a small write that starts the WAL over (gauged/store/writer.py)."""
        with contextlib.suppress(sqlite3.Error):
            db.execute("INSERT OR REPLACE INTO meta VALUES ('checkpoint', "
                       "strftime('%s', 'now'))")

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
                   rain: list[tuple[str, float | None, Quality]],
                   journal: Sequence[JournalEntry] = ()) -> None:
        """`submit_cycle`, and wait for it."""
        self.submit_cycle(when, stages=stages, counters=counters, rain=rain,
                          journal=journal).result()

    def submit_cycle(self, when: float, *, stages: dict[str, tuple[int, float | None]],
                     counters: dict[str, tuple[int, float]],
                     rain: list[tuple[str, float | None, Quality]],
                     journal: Sequence[JournalEntry] = ()) -> Future[None]:
        """One cycle, in one transaction: its time, the stages (stage, entered) and counter
        baselines (raw, read) that changed, the rain readings (station, increment, quality)
        stamped `when`, and the journal rows of the broadcasts it decided. Returns at once;
        the Future is done once it is committed (or failed, logged)."""
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
            db.executemany(_INSERT_JOURNAL, [e._row() for e in journal])

        return self._post("the cycle", work)

    # ---- the broadcast journal -------------------------------------------------------

    def journal_id(self) -> int:
        """A new journal row id (ids follow the order of the decisions)."""
        with self._ids_lock:
            return next(self._ids)

    def journal_add(self, entries: Sequence[JournalEntry]) -> Future[None]:
        """Journal broadcasts decided outside a cycle (a command); returns at once."""
        def work(db: sqlite3.Connection) -> None:
            db.executemany(_INSERT_JOURNAL, [e._row() for e in entries])
        return self._post("the broadcast journal", work)

    def journal_fate(self, entry: int, fate: str, *, started: float | None = None,
                     finished: float | None = None, siren_on_s: float | None = None,
                     clips_played: list[str] | None = None,
                     faults: list[str] | None = None) -> Future[None]:
        """What became of a journaled broadcast (fields left None stay as they are);
        returns at once."""
        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE journal SET fate = ?, started = coalesce(?, started), "
                "finished = coalesce(?, finished), siren_on_s = coalesce(?, siren_on_s), "
                "clips_played = coalesce(?, clips_played), faults = coalesce(?, faults) "
                "WHERE id = ?",
                (fate, started, finished, siren_on_s,
                 None if clips_played is None else json.dumps(clips_played, ensure_ascii=False),
                 None if faults is None else json.dumps(faults, ensure_ascii=False), entry))
        return self._post("the broadcast journal", work)

    def journal(self, since_id: int = 0) -> list[JournalEntry]:
        """The journal rows after `since_id`, in order."""
        return [_entry(r) for r in self._rows(
            f"SELECT {_JOURNAL_COLUMNS} FROM journal WHERE id > ? ORDER BY id", since_id)]

    def journal_unfinished(self) -> list[JournalEntry]:
        """The rows a restart has to judge: unfinished and not judged yet, in order."""
        return [_entry(r) for r in self._rows(
            f"SELECT {_JOURNAL_COLUMNS} FROM journal WHERE restart IS NULL AND fate IN "
            f"({', '.join('?' * len(UNFINISHED))}) ORDER BY id", *UNFINISHED)]

    def journal_started(self, since: float) -> list[JournalEntry]:
        """The rows of broadcasts that started at or after `since`."""
        return [_entry(r) for r in self._rows(
            f"SELECT {_JOURNAL_COLUMNS} FROM journal WHERE started >= ? ORDER BY id", since)]

    def journal_restart(self, decisions: Sequence[RestartDecision], now: float) -> None:
        """A start's judgement of the unfinished rows, and their replays, in one durable
        transaction; rows older than JOURNAL_KEEP_S that no restart has to judge go."""
        def work(db: sqlite3.Connection) -> None:
            for d in decisions:
                db.execute("UPDATE journal SET fate = ?, restart = ?, note = ?, replay = ? "
                           "WHERE id = ?", (d.fate, d.restart, d.note,
                                            d.replay.id if d.replay else None, d.entry.id))
                if d.replay is not None:
                    db.execute(_INSERT_JOURNAL, d.replay._row())
            db.execute(f"DELETE FROM journal WHERE decided < ? AND NOT (restart IS NULL AND "
                       f"fate IN ({', '.join('?' * len(UNFINISHED))}))",
                       (now - JOURNAL_KEEP_S, *UNFINISHED))
        self._write("the broadcast journal", work, durable=True)

    def last_broadcasts(self) -> dict[str, SavedBroadcast]:
        """Each zone's last broadcast that started."""
        return {e.zone: e.saved() for e in (_entry(r) for r in self._rows(
            f"SELECT {_JOURNAL_COLUMNS} FROM journal WHERE id IN (SELECT max(id) FROM journal "
            "WHERE started IS NOT NULL GROUP BY zone) ORDER BY zone"))}

    # ---- inhibits (the table; what they do is the broadcasts' business) ---------------

    def add_inhibit(self, scope: str, target: str, reason: str, created: float,
                    expires: float | None, by: str = "") -> int | None:
        return self._write("an inhibit", lambda db: db.execute(
            "INSERT INTO inhibits (scope, target, reason, created, expires, by) VALUES "
            "(?, ?, ?, ?, ?, ?)", (scope, target, reason, created, expires, by)).lastrowid,
            durable=True)

    def clear_inhibit(self, inhibit_id: int, cleared: float) -> None:
        """Returns at once (the clearing is written in its turn)."""
        self._post("an inhibit", lambda db: db.execute(
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
        recorded = self._write("a command id", work, durable=True)
        if recorded is None and self._rows("SELECT 1 FROM command_ids WHERE id = ?",
                                           command_id):
            return False  # the write failed, but the id was recorded before
        return recorded

    def audit_command(self, when: float, command_id: str | None, sender: str, action: str,
                      status: str, reason: str, detail: dict[str, Any]) -> None:
        """Returns at once (the row is written in its turn)."""
        def work(db: sqlite3.Connection) -> None:
            db.execute("INSERT INTO command_audit (time, id, sender, action, status, reason, "
                       "detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (when, command_id, sender, action, status, reason,
                        json.dumps(detail, ensure_ascii=False, default=str)))
            db.execute("DELETE FROM command_audit WHERE seq <= (SELECT max(seq) FROM "
                       "command_audit) - ?", (AUDIT_KEEP,))
        self._post("the command audit", work)

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
            "INSERT OR REPLACE INTO jobs VALUES (?, ?, ?)", (job, calendar, now)), durable=True)
        return now

    def job_started(self, job: str, fire_time: float, started: float) -> bool:
        """Record that `job` runs for `fire_time`; False when that fire time already ran (or
        the record cannot be written: a test that cannot be recorded does not run)."""
        def work(db: sqlite3.Connection) -> bool:
            try:
                with self._tx(db):
                    db.execute("INSERT INTO job_runs (job, fire_time, started, status) "
                               "VALUES (?, ?, ?, 'started')", (job, fire_time, started))
            except sqlite3.IntegrityError:
                return False
            except sqlite3.Error as exc:
                log.error("state store: cannot record job %s: %s; not running it", job, exc)
                self.problem = f"cannot write job {job}: {exc}"
                return False
            return True

        recorded = self.writer.call(work)
        if recorded:
            self.writer.durable(DURABLE_WAIT_S)
        return recorded

    def job_finished(self, job: str, fire_time: float, status: str, finished: float,
                     result: dict[str, Any]) -> None:
        """Returns at once (the result is written in its turn)."""
        self._post(f"job {job}", lambda db: db.execute(
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


    # ---- for the stores kept beside this one in the same file (gauged/store/acks.py) ---

    def write(self, what: str, work: Callable[[sqlite3.Connection], T], *,
              durable: bool = False) -> T | None:
        """`work` in one transaction in the writer thread, waited for (with `durable`, its
        fsync too); None when it failed (logged, shown in `problem`)."""
        return self._write(what, work, durable=durable)

    def post(self, what: str, work: Callable[[sqlite3.Connection], T]) -> Future[T | None]:
        """`work` in one transaction in its turn, not waited for."""
        return self._post(what, work)

    def rows(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        """The rows of a query ([] when it fails: logged)."""
        return self._rows(sql, *args)


def _connect(path: Path) -> sqlite3.Connection:
    """Open `path` as the state database, creating the schema in a new file."""
    return open_wal(path, _SCHEMA, SCHEMA_VERSION, integrity_check=True,
                    check_same_thread=False,  # the writer thread (gauged/store/writer.py)
                    pragmas=["synchronous = NORMAL", f"busy_timeout = {BUSY_TIMEOUT_MS}",
                             "wal_autocheckpoint = 0"], upgrades=_UPGRADES)


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()
