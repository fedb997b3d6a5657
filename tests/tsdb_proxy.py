"""A small HTTP proxy in front of a real VictoriaMetrics that answers like InfluxDB would
where VictoriaMetrics does not: a test tool at the transport boundary, not a mock of ours.

VictoriaMetrics 1.79 answers 204 to a batch holding a malformed line: it drops that line
silently (logging it) and stores the rest. InfluxDB answers 400 and writes nothing. The proxy
gives the InfluxDB answer for any request whose body contains `reject` (400, nothing
forwarded), answers the statuses queued in `faults` (429, 503 … with an optional
Retry-After) before forwarding again, and records every write request: its arrival and end
time on the monotonic clock and how many were in flight at once.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web


@dataclass
class Request:
    started: float
    ended: float = 0.0
    status: int = 0
    lines: int = 0


@dataclass
class TsdbProxy:
    upstream: str  # e.g. http://127.0.0.1:8428
    reject: str | None = None
    faults: deque[tuple[int, str | None]] = field(default_factory=deque)
    requests: list[Request] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    port: int = 0
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> TsdbProxy:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_post("/api/v2/write", self._write)
        self._session = aiohttp.ClientSession()
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _write(self, request: web.Request) -> web.StreamResponse:
        record = Request(time.monotonic())
        self.requests.append(record)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            body = await request.read()
            record.lines = body.count(b"\n") + 1
            await asyncio.sleep(0.005)  # a request takes a moment: overlaps would show
            if self.faults:
                status, retry_after = self.faults.popleft()
                headers = {"Retry-After": retry_after} if retry_after is not None else {}
                record.status = status
                return web.Response(status=status, headers=headers, text="busy")
            if self.reject is not None and self.reject.encode() in body:
                record.status = 400
                return web.json_response(
                    {"code": "invalid", "message": "unable to parse line"}, status=400)
            assert self._session is not None
            async with self._session.post(
                    f"{self.upstream}/api/v2/write", params=request.query, data=body,
                    headers={"Content-Type": "text/plain"}) as answer:
                record.status = answer.status
                return web.Response(status=answer.status, body=await answer.read())
        finally:
            self.in_flight -= 1
            record.ended = time.monotonic()
