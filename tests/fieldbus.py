"""The field-bus rig: a daemon and the simulators in one event loop, time injected.

`tests/data/fieldbus.toml` holds ten river gauges behind a Modbus TCP gateway, ten on an
RS-485 Modbus RTU line (a socat pty pair, the simulator on the device side, with line-time
emulation at 9600 baud) and four on a serial text-protocol line. The test drives cycles with
`rig.cycle()` on a time it chooses, sets fault knobs on the simulated devices, and reads
the outcome from the cycle result and the daemon's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import random
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from services import PtyPair, free_port

from gauged.alarm.types import CycleResult
from gauged.clock import Clock
from gauged.config.load import load_config
from gauged.config.settings import Config
from gauged.daemon.daemon import Daemon
from simulators.clock import SimClock
from simulators.fleet import Fleet

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "tests" / "data" / "fieldbus.toml"
T0 = datetime(2026, 7, 1, tzinfo=UTC)
CREST = 4.0
LEVEL_STATIONS = [f"{b}_{i}" for b in ("tcp", "rs485") for i in range(1, 11)] + \
    [f"line_{i}" for i in range(1, 4)]


def ramp(values: list[float]) -> Callable[[int], float]:
    """A profile (see `write_scenario`) that follows `values` cycle by cycle, then holds."""
    return lambda cycle: values[min(cycle, len(values) - 1)]


def write_scenario(path: Path, levels: dict[str, float], rain_mm: float = 0.5,
                   rows: int = 200, noise_mm: int = 20, seed: int = 7,
                   profiles: dict[str, Callable[[int], float]] | None = None) -> None:
    """Each river station around its level (± `noise_mm`, whole millimetres, so that no
    gauge flat-lines by chance), or around `profiles[station](cycle)`, rain at a steady
    rate; one row per cycle."""
    profiles = profiles or {}
    rng = random.Random(seed)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["time", "station", "quantity", "value"])
        for i in range(rows):
            for sid, level in levels.items():
                jitter = rng.randint(-noise_mm, noise_mm) / 1000 if noise_mm else 0.0
                base = profiles[sid](i) if sid in profiles else level
                w.writerow([i * 180, sid, "level_m", f"{base + jitter:.3f}"])
            w.writerow([i * 180, "line_rain", "rain_mm", f"{rain_mm:.1f}" if i else "0.0"])


@dataclass
class FieldRig:
    config: Config
    fleet: Fleet
    daemon: Daemon
    ptys: dict[str, PtyPair]
    now: list[float]  # the injected time, shared with the simulators' clock
    cycles: int = 0
    results: list[CycleResult] = field(default_factory=list)

    def time(self, index: int) -> datetime:
        return T0 + timedelta(seconds=180 * index)

    async def cycle(self) -> CycleResult:
        """One daemon cycle at the next cycle time; the simulators answer that time's row."""
        when = self.time(self.cycles)
        self.now[0] = when.timestamp()
        result = await self.daemon.cycle(when)
        self.cycles += 1
        self.results.append(result)
        return result

    def state(self, sid: str) -> Any:
        return self.daemon.states[sid]


@contextlib.asynccontextmanager
async def field_rig(tmp_path: Path, pty_factory: Callable[[str], PtyPair],
                    levels: dict[str, float] | None = None,
                    edit: Callable[[str], str] = lambda t: t,
                    speed: float = 1.0,
                    profiles: dict[str, Callable[[int], float]] | None = None,
                    ) -> AsyncIterator[FieldRig]:
    """Start the simulators and open the daemon (relays OFF); yield the rig."""
    ptys = {name: pty_factory(name) for name in ("rs485", "line")}
    text = TEMPLATE.read_text(encoding="utf-8")
    for key, value in {
        "@TCP_PORT@": str(free_port()), "@RELAY_PORT@": str(free_port()),
        "@SINK_PORT@": str(free_port()), "@RTU_PATH@": str(ptys["rs485"].gateway),
        "@LINE_PATH@": str(ptys["line"].gateway), "@CLIPS@": str(ROOT / "config" / "clips"),
    }.items():
        text = text.replace(key, value)
    config_path = tmp_path / "fieldbus.toml"
    config_path.write_text(edit(text), encoding="utf-8")
    scenario = tmp_path / "steady.csv"
    write_scenario(scenario, levels or dict.fromkeys(LEVEL_STATIONS, 1.0), profiles=profiles)
    config = load_config(config_path)
    now = [T0.timestamp()]
    # `speed` sets how fast simulated durations (sirens, clips) pass; time itself is injected
    # (a read lands half a simulated second after its cycle's boundary, as a real one would)
    origin = T0.timestamp()
    clock = SimClock(speed, T0, origin,
                     wall_time=lambda: origin + (now[0] + 0.5 - origin) / speed)
    fleet = Fleet(config_path, scenario, clock,
                  serial_paths={name: str(p.device) for name, p in ptys.items()})
    async with fleet, background(fleet.serve_forever(), name="simulators"):
        daemon = Daemon(config, Clock(speed))
        async with daemon.opened():
            yield FieldRig(config, fleet, daemon, ptys, now)


async def until(condition: Callable[[], bool], within_s: float, what: str) -> None:
    """Poll `condition` (letting the event loop run) until it holds, or fail after `within_s`."""
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within_s:g} s waiting for {what}")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def background(*coros: Coroutine[Any, Any, Any], name: str) -> AsyncIterator[None]:
    """Run `coros` as tasks while the block runs; cancel them and wait for them after it."""
    tasks = [asyncio.create_task(coro, name=f"test[{name}]") for coro in coros]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
