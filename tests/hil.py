"""Hardware-in-the-loop helpers: the daemon and the simulators as real processes.

A `Rig` writes a copy of the reference configuration with free loopback ports and a shared
accelerated clock, starts `gauged simulate` and `gauged run` as child processes, and reads
back what the simulators recorded (coil writes, clips played) and what the daemon serves.
The daemon keeps its state (gauged/store/state.py) in the rig's folder (`GAUGED_STATE__PATH`), so
that a daemon killed with `kill(…)` and started again finds it; its log is appended to
across restarts.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services import free_port, wait_until

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "config" / "minato-furukawa.toml"
SCENARIOS = ROOT / "simulators" / "scenarios"
INTERVAL = 180.0
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def next_boundary(ts: float, interval: float = INTERVAL) -> float:
    return float(-(-ts // interval) * interval)


@dataclass
class Rig:
    """One test's daemon + simulators, sharing one accelerated clock."""

    workdir: Path
    speed: float
    influx_url: str | None = None
    mqtt_port: int | None = None
    lead_s: float = 3.0  # real seconds between now and the scenario's start
    ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.records = self.workdir / "records"
        self.records.mkdir(parents=True, exist_ok=True)
        self.state_path = self.workdir / "state" / "state.sqlite3"
        self.anchor = time.time() + self.lead_s
        self.start_ts = next_boundary(time.time())
        self.start = datetime.fromtimestamp(self.start_ts, UTC)
        self.config = self.workdir / "gauged.toml"
        self.config.write_text(self._config_text(), encoding="utf-8")

    def _config_text(self) -> str:
        text = REFERENCE.read_text(encoding="utf-8")
        for old in (15020, 15021, 15030, 15040):
            new = free_port()
            self.ports[str(old)] = new
            text = text.replace(f"port = {old}\n", f"port = {new}\n")
        self.ports["status"] = free_port()
        text = text.replace("port = 8080\n", f"port = {self.ports['status']}\n")
        text = text.replace('file = "clips/', f'file = "{ROOT}/config/clips/')
        text = re.sub(r"(?m)^\[influx\]\nenabled = true\nurl = \"[^\"]*\"",
                      f'[influx]\nenabled = {"true" if self.influx_url else "false"}\n'
                      f'url = "{self.influx_url or "http://127.0.0.1:9"}"', text)
        text = re.sub(r"(?m)^\[mqtt\]\nenabled = true\nhost = \"127.0.0.1\"\nport = 1883",
                      f'[mqtt]\nenabled = {"true" if self.mqtt_port else "false"}\n'
                      f'host = "127.0.0.1"\nport = {self.mqtt_port or 1}', text)
        text = text.replace(
            "[clock]\nspeed = 1.0\n",
            f'[clock]\nspeed = {self.speed}\nstart = "{self.start.isoformat()}"\n'
            f"anchor_unix = {self.anchor!r}\n")
        assert f"speed = {self.speed}" in text
        return text

    def edit_config(self, edit: Callable[[str], str]) -> None:
        """Rewrite the configuration before the processes start."""
        text = self.config.read_text(encoding="utf-8")
        new = edit(text)
        assert new != text, "the edit changed nothing"
        self.config.write_text(new, encoding="utf-8")

    # ---- processes -----------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str],
               env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
        log = (self.workdir / f"{name}.log").open("a", encoding="utf-8")
        proc = subprocess.Popen(
            [sys.executable, "-m", "gauged", *argv], cwd=ROOT, stdout=subprocess.PIPE,
            stderr=log, text=True, env=os.environ | {
                "PYTHONUNBUFFERED": "1", "GAUGED_STATE__PATH": str(self.state_path)}
            | dict(env or {}))
        self.procs[name] = proc
        return proc

    def start_simulators(self, scenario: Path, faults: Path | None = None,
                         serial: Mapping[str, Path] | None = None,
                         control_port: int | None = None) -> None:
        """`faults`: a [[fault]] TOML file of knobs set at start (simulators/faults.py);
        `serial`: the device side of a pty pair for each serial bus to simulate;
        `control_port`: serve the simulators' control channel there (simulators/control.py)."""
        proc = self._spawn("simulators", [
            "simulate", "--config", str(self.config), "--scenario", str(scenario),
            "--speed", str(self.speed), "--start", self.start.isoformat(),
            "--anchor", repr(self.anchor), "--record", str(self.records),
            *(["--faults", str(faults)] if faults is not None else []),
            *(arg for bus, path in (serial or {}).items()
              for arg in ("--serial", f"{bus}={path}")),
            *(["--control", str(control_port)] if control_port is not None else [])])
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until ready or exit
        assert line.strip() == "simulators ready", self.log("simulators")

    def start_daemon(self, *args: str, env: Mapping[str, str] | None = None,
                     name: str = "daemon") -> subprocess.Popen[str]:
        """`env`: more environment (NOTIFY_SOCKET, WATCHDOG_USEC, GAUGED_… overrides);
        `name`: another name for a second daemon (its log is `<name>.log`)."""
        return self._spawn(name, ["run", "--config", str(self.config), *args], env)

    def stop(self, name: str, timeout: float = 20.0) -> int:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout)

    def kill(self, name: str, timeout: float = 10.0) -> int:
        """`kill -9`: no handler runs, no relay is driven OFF, nothing is flushed."""
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        return proc.wait(timeout)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(encoding="utf-8", errors="replace")

    # ---- what happened -------------------------------------------------------------

    def relay_log(self) -> list[dict[str, Any]]:
        return _jsonl(self.records / "relays.jsonl")

    def audio_log(self) -> list[dict[str, Any]]:
        return _jsonl(self.records / "audio.jsonl")

    def status(self) -> dict[str, Any] | None:
        try:
            with _HTTP.open(f"http://127.0.0.1:{self.ports['status']}/status",
                            timeout=2) as r:
                status: dict[str, Any] = json.load(r)
                return status
        except OSError:
            return None

    def wait_for_status(self, predicate: Callable[[dict[str, Any]], bool], timeout: float,
                        what: str) -> dict[str, Any]:
        seen: dict[str, Any] = {}

        def check() -> bool:
            daemon = self.procs.get("daemon")
            if daemon is not None and daemon.poll() is not None:
                raise AssertionError(f"daemon exited {daemon.returncode}:\n"
                                     f"{self.log('daemon')[-3000:]}")
            status = self.status()
            if status is None:
                return False
            seen.update(status)
            return predicate(status)

        wait_until(check, timeout, what, interval=0.05)
        return seen

    def steady_level(self, level_m: float) -> Path:
        """A scenario: Shin-Hiroo at `level_m` from the start; the other gauges calm."""
        path = self.workdir / "scenario.csv"
        path.write_text(f"time,station,quantity,value\n0,shin_hiroo,level_m,{level_m}\n",
                        encoding="utf-8")
        return path

    def configured_relays(self) -> set[tuple[int, int]]:
        """(unit, coil) of every relay of the configuration's zones."""
        from gauged.config.load import load_config

        config = load_config(self.config)
        return {(r.unit, r.coil) for z in config.zones.values()
                for r in (z.siren_relay, z.amplifier_relay) if r is not None}

    def cycle_time(self, index: int) -> datetime:
        """The time of cycle `index` of the scenario (cycle 0 is the scenario's start)."""
        return datetime.fromtimestamp(self.start_ts + INTERVAL * index, UTC)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def actuation_timeline(rig: Rig) -> dict[int, list[tuple[int, bool]]]:
    """Every relay change per coil as (cycle index, state), in order.

    Zones play at the same time, so only the order per relay is defined. Two runs of one
    scenario that move the same relays in the same cycles give the same timeline; wall-clock
    jitter within a cycle does not show.
    """
    out: dict[int, list[tuple[int, bool]]] = {}
    for r in rig.relay_log():
        if r["value"] != r["previous"]:
            cycle = int((datetime.fromisoformat(r["t_sim"]).timestamp() - rig.start_ts)
                        // INTERVAL)
            out.setdefault(int(r["coil"]), []).append((cycle, bool(r["value"])))
    return out


def expected_timeline(replay: list[dict[str, Any]], start_ts: float,
                      amplifier: dict[str, int], siren: dict[str, int]
                      ) -> dict[int, list[tuple[int, bool]]]:
    """The timeline the replay's broadcasts call for: each broadcast that plays (not merged
    into another, superseded or dropped: replay runs the zone's queue) in the cycle that
    decided it, amplifier ON and OFF, and siren ON and OFF when it sounds one."""
    out: dict[int, list[tuple[int, bool]]] = {}
    for b in replay:
        if b["event"] != "broadcast" or b.get("outcome", "done") not in ("done", "pre-empted"):
            continue
        cycle = int((datetime.fromisoformat(b["time"]).timestamp() - start_ts) // INTERVAL)
        coils = [amplifier[b["zone"]]] + ([siren[b["zone"]]] if b["siren_s"] else [])
        for coil in coils:
            out.setdefault(coil, []).extend([(cycle, True), (cycle, False)])
    return out
