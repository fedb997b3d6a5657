"""One gateway of the fleet demo: its simulators and its daemon in one process, uplinks on.

`gauged demo` runs the reference system with every uplink off; a gateway of the fleet demo
is the same pair (simulators and daemon sharing the `[clock]` of its configuration) with
MQTT and InfluxDB pointed at the central stack. One process per gateway: `kill -9` of it is
a gateway losing power (its simulators go with it, as a site's devices would fall silent).

    python -m gauged.fleet.gateway CONFIG SCENARIO [--record DIR]

prints `gateway ready` once the simulators listen and the daemon starts.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from gauged.config.load import load_config
from gauged.daemon.daemon import Daemon, clock_from
from gauged.errors import ConfigError
from gauged.logs import setup


async def run(config_path: Path, scenario: Path, record: Path | None) -> int:
    # The simulators stand alone (DESIGN §3): only a demo brings both sides together.
    from simulators.clock import SimClock
    from simulators.fleet import Fleet

    config = load_config(config_path)
    c = config.clock
    clock = clock_from(config)
    daemon = Daemon(config, clock)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, daemon.stop)
    async with Fleet(config_path, scenario, SimClock(c.speed, c.start, c.anchor_unix),
                     record) as fleet:
        print("gateway ready", flush=True)
        async with asyncio.TaskGroup() as tg:
            simulators = tg.create_task(fleet.serve_forever(), name="fleet[simulators]")
            await daemon.run()
            simulators.cancel()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gauged.fleet.gateway")
    p.add_argument("config", type=Path)
    p.add_argument("scenario", type=Path)
    p.add_argument("--record", type=Path, help="the simulators' relay and audio journals")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    setup(args.log_level)
    try:
        return asyncio.run(run(args.config, args.scenario, args.record))
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
