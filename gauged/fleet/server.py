"""`gauged fleet`: the fleet page (`/`) and its document (`/fleet.json`) over the brokers,
or with `--json` one document printed and done. Read-only: it only subscribes."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys

from aiohttp import web

from gauged.fleet.page import render_fleet
from gauged.fleet.view import BrokerAddress, FleetState, Listener, collect

log = logging.getLogger(__name__)

PASSWORD_ENV = "GAUGED_FLEET_PASSWORD"  # the broker password, never on the command line


def app(state: FleetState) -> web.Application:
    refresh = int(min(30.0, max(2.0, state.cycle_s / 2)))

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=render_fleet(state.snapshot(), refresh),
                            content_type="text/html", charset="utf-8")

    async def document(request: web.Request) -> web.Response:
        return web.json_response(state.snapshot(),
                                 dumps=lambda d: json.dumps(d, ensure_ascii=False))

    application = web.Application()
    application.router.add_get("/", page)
    application.router.add_get("/fleet.json", document)
    return application


async def serve(state: FleetState, listener: Listener, host: str, port: int) -> None:
    runner = web.AppRunner(app(state), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        log.info("fleet page on http://%s:%d/ (brokers: %s)", host, port,
                 ", ".join(f"{b.host}:{b.port}" for b in listener.brokers))
        await listener.run()
    finally:
        await runner.cleanup()


def main(brokers: list[str], *, username: str, as_json: bool, host: str, port: int,
         cycle_s: float, prefix: str) -> int:
    try:
        addresses = [BrokerAddress.parse(b, k) for k, b in enumerate(brokers)]
    except ValueError as exc:
        print(f"gauged fleet: {exc}", file=sys.stderr)
        return 2
    state = FleetState(cycle_s=cycle_s, prefix=prefix)
    listener = Listener(state, addresses, username=username,
                        password=os.environ.get(PASSWORD_ENV, ""))
    if as_json:
        doc = asyncio.run(collect(state, listener))
        print(json.dumps(doc, ensure_ascii=False, indent=1))
        return 0 if any(doc["brokers"].values()) else 1
    try:
        asyncio.run(serve(state, listener, host, port))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        log.error("fleet page: cannot listen on %s:%d: %s", host, port, exc)
        return 1
    return 0
