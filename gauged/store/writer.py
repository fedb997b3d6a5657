"""One SQLite connection served by a thread of its own, and a second thread that makes its
commits durable: the state store (gauged/store/state.py) runs every statement here, never
on the event loop.

Jobs (a function of the connection) run one at a time, in the order they were submitted,
so that a row's update always finds the row. A caller on the event loop submits a job
(`submit`, a concurrent Future) and waits for it with a bound (`settled`) or not at all; a
caller in another thread waits for it (`call`).

Commits do not wait for the disk (WAL with `synchronous = NORMAL`): when a commit returns,
its frames are in the operating system, so it survives a crash of the daemon, `kill -9` or a
watchdog abort. The syncer thread then fsyncs the WAL file, one fsync for every commit made
before it began (a group commit), so that they survive a power cut too; `durable` waits for
that. An fsync takes no SQLite lock, so the writer goes on while the disk is slow: on an SD
card whose every fsync takes 100 ms, a commit still takes well under a millisecond.

Checkpoints (copying the WAL into the database file: an fsync of each) run in the syncer
too, on a connection of its own, passively (the writer goes on meanwhile), every
CHECKPOINT_WRITES write jobs; the writer connection never checkpoints
(`wal_autocheckpoint = 0`). The first commit after a complete checkpoint starts the WAL over
and fsyncs its new header: the syncer asks the writer for a small write of its own (`restart`)
at once, so that this fsync rarely falls on a commit that a siren waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

CHECKPOINT_WRITES = 200  # write jobs between checkpoints (on a gateway: a few MB of WAL, hours)


class Writer:
    """The thread that owns a connection, and its syncer (see the module docstring).

    `path` is the database file (None: in memory, nothing to fsync). `restart` is a small
    write job that starts the WAL over after a checkpoint. `close()` runs what was
    submitted, fsyncs it, and closes the connection.
    """

    def __init__(self, db: sqlite3.Connection, path: Path | None, *, name: str,
                 restart: Callable[[sqlite3.Connection], object] | None = None) -> None:
        self._db = db
        self.path = path
        self._restart = restart
        self._jobs = ThreadPoolExecutor(1, thread_name_prefix=f"{name}-writer")
        self._cond = threading.Condition()
        self._committed = 0  # write jobs done (a job that changed rows)
        self._synced = 0  # write jobs whose frames an fsync has covered
        self._since_checkpoint = 0
        self._closing = False
        self._sync_failed = False
        self._checkpointer: sqlite3.Connection | None = None
        self._syncer: threading.Thread | None = None
        if path is not None:
            self._syncer = threading.Thread(target=self._sync_loop, name=f"{name}-syncer",
                                            daemon=True)
            self._syncer.start()

    # ---- jobs ------------------------------------------------------------------------

    def submit(self, work: Callable[[sqlite3.Connection], T]) -> Future[T]:
        """Run `work(connection)` in the writer thread, after every job submitted before."""
        return self._jobs.submit(self._run, work)

    def call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`submit` and wait for the result (from a thread that may block)."""
        return self.submit(work).result()

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        before = self._db.total_changes
        try:
            return work(self._db)
        finally:
            if self._db.total_changes != before:
                with self._cond:
                    self._committed += 1
                    self._cond.notify_all()

    # ---- durability ------------------------------------------------------------------

    def durable(self, timeout_s: float | None = None) -> bool:
        """Wait until every job done so far is on disk (True), at most `timeout_s`."""
        if self._syncer is None:
            return True
        with self._cond:
            target = self._committed
            return self._cond.wait_for(lambda: self._synced >= target or self._closing,
                                       timeout_s)

    def _sync_loop(self) -> None:
        assert self.path is not None
        wal = self.path.with_name(self.path.name + "-wal")
        fd: int | None = None
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._synced < self._committed or
                                        self._closing)
                    target = self._committed
                    if self._synced >= target:  # closing, nothing left to sync
                        return
                try:
                    if fd is None:
                        fd = os.open(wal, os.O_RDONLY)
                    os.fsync(fd)
                    if self._sync_failed:
                        log.info("%s: fsync works again", wal)
                    self._sync_failed = False
                except FileNotFoundError:  # no WAL (yet): nothing of ours to sync
                    pass
                except OSError as exc:  # commits are still in the OS; a restart finds them
                    if not self._sync_failed:
                        log.error("%s: fsync failed: %s (commits survive a crash of the daemon, "
                                  "not a power cut)", wal, exc)
                    self._sync_failed = True
                with self._cond:
                    self._since_checkpoint += target - self._synced
                    self._synced = target
                    self._cond.notify_all()
                if self._since_checkpoint >= CHECKPOINT_WRITES:
                    self._since_checkpoint = 0
                    self._checkpoint()
        finally:
            if fd is not None:
                os.close(fd)

    def _checkpoint(self) -> None:
        """Copy the WAL into the database (passive: the writer goes on), then have the
        writer start the WAL over."""
        assert self.path is not None
        try:
            if self._checkpointer is None:
                self._checkpointer = sqlite3.connect(self.path, isolation_level=None,
                                                     check_same_thread=False, timeout=0.0)
            busy, frames, copied = self._checkpointer.execute(
                "PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            log.warning("%s: checkpoint failed: %s (tried again later)", self.path, exc)
            return
        if not busy and frames == copied and self._restart is not None and \
                not self._closing:
            with contextlib.suppress(RuntimeError):  # (the writer has shut down)
                self.submit(self._restart)

    # ---- closing ---------------------------------------------------------------------

    def close(self) -> None:
        """Run what was submitted, fsync it, close the connections."""
        self._jobs.shutdown(wait=True)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._syncer is not None:
            self._syncer.join()
        if self._checkpointer is not None:
            self._checkpointer.close()
        self._db.close()


async def settled(future: Future[T], timeout_s: float) -> bool:
    """Wait (on the event loop) until `future` is done, at most `timeout_s`: True if done.
    The job is never cancelled: past the bound it still runs, in its turn."""
    waiter = asyncio.wrap_future(future)
    waiter.add_done_callback(_consume)
    done, _ = await asyncio.wait({waiter}, timeout=timeout_s)
    return bool(done)


def _consume(waiter: asyncio.Future[Any]) -> None:
    """Retrieve a late job's exception (the job logged it): no 'never retrieved' noise."""
    if not waiter.cancelled():
        waiter.exception()
