"""PERF-2: one daemon cycle over one RS-485 Modbus RTU bus at 9600 baud 8N1 with 20 gauges.

Setup (a temporary folder): a socat pty pair stands in for the USB adapter and the cable; the
simulators run in a child process (`python -m simulators --serial rs485=…`) on the device
side and emulate line time (a request is taken as arriving at wire speed, and each reply is
written to the pty when its last character would have left the wire, after the 3.5-character
silence). The daemon's config has that one `modbus_rtu` bus with 20 gauges (units 1-20, no
status word) and 20 level stations with three stages; InfluxDB and MQTT are enabled and point
at closed loopback ports (their writers run and fail; the cycle waits for neither). Two
variants, each with its own simulators: single-register values (int16/uint16, holding and
input) and two-register values (int32/uint32/float32, all byte and word orders).

Measured: the wall time of `Daemon.cycle(when)` on an injected cycle time, 2 warm-up cycles
then the median of 12; the bus's own read time (`poller.bus_read_s`) is shown too. Baseline:
the computed wire time, per exchange (8-byte request + (5 + 2n)-byte reply) × 10 bits / 9600
+ 2 × 3.5 characters of silence, summed over the 20 gauges. The result line is the
single-register variant; the two-register variant is printed before it.

Logger variant (issue 14): the same 20 units, each a 4-channel logger (four int16 levels on
holding registers 0-3 of one unit id, `[devices]`, 80 level stations), read once with joined
reads (one request of 4 registers per unit) and once with `max_registers = 1` (one request per
channel, what gauged did before). Baselines: the computed wire time of each plan.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import (
    STAGES,
    check_cycle,
    describe,
    machine,
    result,
    setup_logging,
    simulators,
    uplinks_running,
    uplinks_toml,
    write_scenario,
)
from services import PtyPair

from drivers.registry import make_gauge, make_hub
from gauged.clock import Clock
from gauged.config.load import load_config
from gauged.daemon.daemon import Daemon

BAUD, BITS, GAUGES = 9600, 10, 20
CHAR_S = BITS / BAUD
WARMUP, CYCLES, LIMIT = 2, 12, 1.15
T0 = datetime(2026, 7, 1, tzinfo=UTC)
GOAL = "≤ 1.15 × computed wire time"

# (kind, data type, byte order, word order, scale), cycled over the 20 units
ONE_REGISTER = [("holding", "int16", "big", "big", 0.001),
                ("input", "uint16", "big", "big", 0.001)]
TWO_REGISTERS = [
    ("holding", "int32", "big", "big", 0.001),
    ("input", "int32", "little", "little", 0.001),
    ("holding", "uint32", "big", "little", 0.001),
    ("input", "uint32", "little", "big", 0.001),
    ("holding", "float32", "big", "big", 1.0),
    ("input", "float32", "little", "little", 1.0),
    ("holding", "float32", "big", "little", 1.0),
    ("input", "float32", "little", "big", 1.0),
]
STAGES_QUIET = STAGES.replace(', sequence = "warning"', "").replace(', sequence = "overflow"', "")


def wire_time(registers: int) -> float:
    """Computed line time of one cycle: 20 reads of `registers` registers each."""
    per_exchange = (8 + 5 + 2 * registers) * CHAR_S + 2 * 3.5 * CHAR_S
    return GAUGES * per_exchange


def write_config(path: Path, pty: Path, layouts: list[tuple[str, str, str, str, float]]) -> None:
    parts = [f"""[gateway]
id = "perf-2"

[status]
port = 0
{uplinks_toml()}
[buses.rs485]
kind = "modbus_rtu"
port = "{pty}"
baudrate = {BAUD}
parity = "N"
stopbits = 1
timeout_s = 0.5
retries = 1
"""]
    for unit in range(1, GAUGES + 1):
        kind, dtype, bo, wo, scale = layouts[(unit - 1) % len(layouts)]
        parts.append(f"""
[gauges.g{unit}]
bus = "rs485"
unit = {unit}
quantity = "level_m"
register = {{ kind = "{kind}", address = 2, data_type = "{dtype}", byte_order = "{bo}", \
word_order = "{wo}", scale = {scale} }}
range = [-1.0, 8.0]

[stations.g{unit}]
kind = "level"
gauge = "g{unit}"
crest_m = 4.0
{STAGES_QUIET}
""")
    path.write_text("".join(parts), encoding="utf-8")


CHANNELS = 4


def logger_wire_time(joined: bool) -> float:
    """Computed line time of one logger cycle: one 4-register read per unit, or four
    1-register reads."""
    reads, registers = (1, CHANNELS) if joined else (CHANNELS, 1)
    return GAUGES * reads * ((8 + 5 + 2 * registers) * CHAR_S + 2 * 3.5 * CHAR_S)


def write_logger_config(path: Path, pty: Path, max_registers: int) -> None:
    parts = [f"""[gateway]
id = "perf-2-logger"

[status]
port = 0
{uplinks_toml()}
[buses.rs485]
kind = "modbus_rtu"
port = "{pty}"
baudrate = {BAUD}
parity = "N"
stopbits = 1
timeout_s = 0.5
retries = 1
"""]
    for unit in range(1, GAUGES + 1):
        parts.append(f"""
[devices.l{unit}]
bus = "rs485"
unit = {unit}
max_registers = {max_registers}
""")
        for c in range(CHANNELS):
            parts.append(f"""
[gauges.l{unit}_{c}]
device = "l{unit}"
quantity = "level_m"
register = {{ kind = "holding", address = {c}, data_type = "int16", scale = 0.001 }}
range = [-1.0, 8.0]

[stations.l{unit}_{c}]
kind = "level"
gauge = "l{unit}_{c}"
crest_m = 4.0
{STAGES_QUIET}
""")
    path.write_text("".join(parts), encoding="utf-8")


def logger_levels() -> dict[str, float]:
    return {f"l{u}_{c}": 1.0 + 0.01 * u + 0.001 * c for u in range(1, GAUGES + 1)
            for c in range(CHANNELS)}


def run_logger(work: Path, max_registers: int) -> tuple[list[float], list[float]]:
    """Daemon cycle times and the bus's read times of the logger variant."""
    folder = work / f"logger{max_registers}"
    folder.mkdir()
    config, scenario = folder / "perf2.toml", folder / "steady.csv"
    with PtyPair(folder, "rs485") as pty:
        pty.start()
        write_logger_config(config, pty.gateway, max_registers)
        write_scenario(scenario, logger_levels())
        with simulators(config, scenario, folder, serial={"rs485": pty.device}):
            return asyncio.run(daemon_cycles(config, logger_levels()))


def levels() -> dict[str, float]:
    return {f"g{u}": 1.0 + 0.001 * u for u in range(1, GAUGES + 1)}


async def bare_hub(config_path: Path) -> list[float]:
    """The same 20 reads through the RTU hub alone (no daemon): this rig's floor."""
    config = load_config(config_path)
    times = []
    async with make_hub("rs485", config.buses["rs485"]) as hub:
        gauges = [make_gauge(hub, g.unit, g.spec, g.status) for g in config.gauges.values()
                  if g.spec is not None]
        for i in range(WARMUP + CYCLES):
            t0 = time.perf_counter()
            for gauge in gauges:
                await gauge.read()
            if i >= WARMUP:
                times.append(time.perf_counter() - t0)
            await asyncio.sleep(0.05)
    return times


async def daemon_cycles(config_path: Path, expected: dict[str, float] | None = None,
                        ) -> tuple[list[float], list[float]]:
    """Cycle times and the bus's read time per cycle."""
    daemon = Daemon(load_config(config_path), Clock())
    expected = expected or levels()
    cycles, bus = [], []
    async with daemon.opened(), uplinks_running(daemon):
        for i in range(WARMUP + CYCLES):
            t0 = time.perf_counter()
            res = await daemon.cycle(T0 + timedelta(seconds=180 * i))
            dt = time.perf_counter() - t0
            check_cycle(i, res, expected)
            if i >= WARMUP:
                cycles.append(dt)
                bus.append(daemon.poller.bus_read_s["rs485"])
            await asyncio.sleep(0.05)
    return cycles, bus


Times = tuple[list[float], list[float], list[float]]


def run_variant(work: Path, name: str, layouts: list[tuple[str, str, str, str, float]]) -> Times:
    """Daemon cycle times, the bus's read times, and the bare hub's times."""
    folder = work / name
    folder.mkdir()
    config, scenario = folder / "perf2.toml", folder / "steady.csv"
    with PtyPair(folder, "rs485") as pty:
        pty.start()
        write_config(config, pty.gateway, layouts)
        write_scenario(scenario, levels())
        with simulators(config, scenario, folder, serial={"rs485": pty.device}):
            cycles, bus = asyncio.run(daemon_cycles(config))
            return cycles, bus, asyncio.run(bare_hub(config))


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="perf2-") as tmp:
        work = Path(tmp)
        setup_logging(work)
        runs = {n: run_variant(work, f"{n}reg", layouts)
                for n, layouts in ((2, TWO_REGISTERS), (1, ONE_REGISTER))}
        loggers = {joined: run_logger(work, 125 if joined else 1) for joined in (False, True)}
    print(f"machine: {machine()}")
    print(f"one RS-485 bus, {BAUD} Bd 8N1 ({CHAR_S * 1000:.3f} ms per character), "
          f"{GAUGES} gauges, simulators with line-time emulation behind socat")
    for n, (cycles, bus, hub) in runs.items():
        wire, value = wire_time(n), statistics.median(cycles)
        print(f"{n}-register reads: computed wire time {wire * 1000:.1f} ms "
              f"(reply {5 + 2 * n} bytes)")
        print(describe("  daemon cycle", cycles) + f"  ratio {value / wire:.3f}"
              + ("" if n == 1 else f"  met: {value / wire <= LIMIT}"))
        print(describe("  of which the bus's reads", bus)
              + f"  ratio {statistics.median(bus) / wire:.3f}")
        print(describe("  bare RTU hub, same reads", hub)
              + f"  ratio {statistics.median(hub) / wire:.3f}  (the rig's floor)")
    print(f"{GAUGES} loggers of {CHANNELS} channels (int16, holding 0-3), 80 stations:")
    for joined, (cycles, bus) in loggers.items():
        wire, value = logger_wire_time(joined), statistics.median(cycles)
        plan = f"{GAUGES} requests of {CHANNELS} registers" if joined else \
            f"{GAUGES * CHANNELS} requests of 1 register"
        print(f"  {'joined reads' if joined else 'one per channel'} ({plan}): computed wire "
              f"time {wire * 1000:.1f} ms")
        print(describe("    daemon cycle", cycles) + f"  ratio {value / wire:.3f}"
              + f"  met: {value / wire <= LIMIT}")
        print(describe("    of which the bus's reads", bus)
              + f"  ratio {statistics.median(bus) / wire:.3f}")
    saved = statistics.median(loggers[False][0]) / statistics.median(loggers[True][0])
    print(f"  joined reads: the cycle is {saved:.2f} × faster than one request per channel")
    result("PERF-2", statistics.median(runs[1][0]), wire_time(1), GOAL, LIMIT)


if __name__ == "__main__":
    main()
