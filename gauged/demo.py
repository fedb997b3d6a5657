"""`gauged demo`: the reference system against its simulators, on an accelerated clock.

The simulators (gauges playing a storm, the relay board, the audio sink) and the daemon run
in one process and share one clock, with no external service: the InfluxDB and MQTT uplinks
are switched off. Ctrl-C stops the daemon (relays OFF) and then the simulators.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from gauged.alarm.scenario import read_scenario
from gauged.clock import next_boundary
from gauged.config.models import ClockConfig
from gauged.config.settings import Config
from gauged.daemon.daemon import Daemon, clock_from
from gauged.errors import ScenarioError

log = logging.getLogger("gauged.demo")


async def run_demo(config: Config, scenario: Path, speed: float, until_end: bool) -> int:
    """Play `scenario` through simulators and daemon; 0 when every relay ends OFF."""
    with _fresh_state(config):
        return await _play(config, scenario, speed, until_end)


@contextlib.contextmanager
def _fresh_state(config: Config) -> Iterator[None]:
    """Each demo starts from a fresh state in a temporary folder (a stage restored from an
    earlier demo would silence this one), unless `[state] path` is given."""
    if "path" in config.state.model_fields_set:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="gauged-demo-") as folder:
        config.state.path = Path(folder) / "state.sqlite3"
        yield


async def _play(config: Config, scenario: Path, speed: float, until_end: bool) -> int:
    # The simulators stand alone (DESIGN §3): only the demo brings both sides together.
    from simulators.clock import SimClock
    from simulators.fleet import Fleet

    try:
        rows = read_scenario(scenario, config)
    except ScenarioError as exc:
        log.error("%s", exc)
        return 2
    duration_s = (rows[-1].time - rows[0].time).total_seconds() if rows else 0.0
    interval = config.gateway.poll_interval_s
    anchor = time.time() + 1.0
    start = datetime.fromtimestamp(next_boundary(time.time(), interval), UTC)
    config.clock = ClockConfig(speed=speed, start=start, anchor_unix=anchor)
    config.influx.enabled = False
    config.mqtt.enabled = False
    clock = clock_from(config)
    log.info("demo scenario=%s length=%.1f h speed=%g: one %g-s cycle every %.1f s; "
             "status at http://%s:%d/status; Ctrl-C stops", scenario, duration_s / 3600, speed,
             interval, interval / speed, config.status.host, config.status.port)
    log.info("demo: InfluxDB and MQTT uplinks are off (no external service needed)")

    daemon = Daemon(config, clock)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, daemon.stop)

    async def stop_at_end() -> None:
        await clock.sleep_until(start.timestamp() + duration_s + 2 * interval)
        log.info("demo: the scenario has played; stopping")
        daemon.stop()

    async with Fleet(config.source, scenario, SimClock(speed, start, anchor), None) as fleet:
        async with asyncio.TaskGroup() as tg:
            simulators = tg.create_task(fleet.serve_forever(), name="demo[simulators].serve")
            ender = tg.create_task(stop_at_end(), name="demo.end") if until_end else None
            await daemon.run()
            simulators.cancel()
            if ender is not None:
                ender.cancel()
        on = [f"{relay.name} (bus {relay.hub.name} unit {relay.config.unit} "
              f"coil {relay.config.coil})"
              for relay in daemon.relays
              if fleet.coils(relay.hub.name, relay.config.unit)[relay.config.coil]]
    if on:
        log.error("demo stopped with relays ON: %s", ", ".join(on))
        return 1
    log.info("demo stopped; relay board: all %d relays OFF", len(daemon.relays))
    return 0
