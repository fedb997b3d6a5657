"""MQTT: availability with a last will, retained station state, events.

Topic tree under `<topic_prefix>/<gateway id>/`:
- `availability`            `online` (retained) while connected; the broker publishes the
                            last will `offline` (retained) when the connection drops
- `station/<id>/state`      retained JSON: stage, stage name, value, quality, time
- `event/transition`        JSON per stage transition
- `event/broadcast`         JSON per finished broadcast
- `event/broadcast_missed`  JSON per broadcast a stop or a crash left unplayed or cut short
                            and that the start after it does not replay (its journal row
                            and `note`: why not; README "State, restarts and scheduled tests")
- `event/fault`             JSON per relay or audio fault during a broadcast
- `event/test`              JSON per siren test result (scheduled, or run on command)
- `event/inhibits`          JSON with the inhibits in force, after each change
- `station/<id>/reading`    JSON per cycle and station (not retained; live only: while the
                            broker is away readings are not queued, the spool keeps them)
- `command`                 operator commands, subscribed (gauged/ops/commands.py)
- `command/reply`           JSON per command: done or refused, with the reason
- `cap`                     a CAP 1.2 XML document per alert, update, cancel and exercise
                            (gauged/alarm/cap.py); QoS 1, not retained (a stream of messages that
                            reference each other; the CAP folder is the durable record)

`publish_*` never blocks: the latest state per station is kept and re-published after every
(re)connect (with `online`); events wait in a bounded queue while the broker is away.
TLS (`tls = true`, `ca_file`, optional client `cert_file` and `key_file`) and
username/password are taken from `[mqtt]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import aiomqtt

from drivers.backoff import Backoff
from gauged.alarm.types import BroadcastRecord, BroadcastRequest
from gauged.config.models import MqttConfig
from gauged.health import MqttHealth
from gauged.store.state import JobRun
from gauged.uplinks.base import CycleReport, Uplink

log = logging.getLogger(__name__)

MAX_EVENTS = 10_000
MAX_REPLIES = 1_000  # command replies wait apart: a flood of junk commands cannot push
# events (broadcasts, faults) out of their queue
IN_FLIGHT = 50  # publishes awaited together (the wire keeps their order)


class MqttPublisher(Uplink):
    """Owns the MQTT connection of the daemon."""

    name = "mqtt"

    def __init__(self, config: MqttConfig, gateway_id: str, *, timezone: str = "UTC") -> None:
        self.config = config
        self.gateway = gateway_id
        self.timezone = timezone  # of the local times in station states
        self.base = f"{config.topic_prefix}/{gateway_id}"
        self.client_id = f"gauged-{gateway_id}"
        self._retained: dict[str, str] = {}
        self._events: deque[tuple[str, str]] = deque(maxlen=MAX_EVENTS)
        self._replies: deque[tuple[str, str]] = deque(maxlen=MAX_REPLIES)
        self._wakeup = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self.connected = False
        self._readings: dict[str, str] = {}  # the latest cycle's, sent once when connected
        # set by the daemon: runs a command payload (bytes, retained?) and returns the reply
        self.on_command: Callable[[bytes, bool], Awaitable[dict[str, Any]]] | None = None
        self.command_topic = f"{self.base}/command"

    def health(self) -> MqttHealth:
        return MqttHealth(connected=self.connected)

    # ---- the recorder's events -------------------------------------------------------

    def cycle(self, report: CycleReport) -> None:
        for s in report.result.states:
            shown = s.as_json(self.timezone)
            self.publish_state(s.station, shown)
            self.publish_reading(s.station, shown)
        for t in report.result.transitions:
            self.publish_event("transition", {
                "time": t.time.isoformat(), "station": t.station, "quantity": t.kind,
                "from": t.from_name, "to": t.to_name, "value": t.value})

    def broadcast(self, record: BroadcastRecord) -> None:
        finished = datetime.fromtimestamp(record.finished, UTC)
        self.publish_event("broadcast", record.as_json() | {"finished": finished.isoformat()})

    def withheld(self, request: BroadcastRequest) -> None:
        self.publish_event("broadcast", {
            "zone": request.zone, "station": request.station, "stage": request.stage,
            "stage_name": request.stage_name, "sequence": request.sequence,
            "kind": request.kind, "outcome": "inhibited", "time": request.time.isoformat()})

    def missed(self, when: datetime, report: Mapping[str, Any]) -> None:
        self.publish_event("broadcast_missed", dict(report) | {"gateway": self.gateway,
                                                               "time": when.isoformat()})

    def proof_test(self, when: datetime, run: JobRun) -> None:
        self.publish_event("test", run.as_json() | {"gateway": self.gateway})

    def manual_test(self, job: str, command_id: str, result: Mapping[str, Any]) -> None:
        self.publish_event("test", {"job": job, "manual": True, "id": command_id,
                                    "result": result, "gateway": self.gateway})

    def fault(self, when: datetime, kind: str, what: str, detail: str) -> None:
        self.publish_event("fault", {"kind": kind, "what": what, "detail": detail,
                                     "time": when.isoformat()})

    def inhibits(self, when: datetime, inhibits: Sequence[Mapping[str, Any]]) -> None:
        self.publish_event("inhibits", {"time": when.isoformat(), "inhibits": list(inhibits)})

    # ---- publishing ----------------------------------------------------------------------

    def publish_state(self, station: str, state: dict[str, Any]) -> None:
        """Set the retained state of a station."""
        self._retained[f"{self.base}/station/{station}/state"] = json.dumps(
            state, ensure_ascii=False, sort_keys=True)
        self._wakeup.set()

    def publish_event(self, kind: str, event: dict[str, Any]) -> None:
        """Queue an event (`transition`, `broadcast`)."""
        self._queue(f"{self.base}/event/{kind}", event)

    def publish_reply(self, reply: dict[str, Any]) -> None:
        """Queue a command reply on `<base>/command/reply`."""
        self._replies.append((f"{self.command_topic}/reply",
                              json.dumps(reply, ensure_ascii=False, sort_keys=True)))
        self._wakeup.set()

    def publish_reading(self, station: str, reading: dict[str, Any]) -> None:
        """The cycle's reading of a station, for live subscribers (dropped while away)."""
        if self.connected:
            self._readings[f"{self.base}/station/{station}/reading"] = json.dumps(
                reading, ensure_ascii=False, sort_keys=True)
            self._wakeup.set()

    def _queue(self, topic: str, message: dict[str, Any]) -> None:
        self._events.append((topic, json.dumps(message, ensure_ascii=False, sort_keys=True)))
        self._wakeup.set()

    def publish_cap(self, topic: str, document: str) -> None:
        """Queue a CAP document on `<base>/<topic>` (in order with the events, not retained)."""
        self._events.append((f"{self.base}/{topic}", document))
        self._wakeup.set()

    async def run(self) -> None:
        """Connect, publish, reconnect with backoff; until cancelled."""
        backoff = Backoff(60.0, first_s=0.5)
        failures = 0
        while True:
            try:
                await self._session()
            except Exception as exc:  # the uplink never takes the daemon down
                failures += 1
                if self.connected or failures == 1:
                    log.warning("uplink mqtt down host=%s port=%d: %s", self.config.host,
                                self.config.port, _reason(exc))
                if not _is_mqtt_error(exc):
                    log.error("uplink mqtt: unexpected error", exc_info=exc)
                if self.connected:  # it was up: start the backoff again from the bottom
                    backoff.succeeded()
                self.connected = False
                self._client = None
                await asyncio.sleep(backoff.failed())
            else:
                return

    def _tls(self) -> aiomqtt.TLSParameters | None:
        c = self.config
        if not c.tls:
            return None
        return aiomqtt.TLSParameters(
            ca_certs=str(c.ca_file) if c.ca_file else None,
            certfile=str(c.cert_file) if c.cert_file else None,
            keyfile=str(c.key_file) if c.key_file else None,
            cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)

    async def _session(self) -> None:
        will = aiomqtt.Will(f"{self.base}/availability", "offline", qos=1, retain=True)
        async with aiomqtt.Client(
            self.config.host, self.config.port, identifier=self.client_id,
            username=self.config.username or None,
            password=self.config.password.get_secret_value() or None,
            will=will, keepalive=30, tls_params=self._tls(),
        ) as client:
            self._client = client
            if self.on_command is not None:
                await client.subscribe(self.command_topic, qos=1)
            await client.publish(f"{self.base}/availability", "online", qos=1, retain=True)
            self.connected = True
            log.info("uplink mqtt up host=%s port=%d", self.config.host, self.config.port)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._publish(client), name="gauged[mqtt].send")
                if self.on_command is not None:
                    tg.create_task(self._commands(client), name="gauged[mqtt].commands")

    async def _publish(self, client: aiomqtt.Client) -> None:
        sent: dict[str, str] = {}  # what this session has published of the retained state
        while True:
            self._wakeup.clear()
            for topic, payload in list(self._retained.items()):
                if sent.get(topic) != payload:
                    await client.publish(topic, payload, qos=1, retain=True)
                    sent[topic] = payload
            readings, self._readings = self._readings, {}
            for topic, payload in readings.items():
                await client.publish(topic, payload, qos=0)
            for queue in (self._events, self._replies):
                while queue:  # removed only once the broker has them (at least once)
                    batch = [queue[i] for i in range(min(IN_FLIGHT, len(queue)))]
                    await asyncio.gather(*(client.publish(topic, payload, qos=1)
                                           for topic, payload in batch))
                    for item in batch:  # (a full queue may have dropped some meanwhile)
                        if queue and queue[0] is item:
                            queue.popleft()
            await self._wakeup.wait()

    async def _commands(self, client: aiomqtt.Client) -> None:
        """Hand each message on the command topic to the daemon, one at a time."""
        assert self.on_command is not None
        async for message in client.messages:
            if not message.topic.matches(self.command_topic):
                continue
            raw = message.payload
            payload = raw if isinstance(raw, bytes | bytearray) else \
                b"" if raw is None else str(raw).encode()
            reply = await self.on_command(bytes(payload), bool(message.retain))
            self.publish_reply(reply)

    async def flush(self, timeout_s: float) -> bool:
        """At stop: say `offline` and disconnect (MQTT keeps no backlog across a stop; the
        retained state is published again at the next connect)."""
        await self.close()
        return True

    async def close(self) -> None:
        """Say `offline` before a clean disconnect (the will covers only unclean ones)."""
        client, self._client = self._client, None
        if client is not None and self.connected:
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                async with asyncio.timeout(2.0):
                    await client.publish(f"{self.base}/availability", "offline", qos=1,
                                         retain=True)
        self.connected = False


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]


def _is_mqtt_error(exc: BaseException) -> bool:
    return all(isinstance(e, aiomqtt.MqttError) for e in _leaves(exc))


def _reason(exc: BaseException) -> str:
    """One line: the first error of a session's task group."""
    first = _leaves(exc)[0]
    return f"{first}" if isinstance(first, aiomqtt.MqttError) else \
        f"{type(first).__name__}: {first}"
