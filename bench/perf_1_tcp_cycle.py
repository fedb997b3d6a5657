"""PERF-1: one daemon cycle over 100 Modbus TCP gauges on 10 gateways, each answer 20 ms late.

Setup (a temporary folder): a gauged config with 10 `modbus_tcp` buses (simulated gateways
on free loopback ports), 10 level gauges behind each (unit ids 1-10, the ten register layouts
of tests/data/fieldbus.toml: int16/uint16/int32/uint32/float32, both byte and word orders,
holding and input, value and status word read in one request), 100 level stations with three
stages, one zone whose siren and amplifier relays sit on an eleventh gateway. InfluxDB and MQTT
are enabled and point at closed loopback ports, their writer tasks running: every cycle formats
and queues its points and retained states while the uplinks fail and back off, and the cycle
waits for neither. The simulators run in a child process (`python -m simulators --faults`) with
`delay_s = 0.02` on every gauge device.

Measured: the wall time of `Daemon.cycle(when)` (read every gauge, buses in parallel; decode,
quality, stages, broadcasts, records), on an injected cycle time, 2 warm-up cycles then the
median of 15. Baseline: the ideal, the slowest gateway's serial time, 10 × 20 ms = 0.2 s
(computed). For comparison, in the same run: a sequential pymodbus loop (one
AsyncModbusTcpClient per gateway, the same 100 requests one after another), median of 3.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import (
    SEQUENCES,
    STAGES,
    check_cycle,
    describe,
    free_port,
    machine,
    result,
    setup_logging,
    simulators,
    timed,
    uplinks_running,
    uplinks_toml,
    write_scenario,
)
from pymodbus.client import AsyncModbusTcpClient

from gauged.clock import Clock
from gauged.config.load import load_config
from gauged.daemon.daemon import Daemon

GATEWAYS, UNITS, DELAY_S = 10, 10, 0.02
WARMUP, CYCLES, LOOP_ROUNDS = 2, 15, 3
IDEAL_S = UNITS * DELAY_S
T0 = datetime(2026, 7, 1, tzinfo=UTC)
GOAL = "≤ 1.10 × slowest gateway serial time (QUALITY); issue 3 asks ≤ 1.25"

# (kind, value address, data type, byte order, word order, scale, status address)
LAYOUTS = [
    ("holding", 2, "int16", "big", "big", 0.001, 6),
    ("input", 4, "uint16", "big", "big", 0.001, 8),
    ("holding", 6, "int32", "big", "big", 0.001, 10),
    ("input", 8, "int32", "little", "little", 0.001, 12),
    ("holding", 10, "uint32", "big", "little", 0.001, 14),
    ("input", 12, "uint32", "little", "big", 0.001, 16),
    ("holding", 14, "float32", "big", "big", 1.0, 18),
    ("input", 16, "float32", "little", "little", 1.0, 20),
    ("holding", 18, "float32", "big", "little", 1.0, 22),
    ("input", 20, "float32", "little", "big", 1.0, 24),
]


def station(g: int, unit: int) -> str:
    return f"gw{g}_{unit}"


def write_config(path: Path, ports: list[int]) -> None:
    parts = [f"""[gateway]
id = "perf-1"

[status]
port = 0
{uplinks_toml()}
[buses.relays]
kind = "modbus_tcp"
host = "127.0.0.1"
port = {free_port()}
timeout_s = 0.5

[zones.riverside]
siren_relay = {{ bus = "relays", unit = 1, coil = 0 }}
amplifier_relay = {{ bus = "relays", unit = 1, coil = 1 }}
player = "sink"

[players.sink]
kind = "sink"
port = {free_port()}
{SEQUENCES}"""]
    for g, port in enumerate(ports):
        parts.append(f"""
[buses.gw{g}]
kind = "modbus_tcp"
host = "127.0.0.1"
port = {port}
timeout_s = 0.5
""")
        for unit, (kind, addr, dtype, bo, wo, scale, status) in enumerate(LAYOUTS, 1):
            sid = station(g, unit)
            parts.append(f"""
[gauges.{sid}]
bus = "gw{g}"
unit = {unit}
quantity = "level_m"
register = {{ kind = "{kind}", address = {addr}, data_type = "{dtype}", byte_order = "{bo}", \
word_order = "{wo}", scale = {scale} }}
status = {{ kind = "{kind}", address = {status}, data_type = "uint16", fault_mask = 1 }}
range = [-1.0, 8.0]

[stations.{sid}]
kind = "level"
gauge = "{sid}"
crest_m = 4.0
zones = ["riverside"]
{STAGES}
""")
    path.write_text("".join(parts), encoding="utf-8")


def levels() -> dict[str, float]:
    return {station(g, u): 1.0 + 0.01 * g + 0.001 * u
            for g in range(GATEWAYS) for u in range(1, UNITS + 1)}


async def daemon_cycles(config_path: Path) -> tuple[list[float], list[float], dict[str, float]]:
    """Cycle times, per cycle the slowest bus's read time, and the mean time per cycle of
    judging (`_judge`, all stations), stages (`evaluate`) and recording (`Recorder.cycle`)."""
    daemon = Daemon(load_config(config_path), Clock())
    phases: dict[str, float] = {}
    timed(daemon.poller, "_judge", phases)
    timed(daemon.engine, "evaluate", phases)
    timed(daemon.recorder, "cycle", phases)
    expected = levels()
    cycles, buses = [], []
    async with daemon.opened(), uplinks_running(daemon):
        for i in range(WARMUP + CYCLES):
            if i == WARMUP:
                phases.update(dict.fromkeys(phases, 0.0))
            t0 = time.perf_counter()
            res = await daemon.cycle(T0 + timedelta(seconds=180 * i))
            dt = time.perf_counter() - t0
            check_cycle(i, res, expected)
            if i >= WARMUP:
                cycles.append(dt)
                buses.append(max(daemon.poller.bus_read_s.values()))
            await asyncio.sleep(0.05)  # the uplinks run between cycles, as in service
    return cycles, buses, {k: v / CYCLES for k, v in phases.items()}


async def pymodbus_loop(ports: list[int], parallel: bool) -> list[float]:
    """The daemon's 100 requests (merged value + status) straight through pymodbus: all in a
    row (`parallel=False`) or one task per gateway (the floor this rig allows)."""
    clients = [AsyncModbusTcpClient("127.0.0.1", port=p, timeout=1.0, retries=0) for p in ports]

    async def gateway(c: AsyncModbusTcpClient) -> None:
        for unit, (kind, addr, *_, status) in enumerate(LAYOUTS, 1):
            read = c.read_holding_registers if kind == "holding" else c.read_input_registers
            r = await read(addr, count=status + 1 - addr, device_id=unit)
            assert not r.isError(), r

    try:
        for c in clients:
            assert await c.connect()
        await asyncio.gather(*(gateway(c) for c in clients))  # warm-up
        times = []
        for _ in range(CYCLES if parallel else LOOP_ROUNDS):
            t0 = time.perf_counter()
            if parallel:
                await asyncio.gather(*(gateway(c) for c in clients))
            else:
                for c in clients:
                    await gateway(c)
            times.append(time.perf_counter() - t0)
        return times
    finally:
        for c in clients:
            c.close()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="perf1-") as tmp:
        work = Path(tmp)
        setup_logging(work)
        ports = [free_port() for _ in range(GATEWAYS)]
        config, scenario, faults = work / "perf1.toml", work / "steady.csv", work / "faults.toml"
        write_config(config, ports)
        write_scenario(scenario, levels())
        faults.write_text("".join(f'[[fault]]\nbus = "gw{g}"\ndelay_s = {DELAY_S}\n\n'
                                  for g in range(GATEWAYS)))
        with simulators(config, scenario, work, faults=faults):
            cycles, buses, phases = asyncio.run(daemon_cycles(config))
            loop = asyncio.run(pymodbus_loop(ports, parallel=False))
            floor = asyncio.run(pymodbus_loop(ports, parallel=True))
    print(f"machine: {machine()}")
    value, seq = statistics.median(cycles), statistics.median(loop)
    print(f"{GATEWAYS} gateways × {UNITS} gauges, each answer {DELAY_S * 1000:g} ms late; "
          f"ideal (slowest gateway serial) {IDEAL_S * 1000:.0f} ms")
    print(describe("daemon cycle", cycles) + f"  ratio {value / IDEAL_S:.3f}")
    print(describe("  of which the slowest bus's reads", buses)
          + f"  ratio {statistics.median(buses) / IDEAL_S:.3f}")
    print("  the rest: " + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in phases.items())
          + " per cycle (mean)")
    print(describe("pymodbus, 10 gateways in parallel", floor)
          + f"  ratio {statistics.median(floor) / IDEAL_S:.3f}  (the rig's floor)")
    print(describe("sequential pymodbus loop", loop) + f"  ratio {seq / IDEAL_S:.3f}  "
          f"({seq / (GATEWAYS * UNITS) * 1000:.2f} ms per request; "
          f"daemon {seq / value:.1f}× faster)")
    result("PERF-1", value, IDEAL_S, GOAL, 1.10)


if __name__ == "__main__":
    main()
