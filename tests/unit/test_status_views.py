"""The status page, the terminal view and the metrics collector as pure functions of a
/status document (the integration test reads them from a running daemon)."""

from __future__ import annotations

import copy
import re
import time
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gauged.alarm.quality import GaugeReading, Judgement, Quality
from gauged.alarm.types import StationState
from gauged.daemon.snapshot import redundant
from gauged.health import GaugeHealth, MqttHealth, SinkHealth, UplinkHealth
from gauged.histogram import Histogram
from gauged.ops.history import History, Point
from gauged.ops.metrics import BroadcastTally, DaemonCollector, exposition, unix_time
from gauged.ops.page import refresh_s, render_page
from gauged.ops.statusview import cells, pad, render

NOW = datetime(2026, 7, 1, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo
EVIL = '<script>alert("x")</script>&'


def snapshot(**changes: Any) -> dict[str, Any]:
    """A /status document of the shape gauged.app.Daemon.snapshot() returns."""
    level_stages = [{"name": "watch", "threshold": 2.58}, {"name": "notice", "threshold": 2.0},
                    {"name": "warning", "threshold": 1.0},
                    {"name": "overflow", "threshold": 0.0}]
    rain_stages = [{"name": "watch", "threshold": 25.0}, {"name": "notice", "threshold": 30.0},
                   {"name": "warning", "threshold": 50.0}]
    gauge = {"error": "", "errors": 2, "polled": True, "status_word": None,
             "last_good": (NOW - timedelta(seconds=180)).isoformat()}
    doc: dict[str, Any] = {
        "gateway": "minato-furukawa", "time": NOW.isoformat(), "timezone": "Asia/Tokyo",
        "poll_interval_s": 180, "clock_speed": 1.0, "cycles": 42,
        "last_cycle": (NOW - timedelta(seconds=60)).isoformat(), "health": ["ok"],
        "stations": {
            "shin_hiroo": {"name": "新広尾公園", "kind": "level", "zones": ["furukawa_hiroo"],
                           "stages": level_stages, "stage": 2, "stage_name": "notice",
                           "quality": "good", "reason": "", "gauge_fault": None,
                           "level_m": 2.9, "freeboard_m": 1.7, "rise_m_per_h": 0.42,
                           "minutes_to_next": 100.0, "reading_age_s": 60.0,
                           "gauge": dict(gauge)},
            "rain_ward_office": {"name": "港区役所", "kind": "rain", "zones": ["ward"],
                                 "stages": rain_stages, "stage": 0, "stage_name": "normal",
                                 "quality": "bad", "reason": "spike", "gauge_fault": None,
                                 "rain_increment_mm": 1.0, "rain_60m_mm": 12.5,
                                 "rain_10m_mm": 3.0, "rain_24h_mm": 40.0,
                                 "rain_event_mm": 40.0, "rain_partial": True,
                                 "reading_age_s": 900.0, "gauge": dict(gauge)},
        },
        "zones": {
            "furukawa_hiroo": {"name": "古川沿い（広尾）", "busy": False, "current": None,
                               "last": {"zone": "furukawa_hiroo", "station": "shin_hiroo",
                                        "stage": 2, "stage_name": "notice",
                                        "sequence": "level_notice",
                                        "started": (NOW - timedelta(minutes=9)).isoformat(),
                                        "outcome": "done", "status": "finished"}},
            "ward": {"name": "区内全域", "busy": False, "current": None, "last": None},
        },
        "buses": {"river": {"kind": "modbus_tcp", "connected": True, "read_s": 0.018}},
        "uplinks": {name: asdict(h) for name, h in uplinks().items()},
        "faults": [],
    }
    doc.update(changes)
    return doc


def uplinks(**influx: Any) -> dict[str, UplinkHealth]:
    """The uplinks' typed health, as /status shows them and /metrics reads them."""
    return {"influx": SinkHealth(**{"connected": True, "queued": 3, "written": 100,
                                   "errors": 1} | influx),
            "mqtt": MqttHealth(connected=False)}


def history() -> dict[str, list[Point]]:
    t0 = NOW.timestamp() - 10 * 180
    level = [Point(t0 + i * 180, 2.5 - 0.08 * i, 1, "good") for i in range(10)]
    level[4] = Point(level[4].ts, None, 1, "missing")  # a gap
    return {"shin_hiroo": level, "rain_ward_office": []}


def test_page_shows_stations_with_stage_text_values_and_local_time() -> None:
    page = render_page(snapshot(), history())
    assert "RUNNING · healthy" in page
    assert "2026-07-01 12:00:00 JST" in page  # the gateway's time zone, not UTC
    assert "STAGE 2 · NOTICE" in page  # text with the colour
    assert re.search(r'class="value freeboard">1\.70', page)
    assert "rising 0.42 m/h · warning (1.00 m) in 1:40 h" in page
    assert '<b class="rain10">3.0</b> mm <span class="meta">(≈18 mm/h)</span>' in page
    assert '<b class="rain24">40.0</b>' in page
    assert "(partial)" in page
    assert "quality BAD" in page and "spike" in page  # noqa: PT018 (one fact: the reason shown)
    assert "STALE" in page  # 900 s > two cycles
    assert "新広尾公園 stage 2 notice · level_notice · done" in page
    assert "none since the state store began" in page
    assert "<form" not in page and "<button" not in page  # noqa: PT018 (read-only)
    assert "<script" not in page and "http://" not in page  # noqa: PT018 (no assets)


def test_page_escapes_everything_from_config_and_devices() -> None:
    doc = snapshot()
    doc["gateway"] = EVIL
    doc["stations"]["shin_hiroo"]["name"] = EVIL
    doc["stations"]["shin_hiroo"]["stages"][2]["name"] = EVIL
    doc["stations"]["rain_ward_office"]["reason"] = EVIL
    doc["zones"]["ward"]["name"] = EVIL
    doc["uplinks"]["influx"]["last_error"] = EVIL
    doc["faults"] = [EVIL]
    doc["inhibits"] = [{"target": "zone:ward", "until": NOW.isoformat(), "reason": EVIL,
                        "by": EVIL}]
    page = render_page(doc, history())
    assert "<script" not in page
    assert page.count("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;") >= 8


def test_page_inhibits_none_or_listed() -> None:
    assert 'id="inhibits">none<' in render_page(snapshot(), {})
    assert 'id="inhibits">none<' in render_page(snapshot(inhibits=[]), {})
    until = (NOW + timedelta(hours=2)).isoformat()
    page = render_page(snapshot(inhibits=[
        {"target": "station:shin_hiroo", "until": until, "reason": "gauge swap", "by": "ito"}]),
        {})
    assert "<b>station:shin_hiroo</b> until 07-01 14:00 JST — gauge swap (ito)" in page
    assert "INHIBITED until 07-01 14:00 JST — gauge swap" in page  # on the station's card


def test_page_health_failing_and_refresh() -> None:
    page = render_page(snapshot(health=["poll loop: no cycle for two intervals"]), {})
    assert "FAILING: poll loop: no cycle for two intervals" in page
    assert refresh_s(snapshot()) == 30
    assert refresh_s(snapshot(clock_speed=60.0)) == 2
    assert '<meta http-equiv="refresh" content="30">' in page


def test_chart_draws_water_rising_upwards_with_gaps_and_thresholds() -> None:
    page = render_page(snapshot(), history())
    card = page[page.index('id="station-shin_hiroo"'):page.index('id="station-rain_ward')]
    lines = re.findall(r'<polyline[^>]*points="([^"]+)"', card)
    assert len(lines) == 2  # split at the missing reading
    pts = [tuple(map(float, p.split(","))) for line in lines for p in line.split()]
    assert len(pts) == 9
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    assert xs == sorted(xs)
    assert ys == sorted(ys, reverse=True)  # freeboard falls: the line climbs
    assert "notice 2</text>" in card  # the next stage's threshold is in view
    rain = page[page.index('id="station-rain_ward'):]
    assert "no readings yet" in rain


def test_history_keeps_six_hours_and_shows_bad_readings_as_gaps() -> None:
    h = History(180)
    assert h.size == 120
    for i in range(130):
        q = Quality.BAD if i == 129 else Quality.GOOD
        h.add(StationState("s", "level", NOW + timedelta(seconds=180 * i), q, 0, "normal",
                           level_m=1.0, freeboard_m=3.0 - i / 100))
    pts = h.points("s")
    assert len(pts) == 120
    assert pts[0].ts == (NOW + timedelta(seconds=180 * 10)).timestamp()
    assert pts[-1].value is None
    assert pts[-1].quality == "bad"
    assert h.points("unknown") == []


def test_terminal_view_is_one_aligned_screen() -> None:
    text = render(snapshot(inhibits=[{"target": "zone:ward", "until": NOW.isoformat(),
                                      "reason": "speaker repair", "by": "ito"}]))
    lines = text.splitlines()
    assert len(lines) <= 24
    assert lines[0].startswith("gauged minato-furukawa · RUNNING, healthy · 2026-07-01 "
                               "12:00:00 JST · cycle 42 at 11:59 (60 s ago)")
    assert lines[1] == "Raised: shin_hiroo 2 NOTICE"
    shin = next(x for x in lines if x.startswith("shin_hiroo"))
    rain = next(x for x in lines if x.startswith("rain_ward_office"))
    # the stage column starts in the same terminal cell whatever the name's script
    assert cells(shin[:shin.index("2 NOTICE")]) == 31
    assert cells(rain[:rain.index("normal")]) == 31
    assert "1.70 m" in shin
    assert "↑ 0.42 m/h, warning in 100 min" in shin
    assert "3.0" in rain and "12.5" in rain and "40.0" in rain  # noqa: PT018
    assert "15 min ago, BAD" in rain
    assert any(x.startswith("furukawa_hiroo 古川沿い（広尾）") and "last: 11:51 shin_hiroo "
               "notice done" in x for x in lines)
    assert "INHIBITS zone:ward until 12:00 (speaker repair, ito)" in lines
    assert "UPLINKS influx up, queued 3, written 100, dropped 0, quarantined 0, errors 1; "\
        "mqtt DOWN" in lines
    assert all(cells(x) <= 120 for x in lines), max(lines, key=cells)


def test_pad_counts_wide_characters_as_two_cells() -> None:
    assert cells("港区役所") == 8
    assert pad("港区役所", 5) == "港区 "
    assert pad("ab", 4) == "ab  "


# the gauges of the two stations, by channel (`Config.channels`), and their health
CHANNELS = {"shin_hiroo": ("shin_hiroo", "shin_hiroo_level"),
            "rain_ward_office": ("rain_ward_office", "rain_ward_office_gauge")}


def gauge_health(**changes: GaugeHealth) -> dict[str, GaugeHealth]:
    last = NOW - timedelta(seconds=180)
    return {c: GaugeHealth(errors=2, last_good=last) for c in CHANNELS} | changes


def scrape(doc: dict[str, Any], tally: BroadcastTally | None = None,
           latency: dict[str, Histogram] | None = None,
           health: dict[str, UplinkHealth] | None = None,
           channels: dict[str, tuple[str, str]] | None = None,
           gauges: dict[str, GaugeHealth] | None = None) -> dict[str, dict[Any, float]]:
    text = exposition(DaemonCollector(lambda: copy.deepcopy(doc), latency or {},
                                      tally or BroadcastTally(),
                                      lambda: health or uplinks(),
                                      channels=channels or CHANNELS,
                                      gauges=gauges or gauge_health()))().decode()
    out: dict[str, dict[Any, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_metrics_from_a_snapshot_with_and_without_the_spool() -> None:
    m = scrape(snapshot())
    assert m["gauged_station_stage"][(("kind", "level"), ("station", "shin_hiroo"))] == 2
    assert m["gauged_station_freeboard_meters"][(("station", "shin_hiroo"),)] == 1.7
    assert m["gauged_station_next_stage_eta_seconds"][(("station", "shin_hiroo"),)] == 6000
    assert m["gauged_station_quality"][(("quality", "bad"), ("station", "rain_ward_office"))] \
        == 1
    assert m["gauged_cycles_total"][()] == 42
    assert m["gauged_spool_depth_points"][()] == 3
    assert m["gauged_spool_bytes"][()] == 0
    assert "gauged_inhibits_active" not in m
    assert m["gauged_bus_load_ratio"][(("bus", "river"),)] == pytest.approx(0.018 / 180)
    assert m["gauged_uplink_connected"][(("uplink", "mqtt"),)] == 0
    doc = snapshot(inhibits=[{"target": "zone:ward"}])
    m = scrape(doc, health=uplinks(queued=5000, queued_bytes=1 << 20, quarantined=2,
                                   last_success=time.time() - 5))
    assert m["gauged_spool_depth_points"][()] == 5000
    assert m["gauged_spool_bytes"][()] == 1 << 20
    assert m["gauged_spool_quarantined_points_total"][()] == 2
    assert m["gauged_inhibits_active"][()] == 1
    assert time.time() - m["gauged_influx_last_success_timestamp_seconds"][()] < 10


def test_histograms_are_cumulative() -> None:
    h = Histogram((0.01, 0.1))
    for v in (0.005, 0.01, 0.05, 3.0):
        h.observe(v)
    assert h.buckets() == [("0.01", 2.0), ("0.1", 3.0), ("+Inf", 4.0)]
    tally = BroadcastTally()
    tally.add("ward", "done", 0.004)
    tally.add("ward", "pre-empted", None)
    m = scrape(snapshot(), tally, {"shin_hiroo": h})
    assert m["gauged_broadcasts_total"][(("outcome", "done"), ("zone", "ward"))] == 1
    assert m["gauged_broadcasts_total"][(("outcome", "pre-empted"), ("zone", "ward"))] == 1
    assert m["gauged_broadcast_latency_seconds_count"][(("zone", "ward"),)] == 1
    assert m["gauged_gauge_read_duration_seconds_bucket"][
        (("gauge", "shin_hiroo_level"), ("le", "0.1"), ("station", "shin_hiroo"))] == 3


def test_unix_time_moves_monotonic_times_onto_the_wall_clock() -> None:
    assert unix_time(None) is None
    assert unix_time(1.7e9) == 1.7e9
    mono = unix_time(time.monotonic() - 10)
    assert mono is not None
    assert abs(time.time() - 10 - mono) < 1


# ---- a level station with two gauges (QUALITY ALM-13) -------------------------------------

LEVEL, RADAR = "shin_hiroo_level", "shin_hiroo_radar"
TWO = CHANNELS | {f"shin_hiroo:{RADAR}": ("shin_hiroo", RADAR)}


def two_gauges(level: GaugeReading, radar: GaugeReading, **health: GaugeHealth) \
        -> dict[str, Any]:
    """The snapshot with Shin-Hiroo reading two gauges, its `gauges` as the daemon's snapshot
    makes them (gauged/daemon/snapshot.py)."""
    doc = snapshot()
    healths = {LEVEL: GaugeHealth(errors=0, last_good=NOW),
               RADAR: GaugeHealth(errors=0, last_good=NOW)} | health
    doc["stations"]["shin_hiroo"] |= {"tolerance_m": 0.10} | redundant(
        (level, radar), 0.10, healths)
    return doc


def good(gauge: str, value: float) -> GaugeReading:
    return GaugeReading(gauge, value, Judgement(Quality.GOOD))


def gauge_lines(page: str) -> str:
    card = page[page.index('id="station-shin_hiroo"'):page.index('id="station-rain_ward')]
    return card[card.index('class="meta gauges"'):card.index("<svg")]


def test_alm_13_page_shows_both_gauges_and_which_is_in_charge() -> None:
    agree = gauge_lines(render_page(two_gauges(good(LEVEL, 2.88), good(RADAR, 2.92)), {}))
    assert 'data-gauges="agree"' in agree
    assert "Two gauges agree (within 0.10 m): their mean is used" in agree
    assert f'data-gauge="{LEVEL}" data-in-charge="1">{LEVEL}: ' \
        '<span class="gauge-value">2.88 m</span> · quality good · <b>in charge</b>' in agree
    assert f'data-gauge="{RADAR}" data-in-charge="1">' in agree

    disagree = gauge_lines(render_page(two_gauges(good(LEVEL, 1.02), good(RADAR, 2.75)), {}))
    assert 'data-gauges="disagree"' in disagree
    assert '<span class="warn">Two gauges DISAGREE by 1.73 m</span>: the higher, ' \
        f"{RADAR}, is in charge" in disagree
    assert f'data-gauge="{LEVEL}" data-in-charge="0">{LEVEL}: <span class="gauge-value">' \
        "1.02 m</span> · quality good</div>" in disagree
    assert f'data-gauge="{RADAR}" data-in-charge="1">' in disagree

    dead = GaugeReading(LEVEL, None, Judgement(Quality.MISSING, "timeout"),
                        "stale: no good reading for 3 cycles")
    one = gauge_lines(render_page(two_gauges(dead, good(RADAR, 2.75)), {}))
    assert 'data-gauges="one"' in one
    assert f'<span class="warn">One gauge only</span>: {RADAR} in charge' in one
    assert f'{LEVEL}: <span class="gauge-value">—</span> · <span class="warn">quality ' \
        'MISSING</span> · <span class="warn">stale: no good reading for 3 cycles</span>' in one

    spike = GaugeReading(RADAR, 9.5, Judgement(Quality.BAD, "spike: +6.75 m"))
    none = gauge_lines(render_page(two_gauges(dead, spike), {}))
    assert 'data-gauges="none"' in none
    assert '<span class="warn">No gauge in charge</span>' in none
    assert 'data-in-charge="1"' not in none
    assert '9.50 m</span> · <span class="warn">quality BAD</span> · ' \
        '<span class="warn">spike: +6.75 m</span>' in none


def test_alm_13_page_shows_no_gauge_lines_for_a_station_with_one_gauge() -> None:
    page = render_page(snapshot(), history())
    assert 'class="meta gauges"' not in page
    assert "in charge" not in page


def test_alm_13_page_escapes_the_gauges() -> None:
    evil = GaugeReading(EVIL, None, Judgement(Quality.BAD, EVIL), EVIL)
    doc = two_gauges(good(LEVEL, 1.0), evil, **{EVIL: GaugeHealth()})
    page = render_page(doc, {})
    assert "<script" not in page
    assert page.count("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;") >= 3


def test_alm_13_terminal_view_shows_each_gauge_under_the_station() -> None:
    text = render(two_gauges(good(LEVEL, 1.02), good(RADAR, 2.75)))
    lines = text.splitlines()
    i = next(i for i, x in enumerate(lines) if x.startswith("shin_hiroo "))
    assert lines[i + 1] == (f"  gauges DISAGREE by 1.73 m, the higher used: {LEVEL} 1.02 m "
                            f"good · {RADAR} 2.75 m good (in charge)")
    assert lines[i + 2].startswith("rain_ward_office") or lines[i + 2] == ""
    agree = render(two_gauges(good(LEVEL, 2.88), good(RADAR, 2.92))).splitlines()
    assert f"  gauges agree within 0.10 m, mean used: {LEVEL} 2.88 m good · {RADAR} 2.92 m " \
        "good" in agree
    dead = GaugeReading(LEVEL, None, Judgement(Quality.MISSING, "timeout"),
                        "stale: no good reading for 3 cycles")
    [one] = [x for x in render(two_gauges(dead, good(RADAR, 2.75))).splitlines()
             if x.startswith("  gauges")]
    assert one == f"  gauges ONE in charge: {LEVEL} — MISSING (stale: no good reading…) · " \
        f"{RADAR} 2.75 m good (in charge)"
    spike = GaugeReading(RADAR, 9.5, Judgement(Quality.BAD, "spike: +6.75 m"))
    [none] = [x for x in render(two_gauges(dead, spike)).splitlines()
              if x.startswith("  gauges")]
    # the reasons share what the gauges leave of 120 cells: the shorter whole
    assert none == f"  gauges NONE in charge: {LEVEL} — MISSING (stale: no good rea…) · {RADAR}" \
        " 9.50 m BAD (spike: +6.75 m)"
    # one screen, no line wider than the terminal, whatever the gauges report
    long = GaugeReading(RADAR, None, Judgement(Quality.BAD, "x" * 300))
    lines = render(two_gauges(dead, long)).splitlines()
    assert len(lines) <= 24
    assert all(cells(x) <= 120 for x in lines), max(lines, key=cells)
    assert any(x.startswith("  gauges NONE in charge") and x.endswith("xx…)") for x in lines)
    # a station with one gauge: no such line
    assert not any(x.startswith("  gauges") for x in render(snapshot()).splitlines())


def test_alm_13_metrics_have_a_series_per_gauge() -> None:
    dead = GaugeReading(LEVEL, None, Judgement(Quality.MISSING, "timeout"), "stale: 3 cycles")
    fast, slow = Histogram((0.01, 0.1)), Histogram((0.01, 0.1))
    fast.observe(0.005)
    slow.observe(0.05)
    slow.observe(0.05)
    health = {"shin_hiroo": GaugeHealth(errors=7, fault="stale: 3 cycles"),
              f"shin_hiroo:{RADAR}": GaugeHealth(errors=1, last_good=NOW),
              "rain_ward_office": GaugeHealth()}
    m = scrape(two_gauges(dead, good(RADAR, 2.75)), channels=TWO, gauges=health,
               latency={"shin_hiroo": fast, f"shin_hiroo:{RADAR}": slow})

    def one(name: str, **labels: str) -> float:
        return m[name][tuple(sorted(labels.items()))]

    level, radar = {"station": "shin_hiroo", "gauge": LEVEL}, \
        {"station": "shin_hiroo", "gauge": RADAR}
    assert one("gauged_gauge_read_errors_total", **level) == 7
    assert one("gauged_gauge_read_errors_total", **radar) == 1
    assert one("gauged_gauge_read_errors_total", station="rain_ward_office",
               gauge="rain_ward_office_gauge") == 0
    assert one("gauged_gauge_fault", **level) == 1
    assert one("gauged_gauge_fault", **radar) == 0
    assert one("gauged_gauge_last_good_timestamp_seconds", **radar) == NOW.timestamp()
    assert (("gauge", LEVEL), ("station", "shin_hiroo")) not in \
        m["gauged_gauge_last_good_timestamp_seconds"]  # never read well
    assert one("gauged_gauge_read_duration_seconds_count", **level) == 1
    assert one("gauged_gauge_read_duration_seconds_count", **radar) == 2
    assert one("gauged_gauge_read_duration_seconds_bucket", le="0.01", **radar) == 0
    # the judged reading of each gauge, and which one the station follows
    assert one("gauged_gauge_level_meters", **radar) == 2.75
    assert (("gauge", LEVEL), ("station", "shin_hiroo")) not in m["gauged_gauge_level_meters"]
    assert one("gauged_gauge_quality", quality="missing", **level) == 1
    assert one("gauged_gauge_quality", quality="good", **level) == 0
    assert one("gauged_gauge_quality", quality="good", **radar) == 1
    assert one("gauged_gauge_in_charge", **radar) == 1
    assert one("gauged_gauge_in_charge", **level) == 0
    assert "gauged_station_gauges_agree" not in m  # one gauge out: nothing to compare
    m = scrape(two_gauges(good(LEVEL, 1.02), good(RADAR, 2.75)), channels=TWO)
    assert one("gauged_station_gauges_agree", station="shin_hiroo") == 0
    assert one("gauged_gauge_in_charge", **level) == 0
    m = scrape(two_gauges(good(LEVEL, 2.88), good(RADAR, 2.92)), channels=TWO)
    assert one("gauged_station_gauges_agree", station="shin_hiroo") == 1
    assert one("gauged_gauge_in_charge", **level) == one("gauged_gauge_in_charge", **radar) == 1
    # per-gauge readings only where a station has two gauges
    assert {labels for labels in m["gauged_gauge_in_charge"]} == {
        tuple(sorted(level.items())), tuple(sorted(radar.items()))}
