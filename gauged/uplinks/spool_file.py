"""The spool's file: the points it holds and the batches it gives, the SQLite schema that keeps
them in chunks, and the connection with its transactions (`SpoolFile`).

The queue itself (the cap, live before backlog, what was sent, health) is `Spool` in
gauged/uplinks/spool.py, which is what its users import, `Point` and `Batch` included.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, Self, TypeVar

from gauged.store.sqlite_file import open_wal

SCHEMA_VERSION = 2
CHUNK_POINTS = 500  # at most this many points in one row (a batch is whole rows)
CHECKPOINT_S = 1.0  # the writer checkpoints at most this often (two fsyncs each)

# One row ("chunk") holds the points of one `put` of one class (kept or routine), their
# lines joined by newlines. A drain moves hundreds of thousands of points: per point, SQLite
# would read, sum and delete a row (about 2 µs each, a third of the request's time); per
# chunk of a cycle's 50 to 500 points it is negligible. `time` is the time of the chunk's
# oldest point when it was spooled.
_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kept INTEGER NOT NULL, n INTEGER NOT NULL,
    bytes INTEGER NOT NULL, time REAL NOT NULL, lines TEXT NOT NULL
);
CREATE TABLE quarantine (
    id INTEGER PRIMARY KEY, line TEXT NOT NULL, reason TEXT NOT NULL, at REAL NOT NULL
);
CREATE TABLE sent (lo INTEGER NOT NULL, hi INTEGER NOT NULL);
"""

# Version 1 kept one row per point: each becomes a chunk of one, in the same order.
_UPGRADES = {1: """
CREATE TABLE chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kept INTEGER NOT NULL, n INTEGER NOT NULL,
    bytes INTEGER NOT NULL, time REAL NOT NULL, lines TEXT NOT NULL
);
INSERT INTO chunks (kept, n, bytes, time, lines)
    SELECT kept, 1, length(line), time, line FROM points ORDER BY id;
DROP TABLE points;
CREATE TABLE sent (lo INTEGER NOT NULL, hi INTEGER NOT NULL)
"""}


@dataclass(frozen=True)
class Point:
    """One point to spool: its line protocol, whether it must never be dropped, its time
    (UNIX seconds) and, while it waits in memory, its (negative) id."""

    line: str
    kept: bool
    time: float
    id: int = 0

    @property
    def size(self) -> int:
        return len(self.line)


class Batch:
    """Points taken from the spool to send, in sending order: whole chunks from disk
    (id, points, lines joined), then points waiting in memory (id < 0, line)."""

    __slots__ = ("backlog_hi", "chunks", "counts", "live_hi", "rows")

    def __init__(self, chunks: list[tuple[int, int, str]] | None = None,
                 rows: list[tuple[int, str]] | None = None, live_hi: int = 0,
                 backlog_hi: int = 0, counts: tuple[int, int, int] = (0, 0, 0)) -> None:
        self.chunks = chunks or []
        self.rows = rows or []
        self.live_hi = live_hi  # where the next batch's live and backlog chunks start
        self.backlog_hi = backlog_hi
        self.counts = counts  # the chunks' points, bytes and routine bytes when taken

    def __len__(self) -> int:
        return len(self.rows) + sum(chunk[1] for chunk in self.chunks)

    @property
    def lines(self) -> list[str]:
        body = self.body()
        return body.split("\n") if body else []

    def body(self) -> str:
        """The request body: the lines, one per line (a line never holds a newline)."""
        return "\n".join([chunk[2] for chunk in self.chunks] + [row[1] for row in self.rows])

    def runs(self) -> list[tuple[int, int]]:
        """The chunks as id ranges (lo, hi). Exact: a batch is at most two runs of
        consecutive chunks (live, then backlog) and new chunks only ever get larger ids, so
        every chunk in a range belongs to the batch (or is gone already)."""
        out: list[tuple[int, int]] = []
        for chunk_id, _, _ in self.chunks:
            if out and chunk_id > out[-1][1]:
                out[-1] = (out[-1][0], chunk_id)
            else:
                out.append((chunk_id, chunk_id))
        return out


P = ParamSpec("P")
T = TypeVar("T")


def locked(method: Callable[P, T]) -> Callable[P, T]:
    """One thread at a time on the connection (the writer reads ahead in a worker thread)."""
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        spool: Any = args[0]
        with spool._lock:
            return method(*args, **kwargs)
    wrapper.__doc__, wrapper.__name__ = method.__doc__, method.__name__
    return wrapper


class SpoolFile:
    """The spool's connection (None while the file cannot be used): one thread at a time
    (`locked`), transactions whose counting is done once they commit (`_tx`), checkpoints."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.db: sqlite3.Connection | None = None  # public for tests (e.g. max_page_count)
        self._on_commit: list[Callable[[], None]] = []  # counting, once a transaction commits
        self._checkpointed = 0.0  # monotonic time of the last checkpoint (see maintain)
        self._lock = threading.RLock()

    @locked
    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _tx(self, fsync: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction; the counting it registered (`_on_commit`) is done once it
        committed. `fsync=False`: for what need not survive a power cut (a lost removal
        re-sends points that overwrite themselves), so that a drain is not bound by the
        disk's flush rate (WAL with synchronous=NORMAL still survives a crash)."""
        assert self.db is not None
        self._on_commit.clear()
        if not fsync:
            self.db.execute("PRAGMA synchronous = NORMAL")
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
            self.db.execute("COMMIT")
        except BaseException:
            self._on_commit.clear()
            if self.db.in_transaction:  # a failed COMMIT leaves it open
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
            raise
        finally:
            if not fsync:
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("PRAGMA synchronous = FULL")
        for count in self._on_commit:
            count()
        self._on_commit.clear()

    @locked
    def maintain(self) -> None:
        """Copy the write-ahead log into the database (a passive checkpoint), at most every
        CHECKPOINT_S; the writer calls it while a request is in flight, so that a drain does
        not wait for it."""
        if self.db is not None and time.monotonic() - self._checkpointed >= CHECKPOINT_S:
            self._checkpointed = time.monotonic()
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("PRAGMA wal_checkpoint(PASSIVE)")


def chunk_rows(points: Iterable[Point]) -> Iterator[tuple[int, int, int, float, str]]:
    """Rows for `points`: the kept ones first, then the routine ones, CHUNK_POINTS at most
    per row, each in the order given."""
    for kept in (True, False):
        same = [p for p in points if p.kept == kept]
        for i in range(0, len(same), CHUNK_POINTS):
            part = same[i:i + CHUNK_POINTS]
            yield (int(kept), len(part), sum(p.size for p in part), min(p.time for p in part),
                   "\n".join(p.line for p in part))


def drop_oldest_routine(db: sqlite3.Connection, over: int) -> tuple[int, int]:
    """Inside a transaction: delete the oldest routine points until `over` bytes are freed
    (whole chunks, then the first lines of the next one); the points and bytes deleted."""
    gone: list[int] = []
    points = freed = 0
    with contextlib.closing(db.execute(
            "SELECT id, n, bytes FROM chunks WHERE kept = 0 ORDER BY id")) as chunks:
        for chunk_id, n, size in chunks:  # the oldest first, only as far as needed
            if freed >= over:
                break
            if freed + size > over:  # the last one: only its first lines
                lines = db.execute("SELECT lines FROM chunks WHERE id = ?",
                                   (chunk_id,)).fetchone()[0].split("\n")
                k = 0
                while freed < over:
                    freed += len(lines[k])
                    k += 1
                points += k
                if k < len(lines):
                    rest = lines[k:]
                    db.execute("UPDATE chunks SET n = ?, bytes = ?, lines = ? WHERE id = ?",
                               (len(rest), size - sum(map(len, lines[:k])),
                                "\n".join(rest), chunk_id))
                    break
            else:
                freed += size
                points += n
            gone.append(chunk_id)
    db.executemany("DELETE FROM chunks WHERE id = ?", [(i,) for i in gone])
    return points, freed


def connect_once(path: Path) -> sqlite3.Connection:
    return open_wal(path, _SCHEMA, SCHEMA_VERSION, check_same_thread=False,  # see locked
                    # 2 MiB of page cache (SQLite's default), not more: the cache fills as the
                    # spool grows and is never given back, so a day-long outage would keep
                    # every page it touched in RSS (PERF-5); a drain reads each chunk once
                    # and deletes the chunks after it (re-read from the OS's cache then)
                    pragmas=["cache_size = -2048",
                             # the writer checkpoints while its requests are in flight
                             # (`maintain`); this is the backstop when it does not run
                             "wal_autocheckpoint = 10000"], upgrades=_UPGRADES)
