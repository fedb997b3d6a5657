"""MQTT: availability with a last will, retained station state, events.

Topic tree under `<topic_prefix>/<gateway id>/`:
- `availability`            `online` (retained) while connected; the broker publishes the
                            last will `offline` (retained) when the connection drops
- `station/<id>/state`      retained JSON: stage, stage name, value, quality, time
- `event/transition`        JSON per stage transition
- `event/broadcast`         JSON per finished broadcast
- `event/fault`             JSON per relay or audio fault during a broadcast
- `event/test`              JSON per scheduled siren test result
- `cap`                     a CAP 1.2 XML document per alert, update, cancel and exercise
                            (gauged/cap.py); QoS 1, not retained (a stream of messages that
                            reference each other; the CAP folder is the durable record)

`publish_*` never blocks: the latest state per station is kept and re-published after every
(re)connect; events wait in a bounded queue while the broker is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections import deque
from typing import Any

import aiomqtt

from gauged.config import MqttConfig

log = logging.getLogger(__name__)

MAX_EVENTS = 10_000


class MqttPublisher:
    """Owns the MQTT connection of the daemon."""

    def __init__(self, config: MqttConfig, gateway_id: str) -> None:
        self.config = config
        self.base = f"{config.topic_prefix}/{gateway_id}"
        self.client_id = f"gauged-{gateway_id}"
        self._retained: dict[str, str] = {}
        self._events: deque[tuple[str, str]] = deque(maxlen=MAX_EVENTS)
        self._wakeup = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self.connected = False

    def publish_state(self, station: str, state: dict[str, Any]) -> None:
        """Set the retained state of a station."""
        self._retained[f"{self.base}/station/{station}/state"] = json.dumps(
            state, ensure_ascii=False, sort_keys=True)
        self._wakeup.set()

    def publish_event(self, kind: str, event: dict[str, Any]) -> None:
        """Queue an event (`transition`, `broadcast`)."""
        self._events.append((f"{self.base}/event/{kind}",
                             json.dumps(event, ensure_ascii=False, sort_keys=True)))
        self._wakeup.set()

    def publish_cap(self, topic: str, document: str) -> None:
        """Queue a CAP document on `<base>/<topic>` (in order with the events, not retained)."""
        self._events.append((f"{self.base}/{topic}", document))
        self._wakeup.set()

    async def run(self) -> None:
        """Connect, publish, reconnect with backoff; until cancelled."""
        backoff = 0.0
        failures = 0
        while True:
            try:
                await self._session()
            except aiomqtt.MqttError as exc:
                failures += 1
                if self.connected or failures == 1:
                    log.warning("uplink mqtt down host=%s port=%d: %s", self.config.host,
                                self.config.port, exc)
                self.connected = False
                self._client = None
                backoff = min(60.0, max(0.5, backoff * 2))
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            else:
                return

    async def _session(self) -> None:
        will = aiomqtt.Will(f"{self.base}/availability", "offline", qos=1, retain=True)
        async with aiomqtt.Client(
            self.config.host, self.config.port, identifier=self.client_id,
            username=self.config.username or None,
            password=self.config.password.get_secret_value() or None,
            will=will, keepalive=30,
        ) as client:
            self._client = client
            await client.publish(f"{self.base}/availability", "online", qos=1, retain=True)
            self.connected = True
            log.info("uplink mqtt up host=%s port=%d", self.config.host, self.config.port)
            sent: dict[str, str] = {}
            while True:
                self._wakeup.clear()
                for topic, payload in list(self._retained.items()):
                    if sent.get(topic) != payload:
                        await client.publish(topic, payload, qos=1, retain=True)
                        sent[topic] = payload
                while self._events:
                    topic, payload = self._events[0]
                    await client.publish(topic, payload, qos=1)
                    self._events.popleft()
                await self._wakeup.wait()

    async def close(self) -> None:
        """Say `offline` before a clean disconnect (the will covers only unclean ones)."""
        client, self._client = self._client, None
        if client is not None and self.connected:
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                await asyncio.wait_for(client.publish(
                    f"{self.base}/availability", "offline", qos=1, retain=True), 2.0)
        self.connected = False
