"""PERF-7: 300 emulated gateways through the central stack (vmagent, the brokers) for 10 min.

Setup: the central stack of the fleet demo (gauged/fleet/central.py, from contrib/: two
mosquitto brokers with a user per gateway and the ACL, vmagent replicating to two
VictoriaMetrics nodes, vmauth and haproxy, vmalert, Alertmanager) on loopback ports in a
temporary folder. 300 emulated gateways in this process, each on its own cycle (`--cycle-s`,
phases spread evenly): a batch of line protocol to vmagent's `/api/v2/write` (as a gateway's
spool writer sends it: 11 stations × 3 fields, ≈ 1,000 samples/s in all) and its 11 retained
station states (QoS 1) to the primary broker, as its own user. Gateways do not run here: the
row is about the centre; each real gateway's cost is PERF-5.

Measured:
- value: p99 of the write latency through vmagent (request sent → 204), all batches;
- baseline: p99 of the same batches written straight to one VictoriaMetrics node in the same
  run (a probe stream at about the same request rate, `perf_direct`);
- lost: samples sent minus samples found on each node at the end (after vmagent drained);
- retained states published and received by a `fleet` subscriber;
- CPU (seconds and % of one core over the run) and peak RSS of every central process.
The last line is the JSON result: met when ratio ≤ 2 and nothing was lost.

    .venv/bin/python bench/perf_7_fleet.py [--minutes 10] [--gateways 300]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt

from gauged.fleet.central import READER, Central
from gauged.fleet.procs import HTTP

STATIONS, FIELDS = 11, ("value", "stage", "quality")
TICK = os.sysconf("SC_CLK_TCK")


def proc_usage(pid: int) -> tuple[float, float]:
    """(CPU seconds so far, peak RSS in MB) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICK
    peak = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    return cpu, peak


def batch(measurement: str, gateway: str, ts_ms: int, cycle: int) -> bytes:
    lines = [f"{measurement},gateway={gateway},station=s{i:02d} "
             f"value={1.0 + 0.001 * ((cycle + i) % 500):.3f},stage={cycle % 4}i,quality=0i "
             f"{ts_ms}" for i in range(STATIONS)]
    return ("\n".join(lines) + "\n").encode()


class Run:
    def __init__(self, central: Central, gateways: int, cycle_s: float, seconds: float) -> None:
        self.c = central
        self.ids = [f"gw{k:03d}" for k in range(gateways)]
        self.cycle_s = cycle_s
        self.seconds = seconds
        self.agent: list[float] = []
        self.direct: list[float] = []
        self.sent = 0
        self.direct_sent = 0
        self.errors: list[str] = []
        self.published = 0
        self.received = 0
        self.all_received = asyncio.Event()  # set once every published state came back

    async def gateway(self, http: aiohttp.ClientSession, gw: str, phase: float,
                      end: float) -> None:
        url = f"{self.c.agent_url}/api/v2/write?precision=ms"
        primary = self.c.brokers[0]
        async with aiomqtt.Client("127.0.0.1", primary.port, identifier=f"perf-{gw}",
                                  username=gw, password=self.c.passwords[gw]) as mqtt:
            await mqtt.publish(f"gauged/{gw}/availability", "online", qos=1, retain=True)
            await asyncio.sleep(phase)
            cycle = 0
            while (start := time.monotonic()) < end:
                ts = int(time.time() * 1000)
                body = batch("perf", gw, ts, cycle)
                t0 = time.perf_counter()
                async with http.post(url, data=body) as r:
                    await r.read()
                    if r.status != 204:
                        self.errors.append(f"{gw}: HTTP {r.status}")
                        continue
                self.agent.append(time.perf_counter() - t0)
                self.sent += STATIONS * len(FIELDS)
                for i in range(STATIONS):
                    state = {"time": ts, "stage": cycle % 4, "level_m": 1.0, "quality": "good"}
                    await mqtt.publish(f"gauged/{gw}/station/s{i:02d}/state", json.dumps(state),
                                       qos=1, retain=True)
                    self.published += 1
                cycle += 1
                await asyncio.sleep(max(0.0, start + self.cycle_s - time.monotonic()))

    async def probe(self, http: aiohttp.ClientSession, end: float, every_s: float) -> None:
        """The baseline: the same batches straight to one node."""
        url = f"{self.c.nodes[0].url}/api/v2/write?precision=ms"
        cycle = 0
        while (start := time.monotonic()) < end:
            body = batch("perf_direct", "direct", int(time.time() * 1000), cycle)
            t0 = time.perf_counter()
            async with http.post(url, data=body) as r:
                await r.read()
            self.direct.append(time.perf_counter() - t0)
            self.direct_sent += STATIONS * len(FIELDS)
            cycle += 1
            await asyncio.sleep(max(0.0, start + every_s - time.monotonic()))

    async def listen(self, ready: asyncio.Event) -> None:
        async with aiomqtt.Client("127.0.0.1", self.c.brokers[0].port, username=READER,
                                  password=self.c.passwords[READER]) as mqtt:
            await mqtt.subscribe("gauged/+/station/+/state", qos=1)
            ready.set()
            async for message in mqtt.messages:
                if not message.retain:
                    self.received += 1
                    if self.received >= self.published:
                        self.all_received.set()

    async def main(self) -> None:
        connector = aiohttp.TCPConnector(limit=200)
        async with aiohttp.ClientSession(connector=connector) as http:
            ready = asyncio.Event()
            listener = asyncio.create_task(self.listen(ready))
            await ready.wait()
            end = time.monotonic() + self.seconds
            rate = len(self.ids) / self.cycle_s  # the gateways' requests per second
            tasks = [asyncio.create_task(self.gateway(http, gw, k * self.cycle_s / len(self.ids),
                                                      end)) for k, gw in enumerate(self.ids)]
            tasks.append(asyncio.create_task(self.probe(http, end, 1.0 / min(rate, 10.0))))
            await asyncio.gather(*tasks)
            if self.received < self.published:
                self.all_received.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.all_received.wait(), 30)
            listener.cancel()


def count(url: str, measurement: str, seconds: float) -> int:
    q = urllib.parse.urlencode({
        "query": f'sum(count_over_time({{__name__=~"{measurement}_({"|".join(FIELDS)})"}}'
                 f'[{seconds:.0f}s]))',
        "time": f"{time.time() + 1:.0f}"})
    with HTTP.open(f"{url}/api/v1/query?{q}", timeout=60) as r:
        result = json.load(r)["data"]["result"]
    return int(float(result[0]["value"][1])) if result else 0


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--gateways", type=int, default=300)
    p.add_argument("--cycle-s", type=float, default=10.0,
                   help="each emulated gateway's cycle (10 s: 300 × 33 samples ≈ 990/s)")
    args = p.parse_args()
    random.seed(7)
    with tempfile.TemporaryDirectory(prefix="perf7-") as folder:
        ids = [f"gw{k:03d}" for k in range(args.gateways)]
        central = Central(Path(folder), {}, users=ids)
        central.start()
        try:
            run = Run(central, args.gateways, args.cycle_s, args.minutes * 60)
            pids = {proc.name: proc.pid for proc in central.procs if proc.pid is not None}
            before = {name: proc_usage(pid)[0] for name, pid in pids.items()}
            me0 = time.process_time()
            t0 = time.monotonic()
            asyncio.run(run.main())
            wall = time.monotonic() - t0
            usage = {name: proc_usage(pid) for name, pid in pids.items()}
            me = time.process_time() - me0
            span = args.minutes * 60 + 120
            found: list[int] = []
            deadline = time.monotonic() + 120
            while True:
                central.flush()
                found = [count(node.url, "perf", span) for node in central.nodes]
                if all(f >= run.sent for f in found) or time.monotonic() > deadline:
                    break
                time.sleep(1)
            direct_found = count(central.nodes[0].url, "perf_direct", span)
        finally:
            central.close()
    cpu = {name: {"cpu_s": round(usage[name][0] - before[name], 2),
                  "cpu_pct_of_one_core": round(100 * (usage[name][0] - before[name]) / wall, 1),
                  "peak_rss_mb": round(usage[name][1], 1)} for name in usage}
    value, baseline = p99(run.agent), p99(run.direct)
    lost = [run.sent - f for f in found]
    print(f"{len(run.agent)} batches through vmagent, {run.sent} samples "
          f"({run.sent / wall:.0f}/s); p50 {statistics.median(run.agent) * 1000:.2f} ms, "
          f"p99 {value * 1000:.2f} ms, max {max(run.agent) * 1000:.1f} ms")
    print(f"{len(run.direct)} batches straight to a node: p50 "
          f"{statistics.median(run.direct) * 1000:.2f} ms, p99 {baseline * 1000:.2f} ms "
          f"(found {direct_found} of {run.direct_sent})")
    print(f"samples found per node: {found} (lost {lost}); errors: {run.errors[:5]}")
    print(f"retained states: {run.published} published, {run.received} received live")
    for name, u in cpu.items():
        print(f"  {name:<16} CPU {u['cpu_s']:7.2f} s ({u['cpu_pct_of_one_core']:5.1f} % of a "
              f"core)  peak RSS {u['peak_rss_mb']:6.1f} MB")
    print(f"  emulator (this process) CPU {me:.1f} s; load average {os.getloadavg()}")
    ratio = value / baseline
    out: dict[str, Any] = {
        "id": "PERF-7", "value": round(value, 5), "baseline": round(baseline, 5),
        "ratio": round(ratio, 3), "goal": "0 lost; p99 via vmagent <= 2 x direct p99",
        "met": ratio <= 2.0 and all(x == 0 for x in lost) and not run.errors,
        "minutes": args.minutes, "gateways": args.gateways,
        "samples_per_s": round(run.sent / wall, 1), "lost": lost,
        "states_published": run.published, "states_received": run.received, "central": cpu}
    print(json.dumps(out, ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
