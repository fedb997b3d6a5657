"""SITE-1: mains lost for two hours during the design storm, then restored.

The reference system runs the storm (processes: `gauged simulate` and `gauged run` at 180×,
a real mosquitto) with a cabinet logger on the river bus reporting mains and battery. An
hour into the storm the simulated mains fails (control channel), two hours later it
returns. Every alarm duty is unchanged: the relay timeline is the one `gauged replay` calls
for on the same storm. Operators are told once on the loss and once on the return: on MQTT
(`event/fault`, kind `site` then `site_cleared`), in the daemon's log, and /status.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import aiomqtt
from hil import ROOT, SCENARIOS, Rig, actuation_timeline, expected_timeline
from services import Mosquitto, free_port

SPEED = 180.0
STORM = SCENARIOS / "design_storm_50mm.csv"
AMP = {"furukawa_hiroo": 1, "furukawa_shirokane": 3, "ward": 5}
SIREN = {"furukawa_hiroo": 0, "furukawa_shirokane": 2}
CABINET = """
[devices.cabinet]
bus = "river"
unit = 100
model = "cabinet logger"

[site]
system_v = 12
gateway_health = false
on_battery_uplink_every_s = 900

[site.inputs.mains]
device = "cabinet"
role = "mains"
register = { kind = "discrete", address = 0 }

[site.inputs.battery]
device = "cabinet"
role = "battery_v"
register = { kind = "holding", address = 0, scale = 0.01 }
"""


def control(port: int, request: dict[str, Any]) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(json.dumps(request).encode() + b"\n")
        reply = json.loads(sock.makefile("rb").readline())
    assert reply["ok"], reply


class FaultEvents:
    """Collects `event/fault` messages from the broker in a thread of its own."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.events: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        async with aiomqtt.Client("127.0.0.1", self.port, identifier="site-1-reader") as c:
            await c.subscribe("gauged/+/event/fault", qos=1)
            self.ready.set()
            while not self._stop.is_set():
                try:
                    async with asyncio.timeout(0.2):
                        message = await anext(c.messages)
                except TimeoutError:
                    continue
                self.events.append(json.loads(bytes(message.payload)))  # type: ignore[arg-type]

    def __enter__(self) -> FaultEvents:
        self._thread.start()
        assert self.ready.wait(10), "the MQTT reader did not connect"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_site_1_mains_lost_two_hours_in_a_storm_alarms_unchanged_operators_told_once_each_way(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    # InfluxDB on but unreachable (nothing listens on port 9): the uplink is down all along,
    # and the writer is told to pace itself on battery
    rig = Rig(tmp_path, speed=SPEED, mqtt_port=mosquitto.port, influx_url="http://127.0.0.1:9")
    try:
        rig.edit_config(lambda text: text + CABINET)
        port = free_port()
        rig.start_simulators(STORM, control_port=port)
        with FaultEvents(mosquitto.port) as mqtt:
            rig.start_daemon()

            def reached(hours: float) -> Any:
                return lambda s: s["last_cycle"] is not None and datetime.fromisoformat(
                    s["last_cycle"]).timestamp() >= rig.start_ts + hours * 3600

            rig.wait_for_status(reached(1.0), rig.lead_s + 3600 / SPEED + 30, "an hour")
            control(port, {"op": "set_fault", "bus": "river", "unit": 100,
                           "knobs": {"mains_off": True}})
            lost = rig.wait_for_status(lambda s: s["site"]["mains_lost"], 30, "mains lost")
            assert lost["site"]["values"]["mains"] == 0.0
            rig.wait_for_status(reached(3.0), 2 * 3600 / SPEED + 30, "two hours on battery")
            control(port, {"op": "clear_faults", "bus": "river", "unit": 100})
            rig.wait_for_status(lambda s: not s["site"]["mains_lost"], 30, "mains back")
            end = rig.start_ts + 4 * 3600
            status = rig.wait_for_status(
                lambda s: s["last_cycle"] is not None
                and datetime.fromisoformat(s["last_cycle"]).timestamp() >= end
                and not any(z["busy"] for z in s["zones"].values()),
                timeout=3600 / SPEED + 60, what="the storm to play out")
            assert rig.stop("daemon") == 0
        site = [e for e in mqtt.events if e["kind"] in ("site", "site_cleared")]
        assert [(e["kind"], e["what"]) for e in site] == [("site", "mains_lost:mains"),
                                                          ("site_cleared", "mains_lost:mains")]
        assert status["site"]["alarms"] == []
        log = rig.log("daemon")
        assert log.count("site alarm=mains_lost") == 1
        assert log.count("site alarm cleared=mains_lost") == 1
        # routine telemetry paced to 15 minutes on battery, every cycle again on return
        paces = re.findall(r"uplink influx pace every_s=(\S+)", log)
        assert paces == ["900", "0"]
        replay = [json.loads(line) for line in subprocess.run(
            [sys.executable, "-m", "gauged", "replay", "--config", str(rig.config), "--start",
             rig.start.isoformat(), "--json", str(STORM)],
            capture_output=True, text=True, timeout=60, cwd=ROOT, check=True
        ).stdout.splitlines()]
        timeline = actuation_timeline(rig)
        assert timeline == expected_timeline(replay, rig.start_ts, AMP, SIREN)
        assert timeline  # the storm did sound: the comparison is not between two silences
    finally:
        rig.close()
