"""The command handler's checks (gauged/ops/commands.py), with the actions and the clock
injected; MQTT and HTTP delivery are in tests/integration/test_commands_mqtt.py."""

from __future__ import annotations

import json
import logging
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from gauged.config.models import CommandsConfig
from gauged.ops.commands import Command, CommandHandler, Outcome, Refused, sign

SECRET = "correct horse battery staple"
GATEWAY = "gw-1"
NOW = datetime(2026, 7, 1, 9, 0, tzinfo=UTC)


class Harness:
    """The handler with its actions, id store and audit record replaced by lists.

    `disk_full`: the id store cannot write (it still reads the ids it has)."""

    def __init__(self, **config: Any) -> None:
        self.now = NOW.timestamp()
        self.ids: set[str] = set()
        self.disk_full = False
        self.executed: list[Command] = []
        self.audited: list[Outcome] = []
        self.handler = CommandHandler(
            CommandsConfig(enabled=True, secret=SecretStr(SECRET), **config),
            gateway=GATEWAY, execute=self.execute, seen=self.seen,
            audit=lambda t, o: self.audited.append(o), now=lambda: self.now)

    async def seen(self, cid: str, now: float) -> bool | None:
        if cid in self.ids:
            return False
        if self.disk_full:
            return None
        self.ids.add(cid)
        return True

    async def execute(self, command: Command) -> dict[str, Any]:
        if command.zone == "nowhere":
            raise Refused("unknown zone 'nowhere'")
        self.executed.append(command)
        return {"ran": command.action}

    async def send(self, payload: bytes, retained: bool = False) -> Outcome:
        return await self.handler.handle(payload, retained=retained)


def body(**fields: Any) -> str:
    command = {"id": "c-1", "gateway": GATEWAY, "issued": NOW.isoformat(), "ttl_s": 60,
               "sender": "ops-1", "action": "silence", "zone": "ward"} | fields
    return json.dumps({k: v for k, v in command.items() if v is not None})


async def test_a_signed_fresh_command_runs_once_and_is_audited() -> None:
    h = Harness()
    outcome = await h.send(sign(body(), SECRET))
    assert (outcome.status, outcome.id, outcome.result) == ("done", "c-1", {"ran": "silence"})
    assert [c.id for c in h.executed] == ["c-1"]
    assert [o.status for o in h.audited] == ["done"]
    reply = outcome.reply(h.now)
    assert reply["status"] == "done" and reply["time"].endswith("+00:00")  # noqa: PT018


@pytest.mark.parametrize(("payload", "kind", "reason"), [
    (b"{not json", "bad_json", "not JSON"),
    (b"\xff\xfe\x00", "bad_json", "not JSON"),
    (b"[1, 2]", "bad_envelope", "expected"),
    (json.dumps({"body": body(), "hmac": 7}).encode(), "bad_envelope", "expected"),
    (json.dumps({"body": body(), "hmac": "00" * 32}).encode(), "bad_signature", "signature"),
    (sign(body(), "a different secret!"), "bad_signature", "signature"),
    (b"x" * 5000, "oversize", "exceeds 4096"),
    # whatever a parser makes of hostile input, it is junk: refused and counted, unaudited
    (b"[" * 1000, "too_deep", "nested too deeply"),
    (json.dumps({"body": body(), "hmac": "é" * 64}).encode(), "bad_signature", "64 hex"),
    (json.dumps({"body": body(), "hmac": "０" * 64}).encode(), "bad_signature", "64 hex"),
    (json.dumps({"body": "\ud800", "hmac": "00" * 32}).encode(), "bad_envelope", "text"),
    (b'{"body": "x", "hmac": ' + b"9" * 4100 + b"}", "oversize", "exceeds"),
    (b'{"body": 1' + b"0" * 4000 + b', "hmac": "00"}', "bad_envelope", "expected"),
    (b'{"body": "", "hmac": 1e999}', "bad_envelope", "expected"),
    ("«»".encode("utf-16"), "bad_json", "not JSON"),
])
async def test_mq_1_malformed_or_unsigned_commands_are_refused_unaudited(
        payload: bytes, kind: str, reason: str) -> None:
    h = Harness()
    outcome = await h.send(payload)
    assert outcome.status == "refused"
    assert reason in outcome.reason
    assert h.handler.refused == {kind: 1}
    assert h.executed == []
    assert h.audited == []  # junk cannot fill the audit record (nor the spool: see below)
    assert h.ids == set()  # nor the id table


@pytest.mark.parametrize(("fields", "reason"), [
    ({"action": "launch"}, "action"),
    ({"zone": None}, "silence needs zone"),
    ({"extra": 1}, "extra"),
    ({"ttl_s": "60"}, "ttl_s"),
    ({"issued": "2026-07-01T09:00:00"}, "UTC offset"),
    ({"id": "bad id with spaces"}, "id"),
    ({"action": "broadcast", "clips": []}, "broadcast needs"),
    ({"zone": "nowhere"}, "unknown zone 'nowhere'"),
])
async def test_mq_1_signed_commands_that_break_the_schema_are_refused_and_audited(
        fields: dict[str, Any], reason: str) -> None:
    h = Harness()
    outcome = await h.send(sign(body(**fields), SECRET))
    assert outcome.status == "refused"
    assert reason in outcome.reason, outcome.reason
    assert h.executed == []
    assert [o.status for o in h.audited] == ["refused"]


async def test_mq_3_a_retained_command_is_never_run() -> None:
    h = Harness()
    outcome = await h.send(sign(body(), SECRET), retained=True)
    assert (outcome.status, h.executed) == ("refused", [])
    assert "retained" in outcome.reason


async def test_mq_4_the_same_id_twice_or_a_stale_command_runs_at_most_once() -> None:
    h = Harness()
    assert (await h.send(sign(body(), SECRET))).status == "done"
    again = await h.send(sign(body(), SECRET))
    assert (again.status, again.reason) == ("refused", "this id was already received")
    old = await h.send(sign(body(id="c-2", issued=(NOW - timedelta(seconds=61))
                                 .isoformat()), SECRET))
    assert old.status == "refused" and "expired" in old.reason  # noqa: PT018
    future = await h.send(sign(body(id="c-3", issued=(NOW + timedelta(minutes=5))
                                    .isoformat()), SECRET))
    assert "future" in future.reason
    long = await h.send(sign(body(id="c-4", ttl_s=7200), SECRET))
    assert "exceeds" in long.reason
    assert [c.id for c in h.executed] == ["c-1"]
    # a refused stale command did not use up its id: sent fresh, it runs
    assert (await h.send(sign(body(id="c-2"), SECRET))).status == "done"


async def test_commands_are_rate_limited() -> None:
    h = Harness(rate_per_min=1.0, burst=3)
    outcomes = [await h.send(sign(body(id=f"r-{i}"), SECRET)) for i in range(5)]
    assert [o.status for o in outcomes] == ["done"] * 3 + ["refused"] * 2
    assert outcomes[-1].reason == "rate limit"
    assert h.handler.refused == {"rate": 2}


async def test_refusals_are_logged_at_most_ten_a_minute(
        caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()
    with caplog.at_level(logging.INFO, "gauged.ops.commands"):
        for _ in range(100):
            await h.send(b"junk")
    assert len([r for r in caplog.records if "command refused" in r.message]) == 10
    assert h.handler.refused == {"bad_json": 100}


async def test_a_replayed_id_does_not_use_up_the_rate() -> None:
    h = Harness(rate_per_min=1.0, burst=2)
    assert (await h.send(sign(body(id="a"), SECRET))).status == "done"
    for _ in range(5):
        assert (await h.send(sign(body(id="a"), SECRET))).reason == \
            "this id was already received"
    assert (await h.send(sign(body(id="b"), SECRET))).status == "done"


async def test_mq_6_a_command_for_another_gateway_is_refused_and_audited() -> None:
    h = Harness()
    other = await h.send(sign(body(gateway="gw-2", action="inhibit", zone=None, scope="zone",
                                   target="ward", minutes=1440), SECRET))
    assert (other.status, other.reason) == ("refused", "meant for gateway 'gw-2', not 'gw-1'")
    assert [(o.id, o.status) for o in h.audited] == [("c-1", "refused")]
    assert h.handler.refused == {"gateway": 1}
    assert (h.executed, h.ids) == ([], set())  # not run, and its id not taken
    unnamed = await h.send(sign(body(gateway=None), SECRET))  # no gateway: not a command
    assert (unnamed.status, unnamed.reason) == ("refused", "gateway: Field required")
    assert h.executed == []
    assert (await h.send(sign(body(), SECRET))).status == "done"  # this gateway's own


async def test_a_silence_runs_on_a_full_disk_at_most_once_and_nothing_else_does() -> None:
    h = Harness()
    assert (await h.send(sign(body(id="before"), SECRET))).status == "done"
    h.disk_full = True
    silence = await h.send(sign(body(id="s-1"), SECRET))
    assert (silence.status, silence.result) == ("done", {"ran": "silence"})
    for fields in ({"action": "inhibit", "zone": None, "scope": "zone", "target": "ward"},
                   {"action": "release", "zone": None, "scope": "zone", "target": "ward"},
                   {"action": "broadcast", "clips": ["warning"]},
                   {"action": "test", "zone": None, "job": "silent"}):
        refused = await h.send(sign(body(id=f"x-{fields['action']}", **fields), SECRET))
        assert refused.status == "refused"
        assert refused.reason.startswith("the state file cannot be written")
    assert h.handler.refused == {"unrecorded": 4}
    # replays: of the silence run unrecorded (also once the disk has room again), and of a
    # command recorded before the disk filled up
    again = [await h.send(sign(body(id=i), SECRET)) for i in ("s-1", "before")]
    h.disk_full = False
    again.append(await h.send(sign(body(id="s-1"), SECRET)))
    assert [o.reason for o in again] == ["this id was already received"] * 3
    assert [c.id for c in h.executed] == ["before", "s-1"]
    assert [o.status for o in h.audited] == ["done", "done"] + ["refused"] * 7


# ---- MQ-2: hostile payloads, generated ------------------------------------------------------
#
# The handler is pure logic apart from its three callbacks (execute, seen, audit), replaced
# here by lists; `audit` is the only way to the state file's audit table and to the InfluxDB
# spool (Recorder.command), so "not audited" means neither. With these callbacks `handle`
# never waits, and `settle` runs it to its end without an event loop (10,000 cases in a few
# seconds). Through the daemon and mosquitto: tests/integration/test_commands_mqtt.py.

FUZZ = settings(derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.large_base_example])
FIELDS = ("id", "gateway", "issued", "ttl_s", "sender", "action", "zone", "clips", "scope",
          "target", "minutes", "reason", "job")
T = TypeVar("T")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(
        st.sampled_from(FIELDS) | st.text(max_size=8), inner, max_size=5),
    max_leaves=12)
huge_numbers = st.one_of(
    st.integers(1, 6000).map(lambda n: "9" * n),  # past int's 4,300-digit limit, too
    st.integers(-10**6, 10**6).map(lambda e: f"1e{e}"),
    st.integers(1, 400).map(lambda n: f"-0.{'0' * n}1"),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e309", "-1e309", "-0", "0e99999"]),
    st.integers().map(str))
non_ascii = st.text(st.characters(min_codepoint=0x80), min_size=1, max_size=80)


def settle(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never waits to its end."""
    try:
        coro.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    coro.close()
    raise AssertionError("the handler waited on something")


def refused_unread(payload: bytes) -> Outcome:
    """Send junk to a fresh handler: refused, counted, and nothing else."""
    h = Harness(max_bytes=65536)
    outcome = settle(h.handler.handle(payload))
    assert outcome.status == "refused", outcome  # not "failed": nothing crashed
    assert not outcome.audited
    assert sum(h.handler.refused.values()) == 1
    event(next(iter(h.handler.refused)))  # (--hypothesis-show-statistics)
    assert (h.audited, h.ids, h.executed) == ([], set(), [])  # 0 rows, 0 points, 0 relays
    return outcome


@settings(FUZZ, max_examples=3_000)
@given(st.one_of(
    st.tuples(st.integers(1, 20_000), st.sampled_from(["[", '{"a":', '[{"body":', "{"]),
              st.booleans()).map(lambda t: t[1] * t[0] + ("]" * t[0] if t[2] else "")),
    st.integers(1, 20_000).map(lambda n: '{"body": ' + "[" * n + "]" * n + ', "hmac": ""}'),
    st.integers(1, 20_000).map(lambda n: '{"body": "", "hmac": ' + '{"h":' * n + "1"
                               + "}" * n + "}"),
    json_values.map(json.dumps),
    st.tuples(json_values, json_values).map(
        lambda t: json.dumps({"body": t[0], "hmac": t[1]}))))
def test_mq_2_nested_json_is_refused_unaudited_and_unspooled(text: str) -> None:
    refused_unread(text.encode())


@settings(FUZZ, max_examples=3_000)
@given(st.one_of(
    st.binary(max_size=600),
    st.tuples(non_ascii, st.sampled_from(["utf-8", "utf-16", "utf-32", "utf-16-be"])).map(
        lambda t: t[0].encode(t[1])),
    st.tuples(st.text(max_size=200), non_ascii).map(  # a body and a non-ASCII "signature"
        lambda t: json.dumps({"body": t[0], "hmac": t[1]}, ensure_ascii=False).encode()),
    st.tuples(st.text(max_size=200), st.text(st.characters(min_codepoint=0x80), min_size=64,
                                             max_size=64)).map(
        lambda t: json.dumps({"body": t[0], "hmac": t[1]}).encode()),
    st.tuples(st.sampled_from(['"\\ud800"', '"\\udfff\\ud800x"', '"a\\udc80"']),
              st.sampled_from(['"' + "0" * 64 + '"', '"\\u0660' * 1 + "0" * 63 + '"'])).map(
        lambda t: f'{{"body": {t[0]}, "hmac": {t[1]}}}'.encode()),
    st.tuples(st.text(max_size=200), st.binary(min_size=32, max_size=32)).map(  # forged
        lambda t: json.dumps({"body": t[0], "hmac": t[1].hex()}).encode())))
def test_mq_2_non_ascii_and_forged_payloads_are_refused_unaudited_and_unspooled(
        payload: bytes) -> None:
    refused_unread(payload)


@settings(FUZZ, max_examples=2_000)
@given(huge_numbers, huge_numbers, st.sampled_from(["bare", "body", "hmac", "both", "list"]))
def test_mq_2_huge_numbers_are_refused_unaudited_and_unspooled(
        a: str, b: str, where: str) -> None:
    text = {"bare": a, "list": f"[{a}, {b}]", "body": f'{{"body": {a}, "hmac": "00"}}',
            "hmac": f'{{"body": "{{}}", "hmac": {a}}}',
            "both": f'{{"body": {a}, "hmac": {b}}}'}[where]
    refused_unread(text.encode())


def mutated(fields: dict[str, Any], drop: set[str], raw: dict[str, str]) -> str:
    """A valid silence command with some fields replaced, removed or set to raw JSON text."""
    command = json.loads(body(id="fz-1")) | fields
    parts = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in command.items()
             if k not in drop and k not in raw]
    parts += [f'"{k}": {v}' for k, v in raw.items() if k not in drop]
    return "{" + ", ".join(parts) + "}"


# values a command's fields may plausibly be given, right and wrong
PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "id": st.text(max_size=70) | st.from_regex(r"[A-Za-z0-9._:-]{1,64}", fullmatch=True),
    "gateway": st.sampled_from([GATEWAY, "gw-2", "GW-1", "gw-1 ", ""]) | non_ascii,
    "issued": st.datetimes(timezones=st.sampled_from([UTC, None])).map(datetime.isoformat)
    | st.sampled_from([(NOW - timedelta(seconds=s)).isoformat() for s in (-40, 0, 59, 61)]),
    "ttl_s": st.floats() | st.integers(),
    "sender": st.text(max_size=70),
    "action": st.sampled_from(["silence", "broadcast", "inhibit", "release", "test", "x"]),
    "zone": st.sampled_from(["ward", "nowhere"]) | st.none() | non_ascii,
    "clips": st.lists(st.text(max_size=10), max_size=10),
    "scope": st.sampled_from(["station", "zone", "gateway"]),
    "target": st.text(max_size=70),
    "minutes": st.floats() | st.integers(),
    "reason": st.text(max_size=210),
    "job": st.sampled_from(["silent", "audible", "loud"]),
}
one_field = st.sampled_from(sorted(PLAUSIBLE)).flatmap(
    lambda k: PLAUSIBLE[k].map(lambda v: {k: v}))
plausible = st.lists(one_field, max_size=2).map(lambda ds: {k: v for d in ds for k, v in d.items()})


@settings(FUZZ, max_examples=2_000)
@given(st.one_of(
    st.text(max_size=300),
    json_values.map(json.dumps),
    st.builds(mutated, st.dictionaries(st.sampled_from((*FIELDS, "extra")),
                                       json_values | non_ascii, max_size=3),
              st.sets(st.sampled_from(FIELDS), max_size=2),
              st.dictionaries(st.sampled_from(FIELDS), huge_numbers, max_size=2)),
    st.builds(mutated, plausible, st.sets(st.sampled_from(FIELDS), max_size=1),
              st.dictionaries(st.sampled_from(("ttl_s", "minutes")), huge_numbers,
                              max_size=1))))
def test_mq_2_signed_random_bodies_never_crash_and_run_only_as_valid_commands(
        text: str) -> None:
    h = Harness(max_bytes=65536)
    outcome = settle(h.handler.handle(sign(text, SECRET)))
    assert outcome.status in ("done", "refused"), outcome  # never "failed"
    assert [o.status for o in h.audited] == [outcome.status]  # signed: audited, once
    event(next(iter(h.handler.refused), "done"))  # (--hypothesis-show-statistics)
    if outcome.status == "refused":
        assert h.executed == []
        return
    # it ran: then it is a well-formed, fresh command for this gateway, run once
    [command] = h.executed
    assert command == Command.model_validate_json(text)
    assert command.gateway == GATEWAY
    assert not command.needs()
    assert NOW.timestamp() - command.issued_ts() <= command.ttl_s <= 3600
    assert h.ids == {command.id}
