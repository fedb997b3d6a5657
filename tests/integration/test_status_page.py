"""The status server of a real daemon, read as an operator and as a monitoring system would.

One storm per module: `gauged simulate` and `gauged run` as processes (tests/hil.py) with a
real VictoriaMetrics and a real mosquitto, at 60× (a 3-minute cycle every 3 s); the river
stations leave `normal` at cycle 17. Early tests read the calm river; the last ones wait for
the escalation and its broadcast.

- `/` in a real headless Chromium at a phone's width (375 px): what a person sees;
- `/metrics` parsed with prometheus-client's own parser and compared with `/status`;
- `/healthz`, GET-only and loopback (SEC-2);
- `gauged status` in a terminal: one screen, `--json`, an unreachable daemon.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hil import ROOT, SCENARIOS, Rig
from phone import PHONE_H, PHONE_W, phone
from prometheus_client.parser import text_string_to_metric_families
from services import (
    Mosquitto,
    VictoriaMetrics,
    free_port,
    start_on_free_port,
    wait_until,
)

from gauged import __version__
from gauged.config.load import load_config

SPEED = 60.0
STORM = SCENARIOS / "design_storm_50mm.csv"
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# What a person sees, read in one script run (the page may reload itself at any moment).
READ_PAGE = """
const text = (el, sel) => { const e = el.querySelector(sel); return e ? e.innerText : null; };
return {
  cycles: Number(document.querySelector('header').dataset.cycles),
  health: text(document, '#health'),
  banner: text(document, '#banner'),
  refresh: (document.querySelector('meta[http-equiv=refresh]') || {}).content || null,
  stations: [...document.querySelectorAll('section.station')].map(s => ({
    id: s.dataset.station, stage: Number(s.dataset.stage), text: s.innerText,
    name: text(s, '.name'), stageText: text(s, '.stage'), freeboard: text(s, '.freeboard'),
    trend: text(s, '.trend'), rain10: text(s, '.rain10'), rain60: text(s, '.rain60'),
    rain24: text(s, '.rain24'), reading: text(s, '.reading'),
    chartPoints: [...s.querySelectorAll('svg.chart polyline')].reduce(
      (n, p) => n + p.getAttribute('points').trim().split(/\\s+/).length, 0),
    chartWidth: (s.querySelector('svg.chart') || {getBoundingClientRect: () => ({})})
      .getBoundingClientRect().width,
  })),
  zones: [...document.querySelectorAll('.zone')].map(z => ({id: z.dataset.zone,
                                                         text: z.innerText})),
  inhibits: text(document, '#inhibits'),
  uplinks: text(document, '#uplinks'),
  scrollWidth: document.documentElement.scrollWidth,
  innerWidth: window.innerWidth,
  forms: document.querySelectorAll('form, button, input').length,
};
"""


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    tsdb = start_on_free_port(
        lambda port: VictoriaMetrics(port, tmp_path_factory.mktemp("victoria")))
    broker = start_on_free_port(
        lambda port: Mosquitto(port, tmp_path_factory.mktemp("mosquitto")))
    rig = Rig(tmp_path_factory.mktemp("page"), speed=SPEED, influx_url=tsdb.url,
              mqtt_port=broker.port)
    try:
        rig.start_simulators(STORM)
        rig.start_daemon()
        rig.wait_for_status(lambda s: s["cycles"] >= 4, timeout=rig.lead_s + 60,
                            what="four cycles")
        yield rig
    finally:
        rig.close()
        tsdb.close()
        broker.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with phone(tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


def url(rig: Rig, path: str = "/") -> str:
    return f"http://127.0.0.1:{rig.ports['status']}{path}"


def status(rig: Rig) -> dict[str, Any]:
    s = rig.status()
    assert s is not None, rig.log("daemon")[-3000:]
    return s


def consistent(rig: Rig, read: Callable[[], Any], cycles_of: Callable[[Any], int],
               timeout: float = 30.0) -> tuple[dict[str, Any], Any]:
    """`read()` between two /status documents of the same cycle, so that the two can be
    compared value for value (a cycle comes every 3 s here)."""
    got: list[tuple[dict[str, Any], Any]] = []

    def attempt() -> bool:
        before = status(rig)
        seen = read()
        after = status(rig)
        if before["cycles"] == after["cycles"] == cycles_of(seen):
            got.append((after, seen))
            return True
        return False

    wait_until(attempt, timeout, "a page read within one cycle", interval=0.2)
    return got[0]


def load_page(rig: Rig, browser: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    def read() -> dict[str, Any]:
        browser.get(url(rig))
        page: dict[str, Any] = browser.execute_script(READ_PAGE)
        return page

    return consistent(rig, read, lambda p: int(p["cycles"]))


def test_page_shows_every_station_and_zone_on_a_phone(rig: Rig, browser: Any) -> None:
    config = load_config(rig.config)
    st, page = load_page(rig, browser)
    assert page["innerWidth"] == PHONE_W
    assert page["health"] == "RUNNING · healthy"
    assert page["banner"] == "All stations normal"  # the storm has not raised one yet
    assert page["forms"] == 0  # read-only: nothing to press
    assert page["refresh"] == "2"  # a 3 s cycle here; 30 s at the real 3 minutes
    shown = {s["id"]: s for s in page["stations"]}
    assert list(shown) == [sid for sid, c in config.stations.items() if c.kind == "level"] + \
        [sid for sid, c in config.stations.items() if c.kind == "rain"]
    for sid, conf in config.stations.items():
        s, want = shown[sid], st["stations"][sid]
        assert s["name"].startswith(conf.name), s["name"]  # 新広尾公園 …, as configured
        assert s["stage"] == want["stage"] == 0
        assert s["stageText"] == "NORMAL"
        assert s["chartPoints"] >= 3, s  # the last cycles, drawn
        assert 300 <= s["chartWidth"] <= PHONE_W
        assert "quality good" in s["reading"], s["reading"]
        if conf.kind == "level":
            assert s["freeboard"] == f"{want['freeboard_m']:.2f} m", (s, want)
            assert "watch at" in s["trend"] or " in " in s["trend"], s["trend"]
        else:
            assert s["rain10"] == f"{want['rain_10m_mm']:.1f}"
            assert s["rain60"] == f"{want['rain_60m_mm']:.1f} mm"
            assert s["rain24"] == f"{want['rain_24h_mm']:.1f}"
    zones = {z["id"]: z["text"] for z in page["zones"]}
    assert list(zones) == list(config.zones)
    for zid, zone in config.zones.items():
        assert zone.name in zones[zid]
    assert page["inhibits"] == "none"
    assert "influx: up" in page["uplinks"]
    assert "mqtt: up" in page["uplinks"]
    assert page["scrollWidth"] <= PHONE_W, "the page scrolls sideways on a phone"


def test_metrics_match_status(rig: Rig) -> None:
    def scrape() -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        with _HTTP.open(url(rig, "/metrics"), timeout=5) as r:
            assert r.headers["Content-Type"].startswith("text/plain; version=")
            text = r.read().decode()
        out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = \
                    sample.value
        return out

    st, m = consistent(rig, scrape, lambda m: int(m["gauged_cycles_total"][()]))

    def one(name: str, **labels: str) -> float:
        return m[name][tuple(sorted(labels.items()))]

    assert one("gauged_info", gateway=st["gateway"], version=__version__) == 1.0
    assert one("process_resident_memory_bytes") > 1e6  # prometheus_client's ProcessCollector
    assert one("process_cpu_seconds_total") > 0
    assert one("gauged_mqtt_failovers_total") == 0
    assert one("gauged_healthy") == 1.0
    config = load_config(rig.config)
    for sid, s in st["stations"].items():
        gauge = config.stations[sid].gauge
        assert one("gauged_station_stage", station=sid, kind=s["kind"]) == s["stage"]
        assert one("gauged_station_quality", station=sid, quality=s["quality"]) == 1.0
        assert one("gauged_gauge_read_errors_total", station=sid, gauge=gauge) == \
            s["gauge"]["errors"]
        assert one("gauged_gauge_fault", station=sid, gauge=gauge) == 0.0
        assert one("gauged_gauge_last_good_timestamp_seconds", station=sid, gauge=gauge) == \
            pytest.approx(_ts(s["gauge"]["last_good"]))
        # daemon-clock seconds at the moment of each request (here 60 per real second)
        assert 0 <= one("gauged_station_reading_age_seconds", station=sid) <= 2 * 180
        # every cycle read every gauge once (the next cycle's read may have begun)
        assert one("gauged_gauge_read_duration_seconds_count", station=sid, gauge=gauge) in \
            (st["cycles"], st["cycles"] + 1)
        if s["kind"] == "level":
            assert one("gauged_station_freeboard_meters", station=sid) == s["freeboard_m"]
            assert one("gauged_station_level_meters", station=sid) == s["level_m"]
        else:
            for window in ("10m", "60m", "24h"):
                assert one("gauged_station_rain_millimeters", station=sid, window=window) == \
                    s[f"rain_{window}_mm"]
    for bus, b in st["buses"].items():
        assert one("gauged_bus_connected", bus=bus) == 1.0
        assert 0.0 <= one("gauged_bus_load_ratio", bus=bus) < 1.0
        assert one("gauged_bus_read_seconds", bus=bus) == b["read_s"]
    influx = st["uplinks"]["influx"]
    assert one("gauged_uplink_connected", uplink="influx") == 1.0
    assert one("gauged_uplink_connected", uplink="mqtt") == 1.0
    # the uplink works on its own pace: /status (read after the scrape) may be further on
    assert one("gauged_spool_depth_points") >= 0
    assert 0 < one("gauged_influx_written_points_total") <= influx["written"]
    assert one("gauged_spool_dropped_points_total") == influx["dropped"] == 0
    # the spool's size, read from the writer's typed health (it was never exported while
    # /metrics guessed at /status keys: the spool reports `queued_bytes`)
    assert "gauged_spool_bytes" in m
    assert one("gauged_spool_bytes") >= 0
    assert abs(one("gauged_influx_last_success_timestamp_seconds") - time.time()) < 30
    assert one("gauged_last_cycle_timestamp_seconds") == \
        pytest.approx(_ts(st["last_cycle"]))


def test_healthz_answers_ok_while_cycles_run(rig: Rig) -> None:
    with _HTTP.open(url(rig, "/healthz"), timeout=5) as r:
        assert r.status == 200
        assert json.load(r) == {"status": "ok"}


def test_sec_2_status_server_is_read_only_and_listens_on_loopback(rig: Rig) -> None:
    for path in ("/", "/status", "/metrics", "/healthz"):
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            request = urllib.request.Request(url(rig, path), data=b"{}", method=method)
            with pytest.raises(urllib.error.HTTPError) as err:
                _HTTP.open(request, timeout=5)
            assert err.value.code == 405, (method, path)
        with _HTTP.open(url(rig, path), timeout=5) as r:
            assert r.status == 200
    # the daemon's listening socket, as the kernel lists it: 127.0.0.1, nothing wider
    port = rig.ports["status"]
    listening = [line.split()[1] for path in ("/proc/net/tcp", "/proc/net/tcp6")
                 for line in Path(path).read_text().splitlines()[1:]
                 if line.split()[3] == "0A" and line.split()[1].endswith(f":{port:04X}")]
    assert listening == [f"0100007F:{port:04X}"], listening
    # and loopback is what a configuration gets when it says nothing
    text = rig.config.read_text(encoding="utf-8")
    line = 'host = "127.0.0.1"              # the status server binds loopback only by default\n'
    assert line in text
    bare = rig.workdir / "no-status-host.toml"
    bare.write_text(text.replace(line, ""), encoding="utf-8")
    assert load_config(bare).status.host == "127.0.0.1"


def gauged(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gauged", *args], capture_output=True,
                          text=True, timeout=30, cwd=ROOT)


def test_gauged_status_prints_one_screen(rig: Rig) -> None:
    config = load_config(rig.config)
    proc = gauged("status", "--url", url(rig))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) <= 30, proc.stdout  # one screen
    assert lines[0].startswith(f"gauged {config.gateway.id} · RUNNING, healthy · ")
    assert "JST" in lines[0]  # local time of the gateway
    for sid, st in config.stations.items():
        line = next(x for x in lines if x.startswith(f"{sid} "))
        assert st.name[:6] in line
        assert ", good" in line  # reading age and quality
    shin = next(x for x in lines if x.startswith("shin_hiroo "))
    assert " m " in shin  # freeboard in metres
    for zid in config.zones:
        assert any(x.startswith(f"{zid} ") for x in lines)
    assert "INHIBITS none" in lines
    [uplinks] = [x for x in lines if x.startswith("UPLINKS ")]
    assert "influx up" in uplinks

    raw = gauged("status", "--url", url(rig), "--json")
    assert raw.returncode == 0, raw.stderr
    doc = json.loads(raw.stdout)
    assert doc["gateway"] == config.gateway.id
    assert set(doc["stations"]) == set(config.stations)


def test_gauged_status_says_when_the_daemon_is_unreachable() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    proc = gauged("status", "--url", dead)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert f"gauged status: the daemon is not reachable at {dead}/status" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_page_follows_an_escalation_by_itself(rig: Rig, browser: Any, tmp_path: Path) -> None:
    """The page reloads itself: no reload here, only waiting for what a person would see."""
    config = load_config(rig.config)
    names = ["normal", *(s.name for s in config.stations["shin_hiroo"].stages)]
    browser.get(url(rig))
    seen: dict[str, Any] = {}

    def shows_broadcast() -> bool:
        page = browser.execute_script(READ_PAGE)
        if page is None:  # between two loads
            return False
        seen.update(page)
        shin = next(s for s in page["stations"] if s["id"] == "shin_hiroo")
        zone = next(z for z in page["zones"] if z["id"] == "furukawa_hiroo")
        return bool(shin["stage"] >= 2 and "last broadcast: none" not in zone["text"])

    wait_until(shows_broadcast, 120, "the page to show shin_hiroo at notice and its "
               "broadcast", interval=0.5)
    shin = next(s for s in seen["stations"] if s["id"] == "shin_hiroo")
    stage = shin["stage"]
    assert shin["stageText"] == f"STAGE {stage} · {names[stage].upper()}"
    assert seen["banner"].startswith("Highest stage ")  # rain may be higher
    assert f"新広尾公園 (STAGE {stage} · {names[stage].upper()})" in seen["banner"]
    zone = next(z for z in seen["zones"] if z["id"] == "furukawa_hiroo")
    assert "新広尾公園 stage" in zone["text"]
    assert "level_" in zone["text"]
    assert "rising" in shin["trend"], shin["trend"]
    assert seen["scrollWidth"] <= PHONE_W
    # what the phone shows: the first screen, and the whole page, for a person to judge
    first = tmp_path / "status-page-phone.png"
    browser.save_screenshot(str(first))
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": PHONE_W, "height": int(height), "deviceScaleFactor": 1, "mobile": True})
    shot = tmp_path / "status-page-full.png"
    browser.save_screenshot(str(shot))
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": PHONE_W, "height": PHONE_H, "deviceScaleFactor": 2, "mobile": True})
    assert first.stat().st_size > 10_000
    print(f"screenshots: {first} {shot}")


def test_metrics_count_finished_broadcasts_and_their_latency(rig: Rig) -> None:
    st = rig.wait_for_status(lambda s: s["zones"]["furukawa_hiroo"]["last"] is not None,
                             timeout=120, what="a finished broadcast on furukawa_hiroo")
    with _HTTP.open(url(rig, "/metrics"), timeout=5) as r:
        families = {f.name: f for f in text_string_to_metric_families(r.read().decode())}
    done = [s for s in families["gauged_broadcasts"].samples
            if s.name == "gauged_broadcasts_total" and s.labels["zone"] == "furukawa_hiroo"]
    assert sum(s.value for s in done) >= 1
    latency = {s.name: s.value for s in families["gauged_broadcast_latency_seconds"].samples
               if s.labels.get("zone") == "furukawa_hiroo"}
    assert latency["gauged_broadcast_latency_seconds_count"] >= 1
    assert 0 < latency["gauged_broadcast_latency_seconds_sum"] < 1.0
    started = _ts(st["zones"]["furukawa_hiroo"]["last"]["started"])
    last = next(s.value for s in families["gauged_zone_last_broadcast_timestamp_seconds"]
                .samples if s.labels["zone"] == "furukawa_hiroo")
    assert last >= started


def _ts(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()
