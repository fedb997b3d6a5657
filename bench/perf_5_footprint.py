"""PERF-5: footprint of a real daemon process with 100 stations: RSS, idle CPU, time to READY.

Setup (a temporary folder): the PERF-1 configuration (10 Modbus TCP gateways × 10 level
gauges = 100 stations, a relay board, one zone) with a 10 s poll interval at real speed,
simulators in a child process. `gauged run` is started as systemd would start it: with
`NOTIFY_SOCKET` (a datagram socket this script binds, playing systemd) and `WATCHDOG_USEC`
(so the watchdog task runs as in service). Two runs: with the InfluxDB and MQTT uplinks
enabled (pointing at closed loopback ports: they fail and back off, as during an outage) and
with both disabled (influxdb_client is then never imported, gauged/uplinks/influx.py).

Measured per run:
- time to READY: from the spawn of the process (interpreter start and imports included) to
  the READY=1 datagram (after the config, the state restore and every relay OFF read back);
- RSS (VmRSS of /proc/PID/status) after 4 cycles, and the peak (VmHWM);
- idle CPU: utime + stime of the process (/proc/PID/stat) over the stretches between cycles
  (from 0.5 s after a cycle's log line to 0.5 s before the next boundary), as a percentage of
  one CPU; and the CPU a whole cycle period costs.
Baseline, measured in the same run: the RSS of a bare interpreter importing the dependency
stack (`gauged.daemon` and what it imports, plus influxdb_client): what any daemon built on these
libraries pays before doing anything.

The result line: value = RSS (MB, 10^6 bytes) of the run with uplinks enabled, baseline = the
import-only RSS; met = RSS ≤ 80 MB and idle CPU ≤ 1 % and READY ≤ 2 s (QUALITY PERF-5).
Run: `.venv/bin/python bench/perf_5_footprint.py`; prints the JSON line last.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, free_port, machine, simulators, write_scenario
from perf_1_tcp_cycle import levels, write_config

INTERVAL_S = 10.0
CYCLES = 4
GOAL_MB, GOAL_IDLE_PCT, GOAL_READY_S = 80.0, 1.0, 2.0
GOAL = f"RSS ≤ {GOAL_MB:g} MB, idle CPU ≈ 0 (≤ {GOAL_IDLE_PCT:g} %), READY ≤ {GOAL_READY_S:g} s"
TICK = os.sysconf("SC_CLK_TCK")

STACK = ("import gauged.daemon.daemon, gauged.cli, influxdb_client, "
         "influxdb_client.client.write_api; "
         "import os, re; s = open('/proc/self/status').read(); "
         "print(int(re.search(r'VmRSS:\\s+(\\d+)', s).group(1)) * 1024)")
BARE = ("import re; s = open('/proc/self/status').read(); "
        "print(int(re.search(r'VmRSS:\\s+(\\d+)', s).group(1)) * 1024)")


def rss(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in bytes."""
    fields = dict(line.split(":", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return (int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024)


def cpu_s(pid: int) -> float:
    """utime + stime of the process, seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def drain(sock: socket.socket) -> None:
    sock.setblocking(False)
    try:
        while True:
            sock.recv(4096)
    except BlockingIOError:
        pass
    finally:
        sock.setblocking(True)


def python_rss(code: str) -> int:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True, timeout=60)
    return int(out.stdout.strip())


def cycles_logged(log: Path) -> int:
    return log.read_text(errors="replace").count(" cycle time=")


def run_daemon(work: Path, config: Path, uplinks: bool) -> dict[str, float]:
    text = config.read_text()
    if not uplinks:
        text = text.replace("[influx]\nenabled = true", "[influx]\nenabled = false")
        text = text.replace("[mqtt]\nenabled = true", "[mqtt]\nenabled = false")
    text = text.replace('[gateway]\nid = "perf-1"',
                        f'[gateway]\nid = "perf-5"\npoll_interval_s = {INTERVAL_S}')
    text = text.replace("[status]\nport = 0", f"[status]\nport = {free_port()}")
    name = "uplinks" if uplinks else "local"
    cfg = work / f"perf5-{name}.toml"
    cfg.write_text(text)
    log = work / f"daemon-{name}.log"
    sock_path = work / f"notify-{name}.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    env = os.environ | {"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "30000000",
                        "GAUGED_STATE__PATH": str(work / f"state-{name}.sqlite3")}
    with log.open("w") as stderr:
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "gauged", "run", "--config", str(cfg)],
                                cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=stderr, env=env)
    try:
        sock.settimeout(30)
        while b"READY=1" not in sock.recv(4096):
            pass
        ready_s = time.monotonic() - t0
        idle_cpu = idle_wall = 0.0
        period_cpu, period_wall = [], []
        p0 = (0.0, 0.0)
        seen = 0
        deadline = time.monotonic() + INTERVAL_S * (CYCLES + 3)
        while seen < CYCLES:
            # wait for the next cycle's log line (the file is polled: nothing asks the daemon)
            while cycles_logged(log) == seen:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"no cycle {seen + 1}: {log.read_text()[-2000:]}")
                drain(sock)  # as systemd reads every notification
                time.sleep(0.05)
            seen += 1
            time.sleep(0.5)
            c0, w0 = cpu_s(proc.pid), time.monotonic()
            if seen == 2:
                p0 = (c0, w0)
            if seen == 3:
                period_cpu.append(c0 - p0[0])
                period_wall.append(w0 - p0[1])
            next_boundary = (time.time() // INTERVAL_S + 1) * INTERVAL_S
            if seen < CYCLES and seen >= 2:  # an idle stretch (the first cycles warm up)
                while time.time() < next_boundary - 0.5:
                    drain(sock)
                    time.sleep(0.2)
                idle_cpu += cpu_s(proc.pid) - c0
                idle_wall += time.monotonic() - w0
        now_rss, peak = rss(proc.pid)
    finally:
        proc.terminate()
        proc.wait(20)
        sock.close()
    problems = [line for line in log.read_text().splitlines()
                if " ERROR " in line or "Traceback" in line]
    if problems:
        raise RuntimeError(f"daemon errors: {problems[:3]}")
    return {"ready_s": ready_s, "rss": now_rss, "peak": peak,
            "idle_pct": 100 * idle_cpu / idle_wall, "idle_wall": idle_wall,
            "period_cpu_ms": 1000 * period_cpu[0], "period_wall": period_wall[0]}


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="perf5-") as tmp:
        work = Path(tmp)
        ports = [free_port() for _ in range(10)]
        config, scenario = work / "perf1.toml", work / "steady.csv"
        write_config(config, ports)
        write_scenario(scenario, levels())
        bare, stack = python_rss(BARE), python_rss(STACK)
        with simulators(config, scenario, work):
            runs = {name: run_daemon(work, config, uplinks=(name == "uplinks"))
                    for name in ("uplinks", "local")}
    print(f"machine: {machine()}")
    mb = 1e6
    print(f"bare interpreter RSS {bare / mb:.1f} MB; importing the dependency stack "
          f"(gauged.daemon + influxdb_client) {stack / mb:.1f} MB")
    for name, r in runs.items():
        what = "uplinks enabled (InfluxDB, MQTT down)" if name == "uplinks" else \
            "uplinks disabled (influxdb_client not imported)"
        print(f"100 stations, {what}: READY {r['ready_s']:.2f} s after spawn; "
              f"RSS {r['rss'] / mb:.1f} MB (peak {r['peak'] / mb:.1f} MB); idle CPU "
              f"{r['idle_pct']:.3f} % over {r['idle_wall']:.1f} s; one {INTERVAL_S:g}-s cycle "
              f"period {r['period_cpu_ms']:.0f} ms CPU")
    main_run = runs["uplinks"]
    met = (main_run["rss"] / mb <= GOAL_MB and main_run["idle_pct"] <= GOAL_IDLE_PCT
           and main_run["ready_s"] <= GOAL_READY_S)
    print(f"result: RSS {main_run['rss'] / mb:.1f} MB, idle CPU {main_run['idle_pct']:.3f} %, "
          f"READY {main_run['ready_s']:.2f} s")
    print(json.dumps({"id": "PERF-5", "value": round(main_run["rss"] / mb, 1),
                      "baseline": round(stack / mb, 1),
                      "ratio": round(main_run["rss"] / stack, 3), "goal": GOAL, "met": met},
                     ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
