"""The InfluxDB sink: points queue in memory and a writer sends them in batches.

`write` never blocks and never fails: the poll loop and the sirens never wait for the
database. The writer sends the oldest points first in batches through influxdb-client
(InfluxDB v2 write API), keeps a batch until the database accepts it, and backs off
exponentially with jitter while the database is unreachable. The queue is bounded; when
full, the oldest points are dropped and counted.

Issue 5 replaces the memory queue with a durable SQLite spool; this module keeps the same
interface (`write`, `run`, `flush`, `health`).

Schema (each field becomes `<measurement>_<field>` in VictoriaMetrics):
- `level`  tags gateway, station; fields level_m, freeboard_m, quality, stage
- `rain`   tags gateway, station; fields counter, increment_mm, total_60m_mm, quality, stage
- `stage_change` tags gateway, station, quantity; fields from_stage, to_stage, value
- `broadcast` tags gateway, zone, station, sequence; fields stage, siren_on_s,
  clips_played, faults
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gauged.config import InfluxConfig

log = logging.getLogger(__name__)

BATCH_SIZE = 5000


@dataclass(frozen=True)
class Record:
    """One point: measurement, tags, fields (None values are left out) and its time."""

    measurement: str
    tags: dict[str, str]
    fields: dict[str, float | int | None]
    time: datetime

    def line(self) -> str:
        """The point in InfluxDB line protocol, with a millisecond timestamp."""
        def esc(s: str) -> str:
            return s.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=") \
                .replace(" ", "\\ ")
        tags = "".join(f",{esc(k)}={esc(v)}" for k, v in sorted(self.tags.items()) if v)
        fields = ",".join(
            f"{esc(k)}={v}i" if isinstance(v, int) and not isinstance(v, bool) else
            f"{esc(k)}={float(v)!r}"
            for k, v in self.fields.items() if v is not None)
        ms = round(self.time.timestamp() * 1000)
        return f"{esc(self.measurement)}{tags} {fields} {ms}"


@dataclass
class SinkHealth:
    connected: bool = False
    queued: int = 0
    written: int = 0
    dropped: int = 0
    errors: int = 0
    last_error: str = ""
    last_success: float | None = None


class InfluxSink:
    """Buffers points and writes them to InfluxDB (or anything serving /api/v2/write)."""

    def __init__(self, config: InfluxConfig) -> None:
        self.config = config
        self._queue: deque[str] = deque()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.health = SinkHealth()

    def write(self, records: list[Record]) -> None:
        """Queue points; drops the oldest when the buffer is full (counted)."""
        lines = [r.line() for r in records if any(v is not None for v in r.fields.values())]
        self._queue.extend(lines)
        overflow = len(self._queue) - self.config.max_buffer_points
        for _ in range(max(0, overflow)):
            self._queue.popleft()
            self.health.dropped += 1
        self.health.queued = len(self._queue)
        if self._queue:
            self._idle.clear()
            self._wakeup.set()

    async def flush(self, timeout_s: float) -> bool:
        """Wait until the queue is empty (True) or the timeout passes (False)."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def run(self) -> None:
        """Send queued points until cancelled."""
        # Imported here: influxdb_client is heavy (≈ 50 MiB) and optional.
        from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
        from influxdb_client.domain.write_precision import WritePrecision

        ms: Any = WritePrecision.MS  # a str constant that the stubs type as the class
        backoff = 0.0
        async with InfluxDBClientAsync(
            url=self.config.url, token=self.config.token.get_secret_value() or "-",
            org=self.config.org, timeout=int(self.config.timeout_s * 1000),
        ) as client:
            api = client.write_api()
            while True:
                if not self._queue:
                    self._idle.set()
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                batch = [self._queue[i] for i in range(min(BATCH_SIZE, len(self._queue)))]
                try:
                    await api.write(bucket=self.config.bucket, record=batch,
                                    write_precision=ms)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self._failed(exc)
                    backoff = min(60.0, max(0.5, backoff * 2))
                    await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                    continue
                backoff = 0.0
                for _ in batch:
                    self._queue.popleft()
                self._succeeded(len(batch))

    def _failed(self, exc: Exception) -> None:
        self.health.errors += 1
        self.health.last_error = _describe(exc)
        if self.health.connected or self.health.errors == 1:
            log.warning("uplink influx down url=%s queued=%d: %s", self.config.url,
                        len(self._queue), self.health.last_error)
        self.health.connected = False

    def _succeeded(self, n: int) -> None:
        if not self.health.connected:
            log.info("uplink influx up url=%s queued=%d", self.config.url, len(self._queue))
        self.health.connected = True
        self.health.written += n
        self.health.queued = len(self._queue)
        self.health.last_success = asyncio.get_running_loop().time()


def _describe(exc: Exception) -> str:
    """A one-line reason that never carries the token (it only lives in headers)."""
    status: Any = getattr(exc, "status", None)
    return f"HTTP {status}" if status else f"{type(exc).__name__}: {exc}"[:200]

