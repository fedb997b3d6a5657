"""Operator commands through a real mosquitto (password file and ACL) and the status
server's POST /command, against the relay and audio simulators (QUALITY MQ-1 to MQ-4, SEC-2).

The daemon runs in the test's event loop (tests/fieldbus.py rig) with its MQTT uplink and
its zone sequencers started; an operator client publishes commands and reads the replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from fieldbus import FieldRig, field_rig, until
from services import Mosquitto, MosquittoFactory, PtyPairFactory

from gauged.cli import main
from gauged.ops.commands import sign
from gauged.ops.status import StatusServer

SECRET = "s3cret-shared-by-the-control-room"
TOKEN = "status-token-for-the-control-room"
SPEED = 50.0
N_RANDOM = 10_000
USERS = {"gauged": "gateway-password", "ops": "operator-password"}
ACL = """user gauged
topic readwrite gauged/#

user ops
topic write gauged/+/command
topic read gauged/#
"""


def mqtt_section(broker: Mosquitto) -> Callable[[str], str]:
    def edit(text: str) -> str:
        return text + f"""
[mqtt]
enabled = true
host = "{broker.host}"
port = {broker.port}
username = "gauged"
password = "{USERS['gauged']}"

[commands]
enabled = true
secret = "{SECRET}"
burst = 20
"""
    return edit


@dataclass
class Operator:
    client: aiomqtt.Client
    topic: str
    now: Callable[[], datetime]  # the daemon's clock (simulated time runs faster in tests)
    replies: list[dict[str, Any]] = field(default_factory=list)
    messages: dict[str, list[bytes]] = field(default_factory=dict)

    async def send(self, payload: bytes, *, retain: bool = False) -> None:
        await self.client.publish(self.topic, payload, qos=1, retain=retain)

    async def command(self, **fields: Any) -> dict[str, Any]:
        """Send a signed command and wait for its reply."""
        cid = fields.setdefault("id", f"cmd-{random.randrange(10**9)}")
        fields.setdefault("issued", self.now().isoformat())
        fields.setdefault("ttl_s", 60)
        fields.setdefault("sender", "ops-1")
        await self.send(sign(json.dumps(fields), SECRET))
        return await self.reply(cid)

    async def reply(self, cid: str | None, n: int = 1) -> dict[str, Any]:
        await until(lambda: sum(r["id"] == cid for r in self.replies) >= n, 10.0,
                    f"reply to {cid}")
        return [r for r in self.replies if r["id"] == cid][n - 1]


@contextlib.asynccontextmanager
async def operator(broker: Mosquitto, rig: FieldRig) -> AsyncIterator[Operator]:
    gateway = rig.config.gateway.id
    async with aiomqtt.Client(broker.host, broker.port, username="ops",
                              password=USERS["ops"], identifier="ops-console") as client:
        await client.subscribe(f"gauged/{gateway}/#", qos=1)
        op = Operator(client, f"gauged/{gateway}/command", rig.daemon.clock.now)

        async def listen() -> None:
            async for m in client.messages:
                payload = m.payload if isinstance(m.payload, bytes) else b""
                op.messages.setdefault(str(m.topic), []).append(payload)
                if str(m.topic).endswith("/command/reply"):
                    op.replies.append(json.loads(payload))

        task = asyncio.create_task(listen())
        try:
            yield op
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@contextlib.asynccontextmanager
async def running(rig: FieldRig) -> AsyncIterator[None]:
    """The daemon's MQTT uplink and zone sequencers, as `Daemon.run` starts them."""
    daemon = rig.daemon
    assert daemon.mqtt is not None
    tasks = [asyncio.create_task(z.run()) for z in daemon.zones.values()]
    tasks.append(asyncio.create_task(daemon.mqtt.run()))
    try:
        await until(lambda: daemon.mqtt is not None and daemon.mqtt.connected, 10.0,
                    "the daemon's MQTT connection")
        yield
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t


def relay_changes(rig: FieldRig) -> list[dict[str, Any]]:
    return [r for r in rig.fleet.relay_log if r["value"] != r["previous"]]


@pytest.fixture
def broker(mosquitto_factory: MosquittoFactory) -> Mosquitto:
    return mosquitto_factory(users=USERS, acl=ACL)


async def test_mq_1_malformed_commands_are_refused_with_a_reason_and_move_no_relay(
        tmp_path: Path, pty_pair: PtyPairFactory, broker: Mosquitto) -> None:
    async with field_rig(tmp_path, pty_pair, speed=SPEED, edit=mqtt_section(broker)) as rig, \
            running(rig), operator(broker, rig) as op:
        before = len(relay_changes(rig))
        await op.send(b"{this is not json")
        await op.send(b"x" * 10_000)
        await op.send(sign(json.dumps({"id": "w-1"}), "the wrong secret, long enough"))
        refused = [await op.reply(None, n) for n in (1, 2, 3)]
        assert [r["reason"] for r in refused] == [
            "not JSON", "payload of 10000 bytes exceeds 4096", "signature does not match"]
        schema = await op.command(id="s-1", action="silence")  # no zone
        assert (schema["status"], schema["reason"]) == ("refused", "silence needs zone")
        unknown = await op.command(id="u-1", action="silence", zone="nowhere")
        assert (unknown["status"], unknown["reason"]) == ("refused", "unknown zone 'nowhere'")
        clip = await op.command(id="u-2", action="broadcast", zone="riverside",
                                clips=["no_such_clip"])
        assert clip["reason"] == "unknown clip 'no_such_clip'"
        assert len(relay_changes(rig)) == before  # not one relay moved
        assert rig.daemon.commands is not None
        assert rig.daemon.commands.refused == {
            "bad_json": 1, "oversize": 1, "bad_signature": 1, "schema": 1, "action": 2}
        assert rig.daemon.store is not None
        audit = rig.daemon.store.command_audit()
        assert [(a["id"], a["status"]) for a in audit] == [
            ("s-1", "refused"), ("u-1", "refused"), ("u-2", "refused")]  # signed ones only


async def test_commands_silence_broadcast_inhibit_and_test_do_what_they_say(
        tmp_path: Path, pty_pair: PtyPairFactory, broker: Mosquitto) -> None:
    # slower simulated time here: the operator silences a 10 s siren while it sounds (2 s)
    async with field_rig(tmp_path, pty_pair, speed=5.0, edit=mqtt_section(broker),
                         levels={"tcp_1": 4.5}) as rig, \
            running(rig), operator(broker, rig) as op:
        zone = rig.daemon.zones["riverside"]
        # an operator's announcement plays on the zone
        done = await op.command(action="broadcast", zone="riverside", clips=["warning"])
        assert done["status"] == "done"
        await until(lambda: zone.last is not None, 10.0, "the manual broadcast")
        assert zone.last is not None
        assert (zone.last.request.kind, zone.last.clips_played) == ("manual", ["warning"])
        # overflow (freeboard −0.5 m): the siren sounds; silence stops it, relays OFF
        await rig.cycle()
        await until(lambda: rig.fleet.coils("relays", 1)[0], 10.0, "the siren")
        silenced = await op.command(action="silence", zone="riverside")
        assert silenced["result"]["stopped"]["stage"] == "overflow"
        await zone.idle()
        assert zone.last.outcome == "silenced"
        assert rig.fleet.coils("relays", 1) [:2] == [False, False]
        assert rig.state("tcp_1").stage_name == "overflow"  # the stage stands
        # inhibit and release by command
        inhibited = await op.command(action="inhibit", scope="zone", target="riverside",
                                     minutes=15, reason="speaker repair")
        assert inhibited["result"]["target"] == "zone:riverside"
        assert rig.daemon.snapshot()["inhibits"][0]["by"] == "ops-1"
        refused = await op.command(action="broadcast", zone="riverside", clips=["warning"])
        assert refused["reason"] == "zone riverside is inhibited"
        released = await op.command(action="release", scope="zone", target="riverside")
        assert released["status"] == "done"
        # a silent test on command: every relay ON then OFF, read back
        before = len(rig.fleet.relay_log)
        tested = await op.command(action="test", job="silent")
        assert tested["status"] == "done" and tested["result"]["ok"] is True  # noqa: PT018
        ons = [r for r in rig.fleet.relay_log[before:] if r["value"] is True]
        assert len(ons) == 2
        assert rig.fleet.coils("relays", 1)[:2] == [False, False]
        statuses = [(a["action"], a["status"]) for a in rig.daemon.store.command_audit()]
        assert statuses == [("broadcast", "done"), ("silence", "done"), ("inhibit", "done"),
                            ("broadcast", "refused"), ("release", "done"), ("test", "done")]


async def test_mq_2_ten_thousand_random_payloads_crash_nothing_and_move_no_relay(
        tmp_path: Path, pty_pair: PtyPairFactory, broker: Mosquitto) -> None:
    rng = random.Random(20261123)
    valid = ""

    def payload(i: int) -> bytes:
        kind = i % 5
        if kind == 0:
            return rng.randbytes(rng.randrange(0, 300))
        if kind == 1:  # JSON of a random shape
            return json.dumps(rng.choice([None, 1, "s", [1], {"body": 1}, {"hmac": "x"}])
                              ).encode()
        if kind == 2:  # a valid envelope, forged signature
            return json.dumps({"body": valid, "hmac": rng.randbytes(32).hex()}).encode()
        if kind == 3:  # a signed body flipped at one byte
            signed = bytearray(sign(valid, SECRET))
            signed[rng.randrange(len(signed))] ^= 1 << rng.randrange(8)
            return bytes(signed)
        return b"{" * rng.randrange(1, 5000)  # deep or long nesting

    async with field_rig(tmp_path, pty_pair, speed=SPEED, edit=mqtt_section(broker)) as rig, \
            running(rig), operator(broker, rig) as op:
        before = len(relay_changes(rig))
        valid = json.dumps({"id": "x", "issued": op.now().isoformat(), "ttl_s": 600,
                            "sender": "fuzz", "action": "silence", "zone": "riverside"})
        for start in range(0, N_RANDOM, 100):  # 100 in flight at a time
            await asyncio.gather(*(op.send(payload(i)) for i in range(start, start + 100)))
        handler = rig.daemon.commands
        assert handler is not None
        await until(lambda: sum(handler.refused.values()) + handler.done >= N_RANDOM, 300.0,
                    "every payload handled")
        # still alive and obeying: a good command runs
        last = await op.command(action="silence", zone="riverside")
        assert last["status"] == "done"
        assert len(relay_changes(rig)) == before
        # only a payload that still carries the valid signature ran (a bit flip that turns
        # a hex digit of the HMAC to upper case leaves it valid), and only once: id "x"
        assert handler.done <= 2
        assert set(handler.refused) <= {"bad_json", "bad_envelope", "bad_signature",
                                        "oversize", "schema", "duplicate", "ttl"}


async def test_mq_3_a_retained_command_on_the_broker_at_connect_is_not_run(
        tmp_path: Path, pty_pair: PtyPairFactory, broker: Mosquitto) -> None:
    gateway_id = "fieldbus-test"
    async with aiomqtt.Client(broker.host, broker.port, username="ops",
                              password=USERS["ops"]) as client:
        body = json.dumps({"id": "ret-1", "issued": datetime.now(UTC).isoformat(),
                           "ttl_s": 3600, "sender": "ops-1", "action": "broadcast",
                           "zone": "riverside", "clips": ["warning"]})
        await client.publish(f"gauged/{gateway_id}/command", sign(body, SECRET), qos=1,
                             retain=True)
    async with field_rig(tmp_path, pty_pair, speed=SPEED, edit=mqtt_section(broker)) as rig:
        assert rig.config.gateway.id == gateway_id
        async with operator(broker, rig) as op, running(rig):
            reply = await op.reply(None)  # refused before its body is even read: no id
            assert (reply["status"], reply["reason"]) == (
                "refused", "a retained message is never executed")
            assert relay_changes(rig) == []
            assert rig.daemon.zones["riverside"].last is None


async def test_mq_4_the_same_id_twice_or_past_its_ttl_runs_at_most_once_across_a_restart(
        tmp_path: Path, pty_pair: PtyPairFactory, broker: Mosquitto) -> None:
    edit = mqtt_section(broker)
    async with field_rig(tmp_path, pty_pair, speed=SPEED, edit=edit) as rig, \
            running(rig), operator(broker, rig) as op:
        first = await op.command(id="once-1", action="inhibit", scope="station",
                                 target="tcp_1", minutes=5)
        assert first["status"] == "done"
        stale = await op.command(id="stale-1", action="inhibit", scope="station",
                                 target="tcp_2", issued="2026-01-01T00:00:00+00:00")
        assert stale["status"] == "refused" and "expired" in stale["reason"]  # noqa: PT018
    # the same id again after a restart (same state file): refused
    (tmp_path / "again").mkdir()
    async with field_rig(tmp_path / "again", pty_pair, speed=SPEED, edit=edit) as rig, \
            running(rig), operator(broker, rig) as op:
        again = await op.command(id="once-1", action="release", scope="station",
                                 target="tcp_1")
        assert (again["status"], again["reason"]) == ("refused",
                                                      "this id was already received")
        assert [i["target"] for i in rig.daemon.snapshot()["inhibits"]] == ["station:tcp_1"]


async def test_sec_2_post_command_needs_the_token_and_get_is_read_only(
        tmp_path: Path, pty_pair: PtyPairFactory, broker: Mosquitto) -> None:
    async with field_rig(tmp_path, pty_pair, speed=SPEED, edit=mqtt_section(broker)) as rig, \
            running(rig):
        daemon = rig.daemon
        async with StatusServer("127.0.0.1", 0, daemon.snapshot, daemon.health, token=TOKEN,
                                control=daemon.http_command) as server:
            url = f"http://127.0.0.1:{server.port}"
            body = sign(json.dumps({"id": "h-1", "issued": daemon.clock.now().isoformat(),
                                    "ttl_s": 60, "sender": "ops-1", "action": "inhibit",
                                    "scope": "zone", "target": "riverside"}), SECRET)

            def post(token: str | None, data: bytes = body) -> tuple[int, dict[str, Any]]:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                req = urllib.request.Request(f"{url}/command", data=data, headers=headers)
                try:
                    with urllib.request.urlopen(req, timeout=10) as r:
                        return r.status, json.load(r)
                except urllib.error.HTTPError as e:
                    return e.code, json.load(e)

            assert (await asyncio.to_thread(post, None))[0] == 401
            assert (await asyncio.to_thread(post, "wrong"))[0] == 401
            assert daemon.snapshot()["inhibits"] == []  # nothing happened
            code, reply = await asyncio.to_thread(post, TOKEN)
            assert (code, reply["status"]) == (200, "done")
            assert daemon.snapshot()["inhibits"][0]["target"] == "zone:riverside"
            code, reply = await asyncio.to_thread(post, TOKEN)  # the same id again
            assert (code, reply["reason"]) == (422, "this id was already received")

            def get(path: str, method: str = "GET") -> int:
                req = urllib.request.Request(f"{url}{path}", method=method)
                try:
                    with urllib.request.urlopen(req, timeout=10) as r:
                        return int(r.status)
                except urllib.error.HTTPError as e:
                    return e.code

            assert await asyncio.to_thread(get, "/status") == 200
            assert await asyncio.to_thread(get, "/status", "POST") == 405
        # without a configured token the control endpoint is off altogether
        async with StatusServer("127.0.0.1", 0, daemon.snapshot, daemon.health,
                                control=daemon.http_command) as server:
            url = f"http://127.0.0.1:{server.port}"
            assert (await asyncio.to_thread(post, TOKEN))[0] == 403


async def test_gauged_command_signs_and_posts_a_command_to_the_local_daemon(
        tmp_path: Path, pty_pair: PtyPairFactory, broker: Mosquitto,
        capsys: pytest.CaptureFixture[str]) -> None:
    def edit(text: str) -> str:
        return mqtt_section(broker)(text).replace("[status]\n", f'[status]\ntoken = "{TOKEN}"\n')

    async with field_rig(tmp_path, pty_pair, speed=SPEED, edit=edit) as rig, running(rig):
        daemon = rig.daemon
        async with StatusServer("127.0.0.1", 0, daemon.snapshot, daemon.health, token=TOKEN,
                                control=daemon.http_command) as server:
            config = tmp_path / "fieldbus.toml"
            url = f"http://127.0.0.1:{server.port}"
            # the test daemon's clock runs 50× faster than the wall clock the CLI stamps
            # its commands with: a long TTL keeps them fresh
            inhibit = ["command", "inhibit", "--config", str(config), "--url", url, "--ttl",
                       "3600", "--scope", "zone", "--target", "riverside", "--minutes", "30",
                       "--reason", "speaker repair"]
            assert await asyncio.to_thread(main, inhibit) == 0
            reply = json.loads(capsys.readouterr().out)
            assert reply["status"] == "done"
            [shown] = daemon.snapshot()["inhibits"]
            assert (shown["target"], shown["reason"]) == ("zone:riverside", "speaker repair")
            assert "@" in shown["by"]  # user@host by default
            release = ["command", "release", "--config", str(config), "--url", url, "--ttl",
                       "3600", "--scope", "station", "--target", "tcp_9"]
            assert await asyncio.to_thread(main, release) == 1  # refused: nothing to release
            assert "no inhibit in force" in json.loads(capsys.readouterr().out)["reason"]
