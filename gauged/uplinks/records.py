"""What gauged writes to InfluxDB: one function per event, each returning its `Record`s.

The schema is documented in README.md ("Schema"); a measurement's tags and fields are
spelled only here. `InfluxSink` (gauged/uplinks/influx.py) spools and sends them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from gauged.alarm.quality import GaugeReading, Quality
from gauged.alarm.types import BroadcastRecord, BroadcastRequest
from gauged.health import BusHealth, GaugeHealth, SinkHealth
from gauged.store.state import JobRun
from gauged.uplinks import line_protocol
from gauged.uplinks.base import CycleReport

# Routine telemetry: the only measurements the spool's byte cap may drop.
ROUTINE = frozenset({"level", "rain", "gauge", "bus", "spool"})

@dataclass(frozen=True)
class Record:
    """One point: measurement, tags, fields (None values are left out) and its time."""

    measurement: str
    tags: dict[str, str]
    fields: dict[str, float | int | None]
    time: datetime

    @property
    def routine(self) -> bool:
        """Telemetry the spool may drop at its byte cap (see ROUTINE)."""
        return self.measurement in ROUTINE

    def line(self, prefix: str = "") -> str:
        """The point in InfluxDB line protocol, with a millisecond timestamp (the spool
        holds these lines; the writer posts them with `precision=ms`), its measurement
        written `<prefix><measurement>` (`[influx] measurement_prefix`, "" for none)."""
        return line_protocol.encode(prefix + self.measurement, self.tags, self.fields,
                                    self.time, "ms")


def cycle(gateway: str, report: CycleReport,
          gauge_names: Mapping[str, tuple[str, str]]) -> list[Record]:
    """Readings and stage changes of a cycle, then gauge and bus health (routine).

    `gauge_names`: each channel's (station, gauge) (`Config.channels`). A station with two
    gauges stores its combined reading on its `level` point and each gauge's value and
    quality on that gauge's `gauge` point."""
    when, records = report.when, []
    for s in report.result.states:
        tags = {"gateway": gateway, "station": s.station}
        if s.kind == "level":
            records.append(Record("level", tags, {
                "level_m": s.level_m, "freeboard_m": s.freeboard_m,
                "quality": s.quality.code, "fault": int(bool(s.fault)),
                "stage": s.stage}, when))
        else:
            raw = report.gauges[s.station].raw if s.quality is not Quality.MISSING else None
            records.append(Record("rain", tags, {
                "counter": None if raw is None else int(raw),
                "increment_mm": s.rain_increment_mm, "total_60m_mm": s.rain_total_mm,
                "quality": s.quality.code, "fault": int(bool(s.fault)),
                "stage": s.stage}, when))
    for t in report.result.transitions:
        records.append(Record("stage_change", {
            "gateway": gateway, "station": t.station, "quantity": t.kind},
            {"from_stage": t.from_stage, "to_stage": t.to_stage, "value": t.value}, when))
    readings = {(s.station, g.gauge): g for s in report.result.states for g in s.gauges}
    for channel, h in report.gauges.items():
        station, name = gauge_names[channel]
        records.append(gauge(gateway, station, name, h, when, readings.get((station, name))))
    records += [bus(gateway, name, h, when) for name, h in report.buses.items()]
    records += site(gateway, report)
    return records


def site(gateway: str, report: CycleReport) -> list[Record]:
    """The site's health: each source's value and whether an alarm of it stands (kept, not
    routine: the record of a site going dark must survive a full spool)."""
    standing: dict[str, list[str]] = {}
    for key in report.site_alarms:
        alarm, source = key.split(":", 1)
        standing.setdefault(source, []).append(alarm)
    return [Record("site", {"gateway": gateway, "source": source,
                            "alarm": ",".join(sorted(standing.get(source, [])))},
                   {"value": value, "alarm_active": int(source in standing)}, report.when)
            for source, value in report.site.items()]


def gauge(gateway: str, station: str, name: str, h: GaugeHealth, when: datetime,
          reading: GaugeReading | None = None) -> Record:
    """A gauge's health; for a gauge of a two-gauge station also its own judged reading
    (`value`, m, and `quality`), which the station's `level` point combines."""
    extra: dict[str, float | int | None] = {} if reading is None else {
        "value": reading.value, "quality": reading.judgement.quality.code}
    return Record("gauge", {"gateway": gateway, "station": station, "gauge": name}, {
        "raw": h.raw, "ok": int(not h.error), "errors": h.errors,
        "status_word": h.status, "fault": int(bool(h.fault)), **extra}, when)


def bus(gateway: str, name: str, h: BusHealth, when: datetime) -> Record:
    return Record("bus", {"gateway": gateway, "bus": name}, {
        "connected": int(h.connected), "read_s": h.read_s}, when)


def spool(gateway: str, h: SinkHealth, when: datetime) -> Record:
    """The `spool` point: the spool's health at `when` (routine telemetry)."""
    return Record("spool", {"gateway": gateway}, {
        "points": h.queued, "bytes": h.queued_bytes, "max_bytes": h.spool_max_bytes,
        "dropped": h.dropped, "quarantined": h.quarantined,
        "oldest_age_s": h.oldest_age_s, "connected": int(h.connected),
        "on_disk": int(h.spool_on_disk), "errors": h.errors}, when)


def broadcast(gateway: str, record: BroadcastRecord) -> Record:
    req = record.request
    return Record("broadcast", {
        "gateway": gateway, "zone": req.zone, "station": req.station,
        "sequence": req.sequence, "kind": req.kind, "outcome": record.outcome}, {
        "stage": req.stage, "siren_on_s": record.siren_on_s,
        "clips_played": len(record.clips_played), "faults": len(record.faults),
        "latency_ms": None if record.latency_s is None else record.latency_s * 1000,
        **record.latency()},
        datetime.fromtimestamp(record.started, UTC))


def withheld(gateway: str, request: BroadcastRequest) -> Record:
    return Record("broadcast", {
        "gateway": gateway, "zone": request.zone, "station": request.station,
        "sequence": request.sequence, "kind": request.kind, "outcome": "inhibited"}, {
        "stage": request.stage, "siren_on_s": 0.0, "clips_played": 0, "faults": 0},
        request.time)


def proof_test(gateway: str, run: JobRun) -> Record:
    items = run.result.get("relays") or run.result.get("zones") or []
    return Record("scheduled_test", {
        "gateway": gateway, "job": run.job, "status": run.status}, {
        "ok": int(run.status == "ok"), "items": len(items),
        "faults": sum(1 for i in items if i.get("error"))},
        datetime.fromtimestamp(run.fire_time, UTC))


def command(gateway: str, when: datetime, action: str, status: str) -> Record:
    return Record("command", {"gateway": gateway, "action": action or "-", "status": status},
                  {"ok": int(status == "done")}, when)
