"""Typed health: what each part reports of itself, read by /status, /metrics and the uplinks.

The field layer fills `GaugeHealth` and `BusHealth`, each uplink returns its own record from
`health()`; the daemon's status snapshot serialises them (`dataclasses.asdict`: the field
names are the keys of `/status`), and `/metrics` reads the same fields. Nobody reads a key it
has to guess.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass
class GaugeHealth:
    """What /status shows of one gauge."""

    raw: int | float | None = None
    status: int | None = None
    error: str = ""
    fault: str = ""
    last_good: datetime | None = None
    polled: bool = True
    errors: int = 0  # read errors since start
    answered_mono: float | None = None  # monotonic time of the last answer (for latency)


@dataclass(frozen=True)
class BusHealth:
    """One bus after a cycle: its kind, whether its hub is connected, the cycle's read time."""

    kind: str
    connected: bool
    read_s: float


@dataclass
class SinkHealth:
    """/status `uplinks.influx`: the writer and its spool."""

    connected: bool = False
    queued: int = 0  # points in the spool (on disk or waiting in memory)
    queued_bytes: int = 0
    written: int = 0
    batches: int = 0
    errors: int = 0
    dropped: int = 0  # routine telemetry dropped at the byte cap, exact
    quarantined: int = 0
    oldest_age_s: float | None = None  # age of the first point held
    backoff_s: float = 0.0  # the wait before the next attempt (0: none)
    last_error: str = ""
    last_success: float | None = None  # UNIX time of the last accepted batch
    spool_path: str = ""
    spool_on_disk: bool = False
    spool_problem: str = ""
    spool_max_bytes: int = 0


@dataclass
class MqttHealth:
    """/status `uplinks.mqtt`."""

    connected: bool = False
    broker: str = ""  # host:port of the broker it is on (or last tried)
    failovers: int = 0  # switches to another broker since start


@dataclass
class CapHealth:
    """/status `uplinks.cap`: documents made, written to the folder, handed to MQTT."""

    documents: int = 0  # made
    written: int = 0  # in the folder
    published: int = 0  # handed to MQTT
    failures: int = 0  # documents that could not be made, failed writes
    dropped: int = 0  # documents never written (the write queue overflowed)
    queued: int = 0
    last_identifier: str = ""
    last_error: str = ""
    failing: bool = False  # the last write to the folder failed
    dir: str = ""
    open: dict[str, str] = field(default_factory=dict)  # station → stage of its open alert


UplinkHealth = SinkHealth | MqttHealth | CapHealth
