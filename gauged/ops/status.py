"""The status server, on 127.0.0.1 by default (SEC-2):

- `/`        the status page for an operator's phone (gauged/ops/page.py), refreshing itself;
- `/status`  everything the page shows, as JSON (`gauged status` reads it);
- `/metrics` the Prometheus text format (gauged/ops/metrics.py);
- `/healthz` 200 while cycles run on time, or 503 naming the failing check.

Read-only without a token: GET (and HEAD) only, any other method is answered 405; nothing
here touches a relay, a stage or the configuration. The one control endpoint, `POST
/command`, takes a signed command (gauged/ops/commands.py) and needs `Authorization: Bearer
<status.token>`; without a configured token (or with commands off) it answers 403.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gauged.ops.metrics import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)


class StatusServer:
    """Serves what `snapshot()` and `health()` return."""

    def __init__(self, host: str, port: int, snapshot: Callable[[], dict[str, Any]],
                 health: Callable[[], list[str]], *, token: str = "",
                 control: Callable[[bytes], Awaitable[dict[str, Any]]] | None = None,
                 metrics: Callable[[], bytes] | None = None,
                 page: Callable[[], str] | None = None) -> None:
        self._token = token
        self._control = control
        self.host = host
        self.port = port
        self._snapshot = snapshot
        self._health = health
        self._metrics = metrics
        self._page = page
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> StatusServer:
        if self._runner is not None:
            raise RuntimeError("status server already started")
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/status", self._status)
        app.router.add_post("/command", self._command)
        if self._metrics is not None:
            app.router.add_get("/metrics", self._metrics_text)
        if self._page is not None:
            app.router.add_get("/", self._page_html)
        # a status reader must never hold up a stop (aiohttp waits 60 s by default)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        # the bound port, when port 0 was asked for
        sockets = getattr(site._server, "sockets", None)
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("status server listening url=http://%s:%d/status", self.host, self.port)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: web.Request) -> web.Response:
        failing = self._health()
        if failing:
            return web.json_response({"status": "failing", "failing": failing}, status=503)
        return web.json_response({"status": "ok"})

    async def _command(self, request: web.Request) -> web.Response:
        if self._control is None or not self._token:
            return web.json_response({"status": "refused", "reason": "control is off (no "
                                      "status.token, or commands disabled)"}, status=403)
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self._token}".encode()):
            log.warning("status server: POST /command refused: wrong or missing token "
                        "from=%s", request.remote)
            return web.json_response({"status": "refused", "reason": "token"}, status=401,
                                     headers={"WWW-Authenticate": "Bearer"})
        payload = await request.content.read(65537)
        reply = await self._control(payload)
        code = 200 if reply["status"] == "done" else 422 if reply["status"] == "refused" \
            else 500
        return web.json_response(reply, status=code)

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(self._snapshot(),
                                 dumps=lambda o: json.dumps(o, ensure_ascii=False, indent=1))

    async def _metrics_text(self, request: web.Request) -> web.Response:
        assert self._metrics is not None
        return web.Response(body=self._metrics(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _page_html(self, request: web.Request) -> web.Response:
        assert self._page is not None
        # always the current state: no cache between the page and the operator
        return web.Response(text=self._page(), content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-store"})
