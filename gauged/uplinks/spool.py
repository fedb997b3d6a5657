"""The spool: every point bound for the time-series database, kept in SQLite until the
database has accepted it.

One SQLite file in WAL mode with `synchronous=FULL` (as gauged/store/state.py): `put` commits the
points (one fsync'd transaction) before it returns, so a point the spool accepted survives a
crash or a power cut. The writer (gauged/uplinks/influx.py) takes a batch, sends it, and only then
removes it (`remove`): a crash between the two re-sends that batch, which is harmless because
a point keeps its original series and timestamp and overwrites itself in the database. For
the same reason a removal is committed without an fsync (a removal lost in a power cut only
re-sends), so that a drain is not bound by the disk's flush rate. Points are stored per
`put` and class, as chunks of at most CHUNK_POINTS lines (see gauged/uplinks/spool_file.py
for why), and a batch is whole chunks.

Order of a batch: the *live* points first (those spooled since the last failed send, oldest
first), then the *backlog* (everything spooled before it, oldest first). After an outage the
dashboards and alerting built on the database are current again with the first batch, while
the hole the outage left fills from its oldest edge, without gaps in between.

Byte cap (`max_bytes`, over the line-protocol characters of the points held, which for
our ASCII lines are bytes; SQLite's own overhead comes on top): when a `put` would
pass it, *routine* telemetry (readings, gauge, bus and spool health) is dropped, oldest
first (down to the single line: the oldest chunk loses its first lines), and counted
exactly (persisted with the deletion, in the same transaction). Points of
the *kept* class (stage changes, broadcasts, scheduled tests, faults, commands) are never
dropped: they may take the spool past its cap.

Threads: `InfluxSink` (gauged/uplinks/influx.py) puts the daemon's points from a thread of
its own, on which its writer also takes, removes and checkpoints; a lock serialises the
connection (tests and tools may call from other threads), and nothing on the event loop
waits for it (`health` returns the last figures while the lock is held).

Failure: the spool never raises and never blocks the cycle. When
the file cannot be opened or written (disk full, folder read-only), the points wait in
memory under the same cap and the same drop rule, the spool logs one ERROR on entering that
state and one INFO on leaving it (when a later `put` or the writer's retry gets them onto
disk), and /status shows it. Polling, stages and sirens never depend on it.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from gauged.store.sqlite_file import Unusable, set_aside

# Point and Batch are the spool's interface (`put`, `take`): re-exported for its users.
from gauged.uplinks.spool_file import Batch as Batch
from gauged.uplinks.spool_file import Point as Point
from gauged.uplinks.spool_file import (
    SpoolFile,
    chunk_rows,
    connect_once,
    drop_oldest_routine,
    locked,
)

log = logging.getLogger(__name__)

REOPEN_S = 5.0  # how often a spool that could not be opened tries again
RECOVER_WRITES = 3  # writes in a row that must succeed before a failing spool is well again
# Points marked sent that are deleted in one transaction once a drain is over: a deletion
# holds the spool (and a `put` waiting for it) for about 15 ms per 50,000 points.
PURGE_POINTS = 50_000


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


class Spool(SpoolFile):
    """The durable queue in front of the time-series database. `Spool.open(path, max_bytes)`;
    close it (or use `with`).

    The daemon calls it from its event loop; the writer also reads the next batch (`take`)
    and checkpoints (`maintain`) in a worker thread while a request is in flight. A lock
    serialises the connection: a `put` waits at most for one such step (a few ms).
    No method raises on a storage failure (see the module docstring).
    """

    def __init__(self, path: Path | None, max_bytes: int) -> None:
        super().__init__(path)
        self.max_bytes = max_bytes
        self._memory: deque[Point] = deque()  # points that could not reach the file
        self._memory_seq = 0
        self._disk_points = 0
        self._disk_bytes = 0
        self._disk_routine_bytes = 0
        self._live_mark = 0  # rows above it are live, at or below it the backlog
        self._failing = False
        self._next_open = 0.0
        # the batches marked sent and not yet deleted: their chunks (id ranges) and counts
        self._sent: deque[tuple[list[tuple[int, int]], tuple[int, int, int]]] = deque()
        self._streak = 0  # writes that succeeded in a row
        self._health = SpoolHealth(path=str(path) if path else "", max_bytes=max_bytes)

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
            with self._tx() as db:  # batches the last run marked sent but did not delete
                self._purge(db, opening=True)
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
        self._disk_points, self._disk_bytes, self._disk_routine_bytes = self.db.execute(
            "SELECT coalesce(sum(n), 0), coalesce(sum(bytes), 0), "
            "coalesce(sum(CASE kept WHEN 0 THEN bytes END), 0) FROM chunks").fetchone()
        meta = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
        self._health.dropped_routine = max(self._health.dropped_routine,
                                          int(meta.get("dropped_routine", 0)))
        self._health.quarantined = max(self._health.quarantined,
                                      int(meta.get("quarantined", 0)))

    # ---- the queue -------------------------------------------------------------------

    @property
    def points(self) -> int:
        return self._disk_points + len(self._memory)

    @property
    def bytes(self) -> int:
        return self._disk_bytes + sum(p.size for p in self._memory)

    @locked
    def put(self, points: list[Point]) -> None:
        """Make `points` durable (one transaction), dropping routine ones at the cap."""
        if not points:
            return
        self._memory.extend(self._in_memory(points))
        self._persist()
        self._enforce_cap()
        self._update_health()

    @locked
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
        try:
            with self._tx() as db:
                db.executemany("INSERT INTO chunks (kept, n, bytes, time, lines) "
                               "VALUES (?, ?, ?, ?, ?)", chunk_rows(self._memory))
                self._trim_disk(db)
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

    def _trim_disk(self, db: sqlite3.Connection) -> None:
        """Inside a transaction: drop the oldest routine points while over the cap (whole
        chunks, then the first lines of the next one)."""
        over = self._disk_bytes + sum(p.size for p in self._memory) - self.max_bytes
        if over <= 0 or self._disk_routine_bytes <= 0:
            return
        self._purge(db)  # (what was sent is not the oldest telemetry: it arrived)
        points, freed = drop_oldest_routine(db, over)
        dropped = self._health.dropped_routine + points
        db.execute("INSERT OR REPLACE INTO meta VALUES ('dropped_routine', ?)", (dropped,))

        def count() -> None:
            self._health.dropped_routine += points
            self._disk_points -= points
            self._disk_bytes -= freed
            self._disk_routine_bytes -= freed
        self._on_commit.append(count)

    def _purge(self, db: sqlite3.Connection, opening: bool = False,
               limit: int | None = None) -> None:
        """Inside a transaction: delete the chunks of the batches marked sent (see `remove`),
        oldest marks first, as many batches as make `limit` points (None: all). The marks
        were counted out when made, as the batches were when taken; what the cap dropped
        from them meanwhile is counted back in. (`opening`: the marks a previous run left;
        the counting starts afresh after it.)"""
        if opening:
            for lo, hi in db.execute("SELECT lo, hi FROM sent").fetchall():
                db.execute("DELETE FROM chunks WHERE id BETWEEN ? AND ?", (lo, hi))
            db.execute("DELETE FROM sent")
            return
        batches, points = 0, 0
        for _, counts in self._sent:
            if limit is not None and batches and points + counts[0] > limit:
                break
            batches += 1
            points += counts[0]
        counted, actual = [0, 0, 0], [0, 0, 0]
        for runs, counts in itertools.islice(self._sent, batches):
            for i in range(3):
                counted[i] += counts[i]
            for lo, hi in runs:
                db.execute("DELETE FROM sent WHERE lo = ? AND hi = ?", (lo, hi))
                for n, size, kept in db.execute("DELETE FROM chunks WHERE id BETWEEN ? AND ? "
                                                "RETURNING n, bytes, kept", (lo, hi)):
                    actual[0] += n
                    actual[1] += size
                    actual[2] += 0 if kept else size

        def count() -> None:
            self._disk_points += counted[0] - actual[0]
            self._disk_bytes += counted[1] - actual[1]
            self._disk_routine_bytes += counted[2] - actual[2]
            for _ in range(batches):
                self._sent.popleft()
        self._on_commit.append(count)

    def purge(self) -> None:
        """Delete the chunks marked sent, PURGE_POINTS at a time, letting a `put` in between."""
        while self.purge_step():
            pass

    def purge_step(self) -> bool:
        """Delete PURGE_POINTS of the chunks marked sent; True while more are marked (the
        writer calls it step by step on the sink's spool thread, so that puts queued there
        go in between)."""
        with self._lock:
            if not (self._sent and self.db is not None) or \
                    not self._purge_now(limit=PURGE_POINTS):
                return False
            return bool(self._sent)

    def _enforce_cap(self) -> None:
        """Over the cap: drop the oldest routine points, first from disk, then from
        memory; counted exactly."""
        if self.bytes <= self.max_bytes:
            return
        if self.db is not None and self._disk_routine_bytes > 0:
            try:
                with self._tx() as db:
                    self._trim_disk(db)
            except sqlite3.Error as exc:
                self._failed(f"cannot drop telemetry from {self.path}: {exc}")
        over = self.bytes - self.max_bytes
        if over > 0 and self._memory:
            keep: deque[Point] = deque()
            for p in self._memory:
                if over > 0 and not p.kept:
                    over -= p.size
                    self._health.dropped_routine += 1
                else:
                    keep.append(p)
            self._memory = keep

    @locked
    def take(self, limit: int, after: Batch | None = None) -> Batch:
        """Points to send: live ones first, then the backlog, each oldest first, in whole
        chunks, as many as make at most `limit` points (at least one chunk: a batch may
        reach CHUNK_POINTS); then points waiting in memory. Nothing is removed. With `after`
        (a batch in flight), the points that follow it."""
        live_from, backlog_from, skip = self._live_mark, 0, set()
        if after is None:
            self._purge_now()
        else:
            live_from = max(live_from, after.live_hi)
            backlog_from = after.backlog_hi
            skip = {row[0] for row in after.rows}
        chunks: list[tuple[int, int, str]] = []
        his, taken, full, size, routine = [live_from, backlog_from], 0, False, 0, 0
        if self.db is not None and self._disk_points:
            try:
                for run, (where, args) in enumerate((
                        ("id > ?", (live_from,)),
                        ("id > ? AND id <= ?", (backlog_from, self._live_mark)))):
                    with contextlib.closing(self.db.execute(
                            f"SELECT id, n, bytes, kept, lines FROM chunks WHERE {where} "
                            "ORDER BY id", args)) as cursor:
                        for chunk_id, n, nbytes, kept, lines in cursor:
                            if taken and taken + n > limit:
                                full = True
                                break
                            chunks.append((chunk_id, n, lines))
                            taken += n
                            size += nbytes
                            routine += 0 if kept else nbytes
                            his[run] = chunk_id
                    if full:
                        break
            except sqlite3.Error as exc:
                self._failed(f"cannot read {self.path}: {exc}")
        rows: list[tuple[int, str]] = []
        for p in self._memory:
            if full or taken + len(rows) >= limit:
                break
            if p.id not in skip:
                rows.append((p.id, p.line))
        return Batch(chunks, rows, his[0], his[1], (taken, size, routine))

    def _purge_now(self, limit: int | None = None) -> bool:
        """`_purge` in a transaction of its own; False if it failed (logged)."""
        if self._sent and self.db is not None:
            try:
                with self._tx(fsync=False) as db:
                    self._purge(db, limit=limit)
            except sqlite3.Error as exc:  # the marks stay: purged later, never re-sent
                self._failed(f"cannot delete sent points from {self.path}: {exc}")
                return False
        return True

    @locked
    def mark_backlog(self) -> None:
        """A send failed: everything held now is backlog; points spooled from now on are
        live and go first."""
        self._live_mark = self._max_id()

    @locked
    def remove(self, batch: Batch, quarantine: Sequence[tuple[str, str]] = ()) -> None:
        """The database accepted `batch`: forget it, in one transaction. `quarantine`: the
        points of it that the database rejected for good (line, reason), kept aside for a
        human and counted instead of retried forever."""
        gone = {row[0] for row in batch.rows}
        if gone:
            self._memory = deque(p for p in self._memory if p.id not in gone)
        quarantined = self._health.quarantined + len(quarantine)
        runs = batch.runs()
        if self.db is None or not (runs or quarantine):  # nothing on disk to change
            self._health.quarantined = quarantined  # (without a file: the lines are logged)
            self._update_health()
            return
        try:
            # The chunks are only marked sent here (a row per run); they are deleted once the
            # writer has sent everything (`purge`), or before the cap drops anything, or
            # before a fresh `take`; a restart deletes them first thing.
            with self._tx(fsync=False) as db:
                db.executemany("INSERT INTO sent VALUES (?, ?)", runs)
                if quarantine:
                    now = time.time()
                    db.executemany("INSERT INTO quarantine (line, reason, at) VALUES (?, ?, ?)",
                                   [(line, reason, now) for line, reason in quarantine])
                    db.execute("INSERT OR REPLACE INTO meta VALUES ('quarantined', ?)",
                               (quarantined,))
        except sqlite3.Error as exc:
            # the batch stays and is sent again: a duplicate, never a loss
            self._failed(f"cannot remove sent points from {self.path}: {exc}")
            return
        if runs:
            self._sent.append((runs, batch.counts))
            self._disk_points -= batch.counts[0]
            self._disk_bytes -= batch.counts[1]
            self._disk_routine_bytes -= batch.counts[2]
        self._health.quarantined = quarantined
        self._recovered()
        self._update_health()

    @locked
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
            return int(self.db.execute("SELECT coalesce(max(id), 0) FROM chunks").fetchone()[0])
        except sqlite3.Error:
            return self._live_mark

    def _oldest_time(self) -> float | None:
        times = [p.time for p in self._memory]
        if self.db is not None and self._disk_points:
            # the first chunk held (points arrive in time order; no index on time): the
            # first in the gaps between the ranges marked sent, one index lookup each
            start = 0
            with contextlib.suppress(sqlite3.Error):
                marks = sorted(run for runs, _ in self._sent for run in runs)
                for lo, hi in [*marks, (1 << 62, 1 << 62)]:
                    row = self.db.execute("SELECT time FROM chunks WHERE id > ? AND id < ? "
                                          "ORDER BY id LIMIT 1", (start, lo)).fetchone()
                    if row is not None:
                        times.append(row[0])
                        break
                    start = max(start, hi)
        return min(times, default=None)

    @property
    def health(self) -> SpoolHealth:
        """What /status shows (the oldest point's time is looked up now). While another
        thread holds the spool (a `put` waiting for its fsync, a checkpoint), the health
        last looked up, without waiting: the event loop never waits for the disk."""
        if self._lock.acquire(blocking=False):
            try:
                self._update_health()
                self._health.oldest_time = self._oldest_time()
            finally:
                self._lock.release()
        return self._health

    def _update_health(self) -> None:
        h = self._health
        h.on_disk = self.db is not None and not self._memory
        h.points, h.bytes = self.points, self.bytes

    def _failed(self, problem: str) -> None:
        self._health.problem = problem
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
            self._health.problem = ""
            self._failing = False


def _connect(path: Path) -> sqlite3.Connection:
    """Open `path` as the spool, creating the schema in a new file; a file that is not a
    usable spool is renamed aside (its points cannot be read, a fresh spool starts)."""
    try:
        return connect_once(path)
    except (sqlite3.DatabaseError, Unusable) as exc:
        if isinstance(exc, sqlite3.OperationalError) or not path.exists():
            raise
        aside = set_aside(path)
        if aside is None:
            raise Unusable(f"{path} is unusable ({exc}) and cannot be renamed") from exc
        log.error("spool file unusable path=%s: %s; renamed to %s, starting a fresh spool",
                  path, exc, aside)
        return connect_once(path)
