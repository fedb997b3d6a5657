"""The command handler's checks (gauged/ops/commands.py), with the actions and the clock
injected; MQTT and HTTP delivery are in tests/integration/test_commands_mqtt.py."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from gauged.config.models import CommandsConfig
from gauged.ops.commands import Command, CommandHandler, Outcome, Refused, sign

SECRET = "correct horse battery staple"
NOW = datetime(2026, 7, 1, 9, 0, tzinfo=UTC)


class Harness:
    def __init__(self, **config: Any) -> None:
        self.now = NOW.timestamp()
        self.ids: set[str] = set()
        self.executed: list[Command] = []
        self.audited: list[Outcome] = []
        self.handler = CommandHandler(
            CommandsConfig(enabled=True, secret=SecretStr(SECRET), **config),
            execute=self.execute, seen=self.seen, audit=lambda t, o: self.audited.append(o),
            now=lambda: self.now)

    def seen(self, cid: str, now: float) -> bool:
        if cid in self.ids:
            return False
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
    command = {"id": "c-1", "issued": NOW.isoformat(), "ttl_s": 60, "sender": "ops-1",
               "action": "silence", "zone": "ward"} | fields
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
])
async def test_mq_1_malformed_or_unsigned_commands_are_refused_unaudited(
        payload: bytes, kind: str, reason: str) -> None:
    h = Harness()
    outcome = await h.send(payload)
    assert outcome.status == "refused"
    assert reason in outcome.reason
    assert h.handler.refused == {kind: 1}
    assert h.executed == []
    assert h.audited == []  # junk cannot fill the audit record


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
