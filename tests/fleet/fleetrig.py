"""Helpers of the fleet tests: the fleet view in a thread (with its page), reads through
vmauth, raw exports from each VictoriaMetrics node.

The stack itself is gauged/fleet/stack.py (the same launcher as `make fleet-demo`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import threading
import time
import urllib.parse
import urllib.request
from collections import defaultdict
from typing import Any

from services import wait_until

from gauged.fleet.central import READER, Central
from gauged.fleet.procs import free_port
from gauged.fleet.server import app
from gauged.fleet.stack import FleetStack
from gauged.fleet.view import BrokerAddress, FleetState, Listener

HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class RecordingState(FleetState):
    """The fleet view, also keeping the time of every live `station/<id>/reading` (one per
    cycle, never retained): what reached the centre live, to compare with the TSDB."""

    def __init__(self, cycle_s: float) -> None:
        super().__init__(cycle_s=cycle_s)
        self.readings: dict[tuple[str, str], set[str]] = defaultdict(set)

    def apply(self, broker: str, topic: str, payload: bytes, retained: bool,
              now: float | None = None) -> None:
        parts = topic.split("/")
        if len(parts) == 5 and parts[2] == "station" and parts[4] == "reading":
            with contextlib.suppress(ValueError, KeyError, TypeError):
                self.readings[(parts[1], parts[3])].add(json.loads(payload)["time"])
        super().apply(broker, topic, payload, retained, now)


class ViewThread:
    """The fleet view and its page (`url`) on their own event loop in a thread."""

    def __init__(self, stack: FleetStack) -> None:
        c = stack.central
        self.state = RecordingState(stack.cycle_real_s)
        self.listener = Listener(self.state, [BrokerAddress("127.0.0.1", b.port, b.name)
                                              for b in c.brokers],
                                 username=READER, password=c.passwords[READER])
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                        name="fleet-view")
        self._task: asyncio.Task[None] | None = None
        self._runner: Any = None

    def start(self) -> None:
        self._thread.start()

        async def begin() -> None:
            from aiohttp import web

            self._runner = runner = web.AppRunner(app(self.state), access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            self._task = asyncio.create_task(self.listener.run())

        asyncio.run_coroutine_threadsafe(begin(), self.loop).result(10)
        wait_until(self.listener.ready.is_set, 10, "the fleet view to subscribe")

    def _call(self, fn: Any) -> Any:
        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def snapshot(self) -> dict[str, Any]:
        doc: dict[str, Any] = self._call(self.state.snapshot)
        return doc

    def readings(self) -> dict[tuple[str, str], set[str]]:
        got: dict[tuple[str, str], set[str]] = self._call(
            lambda: {k: set(v) for k, v in self.state.readings.items()})
        return got

    def close(self) -> None:
        async def end() -> None:
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._task
            if self._runner is not None:
                await self._runner.cleanup()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(end(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        self.loop.close()


def read(central: Central, path: str, params: dict[str, str]) -> dict[str, Any]:
    """A read through vmauth (as Grafana and vmalert read), raising on any HTTP error."""
    token = base64.b64encode(f"{READER}:{central.passwords[READER]}".encode()).decode()
    request = urllib.request.Request(
        f"{central.auth_url}{path}?{urllib.parse.urlencode(params)}",
        headers={"Authorization": f"Basic {token}"})
    with HTTP.open(request, timeout=10) as response:
        doc: dict[str, Any] = json.load(response)
        return doc


def export(url: str, match: str) -> dict[tuple[tuple[str, str], ...], list[int]]:
    """Raw samples of one node: labels → sorted timestamps (ms)."""
    # the gateways' clock runs ahead of the wall clock: ask up to two days ahead
    query = urllib.parse.urlencode({"match[]": match, "start": "0",
                                    "end": f"{time.time() + 2 * 86400:.0f}"})
    with HTTP.open(f"{url}/api/v1/export?{query}", timeout=30) as response:
        lines = response.read().decode().splitlines()
    out: dict[tuple[tuple[str, str], ...], list[int]] = {}
    for line in lines:
        series = json.loads(line)
        key = tuple(sorted(series["metric"].items()))
        out[key] = sorted(out.get(key, []) + list(series["timestamps"]))
    return out
