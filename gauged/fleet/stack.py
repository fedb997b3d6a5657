"""The fleet demo: the central stack (gauged/fleet/central.py) and N gateways.

Each gateway is the reference system (config/minato-furukawa.toml) under its own id
(`ward-01` …), with its own simulators and ports, its MQTT user and password on both
brokers (`[mqtt] brokers`, primary first: it fails over to the backup and back), InfluxDB
writes to vmagent, and `[commands]` on with the demo's secret.
All gateways share one accelerated clock; the storm reaches gateway k `lag_min` simulated
minutes after gateway k-1 (the same storm moving across the city), rounded to whole cycles
so that each gateway's scenario stays on its cycle boundaries as the replay reads it.

Used by `gauged fleet-demo`, `make fleet-demo`, the fleet tests (tests/fleet/) and
bench/perf_7_fleet.py.
"""

from __future__ import annotations

import csv
import re
import secrets
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from gauged.fleet.central import Central, Timing
from gauged.fleet.procs import LOOPBACK, Proc, free_port, http_ok

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "config" / "minato-furukawa.toml"
STORM = ROOT / "simulators" / "scenarios" / "design_storm_50mm.csv"
SIM_PORTS = (15020, 15021, 15030, 15040)  # the simulators' ports in the reference config


def lagged(scenario: Path, lag_s: float, out: Path) -> Path:
    """`scenario` starting `lag_s` later; until then every station reads its first row
    (levels as in the first row, no rain)."""
    with scenario.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    first: dict[str, dict[str, str]] = {}
    for row in rows:
        first.setdefault(row["station"], row)
    with out.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["time", "station", "quantity", "value"])
        if lag_s > 0:
            for row in first.values():
                value = row["value"] if row["quantity"] == "level_m" else "0.0"
                w.writerow([0, row["station"], row["quantity"], value])
        for row in rows:
            w.writerow([f"{float(row['time']) + lag_s:g}", row["station"], row["quantity"],
                        row["value"]])
    return out


@dataclass
class Gateway:
    """One gateway process (gauged/fleet/gateway.py)."""

    id: str
    folder: Path
    status_port: int
    config: Path
    scenario: Path
    env: dict[str, str]
    proc: Proc = field(init=False)

    def __post_init__(self) -> None:
        self.records = self.folder / "records"
        self.status_url = f"http://{LOOPBACK}:{self.status_port}"
        self.proc = Proc(self.id, [sys.executable, "-m", "gauged.fleet.gateway",
                                   str(self.config), str(self.scenario),
                                   "--record", str(self.records)],
                         self.folder, env=self.env,
                         ready=lambda: http_ok(f"{self.status_url}/healthz") or
                         http_ok(f"{self.status_url}/status"), start_timeout=60.0)

    def start(self, *, wait: bool = True) -> None:
        self.proc.start(wait=wait)

    def stop(self, *, kill: bool = False) -> int | None:
        return self.proc.stop(kill=kill)


class FleetStack:
    """The centre and `n` gateways in `workdir`; a context manager."""

    def __init__(self, workdir: Path, n: int = 6, *, speed: float = 90.0,
                 scenario: Path = STORM, lag_min: float = 18.0, lead_s: float = 4.0,
                 timing: Timing | None = None, interval_s: float = 180.0,
                 route: Callable[[str, str, int], int] | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        """`route(gateway, "mqtt" | "influx", port)`: the port that gateway is given for a
        broker (called once per broker, primary first) or vmagent (a test puts a WAN it can
        cut in between); `env`: more settings for every gateway (`GAUGED_…` overrides)."""
        self.extra_env = dict(env or {})
        self.workdir = workdir
        self.speed = speed
        self.interval_s = interval_s
        self.cycle_real_s = interval_s / speed
        self.route = route or (lambda gw, kind, port: port)
        self.secret = secrets.token_hex(16)  # [commands] secret (HMAC) of every gateway
        self.token = secrets.token_hex(16)  # [status] token
        ids = [f"ward-{k + 1:02d}" for k in range(n)]
        ports = {gw: free_port() for gw in ids}
        self.central = Central(workdir / "central", ports, timing=timing or Timing.demo())
        now = time.time()
        self.anchor = now + lead_s
        self.start_ts = float(-(-now // interval_s) * interval_s)
        self.start_time = datetime.fromtimestamp(self.start_ts, UTC)
        lag_s = round(lag_min * 60 / interval_s) * interval_s
        self.gateways = [self._gateway(gw, k, ports[gw], scenario, lag_s * k)
                         for k, gw in enumerate(ids)]

    def _gateway(self, gw: str, k: int, status_port: int, scenario: Path,
                 lag_s: float) -> Gateway:
        folder = self.workdir / gw
        folder.mkdir(parents=True, exist_ok=True)
        text = REFERENCE.read_text(encoding="utf-8")
        for old in SIM_PORTS:
            text = text.replace(f"port = {old}\n", f"port = {free_port()}\n")
        text = text.replace("port = 8080\n", f"port = {status_port}\n")
        text = text.replace('file = "clips/', f'file = "{ROOT}/config/clips/')
        text = re.sub(r'(?m)^id = "minato-furukawa"', f'id = "{gw}"', text)
        agent = f"http://{LOOPBACK}:{self.route(gw, 'influx', self.central.agent_port)}"
        text = re.sub(r'(?m)^\[influx\]\nenabled = true\nurl = "[^"]*"',
                      f'[influx]\nenabled = true\nurl = "{agent}"', text)
        # every broker, primary first ([mqtt] brokers): a gateway fails over to the backup
        # when the primary goes (README "For a fleet"); host and port name the primary too
        ports = [self.route(gw, "mqtt", b.port) for b in self.central.brokers]
        broker = ports[0]
        brokers = ", ".join(f'"{LOOPBACK}:{p}"' for p in ports)
        text = re.sub(r'(?m)^\[mqtt\]\nenabled = true\nhost = "127.0.0.1"\nport = 1883\n',
                      f'[mqtt]\nenabled = true\nhost = "{LOOPBACK}"\nport = {broker}\n'
                      f"brokers = [{brokers}]\n", text)
        text = text.replace(
            "[clock]\nspeed = 1.0\n",
            f'[clock]\nspeed = {self.speed!r}\nstart = "{self.start_time.isoformat()}"\n'
            f"anchor_unix = {self.anchor!r}\n")
        for needle in (f'id = "{gw}"', f"port = {broker}", f"brokers = [{brokers}]", agent,
                       f"speed = {self.speed!r}"):
            assert needle in text, f"the reference configuration changed: {needle} not set"
        config = folder / "gauged.toml"
        config.write_text(text, encoding="utf-8")
        env = {"GAUGED_STATE__PATH": str(folder / "state" / "state.sqlite3"),
               "GAUGED_MQTT__USERNAME": gw, "GAUGED_MQTT__PASSWORD": self.central.passwords[gw],
               "GAUGED_COMMANDS__ENABLED": "true", "GAUGED_COMMANDS__SECRET": self.secret,
               # the gateways' accelerated clock runs ahead of an operator's: a command may
               # be given a ttl (`gauged command --ttl`) of up to a day to reach them in time
               "GAUGED_COMMANDS__MAX_TTL_S": "86400",
               "GAUGED_STATUS__TOKEN": self.token, "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": str(ROOT)} | self.extra_env
        return Gateway(gw, folder, status_port, config,
                       lagged(scenario, lag_s, folder / "scenario.csv"), env)

    def gateway(self, gw: str) -> Gateway:
        return next(g for g in self.gateways if g.id == gw)

    def start(self) -> None:
        self.central.start()
        self.start_gateways()

    def start_gateways(self) -> None:
        for g in self.gateways:
            g.start(wait=False)
        for g in self.gateways:
            g.proc.wait_ready()

    def close(self) -> None:
        for g in self.gateways:
            g.stop(kill=True)
        self.central.close()

    def stop_gateways(self) -> None:
        """SIGTERM every gateway (each flushes its spool to vmagent as it stops)."""
        for g in self.gateways:
            if g.proc.running and g.proc.proc is not None:
                g.proc.proc.terminate()
        for g in self.gateways:
            g.stop()

    def __enter__(self) -> FleetStack:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sim_now(self) -> datetime:
        return datetime.fromtimestamp(
            self.start_ts + (time.time() - self.anchor) * self.speed, UTC)
