"""The spool: every point bound for the time-series database, kept in SQLite until the
database has accepted it.

One SQLite file in WAL mode with `synchronous=FULL` (as gauged/state.py): `put` commits the
points (one fsync'd transaction) before it returns, so a point the spool accepted survives a
crash or a power cut. The writer (gauged/influx.py) takes a batch, sends it, and only then
removes it (`remove`): a crash between the two re-sends that batch, which is harmless because
a point keeps its original series and timestamp and overwrites itself in the database. For
the same reason a removal is committed without an fsync (a removal lost in a power cut only
re-sends), so that a drain is not bound by the disk's flush rate.

Order of a batch: the *live* points first (those spooled since the last failed send, oldest
first), then the *backlog* (everything spooled before it, oldest first). After an outage the
dashboards and alerting built on the database are current again with the first batch, while
the hole the outage left fills from its oldest edge, without gaps in between.

Byte cap (`max_bytes`, over the line-protocol characters of the points held, which for
our ASCII lines are bytes; SQLite's own overhead comes on top): when a `put` would
pass it, *routine* telemetry (readings, gauge, bus and spool health) is dropped, oldest
first, and counted exactly (persisted with the deletion, in the same transaction). Points of
the *kept* class (stage changes, broadcasts, scheduled tests, faults, commands) are never
dropped: they may take the spool past its cap.

Failure: the spool never raises and never blocks the cycle for longer than its commit. When
the file cannot be opened or written (disk full, folder read-only), the points wait in
memory under the same cap and the same drop rule, the spool logs one ERROR on entering that
state and one INFO on leaving it (when a later `put` or the writer's retry gets them onto
disk), and /status shows it. Polling, stages and sirens never depend on it.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, Self, TypeVar

from gauged.sqlite_file import Unusable, open_wal, set_aside

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
REOPEN_S = 5.0  # how often a spool that could not be opened tries again
RECOVER_WRITES = 3  # writes in a row that must succeed before a failing spool is well again

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE points (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kept INTEGER NOT NULL, time REAL NOT NULL,
    line TEXT NOT NULL
);
CREATE TABLE quarantine (
    id INTEGER PRIMARY KEY, line TEXT NOT NULL, reason TEXT NOT NULL, at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class Point:
    """One spooled point: its line protocol, whether it must never be dropped, its time
    (UNIX seconds) and, once on disk, its row id (negative while it waits in memory)."""

    line: str
    kept: bool
    time: float
    id: int = 0

    @property
    def size(self) -> int:
        return len(self.line)


class Batch:
    """Points taken from the spool to send, in sending order. On-disk points come as
    segments of consecutive rows (lo, hi, count, bytes, routine bytes) with their lines
    already joined by SQLite, because a drain moves hundreds of thousands of points and
    Python objects per point would cost more than the request; points waiting in memory,
    and batches split to find a rejected point, come as rows (id, line, kept)."""

    __slots__ = ("backlog_hi", "live_hi", "parts", "rows", "segments")

    def __init__(self, rows: list[tuple[int, str, int]], live_hi: int = 0,
                 backlog_hi: int = 0,
                 segments: list[tuple[int, int, int, int, int, str]] | None = None) -> None:
        self.rows = rows
        self.segments = segments or []
        self.live_hi = live_hi  # where the next batch's live and backlog rows start
        self.backlog_hi = backlog_hi

    def __len__(self) -> int:
        return len(self.rows) + sum(seg[2] for seg in self.segments)

    @property
    def lines(self) -> list[str]:
        body = self.body()
        return body.split("\n") if body else []

    def body(self) -> str:
        """The request body: the lines, one per line (a line never holds a newline)."""
        return "\n".join([seg[5] for seg in self.segments] + [row[1] for row in self.rows])

    def halves(self) -> tuple[Batch, Batch]:
        """For a batch of rows (see Spool.expand)."""
        assert not self.segments, "expand the batch first"
        half = len(self.rows) // 2
        return Batch(self.rows[:half]), Batch(self.rows[half:])

    def runs(self) -> list[tuple[int, int]]:
        """The on-disk rows as id ranges (lo, hi). Exact: a batch is at most two runs of
        consecutive rows (live, then backlog) and rows only ever get larger ids, so every
        row in a range belongs to the batch (or is gone already)."""
        out = [(seg[0], seg[1]) for seg in self.segments]
        lo = prev = 0
        for row_id, _, _ in self.rows:
            if row_id <= 0:
                continue
            if not lo:
                lo = row_id
            elif row_id < prev:
                out.append((lo, prev))
                lo = row_id
            prev = row_id
        if lo:
            out.append((lo, prev))
        return out


@dataclass
class SpoolHealth:
    """What /status and the `spool` measurement show."""

    path: str = ""
    on_disk: bool = False  # False: the file cannot be used, points wait in memory
    points: int = 0
    bytes: int = 0
    max_bytes: int = 0
    dropped_routine: int = 0  # telemetry dropped at the byte cap, exact (kept: never)
    quarantined: int = 0  # points the database rejected (HTTP 400), set aside
    oldest_time: float | None = None  # the time of the first point held
    problem: str = ""


P = ParamSpec("P")
T = TypeVar("T")


def _locked(method: Callable[P, T]) -> Callable[P, T]:
    """One thread at a time on the connection (the writer reads ahead in a worker thread)."""
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        spool: Any = args[0]
        with spool._lock:
            return method(*args, **kwargs)
    wrapper.__doc__, wrapper.__name__ = method.__doc__, method.__name__
    return wrapper


class Spool:
    """The durable queue in front of the time-series database. `Spool.open(path, max_bytes)`;
    close it (or use `with`).

    The daemon calls it from its event loop; the writer also reads the next batch (`take`)
    and checkpoints (`maintain`) in a worker thread while a request is in flight. A lock
    serialises the connection: a `put` waits at most for one such step (a few ms).
    No method raises on a storage failure (see the module docstring).
    """

    def __init__(self, path: Path | None, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.db: sqlite3.Connection | None = None  # public for tests (e.g. max_page_count)
        self._memory: deque[Point] = deque()  # points that could not reach the file
        self._memory_seq = 0
        self._disk_points = 0
        self._disk_bytes = 0
        self._disk_routine_bytes = 0
        self._live_mark = 0  # rows above it are live, at or below it the backlog
        self._failing = False
        self._next_open = 0.0
        self._pending_trim = (0, 0)  # rows and bytes a transaction in progress drops
        self._streak = 0  # writes that succeeded in a row
        self._lock = threading.RLock()
        self.health = SpoolHealth(path=str(path) if path else "", max_bytes=max_bytes)

    # ---- opening ---------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path | None, max_bytes: int) -> Spool:
        """Open (or create) the spool at `path` (None: in memory only); never raises."""
        spool = cls(path, max_bytes)
        spool._try_open()
        spool._live_mark = spool._max_id()  # what a previous run left is backlog
        spool._update_health()
        return spool

    def _try_open(self) -> bool:
        if self.db is not None:
            return True
        if self.path is None or time.monotonic() < self._next_open:
            return False
        self._next_open = time.monotonic() + REOPEN_S
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = _connect(self.path)
            self._count()
        except (OSError, sqlite3.Error, Unusable) as exc:
            if self.db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self.db.close()
                self.db = None
            self._failed(f"cannot open {self.path}: {exc}")
            return False
        return True

    def _count(self) -> None:
        assert self.db is not None
        n, total = self.db.execute(
            "SELECT count(*), coalesce(sum(length(line)), 0) FROM points").fetchone()
        routine = self.db.execute(
            "SELECT coalesce(sum(length(line)), 0) FROM points WHERE kept = 0").fetchone()[0]
        self._disk_points, self._disk_bytes, self._disk_routine_bytes = n, total, routine
        meta = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
        self.health.dropped_routine = max(self.health.dropped_routine,
                                          int(meta.get("dropped_routine", 0)))
        self.health.quarantined = max(self.health.quarantined,
                                      int(meta.get("quarantined", 0)))

    @_locked
    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the queue -------------------------------------------------------------------

    @property
    def points(self) -> int:
        return self._disk_points + len(self._memory)

    @property
    def bytes(self) -> int:
        return self._disk_bytes + sum(p.size for p in self._memory)

    @_locked
    def put(self, points: list[Point]) -> None:
        """Make `points` durable (one transaction), dropping routine ones at the cap."""
        if not points:
            return
        self._memory.extend(self._in_memory(points))
        self._persist()
        self._enforce_cap()
        self._update_health()

    @_locked
    def retry(self) -> None:
        """Try again to move the points that wait in memory onto disk (the writer calls it
        before each batch)."""
        if self._memory:
            self._persist()
            self._update_health()

    def _in_memory(self, points: list[Point]) -> Iterator[Point]:
        for p in points:
            self._memory_seq += 1
            yield Point(p.line, p.kept, p.time, -self._memory_seq)

    def _persist(self) -> None:
        if not self._memory or not self._try_open():
            return
        rows = [(int(p.kept), p.time, p.line) for p in self._memory]
        try:
            with self._tx() as db:
                db.executemany("INSERT INTO points (kept, time, line) VALUES (?, ?, ?)", rows)
                self._trim_disk(db, extra=0)
        except sqlite3.Error as exc:
            self._failed(f"cannot write {self.path}: {exc}")
            return
        for p in self._memory:
            self._disk_points += 1
            self._disk_bytes += p.size
            if not p.kept:
                self._disk_routine_bytes += p.size
        self._memory.clear()
        self._recovered()

    def _trim_disk(self, db: sqlite3.Connection, extra: int) -> None:
        """Inside a transaction: drop the oldest routine rows while over the cap."""
        over = self._disk_bytes + extra + sum(p.size for p in self._memory) - self.max_bytes
        if over <= 0 or self._disk_routine_bytes <= 0:
            return
        ids, freed = [], 0
        with contextlib.closing(db.execute(
                "SELECT id, length(line) FROM points WHERE kept = 0 ORDER BY id")) as rows:
            for row_id, size in rows:  # the oldest first, only as far as needed
                if freed >= over:
                    break
                ids.append(row_id)
                freed += size
        db.executemany("DELETE FROM points WHERE id = ?", [(i,) for i in ids])
        dropped = self.health.dropped_routine + len(ids)
        db.execute("INSERT OR REPLACE INTO meta VALUES ('dropped_routine', ?)", (dropped,))
        # counted in memory only once the transaction commits (see _committed_trim)
        self._pending_trim = (len(ids), freed)

    def _enforce_cap(self) -> None:
        """Over the cap: drop the oldest routine points, first from disk, then from
        memory; counted exactly."""
        if self.bytes <= self.max_bytes:
            return
        if self.db is not None and self._disk_routine_bytes > 0:
            try:
                with self._tx() as db:
                    self._trim_disk(db, extra=0)
            except sqlite3.Error as exc:
                self._failed(f"cannot drop telemetry from {self.path}: {exc}")
        over = self.bytes - self.max_bytes
        if over > 0 and self._memory:
            keep: deque[Point] = deque()
            for p in self._memory:
                if over > 0 and not p.kept:
                    over -= p.size
                    self.health.dropped_routine += 1
                else:
                    keep.append(p)
            self._memory = keep

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        assert self.db is not None
        self._pending_trim = (0, 0)
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
            self.db.execute("COMMIT")
        except BaseException:
            self._pending_trim = (0, 0)
            if self.db.in_transaction:  # a failed COMMIT leaves it open
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
            raise
        n, freed = self._pending_trim
        if n:
            self.health.dropped_routine += n
            self._disk_points -= n
            self._disk_bytes -= freed
            self._disk_routine_bytes -= freed
            self._pending_trim = (0, 0)

    @_locked
    def take(self, limit: int, after: Batch | None = None) -> Batch:
        """Up to `limit` points to send: live ones first, then the backlog, each oldest
        first; then points waiting in memory. Nothing is removed. With `after` (a batch in
        flight), the points that follow it."""
        live_from, backlog_from, skip = self._live_mark, 0, set()
        if after is not None:
            live_from = max(live_from, after.live_hi)
            backlog_from = after.backlog_hi
            skip = {row[0] for row in after.rows if row[0] < 0}
        segments: list[tuple[int, int, int, int, int, str]] = []
        live_hi, backlog_hi, taken = live_from, backlog_from, 0
        if self.db is not None and self._disk_points:
            try:
                for where, args in (("id > ?", (live_from,)),
                                    ("id > ? AND id <= ?", (backlog_from, self._live_mark))):
                    if taken >= limit:
                        break
                    n, lo, hi, size, routine, body = self.db.execute(
                        "SELECT count(*), min(id), max(id), coalesce(sum(length(line)), 0), "
                        "coalesce(sum(CASE kept WHEN 0 THEN length(line) ELSE 0 END), 0), "
                        "group_concat(line, char(10)) FROM (SELECT id, line, kept FROM points "
                        f"WHERE {where} ORDER BY id LIMIT ?)", (*args, limit - taken)).fetchone()
                    if n:
                        segments.append((lo, hi, n, size, routine, body))
                        taken += n
                        if where == "id > ?":
                            live_hi = hi
                        else:
                            backlog_hi = hi
            except sqlite3.Error as exc:
                self._failed(f"cannot read {self.path}: {exc}")
        rows: list[tuple[int, str, int]] = []
        for p in self._memory:
            if taken + len(rows) >= limit:
                break
            if p.id not in skip:
                rows.append((p.id, p.line, int(p.kept)))
        return Batch(rows, live_hi, backlog_hi, segments)

    @_locked
    def expand(self, batch: Batch) -> Batch:
        """The same points as rows, to split the batch (finding a rejected point)."""
        rows: list[tuple[int, str, int]] = []
        if self.db is not None:
            for lo, hi, *_ in batch.segments:
                rows += self.db.execute("SELECT id, line, kept FROM points WHERE id BETWEEN ? "
                                        "AND ? ORDER BY id", (lo, hi)).fetchall()
        return Batch(rows + batch.rows)

    @_locked
    def maintain(self) -> None:
        """Copy the write-ahead log into the database (a passive checkpoint); the writer
        calls it while a request is in flight, so that a drain does not wait for it."""
        if self.db is not None:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    @_locked
    def mark_backlog(self) -> None:
        """A send failed: everything held now is backlog; points spooled from now on are
        live and go first."""
        self._live_mark = self._max_id()

    @_locked
    def remove(self, batch: Batch) -> None:
        """The database accepted `batch`: forget it (one transaction)."""
        self._delete(batch)

    @_locked
    def quarantine(self, batch: Batch, reason: str) -> None:
        """The database rejected the point(s) of `batch` for good: move them aside (kept
        for a human, counted) instead of retrying them forever."""
        self.health.quarantined += len(batch)
        self._delete(batch, quarantine=reason)

    def _delete(self, batch: Batch, quarantine: str = "") -> None:
        gone = {row[0] for row in batch.rows if row[0] < 0}
        if gone:
            self._memory = deque(p for p in self._memory if p.id not in gone)
        runs = batch.runs()
        if runs and self.db is not None:
            disk = [row for row in batch.rows if row[0] > 0]
            n = len(disk) + sum(seg[2] for seg in batch.segments)
            size = sum(len(row[1]) for row in disk) + sum(seg[3] for seg in batch.segments)
            routine = sum(len(row[1]) for row in disk if not row[2]) + \
                sum(seg[4] for seg in batch.segments)
            deleted = 0
            try:
                # A removal need not survive a power cut: a lost one re-sends points that
                # overwrite themselves. So no fsync here (WAL, synchronous=NORMAL): the
                # drain is not bound by the disk's flush rate.
                self.db.execute("PRAGMA synchronous = NORMAL")
                with self._tx() as db:
                    for lo, hi in runs:
                        if quarantine:
                            db.execute("INSERT INTO quarantine (line, reason, at) SELECT line, "
                                       "?, ? FROM points WHERE id BETWEEN ? AND ?",
                                       (quarantine, time.time(), lo, hi))
                        deleted += db.execute("DELETE FROM points WHERE id BETWEEN ? AND ?",
                                              (lo, hi)).rowcount
                    if quarantine:
                        db.execute("INSERT OR REPLACE INTO meta VALUES ('quarantined', ?)",
                                   (self.health.quarantined,))
            except sqlite3.Error as exc:
                # the batch stays and is sent again: a duplicate, never a loss
                self._failed(f"cannot remove sent points from {self.path}: {exc}")
                return
            finally:
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("PRAGMA synchronous = FULL")
            if deleted == n:
                self._disk_points -= n
                self._disk_bytes -= size
                self._disk_routine_bytes -= routine
            else:  # the cap dropped some of these meanwhile: count afresh
                with contextlib.suppress(sqlite3.Error):
                    self._count()
            self._recovered()
        self._update_health()

    @_locked
    def quarantined(self) -> list[tuple[str, str]]:
        """The quarantined points (line, reason), oldest first."""
        if self.db is None:
            return []
        return [(line, reason) for line, reason in
                self.db.execute("SELECT line, reason FROM quarantine ORDER BY id")]

    # ---- health ----------------------------------------------------------------------

    def _max_id(self) -> int:
        if self.db is None:
            return 0
        try:
            return int(self.db.execute("SELECT coalesce(max(id), 0) FROM points").fetchone()[0])
        except sqlite3.Error:
            return self._live_mark

    def _oldest_time(self) -> float | None:
        times = [p.time for p in self._memory]
        if self.db is not None and self._disk_points:
            with contextlib.suppress(sqlite3.Error):
                # the first point held (points arrive in time order; no index on time)
                row = self.db.execute("SELECT time FROM points ORDER BY id LIMIT 1").fetchone()
                if row is not None:
                    times.append(row[0])
        return min(times, default=None)

    def _update_health(self) -> None:
        h = self.health
        h.on_disk = self.db is not None and not self._memory
        h.points, h.bytes = self.points, self.bytes
        h.oldest_time = self._oldest_time()

    def _failed(self, problem: str) -> None:
        self.health.problem = problem
        self._streak = 0
        if not self._failing:
            log.error("spool: %s: points wait in memory (cap %d bytes, oldest telemetry "
                      "dropped first); polling, stages and sirens go on", problem,
                      self.max_bytes)
        self._failing = True
        self._update_health()

    def _recovered(self) -> None:
        """A write succeeded. A nearly full disk lets a small write through now and then:
        the state is left only after RECOVER_WRITES writes in a row succeeded with nothing
        waiting in memory, so that it is logged once, not at every flap."""
        self._streak += 1
        if self._failing and self._streak >= RECOVER_WRITES and not self._memory:
            log.info("spool: writing to %s again; %d points held", self.path, self.points)
            self.health.problem = ""
            self._failing = False


def _connect(path: Path) -> sqlite3.Connection:
    """Open `path` as the spool, creating the schema in a new file; a file that is not a
    usable spool is renamed aside (its points cannot be read, a fresh spool starts)."""
    try:
        return _connect_once(path)
    except (sqlite3.DatabaseError, Unusable) as exc:
        if isinstance(exc, sqlite3.OperationalError) or not path.exists():
            raise
        aside = set_aside(path)
        if aside is None:
            raise Unusable(f"{path} is unusable ({exc}) and cannot be renamed") from exc
        log.error("spool file unusable path=%s: %s; renamed to %s, starting a fresh spool",
                  path, exc, aside)
        return _connect_once(path)


def _connect_once(path: Path) -> sqlite3.Connection:
    return open_wal(path, _SCHEMA, SCHEMA_VERSION, check_same_thread=False,  # see _locked
                    pragmas=["cache_size = -16384",  # 16 MiB: a drain re-reads what it sends
                             # the writer checkpoints while its requests are in flight
                             # (`maintain`); this is the backstop when it does not run
                             "wal_autocheckpoint = 10000"])
