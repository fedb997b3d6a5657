"""The city now: what the central brokers' topics say about every gateway and station.

`FleetState` is fed the MQTT messages of every broker (retained and live) and answers one
JSON document (`snapshot`): the gateways with availability, age and dark flag; every
station with stage, value, trend and age, raised stations first; gauge faults; the last
broadcasts and stage changes. `Listener` keeps one subscription per broker, reconnecting.

Darkness (DESIGN §7): a gateway is dark when every broker that knows it says `offline`
(its last will) or when nothing came from it for two cycles (`cycle_s`, real seconds).
Retained messages seen at subscription tell the state, not its age: a gateway known only
from them is dark once two cycles pass without a live message.

Every event of a gateway carries `event_id` (`<gateway>-<boot>-<n>`, gauged/uplinks/mqtt.py):
a QoS-1 redelivery, or the copy a failover sends again to the other broker, repeats it and
is kept once. `id` is not the event's: it is a journal row or a command's id, which several
events may share. An event without `event_id` (an older gateway) is kept once per body.

Acknowledgements (the `ack` command): each station's retained `station/<id>/ack` document,
an empty retained payload (or `cleared: true`) being none. Each broker keeps its own copy
and only the one the gateway is on is current (it re-publishes its retained documents
there, clears included), so a broker where the gateway says `online` is believed first,
then the newest. An ack is shown only while it holds (station at a raised stage no higher
than the acknowledged one, as gauged/store/acks.py): a stale copy never shows a station as
being seen to when it is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

log = logging.getLogger(__name__)

KEEP_EVENTS = 50
FLAT_M_PER_H = 0.005  # as the gateway page: below 5 mm/h the river is steady


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    name: str

    @classmethod
    def parse(cls, text: str, index: int) -> BrokerAddress:
        host, _, port = text.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"broker {text!r}: expected HOST:PORT")
        return cls(host, int(port), "primary" if index == 0 else f"backup{index}"
                   if index > 1 else "backup")


@dataclass
class GatewayView:
    id: str
    availability: dict[str, str] = field(default_factory=dict)  # broker name → last word
    last_live: float | None = None  # time.time() of the last live (not retained) message
    stations: dict[str, dict[str, Any]] = field(default_factory=dict)
    received: dict[str, float | None] = field(default_factory=dict)  # station → live arrival
    # station → broker name → its retained ack document (None: empty, cleared)
    acks: dict[str, dict[str, dict[str, Any] | None]] = field(default_factory=dict)


class FleetState:
    """All that the brokers said; `snapshot()` is what the page and `--json` show."""

    def __init__(self, cycle_s: float = 180.0, prefix: str = "gauged") -> None:
        self.cycle_s = cycle_s
        self.prefix = prefix
        self.started = time.time()
        self.gateways: dict[str, GatewayView] = {}
        self.broadcasts: deque[dict[str, Any]] = deque(maxlen=KEEP_EVENTS)
        self.transitions: deque[dict[str, Any]] = deque(maxlen=KEEP_EVENTS)
        self.faults: deque[dict[str, Any]] = deque(maxlen=KEEP_EVENTS)
        self.replies: deque[dict[str, Any]] = deque(maxlen=KEEP_EVENTS)
        self.brokers: dict[str, bool] = {}
        self._seen_ids: deque[str] = deque(maxlen=10 * KEEP_EVENTS)

    def gateway(self, gw: str) -> GatewayView:
        return self.gateways.setdefault(gw, GatewayView(gw))

    def apply(self, broker: str, topic: str, payload: bytes, retained: bool,
              now: float | None = None) -> None:
        """One message; anything outside the topic tree or unreadable is ignored."""
        now = time.time() if now is None else now
        parts = topic.split("/")
        if len(parts) < 3 or parts[0] != self.prefix:
            return
        gw, rest = parts[1], parts[2:]
        view = self.gateway(gw)
        if rest == ["availability"]:
            view.availability[broker] = payload.decode(errors="replace").strip()
            if not retained and view.availability[broker] == "online":
                view.last_live = now
            return
        if len(rest) == 3 and rest[0] == "station" and rest[2] == "ack":
            self._ack(view, broker, rest[1], payload)
            return
        try:
            doc = json.loads(payload)
        except ValueError:
            return
        if not isinstance(doc, dict):
            return
        if len(rest) == 3 and rest[0] == "station" and rest[2] == "state":
            view.stations[rest[1]] = doc
            view.received[rest[1]] = None if retained else now
            if not retained:
                view.last_live = now
        elif len(rest) == 2 and rest[0] == "event" and not self._repeat(gw, rest[1], doc):
            if not retained:
                view.last_live = now
            item = doc | {"gateway": gw, "received": now}
            if rest[1] == "broadcast":
                self.broadcasts.appendleft(item)
            elif rest[1] == "transition":
                self.transitions.appendleft(item)
            elif rest[1] == "fault":
                self.faults.appendleft(item)
        elif rest == ["command", "reply"]:
            self.replies.appendleft(doc | {"gateway": gw, "received": now})

    @staticmethod
    def _ack(view: GatewayView, broker: str, station: str, payload: bytes) -> None:
        """A station's retained ack on one broker: a document, or none (empty, cleared,
        unreadable)."""
        doc: Any = None
        if payload.strip():
            try:
                doc = json.loads(payload)
            except ValueError:
                doc = None
        if not isinstance(doc, dict) or doc.get("cleared"):
            doc = None
        view.acks.setdefault(station, {})[broker] = doc

    def _repeat(self, gw: str, kind: str, doc: dict[str, Any]) -> bool:
        """True for an event already seen: the same `event_id` (the gateway's id of the
        event), or the same body when it has none."""
        key = f"{gw}/{kind}/{doc.get('event_id') or json.dumps(doc, sort_keys=True)}"
        if key in self._seen_ids:
            return True
        self._seen_ids.append(key)
        return False

    # ---- the document ------------------------------------------------------------------

    def dark_after_s(self) -> float:
        return 2.0 * self.cycle_s

    def _gateway_doc(self, view: GatewayView, now: float) -> dict[str, Any]:
        words = set(view.availability.values())
        availability = "online" if "online" in words else "offline" if words else "unknown"
        since = view.last_live if view.last_live is not None else self.started
        silent_s = now - since
        dark = availability != "online" or silent_s > self.dark_after_s()
        raised = sum(1 for s in view.stations.values() if int(s.get("stage") or 0) > 0)
        return {"id": view.id, "availability": availability, "dark": dark,
                "age_s": None if view.last_live is None else round(now - view.last_live, 1),
                "stations": len(view.stations), "raised": raised,
                "brokers": dict(sorted(view.availability.items()))}

    @staticmethod
    def _ack_doc(view: GatewayView, sid: str, stage: int) -> dict[str, Any] | None:
        """The station's acknowledgement in force, or None (see the module docstring)."""
        copies = view.acks.get(sid, {})
        online = [b for b, word in view.availability.items() if word == "online"]
        believed = [copies[b] for b in online if b in copies] or list(copies.values())
        docs = [d for d in believed if d is not None]
        if not docs:
            return None
        doc = max(docs, key=lambda d: str(d.get("time") or ""))
        try:
            acked = int(doc.get("stage") or 0)
        except (TypeError, ValueError):
            return None
        if not 0 < stage <= acked:
            return None
        return {"by": doc.get("by"), "time": doc.get("time"), "stage": acked,
                "stage_name": doc.get("stage_name"), "note": doc.get("note") or "",
                "command_id": doc.get("command_id")}

    @staticmethod
    def _station_doc(gw: str, sid: str, st: dict[str, Any], received: float | None,
                     dark: bool, now: float) -> dict[str, Any]:
        level = "level_m" in st
        value = st.get("level_m") if level else st.get("rain_60m_mm")
        rise = st.get("rise_m_per_h")
        if level:
            trend = "unknown" if rise is None else "rising" if rise > FLAT_M_PER_H else \
                "falling" if rise < -FLAT_M_PER_H else "steady"
        else:
            trend = "raining" if (st.get("rain_10m_mm") or 0) > 0 else "dry"
        return {"gateway": gw, "station": sid, "kind": "level" if level else "rain",
                "stage": int(st.get("stage") or 0), "stage_name": st.get("stage_name"),
                "value": value, "unit": "m" if level else "mm/60 min", "trend": trend,
                "rise_m_per_h": rise, "quality": st.get("quality"),
                "gauge_fault": st.get("gauge_fault"), "time": st.get("time"),
                "local_time": st.get("local_time"),
                "age_s": None if received is None else round(now - received, 1),
                "gateway_dark": dark}

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        gateways = [self._gateway_doc(v, now) for _, v in sorted(self.gateways.items())]
        dark = {g["id"]: g["dark"] for g in gateways}
        stations = [self._station_doc(gw, sid, st, view.received.get(sid), dark[gw], now)
                    for gw, view in sorted(self.gateways.items())
                    for sid, st in sorted(view.stations.items())]
        for s in stations:
            s["ack"] = self._ack_doc(self.gateways[s["gateway"]], s["station"], s["stage"])
        stations.sort(key=lambda s: (-s["stage"], s["gateway"], s["station"]))
        faults = [s for s in stations if s["gauge_fault"]]
        return {"time": now, "cycle_s": self.cycle_s, "dark_after_s": self.dark_after_s(),
                "brokers": dict(sorted(self.brokers.items())), "gateways": gateways,
                "stations": stations, "gauge_faults": faults,
                "broadcasts": list(self.broadcasts)[:20],
                "transitions": list(self.transitions)[:20],
                "faults": list(self.faults)[:20], "replies": list(self.replies)[:10]}


class Listener:
    """One subscription to `<prefix>/#` per broker, kept up (with backoff) until cancelled."""

    def __init__(self, state: FleetState, brokers: list[BrokerAddress], *, username: str = "",
                 password: str = "") -> None:
        self.state = state
        self.brokers = brokers
        self.username = username
        self.password = password
        self.ready = asyncio.Event()  # set once every broker has been subscribed to once
        self._subscribed: set[str] = set()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for broker in self.brokers:
                tg.create_task(self._follow(broker), name=f"fleet[{broker.name}]")

    async def _follow(self, broker: BrokerAddress) -> None:
        delay = 0.5
        while True:
            try:
                async with aiomqtt.Client(broker.host, broker.port,
                                          username=self.username or None,
                                          password=self.password or None,
                                          keepalive=15) as client:
                    await client.subscribe(f"{self.state.prefix}/#", qos=1)
                    self.state.brokers[broker.name] = True
                    self._mark(broker.name)
                    delay = 0.5
                    async for message in client.messages:
                        raw = message.payload
                        payload = raw if isinstance(raw, bytes | bytearray) else \
                            b"" if raw is None else str(raw).encode()
                        self.state.apply(broker.name, str(message.topic), bytes(payload),
                                         bool(message.retain))
            except aiomqtt.MqttError as exc:
                if self.state.brokers.get(broker.name, True):
                    log.warning("fleet: broker %s (%s:%d) unreachable: %s", broker.name,
                                broker.host, broker.port, exc)
                self.state.brokers[broker.name] = False
                self._mark(broker.name)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _mark(self, name: str) -> None:
        self._subscribed.add(name)
        if len(self._subscribed) == len(self.brokers):
            self.ready.set()


async def collect(state: FleetState, listener: Listener, settle_s: float = 1.0,
                  timeout_s: float = 10.0) -> dict[str, Any]:
    """For `--json`: subscribe, take the retained messages (and what comes within
    `settle_s`), return the snapshot."""
    task = asyncio.create_task(listener.run())
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await listener.ready.wait()
        await asyncio.sleep(settle_s)  # retained messages arrive right after SUBACK
        return state.snapshot()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
