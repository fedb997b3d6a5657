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

Measured, in one run and one event loop, alternating: the wall time of `Daemon.cycle(when)`
(read every gauge, buses in parallel; decode, quality, stages, broadcasts, records) on an
injected cycle time, and the **raw-socket floor**: the same 100 requests through a minimal
asyncio Modbus TCP exchange (stdlib streams, MBAP framing by hand, no library), one
connection and one task per gateway, the requests of a gateway one after another, each
answer checked (transaction, unit, function, byte count). Both talk to the same simulated
gateways in the same process. Judged (QUALITY PERF-1): per round, the median daemon cycle
over the median floor cycle; the bar is met when the median of the rounds' ratios is
≤ 1.05; the spread of the rounds is printed. The wire limit (10 × 20 ms = 0.2 s) and a
pymodbus loop (one AsyncModbusTcpClient per gateway, in parallel) are printed for
comparison.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import struct
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
WARMUP, ROUNDS, PER_ROUND, PYMODBUS_CYCLES = 2, 7, 5, 7
IDEAL_S = UNITS * DELAY_S
LIMIT = 1.05
T0 = datetime(2026, 7, 1, tzinfo=UTC)
GOAL = ("daemon cycle ≤ 1.05 × raw-socket floor (median of the rounds' ratios; "
        "QUALITY PERF-1)")
MBAP = struct.Struct(">HHHBBB")  # transaction, protocol, length, unit, function, byte count
REQUEST = struct.Struct(">HHHBBHH")  # … unit, function, address, count

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


class RawGateway:
    """The floor: one gateway's requests over a bare asyncio stream, one after another."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.tid = 0
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    async def cycle(self) -> None:
        assert self.reader is not None
        assert self.writer is not None
        for unit, (kind, addr, *_, status) in enumerate(LAYOUTS, 1):
            self.tid = (self.tid + 1) & 0xFFFF
            function, count = (3 if kind == "holding" else 4), status + 1 - addr
            self.writer.write(REQUEST.pack(self.tid, 0, 6, unit, function, addr, count))
            tid, proto, length, got_unit, got_function, nbytes = \
                MBAP.unpack(await self.reader.readexactly(MBAP.size))
            data = await self.reader.readexactly(length - 3)
            assert (tid, proto, got_unit, got_function, nbytes, len(data)) == \
                (self.tid, 0, unit, function, 2 * count, 2 * count), "a bad answer"


async def floor_cycle(gateways: list[RawGateway]) -> float:
    t0 = time.perf_counter()
    await asyncio.gather(*(g.cycle() for g in gateways))
    return time.perf_counter() - t0


class Measured:
    """Per round: the daemon's cycle times, the floor's, and the slowest bus's read times."""

    def __init__(self) -> None:
        self.daemon: list[list[float]] = []
        self.floor: list[list[float]] = []
        self.buses: list[float] = []
        self.phases: dict[str, float] = {}

    def ratios(self) -> list[float]:
        return [statistics.median(d) / statistics.median(f)
                for d, f in zip(self.daemon, self.floor, strict=True)]


async def measure(config_path: Path, ports: list[int]) -> Measured:
    """Daemon cycles and floor cycles, alternating, in rounds (after warm-up cycles of both).
    `phases`: the mean time per cycle of judging (`_judge`, all stations), stages
    (`evaluate`) and recording (`Recorder.cycle`)."""
    daemon = Daemon(load_config(config_path), Clock())
    out = Measured()
    timed(daemon.poller, "_judge", out.phases)
    timed(daemon.engine, "evaluate", out.phases)
    timed(daemon.recorder, "cycle", out.phases)
    expected = levels()
    gateways = [RawGateway(p) for p in ports]
    cycle = 0

    async def daemon_cycle() -> float:
        nonlocal cycle
        t0 = time.perf_counter()
        res = await daemon.cycle(T0 + timedelta(seconds=180 * cycle))
        dt = time.perf_counter() - t0
        check_cycle(cycle, res, expected)
        cycle += 1
        return dt

    async with daemon.opened(), uplinks_running(daemon):
        for g in gateways:
            await g.open()
        try:
            for _ in range(WARMUP):
                await daemon_cycle()
                await floor_cycle(gateways)
            out.phases.update(dict.fromkeys(out.phases, 0.0))
            for _ in range(ROUNDS):
                daemon_times, floor_times = [], []
                for i in range(PER_ROUND):
                    # which of the two goes first alternates; each starts on a quiet loop:
                    # the daemon's points are in the spool (its thread done) and the uplinks
                    # had 50 ms to run, as between cycles in service
                    if i % 2:
                        floor_times.append(await floor_cycle(gateways))
                        await asyncio.sleep(0.05)
                    daemon_times.append(await daemon_cycle())
                    out.buses.append(max(daemon.poller.bus_read_s.values()))
                    assert daemon.influx is not None
                    assert await daemon.influx.spooled(10.0)
                    await asyncio.sleep(0.05)
                    if not i % 2:
                        floor_times.append(await floor_cycle(gateways))
                        await asyncio.sleep(0.05)
                out.daemon.append(daemon_times)
                out.floor.append(floor_times)
        finally:
            for g in gateways:
                g.close()
    n = ROUNDS * PER_ROUND
    out.phases = {k: v / n for k, v in out.phases.items()}
    return out


async def pymodbus_loop(ports: list[int]) -> list[float]:
    """The same 100 requests through pymodbus, one AsyncModbusTcpClient and one task per
    gateway (for comparison: what the library alone costs on this rig)."""
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
        for _ in range(PYMODBUS_CYCLES):
            t0 = time.perf_counter()
            await asyncio.gather(*(gateway(c) for c in clients))
            times.append(time.perf_counter() - t0)
        return times
    finally:
        for c in clients:
            c.close()


def spread(values: list[float]) -> str:
    return f"min {min(values):.3f}, max {max(values):.3f}"


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
            m = asyncio.run(measure(config, ports))
            lib = asyncio.run(pymodbus_loop(ports))
    print(f"machine: {machine()}")
    print(f"{GATEWAYS} gateways × {UNITS} gauges, each answer {DELAY_S * 1000:g} ms late; "
          f"wire limit (slowest gateway serial) {IDEAL_S * 1000:.0f} ms")
    daemon = [t for r in m.daemon for t in r]
    floor = [t for r in m.floor for t in r]
    print(describe("daemon cycle", daemon) + f"  ÷ wire {statistics.median(daemon) / IDEAL_S:.3f}")
    print(describe("  of which the slowest bus's reads", m.buses))
    print("  the rest: " + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in m.phases.items())
          + " per cycle (mean)")
    print(describe("raw-socket floor", floor)
          + f"  ÷ wire {statistics.median(floor) / IDEAL_S:.3f}")
    print(describe("pymodbus, 10 gateways in parallel", lib)
          + f"  ÷ floor {statistics.median(lib) / statistics.median(floor):.3f}")
    ratios = m.ratios()
    for i, (d, f, r) in enumerate(zip(m.daemon, m.floor, ratios, strict=True), 1):
        print(f"  round {i}: daemon {statistics.median(d) * 1000:6.1f} ms, "
              f"floor {statistics.median(f) * 1000:6.1f} ms, ratio {r:.3f}")
    ratio = statistics.median(ratios)
    print(f"daemon ÷ floor, median of {ROUNDS} rounds: {ratio:.3f} ({spread(ratios)})")
    value = statistics.median([statistics.median(d) for d in m.daemon])
    baseline = statistics.median([statistics.median(f) for f in m.floor])
    print(json.dumps({"id": "PERF-1", "value": round(value, 4), "baseline": round(baseline, 4),
                      "ratio": round(ratio, 3), "spread": [round(min(ratios), 3),
                                                           round(max(ratios), 3)],
                      "rounds": ROUNDS, "goal": GOAL, "met": ratio <= LIMIT},
                     ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
