"""QUALITY FL-6: a signed command to gateway 3 of a fleet: only gateway 3 acts (ACL and
signature), and a retained command is refused (DESIGN §7).

One central mosquitto with the fleet's users and ACL (`services.fleet_broker_auth`: each
gateway confined to `gauged/<its id>/#`; an operator who may command every gateway). Two
daemons run in the test's event loop, `gw-2` and `gw-3`, each with its own simulators and a
station at overflow; `gw-1` is a third gateway's MQTT credentials in the hands of an attacker
(or of a misconfigured gateway). Every daemon shares the control room's command secret.

- A retained command for gw-3, left on the broker before gw-3 connects: refused.
- The operator's `ack` for gw-3: done on gw-3, seen nowhere else.
- The same signed envelope published on gw-2's topic: gw-2 refuses it (its signed body
  names gw-3), nothing changes on gw-2.
- gw-1 publishing a correctly signed command on gw-3's topic, or a false retained state,
  and subscribing to gw-3's topics: the broker drops all of it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from fieldbus import FieldRig, background, field_rig, until
from services import Mosquitto, MosquittoFactory, PtyPairFactory, fleet_broker_auth

from gauged.ops.commands import sign

SECRET = "control-room-secret-shared-by-every-gateway"
GATEWAYS = {"gw-1": "pw-gateway-1", "gw-2": "pw-gateway-2", "gw-3": "pw-gateway-3"}
USERS, ACL = fleet_broker_auth(GATEWAYS, operators={"ops": "pw-operator"})


def gateway_config(broker: Mosquitto, gateway: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert 'id = "fieldbus-test"' in text
        return text.replace('id = "fieldbus-test"', f'id = "{gateway}"') + f"""
[mqtt]
enabled = true
host = "{broker.host}"
port = {broker.port}
username = "{gateway}"
password = "{GATEWAYS[gateway]}"

[commands]
enabled = true
secret = "{SECRET}"
"""
    return edit


@dataclass
class Listener:
    """A client of the broker that keeps every message it is allowed to see."""

    messages: list[tuple[str, bytes, bool]] = field(default_factory=list)

    def replies(self, gateway: str) -> list[dict[str, Any]]:
        return [json.loads(p) for t, p, _ in self.messages
                if t == f"gauged/{gateway}/command/reply"]

    def reply(self, gateway: str, cid: str | None) -> dict[str, Any] | None:
        return next((r for r in self.replies(gateway) if r["id"] == cid), None)


@contextlib.asynccontextmanager
async def client(user: str, broker: Mosquitto, *topics: str
                 ) -> AsyncIterator[tuple[aiomqtt.Client, Listener]]:
    listener = Listener()
    async with aiomqtt.Client(broker.host, broker.port, username=user, password=USERS[user],
                              identifier=f"fl6-{user}") as c:
        for topic in topics:
            await c.subscribe(topic, qos=1)

        async def listen() -> None:
            async for m in c.messages:
                payload = m.payload if isinstance(m.payload, bytes) else b""
                listener.messages.append((str(m.topic), payload, bool(m.retain)))

        async with background(listen(), name=f"listen-{user}"):
            yield c, listener


def envelope(rig: FieldRig, gateway: str, cid: str, **fields: Any) -> bytes:
    body = {"id": cid, "gateway": gateway, "issued": rig.daemon.clock.now().isoformat(),
            "ttl_s": 60, "sender": "ops-1"} | fields
    return sign(json.dumps(body), SECRET)


@contextlib.asynccontextmanager
async def mqtt_running(rig: FieldRig) -> AsyncIterator[None]:
    """The daemon's MQTT uplink and zones, as `Daemon.run` starts them."""
    daemon = rig.daemon
    assert daemon.mqtt is not None
    async with background(daemon.mqtt.run(), *(z.run() for z in daemon.zones.values()),
                          name=f"daemon-{daemon.gateway}"):
        await until(lambda: daemon.mqtt is not None and daemon.mqtt.connected, 10.0,
                    f"{daemon.gateway} connected")
        yield


def audit(rig: FieldRig) -> list[tuple[str | None, str, str]]:
    assert rig.daemon.store is not None
    return [(a["id"], a["action"], a["status"]) for a in rig.daemon.store.command_audit()]


async def test_fl_6_a_command_for_gateway_3_acts_on_gateway_3_only(
        tmp_path: Path, pty_pair: PtyPairFactory, mosquitto_factory: MosquittoFactory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    broker = mosquitto_factory(users=USERS, acl=ACL)
    rigs: dict[str, FieldRig] = {}
    async with contextlib.AsyncExitStack() as stack:
        for gw in ("gw-2", "gw-3"):  # each daemon with a state folder of its own
            folder = tmp_path / gw
            folder.mkdir()
            monkeypatch.setenv("GAUGED_STATE__PATH", str(folder / "state" / "state.sqlite3"))
            rigs[gw] = await stack.enter_async_context(field_rig(
                folder, pty_pair, speed=50.0, edit=gateway_config(broker, gw),
                levels={"tcp_1": 4.5}))
        gw2, gw3 = rigs["gw-2"], rigs["gw-3"]
        ops, seen = await stack.enter_async_context(client("ops", broker, "gauged/#"))

        # a retained command waits on the broker for gw-3: refused when gw-3 connects
        await ops.publish("gauged/gw-3/command", envelope(gw3, "gw-3", "retained-1",
                                                          action="ack", station="tcp_1"),
                          qos=1, retain=True)
        for rig in (gw2, gw3):
            await rig.cycle()  # tcp_1 at overflow on both
            assert rig.state("tcp_1").stage_name == "overflow"
        await stack.enter_async_context(mqtt_running(gw2))
        await stack.enter_async_context(mqtt_running(gw3))
        await until(lambda: seen.reply("gw-3", None) is not None, 10.0, "the refusal")
        retained = seen.reply("gw-3", None)
        assert retained is not None
        assert (retained["status"], retained["reason"]) == (
            "refused", "a retained message is never executed")
        assert gw3.daemon.snapshot()["acks"] == {}
        await ops.publish("gauged/gw-3/command", b"", qos=1, retain=True)  # clear it

        # the operator's ack for gw-3: done there
        ack = envelope(gw3, "gw-3", "ack-gw3", action="ack", station="tcp_1")
        await ops.publish("gauged/gw-3/command", ack, qos=1)
        await until(lambda: seen.reply("gw-3", "ack-gw3") is not None, 10.0, "gw-3's reply")
        done = seen.reply("gw-3", "ack-gw3")
        assert done is not None
        assert done["status"] == "done"
        assert list(gw3.daemon.snapshot()["acks"]) == ["tcp_1"]

        # the same envelope on gw-2's topic: gw-2 refuses it because of its signed body
        await ops.publish("gauged/gw-2/command", ack, qos=1)
        await until(lambda: seen.reply("gw-2", "ack-gw3") is not None, 10.0, "gw-2's reply")
        refused = seen.reply("gw-2", "ack-gw3")
        assert refused is not None
        assert (refused["status"], refused["reason"]) == (
            "refused", "meant for gateway 'gw-3', not 'gw-2'")
        assert gw2.daemon.snapshot()["acks"] == {}
        assert audit(gw2) == [("ack-gw3", "ack", "refused")]

        # gw-1's credentials: whatever it sends on gw-3's topics, the broker drops
        async with client("gw-1", broker, "gauged/gw-3/#", "gauged/gw-2/#") as (gw1, spy):
            forged_state = json.dumps({"stage": 0, "stage_name": "normal"})
            await gw1.publish("gauged/gw-3/station/tcp_1/state", forged_state, qos=1,
                              retain=True)
            await gw1.publish("gauged/gw-3/command", envelope(
                gw3, "gw-3", "from-gw1", action="silence", zone="riverside"), qos=1)
            # a barrier: the broker handles one client's messages in order, and gw-1's
            # publishes were acknowledged (so handled) before the operator's marker
            marker = envelope(gw3, "gw-3", "marker", action="release", scope="station",
                              target="tcp_2")
            await ops.publish("gauged/gw-3/command", marker, qos=1)
            await until(lambda: seen.reply("gw-3", "marker") is not None, 10.0, "marker")
            gw3_state = gw3.daemon.snapshot()["stations"]["tcp_1"]["stage_name"]
            assert gw3_state == "overflow"
        assert seen.reply("gw-3", "from-gw1") is None
        assert ("from-gw1", "silence", "done") not in audit(gw3)
        assert [cid for cid, _, _ in audit(gw3)] == ["ack-gw3", "marker"]
        assert not any(t == "gauged/gw-3/station/tcp_1/state" and json.loads(p)["stage"] == 0
                       for t, p, _ in seen.messages)
        assert spy.messages == []  # gw-1 reads nothing of gw-2's and gw-3's
        # gw-2 acted on nothing: its stage stands, no ack, only the one refusal audited
        assert gw2.daemon.snapshot()["acks"] == {}
        assert audit(gw2) == [("ack-gw3", "ack", "refused")]
