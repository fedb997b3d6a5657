"""`/metrics`: the daemon's state in the Prometheus text format.

A custom collector builds every family from the daemon's state at scrape time (the same
`snapshot()` that `/status` serves, so the two never disagree), on a registry of the daemon's
own: no process-global registry, so that several daemons can live in one process (tests do).
The only state kept for metrics alone is what a snapshot cannot hold: latency histograms
(per gauge read, per broadcast) and the count of finished broadcasts.

Per-gauge families (`gauged_gauge_…`) carry `station` and `gauge` (the gauge's id in the
configuration): a level station with two gauges has a series for each. Their read health
comes from the typed `GaugeHealth` of every gauge (what the snapshot reads too); the judged
reading of each gauge of a two-gauge station (level, quality, in charge) from the snapshot.

Names follow the Prometheus conventions: `gauged_` prefix, base units in the name
(`_seconds`, `_meters`, `_bytes`), counters end in `_total`. Two names keep the units of the
trade instead of base units, on purpose: rain in millimetres (`gauged_station_rain_millimeters`;
rain gauges, warnings and the configuration's thresholds all speak mm) and the rate of rise in
metres per hour (`gauged_station_rise_meters_per_hour`, as river gauging does). The process's
own `process_*` families (CPU seconds, resident memory, open files, start time) come from
prometheus_client's ProcessCollector, and `gauged_info` carries the `version` of gauged.
Times from the daemon's clock (simulated under `clock.speed` in tests and the demo) are
UNIX seconds; durations measured on the monotonic clock (latencies, bus read time) are
real seconds.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from gauged import __version__
from gauged.health import CapHealth, GaugeHealth, MqttHealth, SinkHealth, UplinkHealth
from gauged.histogram import Histogram

__all__ = ["CONTENT_TYPE_LATEST", "BroadcastTally", "DaemonCollector", "exposition"]

# Gauge answer to the first relay write (ALM-1: ≤ 50 ms p99).
BROADCAST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
QUALITIES = ("good", "suspect", "bad", "missing")
RAIN_WINDOWS = {"10m": "rain_10m_mm", "60m": "rain_60m_mm", "24h": "rain_24h_mm"}


class BroadcastTally:
    """Finished broadcasts per zone and outcome, and their latency."""

    def __init__(self) -> None:
        self.finished: Counter[tuple[str, str]] = Counter()
        self.latency: dict[str, Histogram] = {}

    def add(self, zone: str, outcome: str, latency_s: float | None) -> None:
        self.finished[(zone, outcome)] += 1
        if latency_s is not None:
            self.latency.setdefault(zone, Histogram(BROADCAST_BUCKETS)).observe(latency_s)


class DaemonCollector(Collector):
    """Every `gauged_…` family, from a `/status` snapshot, the gauges' health and the latency
    histograms.

    `channels`: each gauge a station reads as (station, gauge) under its channel id
    (`Config.channels`); `gauges` and `read_latency` are keyed by channel id."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]],
                 read_latency: Mapping[str, Histogram], broadcasts: BroadcastTally,
                 uplinks: Callable[[], Mapping[str, UplinkHealth]], *,
                 channels: Mapping[str, tuple[str, str]],
                 gauges: Mapping[str, GaugeHealth],
                 internal_errors: Mapping[tuple[str, str], int] | None = None) -> None:
        """`internal_errors`: unexpected errors contained per (station, where) since start
        (gauged/barrier.py; station "" for a cycle that failed as a whole)."""
        self._snapshot = snapshot
        self._internal = internal_errors if internal_errors is not None else {}
        self._uplinks = uplinks
        self._read_latency = read_latency
        self._broadcasts = broadcasts
        self._channels = channels
        self._gauges = gauges

    def collect(self) -> Iterator[Metric]:
        status = self._snapshot()
        yield from _daemon(status)
        yield from _stations(status["stations"])
        yield from self._gauge_health()
        yield from _gauge_readings(status["stations"])
        yield from _buses(status)
        yield from _uplinks(self._uplinks())
        yield from self._zones(status["zones"])
        yield self._internal_errors()
        yield from _site(status.get("site") or {})

    def _internal_errors(self) -> Metric:
        family = CounterMetricFamily(
            "gauged_internal_errors", "Unexpected errors contained to one station since start "
            "(each makes the station gauge_fault, reason internal, for its cycle), by station "
            "and where: read, decode, judge, evaluate; station \"\" and where cycle for a "
            "cycle that failed as a whole", labels=["station", "where"])
        for (station, where), n in sorted(self._internal.items()):
            family.add_metric([station, where], float(n))
        return family

    def _gauge_health(self) -> Iterator[Metric]:
        labels = ["station", "gauge"]
        errors = CounterMetricFamily("gauged_gauge_read_errors", "Failed reads of the "
                                     "gauge since start", labels=labels)
        last = GaugeMetricFamily("gauged_gauge_last_good_timestamp_seconds",
                                 "Time of the gauge's last good reading (daemon clock)",
                                 labels=labels)
        fault = GaugeMetricFamily("gauged_gauge_fault", "1 while the gauge is in gauge_fault "
                                  "(a station with two gauges is held only when both are)",
                                  labels=labels)
        latency = HistogramMetricFamily("gauged_gauge_read_duration_seconds",
                                        "Time one read of the gauge took, failed ones included "
                                        "(real seconds)", labels=labels)
        for channel, (sid, gid) in self._channels.items():
            health = self._gauges.get(channel)
            if health is not None:
                errors.add_metric([sid, gid], float(health.errors))
                fault.add_metric([sid, gid], 1.0 if health.fault else 0.0)
                if health.last_good is not None:
                    last.add_metric([sid, gid], health.last_good.timestamp())
            h = self._read_latency.get(channel)
            if h is not None:
                latency.add_metric([sid, gid], h.buckets(), h.sum)
        yield from (errors, last, fault, latency)

    def _zones(self, zones: Mapping[str, Any]) -> Iterator[Metric]:
        busy = GaugeMetricFamily("gauged_zone_broadcasting",
                                 "1 while a broadcast plays on the zone", labels=["zone"])
        last = GaugeMetricFamily("gauged_zone_last_broadcast_timestamp_seconds",
                                 "Start of the zone's last finished broadcast (daemon clock)",
                                 labels=["zone"])
        for zid, z in zones.items():
            busy.add_metric([zid], 1.0 if z.get("busy") else 0.0)
            ts = _timestamp((z.get("last") or {}).get("started"))
            if ts is not None:
                last.add_metric([zid], ts)
        finished = CounterMetricFamily("gauged_broadcasts", "Broadcasts finished since start, "
                                       "by zone and outcome (done, pre-empted)",
                                       labels=["zone", "outcome"])
        for (zone, outcome), n in sorted(self._broadcasts.finished.items()):
            finished.add_metric([zone, outcome], float(n))
        latency = HistogramMetricFamily("gauged_broadcast_latency_seconds",
                                        "From the gauge's answer to the broadcast's first "
                                        "relay write (real seconds)", labels=["zone"])
        for zone, h in sorted(self._broadcasts.latency.items()):
            latency.add_metric([zone], h.buckets(), h.sum)
        yield from (busy, last, finished, latency)


def _daemon(status: Mapping[str, Any]) -> Iterator[Metric]:
    info = GaugeMetricFamily("gauged_info", "The gateway this daemon serves, and the "
                             "version of gauged", labels=["gateway", "version"])
    info.add_metric([str(status["gateway"]), __version__], 1.0)
    yield info
    yield CounterMetricFamily("gauged_cycles", "Poll cycles completed since start",
                              value=float(status["cycles"]))
    ts = _timestamp(status.get("last_cycle"))
    if ts is not None:
        yield GaugeMetricFamily("gauged_last_cycle_timestamp_seconds",
                                "Time of the last completed cycle (daemon clock)", value=ts)
    failing = [h for h in status.get("health", []) if h != "ok"]
    yield GaugeMetricFamily("gauged_healthy", "1 when every health check passes "
                            "(what /healthz answers 200 for)", value=0.0 if failing else 1.0)
    inhibits = status.get("inhibits")
    if inhibits is not None:
        yield GaugeMetricFamily("gauged_inhibits_active", "Maintenance inhibits in force",
                                value=float(len(inhibits)))


def _stations(stations: Mapping[str, Any]) -> Iterator[Metric]:
    labels = ["station", "kind"]
    stage = GaugeMetricFamily("gauged_station_stage", "Stage of the station (0 normal)",
                              labels=labels)
    quality = GaugeMetricFamily("gauged_station_quality", "1 for the quality of the station's "
                                "last reading, 0 for the others", labels=["station", "quality"])
    age = GaugeMetricFamily("gauged_station_reading_age_seconds",
                            "Age of the station's last good reading (daemon clock)",
                            labels=["station"])
    level = GaugeMetricFamily("gauged_station_level_meters",
                              "Water level above the gauge datum", labels=["station"])
    freeboard = GaugeMetricFamily("gauged_station_freeboard_meters", "Distance from the water "
                                  "surface down to the top of the river wall",
                                  labels=["station"])
    rise = GaugeMetricFamily("gauged_station_rise_meters_per_hour",
                             "Rate of rise of the level (falling: negative)",
                             labels=["station"])
    eta = GaugeMetricFamily("gauged_station_next_stage_eta_seconds", "Time until the level "
                            "reaches the next stage at its rate of rise (only while rising)",
                            labels=["station"])
    rain = GaugeMetricFamily("gauged_station_rain_millimeters", "Rain totals over a window "
                             "(10m, 60m rolling; 24h)", labels=["station", "window"])
    fault = GaugeMetricFamily("gauged_station_gauge_fault", "1 while the station's gauge is "
                              "in gauge_fault (its stage is held, not measured)",
                              labels=["station"])
    for sid, st in stations.items():
        stage.add_metric([sid, st["kind"]], float(st["stage"]))
        fault.add_metric([sid], 1.0 if st.get("gauge_fault") else 0.0)
        for q in QUALITIES:
            quality.add_metric([sid, q], 1.0 if st.get("quality") == q else 0.0)
        _maybe(age, [sid], st.get("reading_age_s"))
        if st["kind"] == "level":
            _maybe(level, [sid], st.get("level_m"))
            _maybe(freeboard, [sid], st.get("freeboard_m"))
            _maybe(rise, [sid], st.get("rise_m_per_h"))
            minutes = st.get("minutes_to_next")
            _maybe(eta, [sid], None if minutes is None else minutes * 60.0)
        else:
            for window, key in RAIN_WINDOWS.items():
                _maybe(rain, [sid, window], st.get(key))
    yield from (stage, fault, quality, age, level, freeboard, rise, eta, rain)


def _gauge_readings(stations: Mapping[str, Any]) -> Iterator[Metric]:
    """Each gauge of a level station with two (its `gauges` in /status): what it read, its
    quality, whether it carries the station's reading, and whether the two agree."""
    level = GaugeMetricFamily("gauged_gauge_level_meters", "Water level the gauge read "
                              "(stations with two gauges; the station's level combines them)",
                              labels=["station", "gauge"])
    quality = GaugeMetricFamily("gauged_gauge_quality", "1 for the quality of the gauge's "
                                "last reading, 0 for the others (stations with two gauges)",
                                labels=["station", "gauge", "quality"])
    charge = GaugeMetricFamily("gauged_gauge_in_charge", "1 while the gauge's reading makes "
                               "the station's (both when they agree, the higher when they "
                               "do not, the good one when only one is)",
                               labels=["station", "gauge"])
    agree = GaugeMetricFamily("gauged_station_gauges_agree", "1 while both gauges of the "
                              "station are good and within its tolerance, 0 while both are "
                              "good but further apart (absent when they cannot be compared)",
                              labels=["station"])
    for sid, st in stations.items():
        for gid, g in (st.get("gauges") or {}).items():
            _maybe(level, [sid, gid], g.get("value"))
            for q in QUALITIES:
                quality.add_metric([sid, gid, q], 1.0 if g.get("quality") == q else 0.0)
            charge.add_metric([sid, gid], 1.0 if g.get("in_charge") else 0.0)
        if st.get("gauges_agree") is not None:
            agree.add_metric([sid], 1.0 if st["gauges_agree"] else 0.0)
    yield from (level, quality, charge, agree)


def _buses(status: Mapping[str, Any]) -> Iterator[Metric]:
    connected = GaugeMetricFamily("gauged_bus_connected", "1 while the bus is connected",
                                  labels=["bus"])
    read = GaugeMetricFamily("gauged_bus_read_seconds", "Time the last cycle spent reading "
                             "the bus's gauges (real seconds)", labels=["bus"])
    load = GaugeMetricFamily("gauged_bus_load_ratio", "Share of the poll interval the last "
                             "cycle spent reading the bus", labels=["bus"])
    interval = status.get("poll_interval_s")
    speed = status.get("clock_speed") or 1.0
    for name, bus in status.get("buses", {}).items():
        connected.add_metric([name], 1.0 if bus.get("connected") else 0.0)
        read_s = float(bus.get("read_s") or 0.0)
        read.add_metric([name], read_s)
        if interval:
            load.add_metric([name], read_s / (float(interval) / float(speed)))
    yield from (connected, read, load)


def _uplinks(uplinks: Mapping[str, UplinkHealth]) -> Iterator[Metric]:
    connected = GaugeMetricFamily("gauged_uplink_connected", "1 while the uplink works",
                                  labels=["uplink"])
    for name, up in sorted(uplinks.items()):
        works = not up.failing if isinstance(up, CapHealth) else up.connected
        connected.add_metric([name], 1.0 if works else 0.0)
    yield connected
    for up in uplinks.values():
        if isinstance(up, SinkHealth):
            yield from _spool(up)
        if isinstance(up, MqttHealth):
            yield CounterMetricFamily("gauged_mqtt_failovers", "Switches of the MQTT uplink "
                                      "to another broker of [mqtt] brokers since start "
                                      "(back to the primary included)", value=up.failovers)


def _spool(h: SinkHealth) -> Iterator[Metric]:
    """The InfluxDB writer and its spool."""
    yield GaugeMetricFamily("gauged_spool_depth_points",
                            "Points waiting to be written to the TSDB", value=h.queued)
    yield GaugeMetricFamily("gauged_spool_bytes", "Size of the spool on disk",
                            value=h.queued_bytes)
    yield CounterMetricFamily("gauged_spool_dropped_points",
                              "Points dropped (spool or buffer full)", value=h.dropped)
    yield CounterMetricFamily("gauged_spool_quarantined_points",
                              "Points the TSDB rejected, set aside", value=h.quarantined)
    yield CounterMetricFamily("gauged_influx_written_points", "Points the TSDB accepted",
                              value=h.written)
    yield CounterMetricFamily("gauged_influx_write_errors", "Failed writes to the TSDB",
                              value=h.errors)
    if h.last_success is not None:
        yield GaugeMetricFamily("gauged_influx_last_success_timestamp_seconds",
                                "Time of the last accepted write (UNIX seconds)",
                                value=h.last_success)


def unix_time(ts: object) -> float | None:
    """A time the sinks report as UNIX seconds, or (today's influx sink) as the event loop's
    monotonic clock: those are far below any UNIX time of this century and are moved onto
    the wall clock."""
    if not isinstance(ts, int | float) or isinstance(ts, bool):
        return None
    if ts > 1e9:
        return float(ts)
    return time.time() - (time.monotonic() - float(ts))


def _maybe(family: GaugeMetricFamily, labels: list[str], value: float | None) -> None:
    if value is not None:
        family.add_metric(labels, float(value))


def _timestamp(iso: str | None) -> float | None:
    return None if not iso else datetime.fromisoformat(iso).timestamp()


def exposition(collector: Collector) -> Callable[[], bytes]:
    """A function that renders `collector` in the text format, on a registry of its own,
    with the process's `process_*` families."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    ProcessCollector(registry=registry)
    return lambda: generate_latest(registry)


def _site(site: Mapping[str, Any]) -> Iterator[Metric]:
    """The site's health (gauged/daemon/sitewatch.py): inputs, alarms, battery estimate."""
    value = GaugeMetricFamily("gauged_site_value", "A site health reading (battery V, "
                              "contacts 0/1, °C, MB free, clock synchronised 0/1)",
                              labels=["source"])
    alarm = GaugeMetricFamily("gauged_site_alarm", "1 while a site health alarm stands "
                              "(operator alarm, never a siren)", labels=["alarm", "source"])
    hours = GaugeMetricFamily("gauged_site_battery_hours_left", "Hours until the battery is "
                              "empty at its present rate of fall", labels=["source"])
    for source, v in (site.get("values") or {}).items():
        _maybe(value, [source], v)
    for a in site.get("alarms") or []:
        alarm.add_metric([str(a.get("alarm")), str(a.get("source"))], 1.0)
    for source, h in (site.get("battery_hours_left") or {}).items():
        _maybe(hours, [source], h)
    yield from (value, alarm, hours)
