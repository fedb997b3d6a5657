"""Commands from operators: over MQTT (`<prefix>/<gateway>/command`) and HTTP
(`POST /command` on the status server, which also needs the status token). One handler.

A command is a JSON object signed with a shared secret (`[commands] secret`). What is sent is
an *envelope*:

    {"body": "<the command, a JSON object, as a string>",
     "hmac": "<hex HMAC-SHA256 of the body's UTF-8 bytes under the secret>"}

The signature covers the exact bytes of `body`, so no canonical JSON form is needed. The
command inside:

    {"id": "…", "gateway": "minato-furukawa", "issued": "2026-07-01T09:00:00+09:00",
     "ttl_s": 60, "sender": "ops-1",
     "action": "silence" | "broadcast" | "inhibit" | "release" | "test" | "ack", …}

`gateway` (required) names the one gateway the command is for (`[gateway] id`): a control
room shares one secret across its gateways, so without it a command captured on one
gateway's topic (a 24-hour zone inhibit, say) could be replayed on every other one within
its TTL. With it, any other gateway refuses it (audited as refused).

Per action: `silence` {zone} (the playing broadcast stops, relays OFF, waiting ones
are dropped; the stage stands); `broadcast` {zone, clips} (configured clips, no siren, at
the lowest priority: any alarm pre-empts it); `inhibit` {scope: station|zone, target,
minutes?, reason?}; `release` {scope, target}; `test` {job: silent|audible}; `ack` {station,
reason?} (the operator acknowledges a station at a raised stage: recorded in the state file,
shown in /status and the page, published on MQTT; it silences nothing, see
gauged/store/acks.py; refused for an unknown station or one at normal).

Checks, in this order, each refusal with a reason: size (`max_bytes`); a retained message
(a command must be sent now, not left on the broker); the envelope; the signature
(constant-time compare); the command's schema; the gateway; the age (`issued` no more than
`ttl_s` ago, `ttl_s` at most `max_ttl_s`, and not more than `clock_skew_s` in the future);
the rate (a token bucket: `rate_per_min`, `burst`); the id (each id runs at most once,
across restarts: the id is committed to the state file before the action runs); then the
action's own checks (known zone, configured clip, zone not inhibited, no test running …).

**Nothing is written before the signature is checked.** Anyone who can publish on the topic
can send anything: every payload that fails before the signature check, whatever it makes
the parser raise (`RecursionError` for `[` nested a thousand deep, `TypeError`,
`OverflowError`, `UnicodeError` …), is refused without an audit row, a spool point or an
id, counted by reason in /status (`commands.refused`: `oversize`, `retained`, `bad_json`,
`too_deep`, `bad_envelope`, `bad_signature`, `malformed`) and logged at most `LOG_PER_MIN`
times a minute, so a flood of junk can fill neither the disk nor the journal nor the
event loop's time with fsyncs. Commands that pass the signature are kept in the audit record
(state file, table `command_audit`, and an InfluxDB point) with sender, action and outcome,
refusals included (`schema`, `gateway`, `ttl`, `rate`, `duplicate`, `unrecorded`, `action`).

**A full disk.** The id must be committed before the action runs (at most once, MQ-4). When
the state file cannot be written, `silence` still runs: it is the operator's brake on a
false alarm, and a silence that cannot be stopped by a full SD card is worth more than the
guarantee; its id is kept in memory, so it still runs at most once while the daemon runs
(a replay after a restart, within its TTL, could only stop a broadcast again). Every other
action is refused (`unrecorded`): an `inhibit` withholds alarms for up to
`defaults.inhibit_max_h`, and one whose id (and whose inhibit row) cannot be kept could be
replayed after a restart to silence a zone again, and would itself be forgotten at that
restart; a manual `broadcast` or `test` replayed after a restart would sound again in
public; a `release` replayed later could end a new inhibit put on for work at a siren.

Every outcome is published on `<prefix>/<gateway>/command/reply` as
{"id", "status": "done" | "refused" | "failed", "reason", "result", "time"}.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import re
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
# actions that run when their id cannot be recorded (a full disk; see the module docstring)
RUN_UNRECORDED = frozenset({"silence"})
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")  # ASCII only: compare_digest refuses the rest


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
Name = Annotated[str, Field(min_length=1, max_length=64)]


class Command(_Strict):
    """The schema of a command (the body of the envelope)."""

    id: Id
    gateway: Name  # the gateway it is for ([gateway] id); every other refuses it
    issued: str = Field(max_length=40)
    ttl_s: float = Field(gt=0)
    sender: Name
    action: Literal["silence", "broadcast", "inhibit", "release", "test", "ack"]
    zone: Name | None = None
    clips: list[Name] = Field(default_factory=list, max_length=8)
    scope: Literal["station", "zone"] | None = None
    target: Name | None = None
    minutes: float | None = Field(default=None, gt=0)
    reason: str = Field(default="", max_length=200)
    job: Literal["silent", "audible"] | None = None
    station: Name | None = None  # ack

    @field_validator("issued")
    @classmethod
    def _iso_with_offset(cls, issued: str) -> str:
        when = datetime.fromisoformat(issued)
        if when.tzinfo is None:
            raise ValueError("issued needs a UTC offset")
        try:
            when.timestamp()
        except (OverflowError, ValueError):  # year 1 minus an offset: before datetime.min
            raise ValueError("issued is out of range") from None
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
                "test": ("job",), "ack": ("station",)}[self.action]
        return [f for f in want if not getattr(self, f)]


@dataclass
class Outcome:
    id: str | None
    status: str  # done, refused, failed
    reason: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    command: Command | None = None
    audited: bool = True  # False for everything refused before the signature was checked

    def reply(self, now: float) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "reason": self.reason,
                "result": self.result,
                "time": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds")}


class Refused(GaugedError):
    """An action's own check failed; the message is the reason given back."""


class _Junk(Exception):
    """A payload refused before its signature could be checked (`kind` is counted); not an
    error of ours, so not a GaugedError."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


Executor = Callable[[Command], Awaitable[dict[str, Any]]]


class CommandHandler:
    """Checks commands and runs the good ones through `execute` (the daemon's actions).

    `gateway` is this gateway's id (`[gateway] id`); a command naming another is refused.
    `seen(id, now)` (awaited: the daemon runs it in a thread) records an id: True when it is
    new and now recorded, False when it was recorded before, None when it cannot be recorded
    (the state file cannot be written);
    `audit(...)` keeps an authenticated command's outcome; `now` is the daemon's clock (UNIX
    seconds). Neither is called for a payload whose signature has not been checked.
    """

    def __init__(self, config: CommandsConfig, *, gateway: str, execute: Executor,
                 seen: Callable[[str, float], Awaitable[bool | None]],
                 audit: Callable[[float, Outcome], None],
                 now: Callable[[], float]) -> None:
        self.config = config
        self.gateway = gateway
        self._key = config.secret.get_secret_value().encode()
        self.execute = execute
        self.seen = seen
        self.audit = audit
        self.now = now
        self.refused: Counter[str] = Counter()  # by reason class, for /status
        self.done = 0
        self.failed = 0
        self._tokens = float(config.burst)
        self._refill = time.monotonic()
        self._log_window = (0.0, 0)  # (start, lines logged in it)
        self._unlogged = 0
        # ids run although the state file could not record them: id → when (daemon clock)
        self._unrecorded: dict[str, float] = {}

    async def handle(self, payload: bytes, *, retained: bool = False,
                     via: str = "mqtt") -> Outcome:
        """Check and run one command; never raises (the outcome says what happened)."""
        try:
            outcome = await self._handle(payload, retained)
        except Exception as exc:  # an action failing must not take the listener down
            # (only an authenticated command gets this far: junk is refused unread)
            log.exception("command failed via=%s", via)
            self.failed += 1
            outcome = Outcome(None, "failed", f"internal error: {type(exc).__name__}")
        self._record(outcome, via)
        return outcome

    def snapshot(self) -> dict[str, Any]:
        return {"done": self.done, "failed": self.failed, "refused": dict(self.refused)}

    async def _handle(self, payload: bytes, retained: bool) -> Outcome:
        c = self.config
        if len(payload) > c.max_bytes:
            return self._junk("oversize", f"payload of {len(payload)} bytes exceeds "
                              f"{c.max_bytes}")
        if retained:
            return self._junk("retained", "a retained message is never executed")
        try:
            body = self._authenticate(payload)
        except _Junk as junk:
            return self._junk(junk.kind, junk.reason)
        except Exception as exc:  # whatever junk makes a parser raise, it stays junk
            return self._junk("malformed", f"unreadable payload ({type(exc).__name__})")
        # authenticated from here on: outcomes are audited
        return await self._authenticated(body)

    def _authenticate(self, payload: bytes) -> str:
        """The body of a correctly signed envelope, or _Junk (or any exception a hostile
        payload can provoke: the caller refuses those alike). Writes nothing."""
        try:
            envelope = json.loads(payload)
        except RecursionError:
            raise _Junk("too_deep", "JSON nested too deeply") from None
        except ValueError:  # UnicodeDecodeError included
            raise _Junk("bad_json", "not JSON") from None
        if not isinstance(envelope, dict) or set(envelope) != {"body", "hmac"} or \
                not isinstance(envelope["body"], str) or not isinstance(envelope["hmac"], str):
            raise _Junk("bad_envelope", 'expected {"body": str, "hmac": str}')
        body: str = envelope["body"]
        given: str = envelope["hmac"]
        if not _HEX_DIGEST.fullmatch(given):
            raise _Junk("bad_signature", "signature is not 64 hex digits")
        try:
            data = body.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate (JSON "\ud800")
            raise _Junk("bad_envelope", "body is not valid text") from None
        digest = hmac.new(self._key, data, hashlib.sha256).digest()
        if not hmac.compare_digest(digest, bytes.fromhex(given)):
            raise _Junk("bad_signature", "signature does not match")
        return body

    async def _authenticated(self, body: str) -> Outcome:
        c = self.config
        try:
            command = Command.model_validate_json(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            return self._refuse("schema", f"{where}: {first['msg']}", cid=_peek_id(body))
        except (ValueError, OverflowError, RecursionError) as exc:  # a signed oddity
            return self._refuse("schema", f"unreadable command ({type(exc).__name__})",
                                cid=_peek_id(body))
        cid = command.id
        if missing := command.needs():
            return self._refuse("schema", f"{command.action} needs {', '.join(missing)}",
                                cid=cid, command=command)
        if command.gateway != self.gateway:
            return self._refuse("gateway", f"meant for gateway {command.gateway!r}, not "
                                f"{self.gateway!r}", cid=cid, command=command)
        now = self.now()
        issued = command.issued_ts()
        if command.ttl_s > c.max_ttl_s:
            return self._refuse("ttl", f"ttl_s {command.ttl_s:g} exceeds {c.max_ttl_s:g}",
                                cid=cid, command=command)
        if issued > now + c.clock_skew_s:
            return self._refuse("ttl", "issued in the future", cid=cid, command=command)
        if now - issued > command.ttl_s:
            return self._refuse("ttl", f"expired {now - issued - command.ttl_s:.0f} s ago",
                                cid=cid, command=command)
        if not self._take_token():
            return self._refuse("rate", "rate limit", cid=cid, command=command)
        if (refusal := await self._first_time(command, now)) is not None:
            self._tokens += 1.0  # a command not run costs the sender nothing of the rate
            return refusal
        try:
            result = await self.execute(command)
        except Refused as exc:
            return self._refuse("action", str(exc), cid=cid, command=command)
        self.done += 1
        return Outcome(cid, "done", "", result, command)

    async def _first_time(self, command: Command, now: float) -> Outcome | None:
        """Record the id (at most once, across restarts); a refusal when it may not run."""
        cid = command.id
        keep_s = self.config.max_ttl_s + self.config.clock_skew_s + 60
        for old in [i for i, t in self._unrecorded.items() if t < now - keep_s]:
            del self._unrecorded[old]
        # ids run unrecorded first: the store may be writable again and not know them
        recorded = False if cid in self._unrecorded else await self.seen(cid, now)
        if recorded is False:
            return self._refuse("duplicate", "this id was already received", cid=cid,
                                command=command)
        if recorded is None:
            if command.action not in RUN_UNRECORDED:
                return self._refuse(
                    "unrecorded", "the state file cannot be written (disk full?): the id "
                    "cannot be kept, so the command could run twice; only silence runs "
                    "unrecorded", cid=cid, command=command)
            self._unrecorded[cid] = now
            log.warning("command id=%s action=%s runs although its id cannot be written to "
                        "the state file (kept in memory until the daemon stops)", cid,
                        command.action)
        return None

    def _junk(self, kind: str, reason: str) -> Outcome:
        """A refusal before the signature: counted and (rate-limited) logged, nothing else."""
        outcome = self._refuse(kind, reason)
        outcome.audited = False
        return outcome

    def _refuse(self, kind: str, reason: str, *, cid: str | None = None,
                command: Command | None = None) -> Outcome:
        self.refused[kind] += 1
        return Outcome(cid, "refused", reason, command=command)

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
        if outcome.audited:
            self.audit(self.now(), outcome)
        cmd = outcome.command
        what = f"action={cmd.action} sender={cmd.sender}" if cmd else "action=-"
        if outcome.status == "done":
            log.warning("command done id=%s %s via=%s", outcome.id, what, via)
            return
        if self._may_log():
            level = logging.WARNING if outcome.audited else logging.INFO
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
    except Exception:  # any oddity of a signed body: no id, that is all
        return None
    return value[:64] if isinstance(value, str) else None


def sign(body: str, secret: str) -> bytes:
    """The envelope of a command body (for clients and tests)."""
    digest = hmac.new(secret.encode(), body.encode("utf-8"), hashlib.sha256).hexdigest()
    return json.dumps({"body": body, "hmac": digest}).encode()


def command_body(gateway: str, **fields: Any) -> str:
    """A command's body for `gateway` (fields that are None are left out), to be signed."""
    return json.dumps({"gateway": gateway} | {k: v for k, v in fields.items() if v is not None},
                      ensure_ascii=False)
