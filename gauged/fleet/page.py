"""The fleet page: one screen for the city, in the style of the gateway page
(gauged/ops/page.py: its CSS and stage colours), server-rendered, no script, reloading."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from gauged.ops.page import CSS, STAGE_COLOURS, STAGE_TEXT

FLEET_CSS = """
.scroll{overflow-x:auto;margin:0 0 8px}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{border-bottom:1px solid #e3e6ea;padding:3px 6px;text-align:left;font-size:14px}
tr.dark td{color:#888;background:#eceff1}
.pill{display:inline-block;border-radius:4px;padding:0 6px;font-weight:700}
.online{background:#1b7f3b;color:#fff}.offline,.darkpill{background:#37474f;color:#fff}
"""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _ago(age: object) -> str:
    if not isinstance(age, int | float):
        return "—"
    return f"{age:.0f} s ago" if age < 120 else f"{age / 60:.0f} min ago"


def _stage(stage: int, name: object) -> str:
    k = max(0, min(stage, len(STAGE_COLOURS) - 1))
    return (f'<span class="stage" style="background:{STAGE_COLOURS[k]};color:{STAGE_TEXT[k]}">'
            f"{_e(name or stage)}</span>")


def _gateways(gateways: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for g in gateways:
        word = "DARK" if g["dark"] else "online"
        pill = "darkpill" if g["dark"] else "online"
        rows.append(
            f'<tr class="{"dark" if g["dark"] else "live"}" data-gateway="{_e(g["id"])}" '
            f'data-dark="{str(g["dark"]).lower()}"><td>{_e(g["id"])}</td>'
            f'<td><span class="pill {pill}">{word}</span> {_e(g["availability"])}</td>'
            f'<td>{_ago(g["age_s"])}</td><td>{g["stations"]}</td><td>{g["raised"]}</td></tr>')
    return ('<h2>Gateways</h2><div class="scroll"><table id="gateways">'
            "<tr><th>gateway</th><th>availability</th>"
            "<th>last heard</th><th>stations</th><th>raised</th></tr>" + "".join(rows)
            + "</table></div>")


def _value(s: Mapping[str, Any]) -> str:
    v = s.get("value")
    if not isinstance(v, int | float):
        return "—"
    return f"{v:.2f} m" if s["kind"] == "level" else f"{v:.1f} {_e(s['unit'])}"


def _when(text: object) -> str:
    """An ISO time as `YYYY-MM-DD HH:MM` (UTC), or the text as it came."""
    try:
        t = datetime.fromisoformat(str(text))
    except ValueError:
        return _e(text)
    return f"{t.astimezone(UTC):%Y-%m-%d %H:%M} UTC" if t.tzinfo else _e(text)


def _ack(ack: Mapping[str, Any] | None) -> str:
    """Who acknowledged the station, when, at what stage; "—" when nobody (in force)."""
    if not ack:
        return "—"
    note = f" · {_e(ack['note'])}" if ack.get("note") else ""
    return (f'<span class="ack">{_e(ack.get("by"))}, {_when(ack.get("time"))}, at '
            f'{_e(ack.get("stage_name") or ack.get("stage"))}{note}</span>')


def _stations(stations: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for s in stations:
        ack = s.get("ack")
        fault = f' <span class="warn">gauge fault: {_e(s["gauge_fault"])}</span>' \
            if s.get("gauge_fault") else ""
        rows.append(
            f'<tr class="{"dark" if s["gateway_dark"] else "live"}" '
            f'data-gateway="{_e(s["gateway"])}" data-station="{_e(s["station"])}" '
            f'data-stage="{s["stage"]}" data-ack="{_e(ack["by"] if ack else "")}">'
            f'<td>{_stage(s["stage"], s.get("stage_name"))}</td>'
            f'<td>{_e(s["gateway"])}</td><td>{_e(s["station"])}{fault}</td>'
            f'<td class="value">{_value(s)}</td><td>{_e(s["trend"])}</td>'
            f'<td>{_e(s.get("local_time"))}</td><td>{_ago(s.get("age_s"))}</td>'
            f'<td>{_ack(ack)}</td></tr>')
    return ('<h2>Stations (raised first)</h2><div class="scroll"><table id="stations">'
            "<tr><th>stage</th>"
            "<th>gateway</th><th>station</th><th>value</th><th>trend</th><th>reading</th>"
            "<th>received</th><th>acknowledged</th></tr>" + "".join(rows) + "</table></div>")


def _events(title: str, ident: str, items: Sequence[Mapping[str, Any]],
            fields: Sequence[str]) -> str:
    if not items:
        return f'<h2>{title}</h2><p id="{ident}" class="meta">none yet</p>'
    lines = "".join(
        "<li>" + _e(item.get("gateway")) + " · "
        + " · ".join(_e(item.get(f)) for f in fields if item.get(f) is not None) + "</li>"
        for item in items)
    return f'<h2>{title}</h2><ul id="{ident}">{lines}</ul>'


def render_fleet(doc: Mapping[str, Any], refresh_s: int = 5) -> str:
    now = datetime.fromtimestamp(float(doc["time"]), UTC)
    gateways = doc["gateways"]
    dark = sum(1 for g in gateways if g["dark"])
    raised = [s for s in doc["stations"] if s["stage"] > 0]
    brokers = " · ".join(f"{_e(name)} {'up' if up else 'DOWN'}"
                         for name, up in doc["brokers"].items())
    banner = ""
    if raised:
        names = ", ".join(f'{s["gateway"]}/{s["station"]}' for s in raised[:5])
        banner = (f'<div class="banner" id="raised" style="background:#d32f2f;color:#fff">'
                  f"{len(raised)} station(s) raised: {_e(names)}</div>")
    header = (f'<header><div class="top"><h1>gauged fleet</h1><span class="alive '
              f'{"failing" if dark else "ok"}" id="summary">{len(gateways)} gateways, '
              f"{dark} dark</span></div><div class=\"meta\">{now:%Y-%m-%d %H:%M:%S} UTC · "
              f"brokers: {brokers} · dark after {doc['dark_after_s']:g} s of silence"
              "</div></header>")
    faults = doc["gauge_faults"]
    fault_html = "" if not faults else (
        '<h2>Gauge faults</h2><ul id="gauge-faults">' + "".join(
            f'<li class="warn">{_e(s["gateway"])}/{_e(s["station"])}: {_e(s["gauge_fault"])}'
            "</li>" for s in faults) + "</ul>")
    parts = [header, banner, _gateways(gateways), _stations(doc["stations"]), fault_html,
             _events("Last broadcasts", "broadcasts", doc["broadcasts"],
                     ("zone", "station", "stage_name", "outcome", "started", "time")),
             _events("Last stage changes", "transitions", doc["transitions"],
                     ("station", "from", "to", "value", "time"))]
    return ('<!DOCTYPE html>\n<html lang="ja"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            f'<meta http-equiv="refresh" content="{refresh_s}">'
            f"<title>gauged fleet</title><style>{CSS}{FLEET_CSS}</style></head><body>"
            + "".join(parts)
            + '<footer>Read-only page, from the central brokers\' retained topics. '
              'Raw: <a href="fleet.json">fleet.json</a></footer></body></html>\n')
