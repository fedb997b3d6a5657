"""What every uplink is: a context manager with `run`, `flush`, a typed `health()`, and the
events the daemon's recorder (gauged/daemon/recorder.py) hands to all of them.

An uplink records what it cares about and ignores the rest (the defaults do nothing). Every
event method is called on the event loop, after the sirens have their requests: it must
never block and never raise into the cycle (queue, then write from `run`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Self

from gauged.alarm.types import BroadcastRecord, BroadcastRequest, CycleResult
from gauged.health import BusHealth, GaugeHealth, UplinkHealth
from gauged.store.acks import Ack
from gauged.store.state import JobRun


@dataclass(frozen=True)
class CycleReport:
    """One cycle as the uplinks see it: the engine's result and the health of the plant."""

    when: datetime
    result: CycleResult
    gauges: Mapping[str, GaugeHealth]
    buses: Mapping[str, BusHealth]
    inhibited: frozenset[str]  # stations under an inhibit: no public documents for them
    # the site's health this cycle (gauged/daemon/sitewatch.py): each source's value, and
    # the sources with a standing alarm as `alarm:source`
    site: Mapping[str, float | None] = field(default_factory=dict)
    site_alarms: frozenset[str] = frozenset()


class Uplink:
    """The base of InfluxSink, MqttPublisher and CapSink (see the module docstring)."""

    name = "uplink"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        return None

    async def run(self) -> None:
        """Send what was queued, until cancelled."""
        raise NotImplementedError

    async def flush(self, timeout_s: float) -> bool:
        """Wait until everything queued is sent (True), at most `timeout_s` (False)."""
        raise NotImplementedError

    def health(self) -> UplinkHealth:
        raise NotImplementedError

    # ---- events (all optional) ---------------------------------------------------------

    def cycle(self, report: CycleReport) -> None:
        """A cycle: readings, stages, transitions, gauge and bus health."""

    def broadcast(self, record: BroadcastRecord) -> None:
        """A broadcast finished (played, pre-empted, superseded or dropped)."""

    def withheld(self, request: BroadcastRequest) -> None:
        """A broadcast an inhibit withheld."""

    def missed(self, when: datetime, report: Mapping[str, Any]) -> None:
        """A broadcast decided before a stop or a crash that the start after it does not
        replay: its journal row (gauged/store/state.py `JournalEntry.as_json`) with `note`
        saying why (too old, its stage no longer stands, cut short twice, …)."""

    def proof_test(self, when: datetime, run: JobRun) -> None:
        """A scheduled test has a result."""

    def manual_test(self, job: str, command_id: str, result: Mapping[str, Any]) -> None:
        """A test run on command has a result."""

    def command(self, when: datetime, action: str, status: str) -> None:
        """An operator command was decided (done or refused)."""

    def fault(self, when: datetime, kind: str, what: str, detail: str) -> None:
        """A relay or audio fault."""

    def inhibits(self, when: datetime, inhibits: Sequence[Mapping[str, Any]]) -> None:
        """The inhibits changed; `inhibits` is the list /status shows."""

    def ack(self, ack: Ack) -> None:
        """An operator acknowledged a raised station, or an acknowledgement was cleared
        (`ack.cleared`: the station is back to normal or rose above the stage)."""
