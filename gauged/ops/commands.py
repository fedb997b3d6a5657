"""Commands from operators: over MQTT (`<prefix>/<gateway>/command`) and HTTP
(`POST /command` on the status server, which also needs the status token). One handler.

A command is a JSON object signed with a shared secret (`[commands] secret`). What is sent is
an *envelope*:

    {"body": "<the command, a JSON object, as a string>",
     "hmac": "<hex HMAC-SHA256 of the body's UTF-8 bytes under the secret>"}

The signature covers the exact bytes of `body`, so no canonical JSON form is needed. The
command inside:

    {"id": "…", "issued": "2026-07-01T09:00:00+09:00", "ttl_s": 60, "sender": "ops-1",
     "action": "silence" | "broadcast" | "inhibit" | "release" | "test", …}

with, per action: `silence` {zone} (the playing broadcast stops, relays OFF, waiting ones
are dropped; the stage stands); `broadcast` {zone, clips} (configured clips, no siren, at
the lowest priority: any alarm pre-empts it); `inhibit` {scope: station|zone, target,
minutes?, reason?}; `release` {scope, target}; `test` {job: silent|audible}.

Checks, in this order, each refusal with a reason: size (`max_bytes`); a retained message
(a command must be sent now, not left on the broker); the envelope; the signature
(constant-time compare); the command's schema; the age (`issued` no more than `ttl_s` ago,
`ttl_s` at most `max_ttl_s`, and not more than `clock_skew_s` in the future); the id (each
id runs at most once, across restarts: the id is committed to the state file before the
action runs); the rate (a token bucket: `rate_per_min`, `burst`); then the action's own
checks (known zone, configured clip, zone not inhibited …).

Every outcome is published on `<prefix>/<gateway>/command/reply` as
{"id", "status": "done" | "refused" | "failed", "reason", "result", "time"}. Commands that
pass the signature are kept in the audit record (state file, table `command_audit`) with
sender, action and outcome; refusals before the signature are counted by reason (in
/status) and logged at most `LOG_PER_MIN` times a minute, so a flood of junk can neither
fill the disk nor the journal.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gauged.config.models import CommandsConfig
from gauged.errors import GaugedError

log = logging.getLogger(__name__)

LOG_PER_MIN = 10  # refusals logged per minute at most (the rest are counted)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
Name = Annotated[str, Field(min_length=1, max_length=64)]


class Command(_Strict):
    """The schema of a command (the body of the envelope)."""

    id: Id
    issued: str = Field(max_length=40)
    ttl_s: float = Field(gt=0)
    sender: Name
    action: Literal["silence", "broadcast", "inhibit", "release", "test"]
    zone: Name | None = None
    clips: list[Name] = Field(default_factory=list, max_length=8)
    scope: Literal["station", "zone"] | None = None
    target: Name | None = None
    minutes: float | None = Field(default=None, gt=0)
    reason: str = Field(default="", max_length=200)
    job: Literal["silent", "audible"] | None = None

    @field_validator("issued")
    @classmethod
    def _iso_with_offset(cls, issued: str) -> str:
        when = datetime.fromisoformat(issued)
        if when.tzinfo is None:
            raise ValueError("issued needs a UTC offset")
        return issued

    @field_validator("ttl_s", "minutes")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be finite")
        return v

    def issued_ts(self) -> float:
        return datetime.fromisoformat(self.issued).timestamp()

    def needs(self) -> list[str]:
        """Fields the action needs that are missing."""
        want = {"silence": ("zone",), "broadcast": ("zone", "clips"),
                "inhibit": ("scope", "target"), "release": ("scope", "target"),
                "test": ("job",)}[self.action]
        return [f for f in want if not getattr(self, f)]


@dataclass
class Outcome:
    id: str | None
    status: str  # done, refused, failed
    reason: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    command: Command | None = None

    def reply(self, now: float) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "reason": self.reason,
                "result": self.result,
                "time": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds")}


class Refused(GaugedError):
    """An action's own check failed; the message is the reason given back."""


Executor = Callable[[Command], Awaitable[dict[str, Any]]]


class CommandHandler:
    """Checks commands and runs the good ones through `execute` (the daemon's actions).

    `seen(id, now)` records an id and returns False when it was already there (the state
    store); `audit(...)` keeps an authenticated command's outcome; `now` is the daemon's
    clock (UNIX seconds).
    """

    def __init__(self, config: CommandsConfig, *, execute: Executor,
                 seen: Callable[[str, float], bool],
                 audit: Callable[[float, Outcome], None],
                 now: Callable[[], float]) -> None:
        self.config = config
        self._key = config.secret.get_secret_value().encode()
        self.execute = execute
        self.seen = seen
        self.audit = audit
        self.now = now
        self.refused: Counter[str] = Counter()  # by reason class, for /status
        self.done = 0
        self._tokens = float(config.burst)
        self._refill = time.monotonic()
        self._log_window = (0.0, 0)  # (start, lines logged in it)
        self._unlogged = 0

    async def handle(self, payload: bytes, *, retained: bool = False,
                     via: str = "mqtt") -> Outcome:
        """Check and run one command; never raises (the outcome says what happened)."""
        try:
            outcome = await self._handle(payload, retained)
        except Exception as exc:  # an action failing must not take the listener down
            log.exception("command failed via=%s", via)
            outcome = Outcome(None, "failed", f"internal error: {type(exc).__name__}")
        self._record(outcome, via)
        return outcome

    def snapshot(self) -> dict[str, Any]:
        return {"done": self.done, "refused": dict(self.refused)}

    async def _handle(self, payload: bytes, retained: bool) -> Outcome:
        c = self.config
        if len(payload) > c.max_bytes:
            return self._refuse("oversize", f"payload of {len(payload)} bytes exceeds "
                                f"{c.max_bytes}")
        if retained:
            return self._refuse("retained", "a retained message is never executed")
        try:
            envelope = json.loads(payload)
        except (UnicodeDecodeError, ValueError):
            return self._refuse("bad_json", "not JSON")
        if not isinstance(envelope, dict) or set(envelope) != {"body", "hmac"} or \
                not isinstance(envelope["body"], str) or not isinstance(envelope["hmac"], str):
            return self._refuse("bad_envelope", 'expected {"body": str, "hmac": str}')
        body: str = envelope["body"]
        try:
            digest = hmac.new(self._key, body.encode("utf-8"), hashlib.sha256).hexdigest()
        except UnicodeEncodeError:
            return self._refuse("bad_envelope", "body is not valid text")
        if not hmac.compare_digest(digest, envelope["hmac"].lower()):
            return self._refuse("bad_signature", "signature does not match")
        # authenticated from here on: outcomes are audited
        try:
            command = Command.model_validate_json(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            return self._refuse("schema", f"{where}: {first['msg']}", audited=True,
                                cid=_peek_id(body))
        cid = command.id
        if missing := command.needs():
            return self._refuse("schema", f"{command.action} needs {', '.join(missing)}",
                                audited=True, cid=cid, command=command)
        now = self.now()
        issued = command.issued_ts()
        if command.ttl_s > c.max_ttl_s:
            return self._refuse("ttl", f"ttl_s {command.ttl_s:g} exceeds {c.max_ttl_s:g}",
                                audited=True, cid=cid, command=command)
        if issued > now + c.clock_skew_s:
            return self._refuse("ttl", "issued in the future", audited=True, cid=cid,
                                command=command)
        if now - issued > command.ttl_s:
            return self._refuse("ttl", f"expired {now - issued - command.ttl_s:.0f} s ago",
                                audited=True, cid=cid, command=command)
        if not self._take_token():
            return self._refuse("rate", "rate limit", audited=True, cid=cid, command=command)
        if not self.seen(cid, now):
            self._tokens += 1.0  # a replayed id costs the sender nothing of the rate
            return self._refuse("duplicate", "this id was already received", audited=True,
                                cid=cid, command=command)
        try:
            result = await self.execute(command)
        except Refused as exc:
            return self._refuse("action", str(exc), audited=True, cid=cid, command=command)
        self.done += 1
        return Outcome(cid, "done", "", result, command)

    def _refuse(self, kind: str, reason: str, *, audited: bool = False,
                cid: str | None = None, command: Command | None = None) -> Outcome:
        self.refused[kind] += 1
        outcome = Outcome(cid, "refused", reason, command=command)
        outcome.result = {"audited": audited}
        return outcome

    def _take_token(self) -> bool:
        now = time.monotonic()
        c = self.config
        self._tokens = min(float(c.burst),
                           self._tokens + (now - self._refill) * c.rate_per_min / 60.0)
        self._refill = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def _record(self, outcome: Outcome, via: str) -> None:
        audited = outcome.status != "refused" or outcome.result.pop("audited", False)
        if audited:
            self.audit(self.now(), outcome)
        cmd = outcome.command
        what = f"action={cmd.action} sender={cmd.sender}" if cmd else "action=-"
        if outcome.status == "done":
            log.warning("command done id=%s %s via=%s", outcome.id, what, via)
            return
        if self._may_log():
            level = logging.WARNING if audited else logging.INFO
            log.log(level, "command %s id=%s %s via=%s: %s", outcome.status, outcome.id or "-",
                    what, via, outcome.reason)

    def _may_log(self) -> bool:
        """At most LOG_PER_MIN refusal lines a minute; then one line with the count."""
        now = time.monotonic()
        start, n = self._log_window
        if now - start >= 60.0:
            if self._unlogged:
                log.warning("command refusals not logged in the last minute: %d (see "
                            "/status commands.refused)", self._unlogged)
            self._log_window, self._unlogged = (now, 0), 0
            start, n = now, 0
        if n < LOG_PER_MIN:
            self._log_window = (start, n + 1)
            return True
        self._unlogged += 1
        return False


def _peek_id(body: str) -> str | None:
    """The id of a command that failed its schema, when there is a usable one."""
    try:
        value = json.loads(body).get("id")
    except (ValueError, AttributeError):
        return None
    return value[:64] if isinstance(value, str) else None


def sign(body: str, secret: str) -> bytes:
    """The envelope of a command body (for clients and tests)."""
    digest = hmac.new(secret.encode(), body.encode("utf-8"), hashlib.sha256).hexdigest()
    return json.dumps({"body": body, "hmac": digest}).encode()
