"""Command line: run the simulators of a gauged configuration until SIGINT or SIGTERM.

    python -m simulators [--config PATH] [--scenario CSV] [--speed X] [--start ISO]
                         [--anchor UNIX] [--record DIR] [--serial NAME=PATH ...]
                         [--faults FILE] [--control PORT] [--seed N]

Prints exactly one line, ``simulators ready``, on stdout once every server listens and every
served pty is open (a parent process waits for it); logs go to stderr. Exit codes: 0 after a
signal, 2 for bad arguments, configuration, scenario or faults file, 1 when a server cannot
start or a pty cannot be opened. ``gauged simulate`` calls :func:`main`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from simulators.clock import SimClock
from simulators.config import load_config
from simulators.errors import ConfigError, ScenarioError, SimulatorError
from simulators.fleet import DEFAULT_SEED, Fleet
from simulators.scenarios import bundled

log = logging.getLogger("simulators")

DEFAULT_CONFIG = Path("config/minato-furukawa.toml")
READY_LINE = "simulators ready"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (public so that ``gauged simulate`` can reuse its help)."""
    parser = argparse.ArgumentParser(
        prog="simulators",
        description="Gauge, relay-board and audio-sink simulators for a gauged configuration.",
    )
    parser.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, help="gauged TOML config (%(default)s)"
    )
    parser.add_argument(
        "--scenario",
        help="scenario CSV to play, or the name of a bundled one (design_storm_50mm, calm_day); "
        "without it gauges show level 0.0 and counter 0",
    )
    parser.add_argument(
        "--speed",
        type=float,
        help="simulated seconds per wall second (default: [clock] speed of the config, else 1)",
    )
    parser.add_argument(
        "--start", help="simulated time at the anchor, ISO-8601 with offset (default: now)"
    )
    parser.add_argument(
        "--anchor", type=float, help="Unix time at which the clock reads --start (default: now)"
    )
    parser.add_argument("--record", type=Path, help="folder for relays.jsonl and audio.jsonl")
    parser.add_argument(
        "--serial",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="serve serial bus NAME (modbus_rtu or serial_line), or the MP3 module of "
        "dfplayer player NAME, on the device side PATH of a pty pair; repeatable. Serial "
        "buses and modules without one are not simulated",
    )
    parser.add_argument(
        "--faults", type=Path, help="TOML file of fault knobs set at start ([[fault]] tables)"
    )
    parser.add_argument(
        "--control",
        type=int,
        metavar="PORT",
        help="serve the JSON-lines control channel on 127.0.0.1:PORT",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        help="seed of the fault knobs' random draws (%(default)s)",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR")
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulators; return the process exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and on bad arguments (2)
        return exc.code if isinstance(exc.code, int) else 2
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # pymodbus logs every refused request at ERROR; our own log says what matters.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    try:
        fleet = _make_fleet(args)
    except (ConfigError, ScenarioError, ValueError) as exc:
        print(f"simulators: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(fleet))
    except SimulatorError as exc:
        print(f"simulators: {exc}", file=sys.stderr)
        return 1
    return 0


def _make_fleet(args: argparse.Namespace) -> Fleet:
    scenario: Path | None = None
    if args.scenario is not None:
        scenario = Path(args.scenario)
        if not scenario.is_file() and (found := bundled(args.scenario)) is not None:
            scenario = found
    start = None
    if args.start is not None:
        try:
            start = datetime.fromisoformat(args.start)
        except ValueError:
            raise ValueError(f"--start {args.start!r} is not ISO-8601") from None
    speed = args.speed
    if speed is None:
        speed = load_config(args.config).clock_speed or 1.0
    clock = SimClock(speed=speed, start=start, anchor_unix=args.anchor)
    log.info("clock: %r", clock)
    if args.control is not None and not 1 <= args.control <= 65535:
        raise ValueError(f"--control {args.control}: not a TCP port")
    return Fleet(
        args.config,
        scenario,
        clock,
        args.record,
        serial_paths=_serial_paths(args.serial),
        faults=args.faults,
        seed=args.seed,
        control_port=args.control,
    )


def _serial_paths(pairs: list[str]) -> dict[str, Path]:
    paths: dict[str, Path] = {}
    for pair in pairs:
        bus, sep, path = pair.partition("=")
        if not sep or not bus or not path:
            raise ValueError(f"--serial {pair!r}: expected NAME=PATH")
        if bus in paths:
            raise ValueError(f"--serial {bus}: given twice")
        paths[bus] = Path(path)
    return paths


async def _serve(fleet: Fleet) -> None:
    loop = asyncio.get_running_loop()
    async with fleet, asyncio.TaskGroup() as group:
        serving = group.create_task(fleet.serve_forever(), name="simulators.serve")
        for signum in (signal.SIGINT, signal.SIGTERM):
            # Cancelling the serving task ends the TaskGroup normally; the fleet then closes.
            loop.add_signal_handler(signum, serving.cancel)
        print(READY_LINE, flush=True)
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(signum)
    log.info("simulators stopped")
