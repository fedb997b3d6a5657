"""Writes the dashboards in dashboards/ (run: python3 contrib/grafana/build.py).

The JSON files are what Grafana loads (provisioning/dashboards/gauged.yml); this script is
how they are kept consistent (one datasource, one panel layout). Every panel query is run
against VictoriaMetrics by tests/integration/test_fl_1_4_5_7_central.py (QUALITY FL-7).
Series: `<measurement>_<field>` pushed by each gateway's spool (timestamps: the cycle), and
`gauged_*` scraped from each gateway's /metrics (README "Running a fleet").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "victoriametrics"}
STAGE_STEPS = [  # the gateway page's stage colours (gauged/ops/page.py)
    {"color": "#1b7f3b", "value": None}, {"color": "#f2d024", "value": 1},
    {"color": "#f08c00", "value": 2}, {"color": "#d32f2f", "value": 3},
    {"color": "#7b1fa2", "value": 4}]


def panel(pid: int, title: str, exprs: list[tuple[str, str]], *, kind: str = "timeseries",
          unit: str = "short", x: int = 0, y: int = 0, w: int = 12, h: int = 8,
          thresholds: list[dict[str, Any]] | None = None,
          description: str = "") -> dict[str, Any]:
    field: dict[str, Any] = {"defaults": {"unit": unit}, "overrides": []}
    if thresholds is not None:
        field["defaults"]["thresholds"] = {"mode": "absolute", "steps": thresholds}
        if kind == "timeseries":
            field["defaults"]["custom"] = {"thresholdsStyle": {"mode": "line+area"}}
    return {"id": pid, "type": kind, "title": title, "description": description,
            "datasource": DS, "gridPos": {"x": x, "y": y, "w": w, "h": h},
            "fieldConfig": field,
            "targets": [{"refId": chr(65 + i), "datasource": DS, "expr": expr,
                         "legendFormat": legend} for i, (expr, legend) in enumerate(exprs)]}


def variable(name: str, query: str, label: str, *, multi: bool = False) -> dict[str, Any]:
    return {"name": name, "label": label, "type": "query", "datasource": DS,
            "query": {"query": query, "refId": name}, "definition": query, "refresh": 2,
            "multi": multi, "includeAll": multi, "allValue": ".+" if multi else None,
            "sort": 1}


def dashboard(uid: str, title: str, panels: list[dict[str, Any]],
              variables: list[dict[str, Any]]) -> dict[str, Any]:
    return {"uid": uid, "title": title, "tags": ["gauged"], "timezone": "browser",
            "schemaVersion": 39, "version": 1, "refresh": "30s", "editable": True,
            "time": {"from": "now-6h", "to": "now"}, "panels": panels,
            "templating": {"list": variables}, "annotations": {"list": []}}


GATEWAYS = variable("gateway", "label_values(gauged_info, gateway)", "Gateway", multi=True)

CITY = dashboard("gauged-city", "gauged: city overview", [
    panel(1, "Raised stations (stage > 0)", [
        ('max by (gateway, station) (gauged_station_stage{gateway=~"$gateway"}) > 0',
         "{{gateway}} {{station}}")], kind="stat", thresholds=STAGE_STEPS, w=8,
        description="Stations whose stage is above normal, as each gateway reports now."),
    panel(2, "Gateways answering", [('up{job="gauged",gateway=~"$gateway"}', "{{gateway}}")],
          kind="stat", x=8, w=8, thresholds=[{"color": "#d32f2f", "value": None},
                                             {"color": "#1b7f3b", "value": 1}]),
    panel(3, "Stage changes (last hour)", [
        ('sum by (gateway) (count_over_time(stage_change_to_stage{gateway=~"$gateway"}[1h]))',
         "{{gateway}}")], kind="bargauge", x=16, w=8),
    panel(4, "River levels", [('level_level_m{gateway=~"$gateway"}',
                               "{{gateway}} {{station}}")], unit="lengthm", y=8),
    panel(5, "Rain, 60 minutes", [('rain_total_60m_mm{gateway=~"$gateway"}',
                                   "{{gateway}} {{station}}")], unit="lengthmm", x=12, y=8),
    panel(6, "Stage per station", [('max by (gateway, station) (level_stage{gateway=~"$gateway"})'
                                    , "{{gateway}} {{station}}"),
                                   ('max by (gateway, station) (rain_stage{gateway=~"$gateway"})'
                                    , "{{gateway}} {{station}}")],
          y=16, w=24, thresholds=STAGE_STEPS),
    panel(7, "Broadcasts", [
        ('sum by (gateway, zone) (count_over_time(broadcast_stage{gateway=~"$gateway"}[1h]))',
         "{{gateway}} {{zone}}")], kind="bargauge", y=24),
    panel(8, "Gauge faults now", [('sum by (gateway) (gauged_station_gauge_fault'
                                   '{gateway=~"$gateway"})', "{{gateway}}")], x=12, y=24),
], [GATEWAYS])

STATION = dashboard("gauged-station", "gauged: station detail", [
    panel(1, "Freeboard (thresholds: the reference river stages)", [
        ('level_freeboard_m{gateway="$gateway",station="$river"}', "freeboard")],
        unit="lengthm", w=24, thresholds=[
            {"color": "#7b1fa2", "value": None}, {"color": "#d32f2f", "value": 0.0},
            {"color": "#f08c00", "value": 1.0}, {"color": "#f2d024", "value": 2.0},
            {"color": "#1b7f3b", "value": 2.58}],
        description="Distance from the water to the top of the wall; the coloured bands are "
                    "watch 2.58 m, notice 2.0 m, warning 1.0 m, overflow 0 m"),
    panel(2, "Level", [('level_level_m{gateway="$gateway",station="$river"}', "level")],
          unit="lengthm", y=8),
    panel(3, "Stage", [('level_stage{gateway="$gateway",station="$river"}', "stage")],
          x=12, y=8, thresholds=STAGE_STEPS),
    panel(4, "Quality (0 good, 1 suspect, 2 bad, 3 missing)", [
        ('level_quality{gateway="$gateway",station="$river"}', "quality")], y=16),
    panel(5, "Gauge raw value", [('gauge_raw{gateway="$gateway",station="$river"}',
                                  "{{gauge}}")], x=12, y=16),
    panel(6, "Rain, 60 minutes (thresholds: the reference rain stages)", [
        ('rain_total_60m_mm{gateway="$gateway",station="$raingauge"}', "60 min")],
        unit="lengthmm", y=24, w=24, thresholds=[
            {"color": "#1b7f3b", "value": None}, {"color": "#f2d024", "value": 25.0},
            {"color": "#f08c00", "value": 30.0}, {"color": "#d32f2f", "value": 50.0}]),
    panel(7, "Rain per cycle", [('rain_increment_mm{gateway="$gateway",station="$raingauge"}',
                                 "increment")], unit="lengthmm", y=32),
    panel(8, "Rain stage", [('rain_stage{gateway="$gateway",station="$raingauge"}', "stage")],
          x=12, y=32, thresholds=STAGE_STEPS),
], [variable("gateway", "label_values(gauged_info, gateway)", "Gateway"),
    variable("river", 'label_values(level_level_m{gateway="$gateway"}, station)', "River"),
    variable("raingauge", 'label_values(rain_total_60m_mm{gateway="$gateway"}, station)',
             "Rain gauge")])

HEALTH = dashboard("gauged-gateways", "gauged: gateway health", [
    panel(1, "Answering (/metrics)", [('up{job="gauged",gateway=~"$gateway"}', "{{gateway}}")],
          thresholds=[{"color": "#d32f2f", "value": None}, {"color": "#1b7f3b", "value": 1}]),
    panel(2, "Cycles per minute", [('rate(gauged_cycles_total{gateway=~"$gateway"}[5m]) * 60',
                                    "{{gateway}}")], x=12),
    panel(3, "Spool depth (points waiting for the TSDB)", [
        ('gauged_spool_depth_points{gateway=~"$gateway"}', "{{gateway}} now"),
        ('spool_points{gateway=~"$gateway"}', "{{gateway}} per cycle")], y=8),
    panel(4, "Points written per second", [
        ('rate(gauged_influx_written_points_total{gateway=~"$gateway"}[5m])', "{{gateway}}")],
        x=12, y=8),
    panel(5, "Buses connected", [('gauged_bus_connected{gateway=~"$gateway"}',
                                  "{{gateway}} {{bus}}"),
                                 ('bus_connected{gateway=~"$gateway"}',
                                  "{{gateway}} {{bus}} (per cycle)")], y=16),
    panel(6, "Bus read time per cycle", [('bus_read_s{gateway=~"$gateway"}',
                                          "{{gateway}} {{bus}}")], unit="s", x=12, y=16),
    panel(7, "Gauge read errors", [
        ('sum by (gateway) (increase(gauged_gauge_read_errors_total{gateway=~"$gateway"}[5m]))',
         "{{gateway}}")], y=24),
    panel(8, "Uplinks working", [('gauged_uplink_connected{gateway=~"$gateway"}',
                                  "{{gateway}} {{uplink}}")], x=12, y=24),
], [GATEWAYS])

if __name__ == "__main__":
    for name, doc in (("city-overview", CITY), ("station-detail", STATION),
                      ("gateway-health", HEALTH)):
        (HERE / "dashboards" / f"{name}.json").write_text(
            json.dumps(doc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
