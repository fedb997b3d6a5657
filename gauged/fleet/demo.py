"""`gauged fleet-demo` (`make fleet-demo`): the central stack, N gateways with a storm
moving across them, the fleet page, and the alerts people on duty would get, printed.

Ctrl-C stops the gateways (relays OFF), then the centre. Everything lives in a temporary
folder, on free loopback ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import tempfile
from pathlib import Path

from gauged.fleet.central import OPERATOR, READER
from gauged.fleet.server import serve
from gauged.fleet.stack import STORM, FleetStack
from gauged.fleet.view import BrokerAddress, FleetState, Listener

log = logging.getLogger("gauged.fleet.demo")


def main(gateways: int, speed: float, scenario: Path = STORM, lag_min: float = 18.0,
         page_port: int = 8090) -> int:
    with tempfile.TemporaryDirectory(prefix="gauged-fleet-") as folder, \
            FleetStack(Path(folder), gateways, speed=speed, scenario=scenario,
                       lag_min=lag_min) as stack:
        c = stack.central
        log.info("fleet demo: %d gateways at ×%g (a cycle every %.1f s), storm lag %g min",
                 gateways, speed, stack.cycle_real_s, lag_min)
        log.info("brokers: primary 127.0.0.1:%d, backup 127.0.0.1:%d (users: gateway ids, "
                 "%s, %s; passwords in %s)", c.brokers[0].port, c.brokers[1].port, READER,
                 OPERATOR, folder)
        log.info("VictoriaMetrics nodes %s %s; vmagent %s; vmauth (reads, user %s) %s",
                 c.nodes[0].url, c.nodes[1].url, c.agent_url, READER, c.auth_url)
        log.info("vmalert %s; Alertmanager %s; alerts are printed below", c.vmalert_url,
                 c.am_url)
        for g in stack.gateways:
            log.info("gateway %s: its own page %s/ (storm from %s)", g.id, g.status_url,
                     g.scenario)
        log.info("fleet page: http://127.0.0.1:%d/ ; Ctrl-C stops", page_port)
        state = FleetState(cycle_s=stack.cycle_real_s)
        listener = Listener(state, [BrokerAddress("127.0.0.1", b.port, b.name)
                                    for b in c.brokers], username=READER,
                            password=c.passwords[READER])

        async def run() -> None:
            task = asyncio.create_task(serve(state, listener, "127.0.0.1", page_port))
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, task.cancel)
            with contextlib.suppress(asyncio.CancelledError):
                await task

        asyncio.run(run())
        log.info("fleet demo: stopping the gateways")
        stack.stop_gateways()
    return 0
