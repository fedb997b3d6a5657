"""The InfluxDB sink: every point goes to the spool (gauged/uplinks/spool.py) first; a writer sends
batches to the InfluxDB v2 write API (`/api/v2/write`, gauged/uplinks/influx_http.py) and
removes a batch from the spool only after the database accepted it.

`write` never blocks on the network and never fails: the poll loop and the sirens never wait
for the database. The recorder's events (`cycle`, `broadcast`, …) do not even wait for the
spool's fsync: their points are put by a thread of the sink's own, in order, and the writer
takes, removes and checkpoints on that thread too, so the event loop never waits for the disk
(QUALITY PERF-3: every fsync of an SD card may take 100 ms). One writer per sink, so one
request in flight per endpoint. A batch is the live points first, then the backlog oldest
first (see gauged/uplinks/spool.py for why).

Failures:
- unreachable, timeout, HTTP 429, 5xx (and any other error): the batch stays; the writer
  waits, exponentially longer (`backoff_min_s` doubling up to `backoff_max_s`) with jitter
  (a uniform factor in [0.5, 1]), and at least as long as a `Retry-After` header asks
  (at most RETRY_AFTER_MAX_S);
- HTTP 400 (or 413, 422): the database refuses something in the batch. The batch is split in
  halves and each half sent again, down to the single point that is refused: that one is
  quarantined (moved to the spool's `quarantine` table and counted, when the batch is
  removed), the rest is written. A batch of n points with one bad point costs at most
  2·log2(n) extra requests, never a retry loop.

Schema: see README.md, "Schema" (each field becomes `<measurement>_<field>` in
VictoriaMetrics). Measurements in ROUTINE may be dropped at the spool's byte cap (oldest
first, counted); every other measurement (stage changes, broadcasts, scheduled tests,
faults, commands, and any measurement added later) is never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from drivers.backoff import Backoff
from gauged.alarm.types import BroadcastRecord, BroadcastRequest
from gauged.config.models import InfluxConfig
from gauged.health import SinkHealth
from gauged.store.state import JobRun
from gauged.uplinks import records
from gauged.uplinks.base import CycleReport, Uplink
from gauged.uplinks.influx_http import WriteClient, WriteError
from gauged.uplinks.records import Record
from gauged.uplinks.spool import Batch, Point, Spool

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRY_AFTER_MAX_S = 600.0  # a Retry-After longer than this is taken as this
REJECTED = frozenset({400, 413, 422})  # the request, not the server: split, then quarantine


class InfluxSink(Uplink):
    """Spools points and writes them to InfluxDB (or anything serving /api/v2/write).

    `async with` (or `open()`, `opened()`) opens the spool; `write` before that opens it.
    `run()` is the writer; `flush(timeout)` waits until the spool is empty. The recorder's
    events become points through gauged/uplinks/records.py.
    """

    name = "influx"

    def __init__(self, config: InfluxConfig, spool_path: Path | None = None, *,
                 gateway: str = "",
                 gauge_names: Mapping[str, tuple[str, str]] | None = None) -> None:
        self.config = config
        self.gateway = gateway
        # channel → (station, gauge): the tags of each gauge's point (`Config.channels`)
        self.gauge_names = dict(gauge_names or {})
        self.spool_path = spool_path
        self.spool: Spool | None = None
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._connected = False
        self._written = 0
        self._batches = 0
        self._errors = 0
        self._last_error = ""
        self._last_success: float | None = None
        self._backoff = Backoff(config.backoff_max_s, first_s=config.backoff_min_s)
        self._waiting_s = 0.0  # the wait under way before the next attempt (0: none)
        # The sink's one thread for the spool: the events' puts, in order, and the writer's
        # takes, removals, checkpoints (the spool's lock serialises them anyway: one
        # thread, not a pool's, nor one per kind of call)
        self._thread: ThreadPoolExecutor | None = None
        self._puts = 0  # puts handed to it and not done yet
        self._builds: deque[Callable[[], list[Record]]] = deque()  # what they will put
        self._put = asyncio.Event()  # set when a put is done (`spooled`)

    # ---- the spool -------------------------------------------------------------------

    def open(self) -> Spool:
        """Open the spool (never raises: a spool that cannot open keeps points in memory)."""
        if self.spool is None:
            self.spool = Spool.open(self.spool_path, self.config.spool_max_bytes)
            h = self.spool.health
            log.info("spool path=%s points=%d bytes=%d cap=%d quarantined=%d", h.path or
                     "(memory)", h.points, h.bytes, h.max_bytes, h.quarantined)
            if h.points:
                self._idle.clear()
                self._wakeup.set()
        return self.spool

    def close(self) -> None:
        if self._thread is not None:  # the points handed over are spooled first
            self._thread.shutdown(wait=True)
            self._thread = None
        if self.spool is not None:
            self.spool.close()

    @contextlib.contextmanager
    def opened(self) -> Iterator[InfluxSink]:
        self.open()
        try:
            yield self
        finally:
            self.close()

    async def __aenter__(self) -> Self:
        self.open()  # never fails: a broken spool degrades storage only
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # ---- the recorder's events -------------------------------------------------------

    def cycle(self, report: CycleReport) -> None:
        points = records.cycle(self.gateway, report, self.gauge_names)
        # the spool's own point, with its health as the putter finds it
        self._put_later(lambda: [*points, records.spool(self.gateway, self.health(),
                                                        report.when)])

    def broadcast(self, record: BroadcastRecord) -> None:
        point = records.broadcast(self.gateway, record)
        self._put_later(lambda: [point])

    def withheld(self, request: BroadcastRequest) -> None:
        point = records.withheld(self.gateway, request)
        self._put_later(lambda: [point])

    def proof_test(self, when: datetime, run: JobRun) -> None:
        point = records.proof_test(self.gateway, run)
        self._put_later(lambda: [point])

    def command(self, when: datetime, action: str, status: str) -> None:
        point = records.command(self.gateway, when, action, status)
        self._put_later(lambda: [point])

    def write(self, records: list[Record]) -> None:
        """Spool points (durable when this returns, unless the spool is degraded)."""
        points = _points(records)
        if not points:
            return
        self.open().put(points)
        self._idle.clear()
        self._wakeup.set()

    def _put_later(self, build: Callable[[], list[Record]]) -> None:
        """Spool the records `build` returns from the sink's putter thread, after those
        handed over before (durable a moment later; `flush` and the writer wait for it).
        Without a running event loop: now."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.write(build())
            return
        spool = self.open()
        self._builds.append(build)

        def put() -> None:
            # everything handed over by now, in one transaction (one fsync): on a slow disk
            # the puts of a burst of events do not queue up one fsync each
            handed: list[Record] = []
            while self._builds:
                handed += self._builds.popleft()()
            points = _points(handed)
            if points:
                spool.put(points)

        def done(future: Future[None]) -> None:
            with contextlib.suppress(RuntimeError):  # (the loop has closed: nobody waits)
                loop.call_soon_threadsafe(self._put_done, future)

        self._puts += 1
        self._idle.clear()
        self._spool_thread().submit(put).add_done_callback(done)

    def _spool_thread(self) -> ThreadPoolExecutor:
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="gauged-spool")
        return self._thread

    async def _on_spool_thread(self, call: Callable[..., T], *args: Any) -> T:
        """`call(*args)` on the sink's spool thread (the event loop never waits for the
        disk); a cancellation leaves it to finish there."""
        return await asyncio.get_running_loop().run_in_executor(self._spool_thread(), call,
                                                                *args)

    def _put_done(self, future: Future[None]) -> None:
        self._puts -= 1
        exc = future.exception()
        if exc is not None:  # the spool never raises on storage failures: a bug
            log.error("spool: putting points failed", exc_info=exc)
        self._wakeup.set()
        self._put.set()

    def health(self) -> SinkHealth:
        h = SinkHealth(connected=self._connected, written=self._written,
                       batches=self._batches, errors=self._errors,
                       last_error=self._last_error, last_success=self._last_success,
                       backoff_s=round(self._waiting_s, 3))
        if self.spool is not None:
            s = self.spool.health
            h.queued, h.queued_bytes = s.points, s.bytes
            h.dropped, h.quarantined = s.dropped_routine, s.quarantined
            h.oldest_age_s = None if s.oldest_time is None else \
                round(time.time() - s.oldest_time, 1)
            h.spool_path, h.spool_on_disk = s.path, s.on_disk
            h.spool_problem, h.spool_max_bytes = s.problem, s.max_bytes
        return h

    async def spooled(self, timeout_s: float) -> bool:
        """Wait until every point handed over is in the spool (True), at most `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while self._puts:
            if time.monotonic() > deadline:
                return False
            self._put = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await self._put.wait()
        return True

    async def flush(self, timeout_s: float) -> bool:
        """Wait until the spool is empty (True) or the timeout passes (False)."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    # ---- the writer ------------------------------------------------------------------

    async def run(self) -> None:
        """Send spooled points until cancelled; one request in flight at a time."""
        spool = self.open()
        async with WriteClient(self.config) as client:
            while True:
                await self._on_spool_thread(spool.retry)
                self._wakeup.clear()  # before reading: a write from now on sets it again
                if not spool.points and not self._puts:  # all accepted: flush() need not
                    # wait for the spool
                    self._idle.set()  # to delete what it marked sent
                while await self._on_spool_thread(spool.purge_step):
                    pass  # (puts queued meanwhile go in between the steps)
                batch, data = await self._on_spool_thread(self._take, client, spool, None)
                if not batch:
                    if self._wakeup.is_set():  # points came in while the spool was read
                        continue
                    if not self._puts:  # (a put under way sets `_wakeup` when done)
                        self._idle.set()
                    # points waiting in memory (spool degraded) are retried now and then.
                    # (asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a
                    # cancellation that meets the event being set, and the writer never
                    # stops; the same holds wherever we wait with a timeout.)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(5.0):
                            await self._wakeup.wait()
                    continue
                try:
                    await self._drain(client, spool, batch, data)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    await self._on_spool_thread(spool.mark_backlog)
                    self._failed(exc, spool)
                    delay = self._backoff.failed()
                    asked = exc.retry_after if isinstance(exc, WriteError) else None
                    if asked is not None:
                        delay = max(delay, min(asked, RETRY_AFTER_MAX_S))
                    self._waiting_s = delay
                    await asyncio.sleep(delay)
                    self._waiting_s = 0.0
                    continue
                self._backoff.succeeded()

    def _take(self, client: WriteClient, spool: Spool,
              after: Batch | None) -> tuple[Batch, bytes]:
        """On the spool thread: the next batch and its request body (encoded, gzip'd when
        configured), so that the event loop only posts bytes."""
        if after is not None:
            spool.maintain()
        batch = spool.take(self.config.batch_points, after=after)
        return batch, client.encode(batch.body()) if batch else b""

    async def _drain(self, client: WriteClient, spool: Spool, batch: Batch,
                     data: bytes) -> None:
        """Send `batch` (its body `data`) and the batches after it until the spool is empty;
        raises on the first failure. One request in flight; while it is, the spool thread
        reads and encodes the next batch and checkpoints the spool, so SQLite's work does
        not add to the network's. A batch is removed as soon as it is accepted, before the
        next request goes out: a crash re-sends at most the one batch in flight."""
        while batch:
            request = asyncio.create_task(self._send(client, data),
                                          name="gauged[influx].request")
            try:
                following, data = await self._on_spool_thread(self._take, client, spool,
                                                              batch)
            except BaseException:
                # (not `await request`: a request that has failed already would raise its
                # error here in place of our cancellation, and the writer would never stop)
                request.cancel()
                await asyncio.wait({request})
                if not request.cancelled():
                    request.exception()  # retrieved: it is not ours to report
                raise
            refused: list[tuple[str, str]] = []
            try:
                await request
            except WriteError as exc:
                if exc.status not in REJECTED:
                    raise
                refused = await self._bisect(client, batch.lines, exc)
            await self._on_spool_thread(spool.remove, batch, refused)
            for line, reason in refused:
                log.error("influx: point rejected and quarantined (%s): %s", reason, line[:200])
            self._succeeded(len(batch) - len(refused), spool)
            batch = following

    async def _send(self, client: WriteClient, data: bytes) -> None:
        """One request (tests/spool_crash_writer.py traces it here)."""
        await client.write(data)

    async def _bisect(self, client: WriteClient, lines: list[str],
                      exc: WriteError) -> list[tuple[str, str]]:
        """`lines` were refused (`exc`): write each half, down to the single lines refused;
        returns those with the reason. Raises on any other failure (the whole batch stays
        in the spool and is sent again: duplicates of an unacknowledged batch only)."""
        if len(lines) == 1:
            return [(lines[0], str(exc)[:300])]
        refused: list[tuple[str, str]] = []
        half = len(lines) // 2
        for part in (lines[:half], lines[half:]):
            try:
                await self._send(client, client.encode("\n".join(part)))
            except WriteError as again:
                if again.status not in REJECTED:
                    raise
                refused += await self._bisect(client, part, again)
        return refused

    def _failed(self, exc: Exception, spool: Spool) -> None:
        self._errors += 1
        # (the status and the database's reason, or the connection's error; never the token)
        self._last_error = str(exc)[:300] if isinstance(exc, WriteError) else \
            f"{type(exc).__name__}: {exc}"[:300]
        if self._connected or self._errors == 1:
            log.warning("uplink influx down url=%s queued=%d: %s", self.config.url,
                        spool.points, self._last_error)
        self._connected = False

    def _succeeded(self, n: int, spool: Spool) -> None:
        if not self._connected:
            log.info("uplink influx up url=%s queued=%d", self.config.url, spool.points)
        self._connected = True
        self._written += n
        self._batches += 1
        self._last_success = time.time()


def _points(records: list[Record]) -> list[Point]:
    """The spool's points of `records` (a record without a finite field is no point)."""
    return [Point(r.line(), not r.routine, r.time.timestamp()) for r in records
            if any(v is not None and math.isfinite(v) for v in r.fields.values())]
