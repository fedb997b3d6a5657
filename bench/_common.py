"""What the PERF benchmarks share: the simulators in a child process, a steady scenario, a
stage table, logging as the daemon sets it up, and the result line.

The simulators run as `python -m simulators` in their own process (their own event loop and
CPU), so that the daemon measured here does not also pay for the devices it talks to.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import logging
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from gauged.alarm.quality import Quality
from gauged.alarm.types import CycleResult
from gauged.daemon.daemon import Daemon

# A benchmark's daemon keeps its state in a throw-away folder, never in /var/lib/gauged.
os.environ.setdefault("GAUGED_STATE__PATH", os.path.join(
    tempfile.mkdtemp(prefix="gauged-bench-"), "state.sqlite3"))

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # for `from services import PtyPair` after this

CLIPS = ROOT / "config" / "clips"

# The stage table of every station (freeboard in metres): calm levels stay at "normal".
STAGES = """stages = [
    { name = "notice", threshold = 2.0 },
    { name = "warning", threshold = 1.0, sequence = "warning" },
    { name = "overflow", threshold = 0.0, sequence = "overflow" },
]"""

SEQUENCES = f"""
[sequences.warning]
clips = ["warning"]

[sequences.overflow]
siren_s = 10
clips = ["warning"]

[clips.warning]
file = "{CLIPS}/furukawa_warning_ja.wav"
text = "警戒"
"""


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (as tests/services.py)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def uplinks_toml() -> str:
    """InfluxDB and MQTT enabled, pointing at loopback ports where nothing listens."""
    return f"""
[influx]
enabled = true
url = "http://127.0.0.1:{free_port()}"

[mqtt]
enabled = true
port = {free_port()}
"""


@contextlib.asynccontextmanager
async def uplinks_running(daemon: Daemon) -> AsyncIterator[None]:
    """The daemon's InfluxDB and MQTT writers run (failing, backing off) during the block."""
    assert daemon.influx is not None
    assert daemon.mqtt is not None
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(daemon.influx.run()), tg.create_task(daemon.mqtt.run())]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
    # every cycle recorded its points (still queued; put from the sink's thread)
    assert await daemon.influx.spooled(60.0)
    assert daemon.influx.health().queued > 0


def timed(obj: object, name: str, into: dict[str, float]) -> None:
    """Wrap the method `name` of `obj` (this instance only) to add its wall time to `into`."""
    method: Callable[..., Any] = getattr(obj, name)
    into[name] = 0.0

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            into[name] += time.perf_counter() - t0

    setattr(obj, name, wrapper)


def write_scenario(path: Path, levels: Mapping[str, float]) -> None:
    """One row per station at offset 0: the gauges answer these levels for the whole run."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["time", "station", "quantity", "value"])
        for sid, level in levels.items():
            w.writerow([0, sid, "level_m", f"{level:.3f}"])


@contextlib.contextmanager
def simulators(config: Path, scenario: Path, workdir: Path, *, faults: Path | None = None,
               serial: Mapping[str, Path] | None = None) -> Iterator[subprocess.Popen[str]]:
    """`python -m simulators …` until the block ends; returns once it printed its ready line."""
    argv = [sys.executable, "-m", "simulators", "--config", str(config),
            "--scenario", str(scenario), "--log-level", "WARNING"]
    if faults is not None:
        argv += ["--faults", str(faults)]
    for bus, path in (serial or {}).items():
        argv += ["--serial", f"{bus}={path}"]
    log_path = workdir / "simulators.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if line != "simulators ready":
            proc.wait(timeout=10)
            raise RuntimeError(f"simulators did not start ({proc.returncode}): "
                               f"{log_path.read_text()[-2000:]}")
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def setup_logging(workdir: Path) -> None:
    """INFO, as `gauged run` logs by default, into a file (the journal's stand-in)."""
    logging.basicConfig(level=logging.INFO, filename=workdir / "gauged.log",
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


def machine() -> str:
    """`nproc`, `uname -m`, CPU model, Python version, load average (other work skews it)."""
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{os.cpu_count()} CPU {platform.machine()} {model}, "
            f"Python {platform.python_version()}, load average {load}")


def describe(name: str, times: list[float]) -> str:
    """`name  median … ms (min …, max …, n = …)`."""
    return (f"{name:<34} median {statistics.median(times) * 1000:7.1f} ms "
            f"(min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f}, n = {len(times)})")


def result(perf: str, value: float, baseline: float, goal: str, limit: float) -> None:
    """Print the result line (last line of the output): met when value/baseline ≤ limit."""
    ratio = value / baseline
    out: dict[str, Any] = {"id": perf, "value": round(value, 4), "baseline": round(baseline, 4),
                           "ratio": round(ratio, 3), "goal": goal, "met": ratio <= limit}
    print(json.dumps(out, ensure_ascii=False), flush=True)


def check_cycle(index: int, result: CycleResult, expected: Mapping[str, float]) -> None:
    """Fail the benchmark unless every gauge was read good and at its expected level: a
    misread must never pass for a fast cycle."""
    bad = [(s.station, s.quality, s.reason) for s in result.states
           if s.quality is not Quality.GOOD
           or abs((s.level_m or 0.0) - expected[s.station]) > 0.0015]
    assert not bad, f"cycle {index}: not every gauge read well: {bad[:5]}"
