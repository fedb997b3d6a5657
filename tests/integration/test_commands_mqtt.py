"""Operator commands through a real mosquitto (password file and ACL) and the status
server's POST /command, against the relay and audio simulators (QUALITY MQ-1 to MQ-4, MQ-6,
SEC-2; MQ-2's 10,000 generated payloads against the handler alone are in
tests/unit/test_commands.py).

The daemon runs in the test's event loop (tests/fieldbus.py rig) with its MQTT uplink and
its zone sequencers started; an operator client publishes commands and reads the replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import sqlite3
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from fieldbus import FieldRig, field_rig, ramp, until
from services import Mosquitto, MosquittoFactory, PtyPairFactory, free_port

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


def mqtt_section(broker: Mosquitto, extra: str = "") -> Callable[[str], str]:
    def edit(text: str) -> str:
        return text + extra + f"""
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
    gateway: str  # the gateway its commands are signed for
    replies: list[dict[str, Any]] = field(default_factory=list)
    messages: dict[str, list[bytes]] = field(default_factory=dict)

    async def send(self, payload: bytes, *, retain: bool = False) -> None:
        await self.client.publish(self.topic, payload, qos=1, retain=retain)

    async def command(self, **fields: Any) -> dict[str, Any]:
        """Send a signed command and wait for its reply."""
        cid, payload = self.signed(**fields)
        n = 1 + sum(r["id"] == cid for r in self.replies)  # an id sent again: its next reply
        await self.send(payload)
        return await self.reply(cid, n)

    def signed(self, **fields: Any) -> tuple[str, bytes]:
        """A command's id and its signed envelope (the defaults filled in)."""
        fields.setdefault("id", f"cmd-{random.randrange(10**9)}")
        fields.setdefault("gateway", self.gateway)
        fields.setdefault("issued", self.now().isoformat())
        fields.setdefault("ttl_s", 60)
        fields.setdefault("sender", "ops-1")
        return fields["id"], sign(json.dumps(fields), SECRET)

    async def reply(self, cid: str | None, n: int = 1) -> dict[str, Any]:
        await until(lambda: sum(r["id"] == cid for r in self.replies) >= n, 10.0,
                    f"reply to {cid}")
        return [r for r in self.replies if r["id"] == cid][n - 1]


@contextlib.asynccontextmanager
async def operator(broker: Mosquitto, rig: FieldRig) -> AsyncIterator[Operator]:
    gateway = rig.config.gateway.id
    async with aiomqtt.Client(broker.host, broker.port, username="ops",
                              password=USERS["ops"], identifier=f"ops-console-{gateway}") as client:
        await client.subscribe(f"gauged/{gateway}/#", qos=1)
        op = Operator(client, f"gauged/{gateway}/command", rig.daemon.clock.now, gateway)

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


def post_command(url: str, data: bytes, token: str = TOKEN) -> tuple[int, dict[str, Any]]:
    """POST /command (blocking: call it through asyncio.to_thread)."""
    req = urllib.request.Request(f"{url}/command", data=data,
                                 headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


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


def spooled_commands(rig: FieldRig) -> list[str]:
    """The `command` points in the InfluxDB spool's file."""
    assert rig.daemon.influx is not None and rig.daemon.influx.spool is not None  # noqa: PT018
    with contextlib.closing(sqlite3.connect(
            f"file:{rig.daemon.influx.spool.path}?mode=ro", uri=True)) as db:
        return [line for (lines,) in db.execute("SELECT lines FROM chunks")
                for line in lines.split("\n") if line.startswith("command,")]


async def test_mq_2_ten_thousand_random_payloads_crash_nothing_and_move_no_relay(
        tmp_path: Path, pty_pair: PtyPairFactory, broker: Mosquitto) -> None:
    rng = random.Random(20261123)
    valid = ""

    def payload(i: int) -> bytes:
        kind = i % 7
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
        if kind == 4:  # a non-ASCII signature (compare_digest refuses to compare it)
            forged = "".join(chr(rng.randrange(0x80, 0x3000)) for _ in range(64))
            return json.dumps({"body": valid, "hmac": forged}, ensure_ascii=False).encode()
        if kind == 5:  # nested deeper than the parser's recursion limit, or not
            return b"[" * rng.randrange(1, 4000)
        return b"{" * rng.randrange(1, 5000)  # long, unfinished

    # InfluxDB on a port nobody listens on: the spool keeps every point it is given
    influx = f'\n[influx]\nenabled = true\nurl = "http://127.0.0.1:{free_port()}"\n'
    async with field_rig(tmp_path, pty_pair, speed=SPEED,
                         edit=mqtt_section(broker, influx)) as rig, \
            running(rig), operator(broker, rig) as op:
        before = len(relay_changes(rig))
        valid = json.dumps({"id": "x", "gateway": op.gateway, "issued": op.now().isoformat(),
                            "ttl_s": 600, "sender": "fuzz", "action": "silence",
                            "zone": "riverside"})
        for start in range(0, N_RANDOM, 100):  # 100 in flight at a time
            await asyncio.gather(*(op.send(payload(i)) for i in range(start, start + 100)))
        handler = rig.daemon.commands
        assert handler is not None
        await until(lambda: sum(handler.refused.values()) + handler.done >= N_RANDOM, 300.0,
                    "every payload handled")
        # still alive and obeying: a good command runs
        last = await op.command(id="last", action="silence", zone="riverside")
        assert last["status"] == "done"
        assert len(relay_changes(rig)) == before
        assert handler.failed == 0  # nothing crashed
        # only a payload that still carries the valid signature ran (a bit flip that turns
        # a hex digit of the HMAC to upper case leaves it valid), and only once: id "x"
        # (later copies are duplicates, or expired: simulated time runs 50× faster)
        assert handler.done <= 2
        signed = {"duplicate", "ttl"}
        assert set(handler.refused) <= {"bad_json", "too_deep", "bad_envelope",
                                        "bad_signature", "oversize"} | signed, handler.refused
        assert min(handler.refused["too_deep"], handler.refused["bad_signature"]) > 0
        # junk left no trace: audit rows and spool points for the signed commands only
        assert rig.daemon.store is not None
        audit = rig.daemon.store.command_audit()
        assert {a["id"] for a in audit} <= {"x", "last"}
        assert len(spooled_commands(rig)) == len(audit) == handler.done + sum(
            handler.refused[kind] for kind in signed)


async def test_mq_3_a_retained_command_on_the_broker_at_connect_is_not_run(
        tmp_path: Path, pty_pair: PtyPairFactory, broker: Mosquitto) -> None:
    gateway_id = "fieldbus-test"
    async with aiomqtt.Client(broker.host, broker.port, username="ops",
                              password=USERS["ops"]) as client:
        body = json.dumps({"id": "ret-1", "gateway": gateway_id,
                           "issued": datetime.now(UTC).isoformat(), "ttl_s": 3600,
                           "sender": "ops-1", "action": "broadcast", "zone": "riverside",
                           "clips": ["warning"]})
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
            body = sign(json.dumps({"id": "h-1", "gateway": rig.config.gateway.id,
                                    "issued": daemon.clock.now().isoformat(), "ttl_s": 60,
                                    "sender": "ops-1", "action": "inhibit", "scope": "zone",
                                    "target": "riverside"}), SECRET)

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
            # signed for the config's gateway by default; for another, this one refuses it
            elsewhere = [*release, "--gateway", "minato-furukawa"]
            assert await asyncio.to_thread(main, elsewhere) == 1
            assert json.loads(capsys.readouterr().out)["reason"] == \
                "meant for gateway 'minato-furukawa', not 'fieldbus-test'"
            assert daemon.store is not None
            assert [a["detail"]["command"]["gateway"] for a in daemon.store.command_audit()] \
                == ["fieldbus-test"] * 2 + ["minato-furukawa"]
            # `ack` names its station; a calm one is refused
            ack = ["command", "ack", "--config", str(config), "--url", url, "--ttl", "3600",
                   "--station", "tcp_1", "--reason", "seen"]
            await rig.cycle()
            assert await asyncio.to_thread(main, ack) == 1
            assert json.loads(capsys.readouterr().out)["reason"] == \
                "station tcp_1 is not raised (stage normal)"
            assert daemon.store.command_audit()[-1]["detail"]["command"]["station"] == "tcp_1"


def other_gateway(text: str) -> str:
    """The rig's config, for a second gateway (its own MQTT topics and client id)."""
    return text.replace('id = "fieldbus-test"', 'id = "fieldbus-test-2"', 1)


async def test_mq_6_a_command_for_another_gateway_or_replayed_on_one_is_refused_and_audited(
        tmp_path: Path, pty_pair: PtyPairFactory, broker: Mosquitto,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # two gateways of one control room (one secret), on one broker, at the same time
    edit = mqtt_section(broker)
    async with contextlib.AsyncExitStack() as stack:
        rigs = []
        for name, pty, gateway_edit in (
                ("a", pty_pair, edit),
                ("b", lambda name: pty_pair(f"{name}-b"),
                 lambda text: other_gateway(edit(text)))):
            (tmp_path / name).mkdir()  # each its own state file (conftest sets the path)
            monkeypatch.setenv("GAUGED_STATE__PATH", str(tmp_path / name / "state.sqlite3"))
            rigs.append(await stack.enter_async_context(
                field_rig(tmp_path / name, pty, speed=SPEED, edit=gateway_edit)))
        a, b = rigs
        for rig in rigs:
            await stack.enter_async_context(running(rig))
        op_a = await stack.enter_async_context(operator(broker, a))
        op_b = await stack.enter_async_context(operator(broker, b))
        assert (op_a.gateway, op_b.gateway) == ("fieldbus-test", "fieldbus-test-2")
        # issued by b's clock, the later-started one: fresh on both gateways (≤ ttl_s old,
        # not in the future), so that only the gateway can stop a replay
        issued = b.daemon.clock.now().isoformat()
        fresh = {"issued": issued, "ttl_s": 3600}
        broadcast_id, broadcast = op_a.signed(action="broadcast", zone="riverside",
                                              clips=["warning"], **fresh)
        inhibit_id, inhibit = op_a.signed(action="inhibit", scope="zone", target="riverside",
                                          minutes=1440, reason="a day of work", **fresh)
        for payload in (broadcast, inhibit):  # meant for a: it runs them
            await op_a.send(payload)
        assert (await op_a.reply(broadcast_id))["status"] == "done"
        assert (await op_a.reply(inhibit_id))["status"] == "done"
        assert [i["target"] for i in a.daemon.snapshot()["inhibits"]] == ["zone:riverside"]
        # captured and replayed, byte for byte, on b's topic: refused, audited, nothing moves
        for payload in (broadcast, inhibit):
            await op_b.client.publish(op_b.topic, payload, qos=1)
        replies = [await op_b.reply(cid) for cid in (broadcast_id, inhibit_id)]
        assert [(r["status"], r["reason"]) for r in replies] == [
            ("refused", "meant for gateway 'fieldbus-test', not 'fieldbus-test-2'")] * 2
        assert b.daemon.store is not None
        assert [(x["id"], x["action"], x["status"], x["reason"])
                for x in b.daemon.store.command_audit()] == [
            (broadcast_id, "broadcast", "refused", replies[0]["reason"]),
            (inhibit_id, "inhibit", "refused", replies[1]["reason"])]
        assert b.daemon.snapshot()["inhibits"] == []
        # a correctly signed command naming another gateway, sent to a: refused and audited
        other = await op_a.command(gateway="fieldbus-test-2", action="silence",
                                   zone="riverside", **fresh)
        assert (other["status"], other["reason"]) == (
            "refused", "meant for gateway 'fieldbus-test-2', not 'fieldbus-test'")
        assert a.daemon.store is not None
        assert a.daemon.store.command_audit()[-1]["status"] == "refused"
        # the same fields signed for b run on b: the gateway was the only thing wrong
        own = await op_b.command(action="silence", zone="riverside", **fresh)
        assert own["status"] == "done"
        assert relay_changes(b) == []  # 0 relay changes on the gateway it was not meant for
        assert b.daemon.commands is not None
        assert b.daemon.commands.refused == {"gateway": 2}
        assert b.daemon.zones["riverside"].last is None


async def test_one_test_at_a_time_and_an_alarm_aborts_it_without_cutting_the_siren(
        tmp_path: Path, pty_pair: PtyPairFactory, broker: Mosquitto) -> None:
    def edit(text: str) -> str:
        text = mqtt_section(broker, "\n[tests]\nhold_s = 10\n")(text)  # 2 s a relay
        return text.replace("[status]\n", f'[status]\ntoken = "{TOKEN}"\n')

    async with field_rig(tmp_path, pty_pair, speed=5.0, edit=edit,
                         levels={"tcp_1": 4.5}) as rig, \
            running(rig), operator(broker, rig) as op:
        daemon = rig.daemon
        zone = daemon.zones["riverside"]
        async with StatusServer("127.0.0.1", 0, daemon.snapshot, daemon.health, token=TOKEN,
                                control=daemon.http_command) as server:
            url = f"http://127.0.0.1:{server.port}"
            first_id, first = op.signed(action="test", job="silent")
            await op.send(first)
            await until(lambda: rig.fleet.coils("relays", 1)[0], 10.0, "the test's siren ON")
            # a second test, and a manual broadcast, while it holds a relay (over HTTP: the
            # MQTT listener waits for the running test's reply)
            for fields in ({"action": "test", "job": "silent"},
                           {"action": "test", "job": "audible"},
                           {"action": "broadcast", "zone": "riverside", "clips": ["warning"]}):
                code, reply = await asyncio.to_thread(post_command, url,
                                                      op.signed(**fields)[1])
                assert (code, reply["reason"]) in {
                    (422, "a test is running (silent)"),
                    (422, "no audible test is configured (tests.audible_clip)")}, reply
            assert rig.fleet.coils("relays", 1)[0]  # still the first test's hold
            mark = len(rig.fleet.relay_log)
            # overflow: the alarm aborts the test (its relay OFF first), then sounds
            result = await rig.cycle()
            assert [r.station for r in result.broadcasts] == ["tcp_1"]
            aborted = await op.reply(first_id)
            assert (aborted["status"], aborted["result"]) == (
                "done", {"ok": False, "aborted": "alarm broadcast"})
            await until(lambda: rig.fleet.coils("relays", 1)[0], 10.0, "the alarm's siren")
            # a test asked for while the alarm plays is refused
            code, reply = await asyncio.to_thread(
                post_command, url, op.signed(action="test", job="silent")[1])
            assert (code, reply["reason"]) == (422, "zones broadcasting: riverside")
            await until(lambda: zone.last is not None, 20.0, "the overflow broadcast")
            assert zone.last is not None
            assert (zone.last.request.station, zone.last.outcome) == ("tcp_1", "done")
            assert zone.last.siren_on_s >= 10.0  # not cut by the test's OFF
            siren = [r["value"] for r in rig.fleet.relay_log[mark:]
                     if r["coil"] == 0 and r["value"] != r["previous"]]
            assert siren == [False, True, False]  # the test's OFF, then the siren, once
            assert rig.fleet.coils("relays", 1)[:2] == [False, False]
            assert daemon.test_runner.running is None


def fill_state_disk(db: sqlite3.Connection) -> None:
    """The state file can grow no more and has no room left where commands are written:
    the next command id or audit row fails with SQLITE_FULL ("database or disk is full"),
    the error a full file system gives SQLite (as in test_dur_4_disk_full.py, plus the
    command tables: a row that fits in a page with room would still be written)."""
    db.execute("CREATE TABLE filler (x BLOB)")
    db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")
    db.execute("PRAGMA synchronous = OFF")  # throw-away rows: no fsync each
    n = itertools.count()
    rows: list[tuple[str, Callable[[int], tuple[Any, ...]]]] = [
        ("INSERT INTO filler VALUES (zeroblob(?))", lambda size: (size,)),
        # ids that sort after any real one, and never expire (received far ahead)
        ("INSERT INTO command_ids VALUES (?, 1e12)",
         lambda size: (f"~{next(n):08d}" + "~" * min(size, 60),)),
        ("INSERT INTO command_audit (time, status, detail) VALUES (0, 'fill', ?)",
         lambda size: ("x" * size,))]
    for size in (4000, 1000, 100, 10, 1):
        for sql, row in rows:
            with contextlib.suppress(sqlite3.OperationalError):  # full
                while True:
                    db.execute(sql, row(size))
    db.execute("PRAGMA synchronous = FULL")


async def test_a_silence_runs_with_the_state_disk_full_and_an_inhibit_is_refused(
        tmp_path: Path, pty_pair: PtyPairFactory, broker: Mosquitto) -> None:
    async with field_rig(tmp_path, pty_pair, speed=5.0, edit=mqtt_section(broker),
                         levels={"tcp_1": 4.5}) as rig, \
            running(rig), operator(broker, rig) as op:
        zone = rig.daemon.zones["riverside"]
        store = rig.daemon.store
        assert store is not None
        before = await op.command(id="before-full", action="release", scope="zone",
                                  target="riverside")  # recorded (refused: no inhibit)
        assert before["status"] == "refused"
        await rig.cycle()  # overflow: the siren sounds
        await until(lambda: rig.fleet.coils("relays", 1)[0], 10.0, "the siren")
        fill_state_disk(store._db)  # the store's own connection: the limit is its own
        assert store.command_seen("probe", rig.daemon.clock.timestamp(), 60) is None
        # the operator's brake works all the same
        silenced = await op.command(id="silence-1", action="silence", zone="riverside")
        assert silenced["status"] == "done"
        assert silenced["result"]["stopped"]["stage"] == "overflow"
        await zone.idle()
        assert zone.last is not None and zone.last.outcome == "silenced"  # noqa: PT018
        assert rig.fleet.coils("relays", 1)[:2] == [False, False]
        # an inhibit, whose id could not be kept, is refused (it could be replayed to
        # silence the zone again after a restart): nothing inhibited
        inhibit = await op.command(action="inhibit", scope="zone", target="riverside",
                                   minutes=60)
        assert inhibit["status"] == "refused"
        assert inhibit["reason"].startswith("the state file cannot be written")
        assert rig.daemon.snapshot()["inhibits"] == []
        # replays are refused still: of the silence run unrecorded, of a command recorded
        # before the disk filled
        for cid, fields in (("silence-1", {"action": "silence", "zone": "riverside"}),
                            ("before-full", {"action": "release", "scope": "zone",
                                             "target": "riverside"})):
            again = await op.command(id=cid, **fields)
            assert (again["status"], again["reason"]) == ("refused",
                                                          "this id was already received")
        assert store.problem.startswith("cannot write")
        with contextlib.closing(sqlite3.connect(f"file:{store.path}?mode=ro", uri=True)) as db:
            kept = {cid for (cid,) in db.execute("SELECT id FROM command_ids")
                    if not cid.startswith("~")}
        assert kept == {"before-full"}  # the silence ran without its id on disk


async def test_ack_is_kept_shown_published_survives_a_restart_and_silences_nothing(
        tmp_path: Path, pty_pair: PtyPairFactory, broker: Mosquitto,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    edit = mqtt_section(broker)
    base = "gauged/fieldbus-test"

    def repeats(text: str) -> str:  # tcp_1's overflow sounds again every 6 minutes
        overflow = '{ name = "overflow", threshold = 0.0, sequence = "overflow" },'
        return edit(text.replace(overflow, overflow[:-3] + ", repeat_min = 6 },", 1))

    async with field_rig(tmp_path, pty_pair, speed=5.0, edit=repeats,
                         levels={"tcp_1": 4.5}) as rig, \
            running(rig), operator(broker, rig) as op:
        zone = rig.daemon.zones["riverside"]
        early = await op.command(action="ack", station="tcp_1")  # no reading yet
        assert (early["status"], early["reason"]) == (
            "refused", "station tcp_1 is not raised (stage unknown)")
        await rig.cycle()  # tcp_1 overflows (freeboard −0.5 m): the siren sounds
        await until(lambda: rig.fleet.coils("relays", 1)[0], 10.0, "the siren")
        calm = await op.command(action="ack", station="tcp_2")
        assert (calm["status"], calm["reason"]) == (
            "refused", "station tcp_2 is not raised (stage normal)")
        unknown = await op.command(action="ack", station="nowhere")
        assert (unknown["status"], unknown["reason"]) == ("refused",
                                                          "unknown station 'nowhere'")
        _, forged = op.signed(id="forged-ack", action="ack", station="tcp_1")
        envelope = json.loads(forged)
        await op.send(sign(envelope["body"], "not the secret"))
        bad = await op.reply(None)
        assert (bad["status"], bad["reason"]) == ("refused", "signature does not match")

        done = await op.command(id="ack-1", action="ack", station="tcp_1",
                                reason="crew on the way")
        assert done["status"] == "done"
        ack = done["result"]["ack"]
        assert (ack["station"], ack["stage_name"], ack["by"], ack["note"], ack["cleared"]) \
            == ("tcp_1", "overflow", "ops-1", "crew on the way", False)
        # an acknowledgement silences nothing: the siren sounds to its end, and the stage's
        # repeats go on
        await zone.idle()
        assert zone.last is not None
        assert (zone.last.request.stage_name, zone.last.outcome) == ("overflow", "done")
        for _ in range(3):  # nine minutes on, the river still over the wall
            await rig.cycle()
        await until(lambda: zone.last is not None and zone.last.request.kind == "repeat",
                    20.0, "the repeat")
        await zone.idle()
        assert (zone.last.request.stage_name, zone.last.outcome) == ("overflow", "done")
        # kept, shown, published (an event with its id, and the station's retained ack)
        assert rig.daemon.snapshot()["acks"]["tcp_1"]["command_id"] == "ack-1"
        assert "crew on the way" in rig.daemon.page()
        await until(lambda: f"{base}/station/tcp_1/ack" in op.messages, 10.0, "retained ack")
        await until(lambda: f"{base}/event/ack" in op.messages, 10.0, "the ack event")
        event = json.loads(op.messages[f"{base}/event/ack"][-1])
        assert event["command_id"] == "ack-1"
        assert event["event_id"].startswith("fieldbus-test-")
        assert event["gateway"] == "fieldbus-test"
        assert "ack station=tcp_1 stage=overflow by=ops-1 id=ack-1" in caplog.text
        assert "unknown station 'nowhere'" in caplog.text
        statuses = [(a["action"], a["status"]) for a in rig.daemon.store.command_audit()]
        assert statuses == [("ack", "refused")] * 3 + [("ack", "done")]

    # after a restart the acknowledgement is still there; it ends when the river is back
    # to normal (and its retained message is removed)
    down = ramp([4.5 - 0.15 * i for i in range(25)])  # (a plausible fall: under 4 m/h)
    (tmp_path / "again").mkdir()
    async with field_rig(tmp_path / "again", pty_pair, speed=50.0, edit=edit,
                         levels={"tcp_1": 4.5}, profiles={"tcp_1": down}) as rig, \
            running(rig), operator(broker, rig) as op:
        assert rig.daemon.recorder.acks is not None
        assert list(rig.daemon.snapshot()["acks"]) == ["tcp_1"]
        for _ in range(30):
            await rig.cycle()
            if rig.state("tcp_1").stage == 0:
                break
        assert rig.state("tcp_1").stage == 0
        assert rig.daemon.snapshot()["acks"] == {}
        history = rig.daemon.recorder.acks.history()
        assert [(a.command_id, a.cleared_why) for a in history] == [("ack-1", "back to normal")]
        await until(lambda: op.messages.get(f"{base}/station/tcp_1/ack", [b"x"])[-1] == b"",
                    10.0, "the retained ack removed")
