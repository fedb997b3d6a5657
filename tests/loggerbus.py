"""The logger rig: multi-channel loggers over Modbus TCP and RTU, a daemon, time injected.

`tests/data/logger.toml` holds one logger at unit 5 behind a TCP gateway and one at unit 5 on
an RS-485 RTU line (a socat pty pair): two levels, a rain counter, a shared status word and
the cabinet's battery, temperature, mains and door each. The simulators serve them
(simulators/logger.py models the cabinet: drive it with `rig.fleet.set_fault(bus, 5, ...)`).
"""

from __future__ import annotations

import contextlib
import csv
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from fieldbus import ROOT, T0, FieldRig, background
from services import PtyPair, free_port

from gauged.clock import Clock
from gauged.config.load import load_config
from gauged.daemon.daemon import Daemon
from simulators.clock import SimClock
from simulators.fleet import Fleet

TEMPLATE = ROOT / "tests" / "data" / "logger.toml"
LEVELS = {"tcp_level": 1.234, "tcp_level2": 2.5, "rtu_level": 0.75, "rtu_level2": 3.125}
RAIN_MM = {"tcp_rain": 0.5, "rtu_rain": 1.0}  # per cycle: 10 and 20 mm/h, under every stage
UNIT = 5


def write_scenario(path: Path, rows: int = 100) -> None:
    """Steady levels (a millimetre of wobble so nothing flat-lines), steady rain."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["time", "station", "quantity", "value"])
        for i in range(rows):
            for sid, level in LEVELS.items():
                w.writerow([i * 180, sid, "level_m", f"{level + (i % 2) / 1000:.3f}"])
            for sid, mm in RAIN_MM.items():
                w.writerow([i * 180, sid, "rain_mm", f"{mm if i else 0.0:.1f}"])


@contextlib.asynccontextmanager
async def logger_rig(tmp_path: Path, pty_factory: Callable[[str], PtyPair],
                     edit: Callable[[str], str] = lambda t: t) -> AsyncIterator[FieldRig]:
    """Start the simulators and open the daemon; yield the rig (`rig.cycle()` runs one)."""
    pty = pty_factory("rs485")
    text = TEMPLATE.read_text(encoding="utf-8")
    text = text.replace("@TCP_PORT@", str(free_port())).replace("@RTU_PATH@", str(pty.gateway))
    config_path = tmp_path / "logger.toml"
    config_path.write_text(edit(text), encoding="utf-8")
    scenario = tmp_path / "steady.csv"
    write_scenario(scenario)
    config = load_config(config_path)
    now = [T0.timestamp()]
    origin = T0.timestamp()
    clock = SimClock(1.0, T0, origin, wall_time=lambda: now[0] + 0.5)
    fleet = Fleet(config_path, scenario, clock, serial_paths={"rs485": str(pty.device)})
    async with fleet, background(fleet.serve_forever(), name="simulators"):
        daemon = Daemon(config, Clock(1.0))
        async with daemon.opened():
            yield FieldRig(config, fleet, daemon, {"rs485": pty}, now)
