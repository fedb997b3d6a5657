"""The recorder: what happened goes to the log, the state store, /status and every uplink.

The daemon tells the recorder about cycles, broadcasts, tests, commands, faults and
inhibits; the recorder logs them, keeps what /status and the page show (the latest state of
each station, the charts' history, the faults, the broadcast tally for /metrics) and hands
each event to every uplink (gauged/uplinks/base.py), which records what it cares about.
It is called after the sirens have their requests and never raises into the cycle.

The broadcast journal (gauged/store/state.py) gets each broadcast's fate from here: when it
starts, ends or never starts. Those writes return at once (the store's writer thread does
them in order), so a zone never waits for the disk between its decisions and its relays.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from gauged.alarm.quality import Quality
from gauged.alarm.site import SiteEvent
from gauged.alarm.types import (
    BroadcastRecord,
    BroadcastRequest,
    CycleResult,
    Merged,
    StationState,
    local_time,
)
from gauged.clock import Clock
from gauged.health import BusHealth, GaugeHealth
from gauged.ops.history import History
from gauged.ops.metrics import BroadcastTally
from gauged.store.acks import Ack, AckBook
from gauged.store.state import FATES, JobRun, StateStore
from gauged.uplinks.base import CycleReport, Uplink

log = logging.getLogger(__name__)

MAX_FAULTS = 50  # kept for /status (it shows the last 20)


class Recorder:
    """Fans the daemon's events out to the log, the store, /status and the uplinks."""

    def __init__(self, uplinks: Sequence[Uplink], clock: Clock, *, timezone: str,
                 poll_interval_s: float) -> None:
        self.uplinks = list(uplinks)
        self.clock = clock
        self.timezone = timezone
        self.store: StateStore | None = None  # set once the daemon has opened it
        self.states: dict[str, StationState] = {}
        self.history = History(poll_interval_s)  # the status page's charts
        self.broadcast_tally = BroadcastTally()  # /metrics
        self.faults: list[str] = []
        self.follow: dict[str, str] = {}  # station: the station it follows in gauge_fault
        self.acks: AckBook | None = None  # set once the daemon has opened its store

    def cycle(self, when: datetime, result: CycleResult, *, gauges: Mapping[str, GaugeHealth],
              buses: Mapping[str, BusHealth], inhibited: frozenset[str],
              site: Mapping[str, float | None] | None = None,
              site_alarms: frozenset[str] = frozenset()) -> None:
        for t in result.transitions:
            log.info("stage station=%s quantity=%s from=%s to=%s value=%g time=%s",
                     t.station, t.kind, t.from_name, t.to_name, t.value,
                     local_time(t.time, self.timezone))
        for s in result.states:
            before = self.states.get(s.station)
            if s.fault and (before is None or not before.fault):
                self._gauge_fault(s)
            self.states[s.station] = s
            self.history.add(s)
            if s.kind == "level":
                log.debug("reading station=%s level_m=%s freeboard_m=%s quality=%s",
                          s.station, s.level_m, s.freeboard_m, s.quality)
        self._review_acks(when)  # (the states are this cycle's now)
        self._log_cycle(when, result)
        report = CycleReport(when, result, gauges, buses, inhibited, site or {}, site_alarms)
        for uplink in self.uplinks:
            uplink.cycle(report)

    def _gauge_fault(self, s: StationState) -> None:
        """A gauge_fault starts: its stage is held (or follows another station); operators
        are told at once (the poller has logged the reason)."""
        policy = f"follows {self.follow[s.station]} upward" if s.station in self.follow \
            else "holds"
        self.fault("gauge_fault", s.station, f"{s.fault}; stage {s.stage_name} {policy} "
                                             f"until the gauge reads true")

    def _log_cycle(self, when: datetime, result: CycleResult) -> None:
        levels = " ".join(f"{s.station}={s.freeboard_m:.2f}m" for s in result.states
                          if s.kind == "level" and s.freeboard_m is not None)
        rain = max((s.rain_total_mm or 0.0 for s in result.states if s.kind == "rain"),
                   default=0.0)
        bad = sum(1 for s in result.states if s.quality is not Quality.GOOD)
        log.info("cycle time=%s freeboard %s rain_60m_max=%.1fmm not_good=%d",
                 local_time(when, self.timezone), levels, rain, bad)

    def withheld(self, request: BroadcastRequest) -> None:
        """A broadcast an inhibit withheld: stored and published like one that played."""
        for uplink in self.uplinks:
            uplink.withheld(request)

    def merged(self, merged: Merged) -> None:
        """A broadcast the zone does not play: it already hears one that speaks for it."""
        req, into = merged.request, merged.into
        if into is None:
            log.info("broadcast merged zone=%s station=%s kind=%s: another station of the zone "
                     "still stands at a stage", req.zone, req.station, req.kind)
        else:
            log.info("broadcast merged zone=%s station=%s stage=%s kind=%s into station=%s "
                     "stage=%s (stations=%s)", req.zone, req.station, req.stage_name, req.kind,
                     into.station, into.stage_name, ",".join(into.named))

    def broadcast_started(self, record: BroadcastRecord) -> None:
        """Called before the broadcast's first relay write: journaled without waiting."""
        if self.store is not None and record.journal is not None:
            self.store.journal_fate(record.journal, "playing", started=record.started)

    def broadcast_done(self, record: BroadcastRecord) -> None:
        req = record.request
        self.broadcast_tally.add(req.zone, record.outcome, record.latency_s)
        if self.store is not None and record.journal is not None:
            self.store.journal_fate(
                record.journal, FATES.get(record.outcome, record.outcome),
                finished=record.finished, siren_on_s=record.siren_on_s,
                clips_played=record.clips_played, faults=record.faults)
        for uplink in self.uplinks:
            uplink.broadcast(record)

    def broadcast_unplayed(self, record: BroadcastRecord) -> None:
        """A broadcast that never started: dropped, superseded or not-started (the zone
        logged it)."""
        if self.store is not None and record.journal is not None:
            self.store.journal_fate(record.journal, record.outcome)

    def missed(self, report: Mapping[str, Any]) -> None:
        """A broadcast that a stop or a crash left unplayed or cut, and that the start after
        it does not replay (gauged/daemon/restore.py logged why): published at once."""
        now = self.clock.now()
        for uplink in self.uplinks:
            uplink.missed(now, report)

    def fault(self, kind: str, what: str, detail: str) -> None:
        """A relay or audio fault: kept for /status, published at once."""
        self.faults.append(f"{kind}: {what}: {detail}")
        del self.faults[:-MAX_FAULTS]
        now = self.clock.now()
        for uplink in self.uplinks:
            uplink.fault(now, kind, what, detail)

    def site(self, events: Sequence[SiteEvent]) -> None:
        """Alarms of the site's health entered or left (gauged/alarm/site.py): operators are
        told once each way (log, /status faults, every uplink's fault event). Never a siren."""
        for e in events:
            if e.active:
                log.warning("site alarm=%s source=%s: %s", e.alarm, e.source, e.message)
            else:
                log.info("site alarm cleared=%s source=%s: %s", e.alarm, e.source, e.message)
            self.fault("site" if e.active else "site_cleared", f"{e.alarm}:{e.source}",
                       e.message)

    def proof_test(self, run: JobRun) -> None:
        """A scheduled test has a result: stored already; published here."""
        now = self.clock.now()
        for uplink in self.uplinks:
            uplink.proof_test(now, run)

    def manual_test(self, job: str, command_id: str, result: Mapping[str, Any]) -> None:
        for uplink in self.uplinks:
            uplink.manual_test(job, command_id, result)

    def command(self, when: float, command_id: str | None, sender: str, action: str,
                status: str, reason: str, detail: dict[str, Any]) -> None:
        """An operator command was decided: audited in the store, counted in InfluxDB."""
        if self.store is not None:
            self.store.audit_command(when, command_id, sender, action, status, reason, detail)
        at = datetime.fromtimestamp(when, UTC)
        for uplink in self.uplinks:
            uplink.command(at, action, status)

    def inhibits(self, inhibits: Sequence[Mapping[str, Any]]) -> None:
        now = self.clock.now()
        for uplink in self.uplinks:
            uplink.inhibits(now, inhibits)

    def ack(self, ack: Ack) -> None:
        """An operator acknowledged a raised station (already on disk): logged, published."""
        log.warning("ack station=%s stage=%s by=%s id=%s note=%r (repeats go on unless "
                    "silenced)", ack.station, ack.stage_name, ack.by, ack.command_id, ack.note)
        for uplink in self.uplinks:
            uplink.ack(ack)

    def _review_acks(self, when: datetime) -> None:
        """An acknowledgement ends when its station is back to normal or rises above the
        acknowledged stage (gauged/store/acks.py)."""
        if self.acks is None:
            return
        for station, ack in self.acks.current().items():
            state = self.states.get(station)
            if state is None or ack.holds(state.stage):
                continue
            why = "back to normal" if state.stage <= 0 else \
                f"rose to {state.stage_name} above the acknowledged {ack.stage_name}"
            cleared = self.acks.clear(station, when.timestamp(), why)
            if cleared is not None:
                log.info("ack cleared station=%s: %s", station, why)
                for uplink in self.uplinks:
                    uplink.ack(cleared)
