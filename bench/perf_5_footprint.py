"""PERF-5: footprint of a real daemon process with 100 stations: RSS, idle CPU, time to READY.

Setup (a temporary folder): the PERF-1 configuration (10 Modbus TCP gateways × 10 level
gauges = 100 stations, a relay board, one zone) with a 10 s poll interval at real speed,
simulators in a child process. `gauged run` is started as systemd would start it: with
`NOTIFY_SOCKET` (a datagram socket this script binds, playing systemd) and `WATCHDOG_USEC`
(so the watchdog task runs as in service). Two runs: with the InfluxDB and MQTT uplinks
enabled (pointing at closed loopback ports: they fail and back off, as during an outage) and
with both disabled. ROUNDS runs of each, alternating; the medians decide, the spread is
printed.

Measured per run:
- time to READY: from the spawn of the process (interpreter start and imports included) to
  the READY=1 datagram (after the config, the state restore and every relay OFF read back);
- RSS (VmRSS of /proc/PID/status) after 4 cycles, and the peak (VmHWM);
- idle CPU: utime + stime of the process (/proc/PID/stat) over the stretches between cycles
  (from 0.5 s after a cycle's log line to 0.5 s before the next boundary), as a percentage of
  one CPU; and the CPU a whole cycle period costs.
Baseline, measured in the same run: the RSS of a bare interpreter importing the daemon
(`gauged.daemon.daemon`, `gauged.cli` and what they import): what the code costs before it
does anything. Where those megabytes go: the import ledger, RSS after each import in the
order given (a library shared by two is counted at the first), printed before the result.

The result line: value = the median RSS (MB, 10^6 bytes) of the runs with uplinks enabled,
baseline = the import-only RSS; met = median RSS ≤ 75 MB and median idle CPU ≤ 1 % and
median READY ≤ 2 s (QUALITY PERF-5).
Run: `.venv/bin/python bench/perf_5_footprint.py`; prints the JSON line last.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, free_port, machine, simulators, write_scenario
from perf_1_tcp_cycle import levels, write_config

INTERVAL_S = 6.0
CYCLES = 4
ROUNDS = int(os.environ.get("PERF5_ROUNDS", "5"))
GOAL_MB, GOAL_IDLE_PCT, GOAL_READY_S = 75.0, 1.0, 2.0
GOAL = f"RSS ≤ {GOAL_MB:g} MB, idle CPU ≈ 0 (≤ {GOAL_IDLE_PCT:g} %), READY ≤ {GOAL_READY_S:g} s"
TICK = os.sysconf("SC_CLK_TCK")

STACK = ("import gauged.daemon.daemon, gauged.cli; "
         "import os, re; s = open('/proc/self/status').read(); "
         "print(int(re.search(r'VmRSS:\\s+(\\d+)', s).group(1)) * 1024)")
# The import ledger: what the daemon imports, the libraries first, in an order where each
# is charged for what it alone brings (asyncio before aiohttp, pydantic before its settings)
LEDGER = ["asyncio", "sqlite3", "numpy", "pydantic", "pydantic_settings", "pymodbus", "serial",
          "aiohttp", "aiohttp.web", "prometheus_client", "aiomqtt",
          "apscheduler.schedulers.asyncio", "drivers.configs", "gauged.config.settings",
          "gauged.alarm.engine", "gauged.uplinks.influx", "gauged.uplinks.mqtt",
          "gauged.ops.status", "gauged.daemon.daemon", "gauged.cli"]
LEDGER_CODE = """
import importlib, re, sys
def rss():
    return int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024
prev = rss()
print("python", prev, len(sys.modules))
for name in sys.argv[1:]:
    n = len(sys.modules)
    importlib.import_module(name)
    now = rss()
    print(name, now - prev, len(sys.modules) - n)
    prev = now
"""
BARE = ("import re; s = open('/proc/self/status').read(); "
        "print(int(re.search(r'VmRSS:\\s+(\\d+)', s).group(1)) * 1024)")


def rss(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in bytes."""
    fields = dict(line.split(":", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return (int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024)


def threads_of(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return float(line.split()[1])
    return 0.0


def by_mapping(pid: int) -> dict[str, float]:
    """RSS (bytes) of the process by kind of mapping: the C heap and anonymous memory (Python
    objects, thread stacks, SQLite caches) against the code of the interpreter and of the
    extension modules and shared libraries."""
    out = {"rss_anon": 0.0, "rss_files": 0.0}
    kind = "rss_anon"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split(maxsplit=6)
        if len(head) >= 5 and "-" in head[0] and ":" in head[3]:  # a mapping's first line
            kind = "rss_files" if len(head) >= 6 and head[5].startswith("/") else "rss_anon"
        elif line.startswith("Rss:"):
            out[kind] += int(line.split()[1]) * 1024
    return out


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


def ledger() -> list[tuple[str, int, int]]:
    """(module, RSS bytes its import added, modules it added), in LEDGER's order."""
    out = subprocess.run([sys.executable, "-c", LEDGER_CODE, *LEDGER], cwd=ROOT,
                         capture_output=True, text=True, check=True, timeout=60)
    rows = [line.split() for line in out.stdout.splitlines()]
    return [(name, int(size), int(n)) for name, size, n in rows]


def python_rss(code: str) -> int:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True, timeout=60)
    return int(out.stdout.strip())


def cycles_logged(log: Path) -> int:
    return log.read_text(errors="replace").count(" cycle time=")


def run_daemon(work: Path, config: Path, uplinks: bool) -> dict[str, float]:
    work.mkdir(parents=True, exist_ok=True)
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
        threads = threads_of(proc.pid)
        mapped = by_mapping(proc.pid)
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
            "period_cpu_ms": 1000 * period_cpu[0], "period_wall": period_wall[0],
            "threads": threads, **mapped}


def main() -> None:
    runs: dict[str, list[dict[str, float]]] = {"uplinks": [], "local": []}
    with tempfile.TemporaryDirectory(prefix="perf5-") as tmp:
        work = Path(tmp)
        ports = [free_port() for _ in range(10)]
        config, scenario = work / "perf1.toml", work / "steady.csv"
        write_config(config, ports)
        write_scenario(scenario, levels())
        bare, stack, imports = python_rss(BARE), python_rss(STACK), ledger()
        with simulators(config, scenario, work):
            for k in range(ROUNDS):
                for name in ("uplinks", "local"):
                    r = run_daemon(work / f"{name}-{k}", config, uplinks=(name == "uplinks"))
                    runs[name].append(r)
                    print(f"round {k + 1} {name}: READY {r['ready_s']:.2f} s, RSS "
                          f"{r['rss'] / 1e6:.1f} MB (anonymous {r['rss_anon'] / 1e6:.1f}), "
                          f"{r['threads']:.0f} threads, idle CPU {r['idle_pct']:.3f} %",
                          flush=True)
    print(f"machine: {machine()}")
    mb = 1e6
    print(f"bare interpreter RSS {bare / mb:.1f} MB; importing the daemon "
          f"(gauged.daemon.daemon + gauged.cli) {stack / mb:.1f} MB; the import ledger:")
    for name, size, n in imports:
        print(f"  {name:<34} {size / mb:+6.1f} MB {n:4d} modules")
    med: dict[str, dict[str, float]] = {}
    for name, rs in runs.items():
        med[name] = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        m = med[name]
        what = "uplinks enabled (InfluxDB, MQTT down)" if name == "uplinks" else \
            "uplinks disabled"
        print(f"100 stations, {what}, medians of {len(rs)}: READY {m['ready_s']:.2f} s after "
              f"spawn ({spread(rs, 'ready_s', 1)} s); RSS {m['rss'] / mb:.1f} MB "
              f"({spread(rs, 'rss', mb)}; peak {m['peak'] / mb:.1f}); idle CPU "
              f"{m['idle_pct']:.3f} % ({spread(rs, 'idle_pct', 1)}) over {m['idle_wall']:.1f} s; "
              f"one {INTERVAL_S:g}-s cycle period {m['period_cpu_ms']:.0f} ms CPU; of the RSS "
              f"{m['rss_anon'] / mb:.1f} MB heap and anonymous, {m['rss_files'] / mb:.1f} MB "
              f"code and libraries; {m['threads']:.0f} threads")
    main_run = med["uplinks"]
    met = (main_run["rss"] / mb <= GOAL_MB and main_run["idle_pct"] <= GOAL_IDLE_PCT
           and main_run["ready_s"] <= GOAL_READY_S)
    print(f"result: RSS {main_run['rss'] / mb:.1f} MB, idle CPU {main_run['idle_pct']:.3f} %, "
          f"READY {main_run['ready_s']:.2f} s")
    print(json.dumps({"id": "PERF-5", "value": round(main_run["rss"] / mb, 1),
                      "baseline": round(stack / mb, 1),
                      "ratio": round(main_run["rss"] / stack, 3),
                      "spread": {"rss_mb": [round(min(r["rss"] for r in runs["uplinks"]) / mb, 1),
                                            round(max(r["rss"] for r in runs["uplinks"]) / mb, 1)],
                                 "rounds": len(runs["uplinks"])},
                      "goal": GOAL, "met": met}, ensure_ascii=False), flush=True)


def spread(rs: list[dict[str, float]], key: str, unit: float) -> str:
    return f"{min(r[key] for r in rs) / unit:.3g} to {max(r[key] for r in rs) / unit:.3g}"

if __name__ == "__main__":
    main()
