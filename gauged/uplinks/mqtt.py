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

- `station/<id>/ack`         retained JSON: the operator's acknowledgement of the station's
                            raised stage (gauged/store/acks.py); an empty retained message
                            clears it when the station is back to normal
- `event/ack`               JSON per acknowledgement (and per clearing: `cleared: true`)

Every JSON event carries `event_id`, `<gateway>-<boot>-<n>`: `boot` is this start's time
(milliseconds, base 36) and 24 random bits, `n` counts from 1. It is unique per gateway across
restarts (even after the clock went back), so a consumer drops QoS-1 redeliveries (and the
copies a failover re-sends to the other broker) by it; every event also names its `gateway`.

`publish_*` never blocks: the latest state per station is kept and re-published after every
(re)connect (with `online`); events wait in a bounded queue while the broker is away.
TLS (`tls = true`, `ca_file`, optional client `cert_file` and `key_file`) and
username/password are taken from `[mqtt]`.

Brokers (`[mqtt] brokers`, primary first; DESIGN §7). The uplink is on one broker at a time.
When its connection drops (a closed socket at once, a silent link after 1.5 × `keepalive_s`)
it connects to the next broker at once; only after every broker failed in a row does it wait
(backoff, 0.5 s doubling to 60 s). On whichever broker it is, it sets its last will and
publishes `online`, then every retained document (states, acks, discovery) again: the
centre is at most a cycle stale after a switch. Events not yet acknowledged by the broker
that went away are sent again to the next one (at least once; `event_id` tells copies).
On a backup it tries the primary every `failback_s` (a full MQTT connect with a probe client
id) and, when the primary answers, says `offline` on the backup and goes back: the brokers
are independent, and a consumer that reads one of them sees the gateway there again after
an outage instead of only on the other. `failback_s = 0` stays on a backup until it fails.
Home Assistant discovery documents (`[mqtt] discovery`, off by default): gauged/uplinks/
discovery.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import secrets
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt
from aiomqtt.types import PahoSocket

from drivers.backoff import Backoff
from gauged import __version__
from gauged.alarm.types import BroadcastRecord, BroadcastRequest
from gauged.config.models import BrokerConfig, MqttConfig
from gauged.health import MqttHealth
from gauged.store.acks import Ack
from gauged.store.state import JobRun
from gauged.uplinks import discovery
from gauged.uplinks.base import CycleReport, Uplink

log = logging.getLogger(__name__)

MAX_EVENTS = 10_000
MAX_REPLIES = 1_000  # command replies wait apart: a flood of junk commands cannot push
# events (broadcasts, faults) out of their queue
IN_FLIGHT = 50  # publishes awaited together (the wire keeps their order)


def boot_id(now_s: float | None = None) -> str:
    """This start's part of the event ids: the start time in milliseconds (base 36) and 24
    random bits (two starts in the same millisecond, or a clock set back, still differ)."""
    ms = int((time.time() if now_s is None else now_s) * 1000)
    digits = ""
    while True:
        ms, d = divmod(ms, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[d] + digits
        if not ms:
            break
    return f"{digits}{secrets.token_hex(3)}"


class _Client(aiomqtt.Client):
    """aiomqtt's client (2.x) with one fix. It hands paho's "socket wants writing" to the
    event loop with `call_soon_threadsafe(loop.add_writer, fd, …)`; when paho has closed
    the socket by the time that runs (the broker went away with a write pending), the
    registration raises into the loop's exception handler (an ERROR and a traceback at a
    broker loss), or, were the number taken by the next connection's socket meanwhile,
    would register on that one. Here a socket closed meanwhile is left alone."""

    def _on_socket_register_write(self, client: mqtt.Client, userdata: Any,
                                  sock: PahoSocket) -> None:
        def callback() -> None:  # as aiomqtt's: a failed write ends the connection
            try:
                client.loop_write()
            except Exception as exc:
                if not self._disconnected.done():
                    self._disconnected.set_exception(exc)

        def register(fd: int) -> None:
            if fd >= 0 and sock.fileno() == fd:  # (a closed socket's fileno() is -1)
                self._loop.add_writer(fd, callback)

        self._loop.call_soon_threadsafe(register, sock.fileno())


class _Failback(Exception):
    """The primary answers again: leave the backup (raised in a session's task group)."""


class MqttPublisher(Uplink):
    """Owns the MQTT connection of the daemon."""

    name = "mqtt"

    def __init__(self, config: MqttConfig, gateway_id: str, *, timezone: str = "UTC") -> None:
        self.config = config
        self.gateway = gateway_id
        self.timezone = timezone  # of the local times in station states
        self.base = f"{config.topic_prefix}/{gateway_id}"
        self.client_id = f"gauged-{gateway_id}"
        self.brokers = config.endpoints()  # primary first
        self.broker: BrokerConfig | None = None  # the one connected to (or last tried)
        self.failovers = 0  # sessions that began on another broker than the one before
        self.boot = boot_id()
        self._seq = itertools.count(1)
        self._stations: set[str] = set()  # those with discovery documents
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
        self._last: BrokerConfig | None = None  # the broker of the last session
        self._runner: asyncio.Task[None] | None = None  # the task of `run`

    def health(self) -> MqttHealth:
        return MqttHealth(connected=self.connected,
                          broker=str(self.broker) if self.broker else "",
                          failovers=self.failovers)

    def event_id(self) -> str:
        """The next event id (see the module docstring)."""
        return f"{self.gateway}-{self.boot}-{next(self._seq)}"

    # ---- the recorder's events -------------------------------------------------------

    def cycle(self, report: CycleReport) -> None:
        if self.config.discovery:
            self._discover(report)
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

    def ack(self, ack: Ack) -> None:
        """An acknowledgement or its clearing: the event, and the station's retained ack."""
        self.publish_event("ack", ack.as_json())
        self.retain_ack(ack)

    def retain_ack(self, ack: Ack) -> None:
        """The station's retained ack (at start: those in force from the state file)."""
        # an empty retained message removes the retained one (MQTT 3.1.1, 3.3.1.3)
        self._retained[f"{self.base}/station/{ack.station}/ack"] = "" if ack.cleared \
            else json.dumps(ack.as_json(), ensure_ascii=False, sort_keys=True)
        self._wakeup.set()

    def _discover(self, report: CycleReport) -> None:
        """Home Assistant discovery documents, retained, before a station's first state."""
        c = self.config
        if not self._stations:
            self._retained.update(discovery.gateway_documents(
                c.discovery_prefix, self.base, self.gateway, __version__))
        for s in report.result.states:
            if s.station not in self._stations:
                self._stations.add(s.station)
                self._retained.update(discovery.station_documents(
                    c.discovery_prefix, self.base, self.gateway, __version__, s.station,
                    s.kind))

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
        message = {"gateway": self.gateway} | message | {"event_id": self.event_id()}
        self._events.append((topic, json.dumps(message, ensure_ascii=False, sort_keys=True)))
        self._wakeup.set()

    def publish_cap(self, topic: str, document: str) -> None:
        """Queue a CAP document on `<base>/<topic>` (in order with the events, not retained)."""
        self._events.append((f"{self.base}/{topic}", document))
        self._wakeup.set()

    async def run(self) -> None:
        """Connect, publish, fail over and reconnect with backoff; until cancelled."""
        self._runner = asyncio.current_task()
        backoff = Backoff(60.0, first_s=0.5)
        index, failed = 0, 0  # failed: attempts in a row without a connection
        while True:
            broker = self.brokers[index]
            try:
                await self._session(broker, index)
            except Exception as exc:  # the uplink never takes the daemon down
                was_up, self.connected, self._client = self.connected, False, None
                if any(isinstance(e, _Failback) for e in _leaves(exc)):
                    index, failed = 0, 0
                    continue
                failed = 1 if was_up else failed + 1
                if was_up or failed <= len(self.brokers):
                    log.warning("uplink mqtt down host=%s port=%d: %s", broker.host,
                                broker.port, _reason(exc))
                if not _is_mqtt_error(exc):
                    log.error("uplink mqtt: unexpected error", exc_info=exc)
                if was_up:  # it was up: start the backoff again from the bottom
                    backoff.succeeded()
                index = (index + 1) % len(self.brokers)
                if failed % len(self.brokers) == 0:  # every broker failed in a row
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

    def _client_for(self, broker: BrokerConfig, identifier: str,
                    will: aiomqtt.Will | None = None) -> aiomqtt.Client:
        c = self.config
        return _Client(
            broker.host, broker.port, identifier=identifier,
            username=c.username or None, password=c.password.get_secret_value() or None,
            will=will, keepalive=c.keepalive_s, tls_params=self._tls(),
            timeout=float(c.keepalive_s))

    async def _session(self, broker: BrokerConfig, index: int) -> None:
        will = aiomqtt.Will(f"{self.base}/availability", "offline", qos=1, retain=True)
        self.broker = broker
        async with self._client_for(broker, self.client_id, will) as client:
            self._client = client
            if self.on_command is not None:
                await client.subscribe(self.command_topic, qos=1)
            await self._send(client, f"{self.base}/availability", "online", retain=True)
            if self._last is not None and self._last != broker:
                self.failovers += 1
                log.warning("uplink mqtt failover from %s to %s (%s)", self._last, broker,
                            "the primary" if index == 0 else f"backup {index}")
            self._last = broker
            self.connected = True
            log.info("uplink mqtt up host=%s port=%d", broker.host, broker.port)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._publish(client), name="gauged[mqtt].send")
                # (also without commands: the message iterator is what sees a closed
                # connection at once; a publish would wait for its deadline)
                tg.create_task(self._commands(client), name="gauged[mqtt].commands")
                if index and self.config.failback_s > 0:
                    tg.create_task(self._failback(client), name="gauged[mqtt].failback")

    async def _failback(self, client: aiomqtt.Client) -> None:
        """On a backup: every `failback_s`, see whether the primary takes a connection; when
        it does, say `offline` here and end the session (`run` connects to the primary)."""
        primary = self.brokers[0]
        while True:
            await asyncio.sleep(self.config.failback_s)
            try:
                async with self._client_for(primary, f"{self.client_id}-probe"):
                    pass
            except aiomqtt.MqttError as exc:
                log.debug("uplink mqtt primary %s still away: %s", primary, exc)
                continue
            finally:
                self._lost_cancel()
            log.info("uplink mqtt primary %s answers again: going back to it", primary)
            await self._send(client, f"{self.base}/availability", "offline", retain=True)
            raise _Failback

    async def _publish(self, client: aiomqtt.Client) -> None:
        sent: dict[str, str] = {}  # what this session has published of the retained state
        while True:
            self._wakeup.clear()
            for topic, payload in list(self._retained.items()):
                if sent.get(topic) != payload:
                    await self._send(client, topic, payload, retain=True)
                    sent[topic] = payload
            readings, self._readings = self._readings, {}
            for topic, payload in readings.items():
                await self._send(client, topic, payload, qos=0)
            for queue in (self._events, self._replies):
                while queue:  # removed only once the broker has them (at least once)
                    batch = [queue[i] for i in range(min(IN_FLIGHT, len(queue)))]
                    await asyncio.gather(*(self._send(client, topic, payload)
                                           for topic, payload in batch))
                    for item in batch:  # (a full queue may have dropped some meanwhile)
                        if queue and queue[0] is item:
                            queue.popleft()
            await self._wakeup.wait()

    async def _send(self, client: aiomqtt.Client, topic: str, payload: str, *, qos: int = 1,
                    retain: bool = False) -> None:
        """One publish, acknowledged within `keepalive_s` (else the session ends). The
        deadline is ours: aiomqtt's own runs through `asyncio.wait_for`, which in Python 3.11
        can lose a cancellation (DESIGN §4) and leave a stopping daemon waiting."""
        try:
            async with asyncio.timeout(self.config.keepalive_s):
                await client.publish(topic, payload, qos=qos, retain=retain, timeout=math.inf)
        except TimeoutError:
            raise aiomqtt.MqttError(f"publish not acknowledged within "
                                    f"{self.config.keepalive_s} s") from None
        self._lost_cancel()

    def _lost_cancel(self) -> None:
        """In a session's tasks: raise the cancellation aiomqtt may have lost (its
        deadlines run through `asyncio.wait_for`, which in Python 3.11 can return a result
        although the task was cancelled meanwhile, DESIGN §4: a stopping daemon would then
        wait for ever). Not in `run`'s own task: a 3.11 TaskGroup whose child failed
        leaves its parent's `cancelling()` count raised for good."""
        task = asyncio.current_task()
        if task is not None and task is not self._runner and task.cancelling():
            raise asyncio.CancelledError

    async def _commands(self, client: aiomqtt.Client) -> None:
        """Hand each message on the command topic to the daemon, one at a time; raise
        MqttError when the connection drops."""
        async for message in client.messages:
            if self.on_command is None or not message.topic.matches(self.command_topic):
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
