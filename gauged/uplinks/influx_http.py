"""The InfluxDB v2 write API over aiohttp: `POST <url>/api/v2/write?org=…&bucket=…&precision=ms`
with a body of line protocol (DESIGN §4: influxdb-client is not a runtime dependency; aiohttp
is loaded anyway for the status server).

What users of the databases that serve this endpoint need:
- InfluxDB 2.x and 3.x: `Authorization: Token <token>` (`auth_scheme = "Token"`, the
  default) or `Bearer <token>` (3.x, and proxies that expect it); `org` and `bucket`.
- InfluxDB 1.8: the same endpoint with `Token user:password` and `bucket = "db/rp"`.
- VictoriaMetrics, vmagent, vminsert: no token; the URL keeps its path, so that
  `http://vminsert:8480/insert/0/influx` posts to `…/insert/0/influx/api/v2/write`.
- gzip (`gzip_level` 1 to 9, 0 off): `Content-Encoding: gzip`; worth it on a thin link,
  not on a LAN (level 1 costs about 4 ms per 5,000-point batch here).
- `ca_file`: a private CA for an https URL (the system's CAs otherwise).

An error names the HTTP status and the start of the body the database answered (its reason:
"unable to parse …", "unauthorized …"), never the token. A `Retry-After` header (seconds or an
HTTP date) travels with the error; the writer waits at least that long.

One `ClientSession` (one keep-alive connection: the writer has one request in flight) for
the writer's whole run.
"""

from __future__ import annotations

import email.utils
import ssl
import time
import zlib
from collections.abc import Callable
from types import TracebackType
from typing import Self

import aiohttp

from gauged.config.models import InfluxConfig
from gauged.errors import GaugedError

ERROR_BODY_CHARS = 300  # of the database's answer, in the error and the log


class WriteError(GaugedError):
    """A write the database did not accept: `status` (None: no answer at all), the start
    of its answer (`body`) and the wait it asked for (`retry_after`, seconds)."""

    def __init__(self, message: str, status: int | None = None, body: str = "",
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.retry_after = retry_after


def retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a `Retry-After` header: delay-seconds or an HTTP date (RFC 9110
    §10.2.3); None when absent or unreadable; never negative."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # `-0000`: "UTC, but not said"
        return None
    return max(0.0, when.timestamp() - now())


def gzip(body: bytes, level: int) -> bytes:
    """`body` as a gzip member (RFC 1952) at `level`."""
    packer = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return packer.compress(body) + packer.flush()


class WriteClient:
    """Posts line protocol to `/api/v2/write`. `async with WriteClient(config) as client:
    await client.write(body)`; one `write` at a time (the caller's contract: the writer has
    one request in flight). Re-entry is an error; after `__aexit__` nothing may be written.
    A cancelled `write` drops its connection (aiohttp); the spool keeps the batch."""

    def __init__(self, config: InfluxConfig) -> None:
        self.config = config
        self.url = config.url.rstrip("/") + "/api/v2/write"
        self.params = {"org": config.org, "bucket": config.bucket, "precision": "ms"}
        self.headers = {"Content-Type": "text/plain; charset=utf-8"}
        token = config.token.get_secret_value()
        if token:
            self.headers["Authorization"] = f"{config.auth_scheme} {token}"
        if config.gzip_level:
            self.headers["Content-Encoding"] = "gzip"
        self._session: aiohttp.ClientSession | None = None
        self._entered = False

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError("WriteClient is not re-entrant")
        self._entered = True
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _open(self) -> aiohttp.ClientSession:
        """The session, made at the first write (a CA file that cannot be read is then a
        failed write, retried like any other, and the spool keeps the points)."""
        if self._session is None:
            tls: ssl.SSLContext | bool = True
            if self.config.ca_file is not None:
                tls = ssl.create_default_context(cafile=str(self.config.ca_file))
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=1, ssl=tls),
                timeout=aiohttp.ClientTimeout(total=self.config.timeout_s),
                cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    def encode(self, body: str) -> bytes:
        """The request body for `body` (gzip'd when configured): CPU work, which the writer
        does in a worker thread."""
        data = body.encode()
        return gzip(data, self.config.gzip_level) if self.config.gzip_level else data

    async def write(self, data: bytes) -> None:
        """Post `data` (from `encode`); returns once the database accepted it (2xx), raises
        `WriteError` otherwise (including no answer)."""
        try:
            session = self._open()
            async with session.post(self.url, params=self.params, data=data,
                                    headers=self.headers) as response:
                if response.status < 300:
                    await response.read()  # (the connection is reused once the body is read)
                    return
                text = (await response.read())[:4096].decode(errors="replace")
                raise WriteError(
                    f"HTTP {response.status}: {' '.join(text.split())[:ERROR_BODY_CHARS]}",
                    response.status, text, retry_after(response.headers.get("Retry-After")))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:  # (ssl errors too)
            # (the message names host and port, never the headers: no token in it)
            raise WriteError(f"{type(exc).__name__}: {exc}"[:ERROR_BODY_CHARS]) from exc
