"""The MQTT uplink of a real daemon process through a broker outage, and secrets kept out of
everything it says (QUALITY MQ-5, SEC-1).

`gauged run` and `gauged simulate` run the design storm on an accelerated clock (one hour in
six seconds) against a mosquitto with a password file and an ACL. A reader subscribed to the
gateway's topics reconnects whenever it can and keeps every message it sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import pytest
from fieldbus import background, field_rig, until
from hil import SCENARIOS, Rig
from services import (
    Mosquitto,
    MosquittoFactory,
    PtyPairFactory,
    VictoriaMetrics,
    fleet_broker_auth,
)

from gauged.ops.commands import sign

SPEED = 600.0  # a 3-minute cycle in 0.3 s; an hour in 6 s
USERS = {"gauged": "pw-4a1f-gateway-MARKER-mqtt", "reader": "reader-password"}
ACL = "user gauged\ntopic readwrite gauged/#\n\nuser reader\ntopic read gauged/#\n" \
      "topic write gauged/+/command\n"
SECRETS = {
    "mqtt password": USERS["gauged"],
    "influx token": "tok-9c2e-influx-MARKER",
    "command secret": "hmac-77d0-commands-MARKER",
    "status token": "bearer-5b3a-status-MARKER",
}


@dataclass
class Reader:
    """Every message seen on gauged/#, across broker restarts."""

    broker: Mosquitto
    messages: list[tuple[str, bytes, bool]] = field(default_factory=list)
    connects: int = 0

    async def run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(self.broker.host, self.broker.port,
                                          username="reader", password=USERS["reader"],
                                          identifier=f"reader-{self.connects}") as client:
                    self.connects += 1
                    await client.subscribe("gauged/#", qos=1)
                    async for m in client.messages:
                        payload = m.payload if isinstance(m.payload, bytes) else b""
                        self.messages.append((str(m.topic), payload, bool(m.retain)))
            except aiomqtt.MqttError:
                await asyncio.sleep(0.1)  # the broker is down: try again

    def since(self, n: int) -> list[tuple[str, bytes, bool]]:
        return self.messages[n:]


@contextlib.asynccontextmanager
async def reading(broker: Mosquitto) -> AsyncIterator[Reader]:
    reader = Reader(broker)
    async with background(reader.run(), name="mqtt-reader"):
        yield reader




@pytest.fixture
def rig(tmp_path: Path, mosquitto_factory: MosquittoFactory) -> Iterator[tuple[Rig, Mosquitto]]:
    broker = mosquitto_factory(users=USERS, acl=ACL)
    rig = Rig(tmp_path, SPEED, mqtt_port=broker.port,
              influx_url="http://127.0.0.1:9")  # nothing listens: the token is sent, fails
    rig.edit_config(lambda t: t.replace(
        'username = ""\npassword = ""',
        f'username = "gauged"\npassword = "{SECRETS["mqtt password"]}"').replace(
        'token = ""', f'token = "{SECRETS["influx token"]}"') + f"""
[commands]
enabled = true
secret = "{SECRETS['command secret']}"
""")
    rig.edit_config(lambda t: t.replace("[status]\n", f'[status]\ntoken = "'
                                                       f'{SECRETS["status token"]}"\n', 1))
    try:
        yield rig, broker
    finally:
        rig.close()


async def test_mq_5_and_sec_1_broker_down_an_hour_then_everything_again_and_no_secret_leaks(
        rig: tuple[Rig, Mosquitto]) -> None:
    hil, broker = rig
    async with reading(broker) as reader:
        hil.start_simulators(SCENARIOS / "design_storm_50mm.csv")
        hil.start_daemon()
        stations = set(hil.wait_for_status(lambda s: s["cycles"] >= 2, 60, "two cycles")
                       ["stations"])

        gateway = f"gauged/{hil.wait_for_status(lambda s: True, 5, 'status')['gateway']}"

        def retained_states(msgs: list[tuple[str, bytes, bool]]) -> dict[str, dict]:
            return {t.split("/")[-2]: json.loads(p) for t, p, _ in msgs
                    if t.startswith(f"{gateway}/station/") and t.endswith("/state")}

        await until(lambda: set(retained_states(reader.messages)) == stations, 20,
                    "every station's state")
        # junk and a forged command: refused, and the refusal names no secret
        async with aiomqtt.Client(broker.host, broker.port, username="reader",
                                  password=USERS["reader"]) as client:
            await client.publish(f"{gateway}/command", b"{bad", qos=1)
            await client.publish(f"{gateway}/command", sign('{"id": "f"}', "not the secret"))
        await until(lambda: any(t.endswith("/command/reply") for t, _, _ in reader.messages),
                    20, "the refusals")

        # the broker goes away for an hour of the daemon's time (without persistence, so it
        # comes back with no retained message at all)
        cycles = hil.wait_for_status(lambda s: True, 5, "status")["cycles"]
        broker.stop(kill=True)
        hil.wait_for_status(lambda s: s["cycles"] >= cycles + 20, 60, "an hour of cycles")
        assert hil.status()["uplinks"]["mqtt"]["connected"] is False
        mark = len(reader.messages)
        broker.start()
        # `online` and every station's current stage again, without being asked
        await until(lambda: any(t == f"{gateway}/availability" and p == b"online"
                                for t, p, _ in reader.since(mark)), 60, "online again")
        await until(lambda: set(retained_states(reader.since(mark))) == stations, 30,
                    "every station's state again")
        status = hil.wait_for_status(lambda s: s["uplinks"]["mqtt"]["connected"], 30,
                                     "connected")
        published = retained_states(reader.since(mark))
        for sid in stations:  # the stage published is the daemon's (it may move on since)
            assert published[sid]["stage_name"] in {status["stations"][sid]["stage_name"],
                                                    *(s["stage_name"] for s in
                                                      retained_states(reader.messages)
                                                      .values())}
        # a crash: the broker publishes the last will
        mark = len(reader.messages)
        hil.kill("daemon")
        await until(lambda: (f"{gateway}/availability", b"offline", False) in
                    [(t, p, False) for t, p, _ in reader.since(mark)], 20, "the last will")

    # SEC-1: no secret in the log, /status, MQTT payloads or anything the CLI prints
    status_text = json.dumps(status)
    everything = {"daemon log": hil.log("daemon"), "status": status_text,
                  "mqtt": b"\n".join(p for _, p, _ in reader.messages).decode("utf-8",
                                                                              "replace")}
    assert "influx" in everything["daemon log"]  # it did try the database (and fail)
    for what, text in everything.items():
        for name, secret in SECRETS.items():
            assert secret not in text, f"{name} appears in the {what}"
            assert "MARKER" not in text, f"a secret appears in the {what}"


async def test_home_assistant_discovery_and_the_measurement_prefix_on_real_services(
        tmp_path: Path, pty_pair: PtyPairFactory, mosquitto_factory: MosquittoFactory,
        victoria: VictoriaMetrics) -> None:
    """`[mqtt] discovery`: retained documents under homeassistant/ on a broker with the
    fleet's ACL; `[influx] measurement_prefix`: every series in VictoriaMetrics prefixed."""
    users, acl = fleet_broker_auth({"fieldbus-test": "gw-pw"}, readers={"ha": "ha-pw"})
    broker = mosquitto_factory(users=users, acl=acl)

    def edit(text: str) -> str:
        return text + f"""
[mqtt]
enabled = true
host = "{broker.host}"
port = {broker.port}
username = "fieldbus-test"
password = "gw-pw"
discovery = true

[influx]
enabled = true
url = "{victoria.url}"
measurement_prefix = "city_"
"""
    async with field_rig(tmp_path, pty_pair, speed=50.0, edit=edit) as rig:
        daemon = rig.daemon
        assert daemon.mqtt is not None and daemon.influx is not None  # noqa: PT018
        async with background(daemon.mqtt.run(), daemon.influx.run(), name="uplinks"):
            await rig.cycle()
            stations = {s.station: s.kind for s in rig.results[-1].states}
            want = {f"homeassistant/sensor/fieldbus-test/{sid}_{what}/config"
                    for sid in stations for what in ("value", "stage")} | {
                "homeassistant/binary_sensor/fieldbus-test/availability/config"}

            async def documents(retained_only: bool) -> dict[str, dict]:
                got: dict[str, dict] = {}
                async with aiomqtt.Client(broker.host, broker.port, username="ha",
                                          password="ha-pw") as ha:
                    await ha.subscribe("homeassistant/#", qos=1)
                    async with asyncio.timeout(20):
                        async for m in ha.messages:
                            if m.retain or not retained_only:
                                got[str(m.topic)] = json.loads(
                                    m.payload)  # type: ignore[arg-type]
                            if want <= got.keys():
                                return got
                return got

            await documents(retained_only=False)  # all published by now
            got = await documents(retained_only=True)  # … and kept by the broker
            assert got.keys() == want
            level = got["homeassistant/sensor/fieldbus-test/tcp_1_value/config"]
            assert level["state_topic"] == "gauged/fieldbus-test/station/tcp_1/state"
            assert level["unit_of_measurement"] == "m"
            series = await victoria.wait_for_async(
                '{__name__=~"city_level_level_m"}', lambda s: len(s) == sum(
                    kind == "level" for kind in stations.values()), timeout=20)
            assert {s["metric"]["station"] for s in series} == {
                sid for sid, kind in stations.items() if kind == "level"}
            assert victoria.export('{__name__=~"level_.*"}') == []  # no unprefixed copy
