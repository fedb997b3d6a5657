"""The status page: what an operator on duty reads on a phone, served at `/`.

One server-rendered HTML document, no script, no external asset (the gateway has no
internet): inline CSS, an inline SVG chart per station, a `<meta http-equiv="refresh">` that
reloads it about three times a cycle. It shows, from the `/status` snapshot and the
daemon's in-memory history (gauged/ops/history.py):

- whether the daemon is alive (health, last cycle and how long ago) and the highest stage;
- every station: name as configured (Japanese in the reference), stage as number, name and
  colour (never colour alone), freeboard (level) or rain totals (10 min, 60 min, 24 h),
  trend and minutes to the next stage, reading age and quality, the last six hours; a level
  station with two gauges also each gauge's level and quality, whether they agree and which
  one is in charge;
- every zone: broadcasting or idle, its last broadcast; maintenance inhibits; buses, uplinks
  and the spool; recent faults.

Read-only: no form, no control. Everything that comes from the configuration or a device
is escaped. Times are local (gateway.timezone).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from gauged.ops.history import HOURS, Point
from gauged.ops.metrics import unix_time

# Stage colours: green, then the Japanese river-warning ramp (yellow, red, purple, black).
STAGE_COLOURS = ("#1b7f3b", "#f2d024", "#f08c00", "#d32f2f", "#7b1fa2", "#111111")
STAGE_TEXT = ("#ffffff", "#111111", "#111111", "#ffffff", "#ffffff", "#ffffff")
FLAT_M_PER_H = 0.005  # below 5 mm/h the page calls the river steady
BANNER_MAX = 3  # stations named in the banner; every card shows its own stage

CHART_W, CHART_H, CHART_PAD = 300.0, 64.0, 4.0  # the plot; a strip below holds the time axis
AXIS_H = 9.0

CSS = """
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;padding:8px;font:15px/1.35 system-ui,-apple-system,"Hiragino Sans","Noto Sans CJK JP",
 "Noto Sans JP",sans-serif;background:#f4f5f7;color:#111;overflow-wrap:anywhere}
h1{font-size:18px;margin:0}h2{font-size:16px;margin:16px 0 6px}
header,.card,.row{background:#fff;border:1px solid #d0d4da;border-radius:8px;padding:8px 10px;
 margin:0 0 8px}
.alive{font-weight:700}.alive.ok{color:#1b7f3b}.alive.failing{color:#c62828}
.banner{border-radius:8px;padding:8px 10px;margin:0 0 8px;font-weight:700;font-size:16px}
.card{border-left-width:8px}
.top{display:flex;flex-wrap:wrap;justify-content:space-between;align-items:baseline;gap:4px}
.name{font-size:17px;font-weight:700}.id{color:#555;font-size:12px;font-weight:400}
.stage{display:inline-block;border-radius:4px;padding:1px 8px;font-weight:700;
 white-space:nowrap}
.value{font-size:22px;font-weight:700}.unit{font-size:14px;font-weight:400}
.meta{color:#444;font-size:13px}.warn{color:#b71c1c;font-weight:700}
.gauges{margin-top:2px;padding-left:8px;border-left:2px solid #e3e6ea}
.totals{display:flex;flex-wrap:wrap;gap:4px 14px}
svg.chart{display:block;width:100%;height:auto;margin-top:4px;background:#fafbfc;
 border:1px solid #e3e6ea;border-radius:4px}
ul{margin:0;padding-left:18px}
footer{color:#555;font-size:12px;margin-top:12px}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def refresh_s(status: Mapping[str, Any]) -> int:
    """Reload about three times a cycle, between every 2 s (accelerated clocks) and 30 s."""
    interval = float(status.get("poll_interval_s") or 180) / float(status.get("clock_speed")
                                                                    or 1.0)
    return int(min(30.0, max(2.0, interval / 3.0)))


def render_page(status: Mapping[str, Any], history: Mapping[str, Sequence[Point]]) -> str:
    """The whole page for one `/status` snapshot."""
    tz = zone_info(status.get("timezone"))
    now = parse_time(status.get("time")) or datetime.now(tz)
    stations: Mapping[str, Any] = status.get("stations", {})
    inhibits = list(status.get("inhibits") or [])
    parts = [_header(status, now, tz), _banner(stations), _fault_banner(stations)]
    for kind, title in (("level", "River level"), ("rain", "Rain")):
        cards = [_station(sid, st, history.get(sid, ()), now, tz, inhibits,
                          float(status.get("poll_interval_s") or 180))
                 for sid, st in stations.items() if st.get("kind") == kind]
        if cards:
            parts.append(f'<h2>{title}</h2><div id="{kind}">{"".join(cards)}</div>')
    parts.append(_acks(status.get("acks") or {}, tz))
    parts += [_zones(status.get("zones", {}), stations, tz), _inhibits(inhibits, tz),
              _plant(status, now), _faults(status.get("faults", [])),
              _site(status.get("site") or {})]
    every = refresh_s(status)
    gateway = _e(status.get("gateway", ""))
    return (
        '<!DOCTYPE html>\n<html lang="ja"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f'<meta http-equiv="refresh" content="{every}">'
        f"<title>gauged {gateway}</title><style>{CSS}</style></head><body>"
        + "".join(parts)
        + f'<footer>Read-only page; it reloads every {every} s. '
          'Raw data: <a href="status">/status</a> · <a href="metrics">/metrics</a>'
          "</footer></body></html>\n")


# ---- sections -----------------------------------------------------------------------


def _header(status: Mapping[str, Any], now: datetime, tz: ZoneInfo) -> str:
    health = [h for h in status.get("health", []) if h != "ok"]
    alive = ('<span class="alive ok" id="health">RUNNING · healthy</span>' if not health else
             f'<span class="alive failing" id="health">FAILING: {_e("; ".join(health))}</span>')
    last = parse_time(status.get("last_cycle"))
    cycle = "no cycle yet" if last is None else (
        f"last cycle {_clock(last, tz)} ({ago((now - last).total_seconds())})")
    speed = status.get("clock_speed") or 1.0
    fast = "" if speed == 1.0 else f" · clock ×{_e(speed)}"
    return (f'<header data-cycles="{int(status.get("cycles", 0))}"><div class="top">'
            f'<h1>gauged {_e(status.get("gateway", ""))}</h1>'
            f'{alive}</div><div class="meta">{_e(_stamp(now, tz))} · {_e(cycle)} · '
            f'{_e(status.get("cycles", 0))} cycles{fast}</div></header>')


def _banner(stations: Mapping[str, Any]) -> str:
    raised = sorted(((st.get("stage", 0), sid) for sid, st in stations.items()
                     if st.get("stage", 0) > 0), reverse=True)
    if not raised:
        return _badge_div(0, "All stations normal", "banner")
    top = raised[0][0]
    names = ", ".join(f"{stations[sid].get('name') or sid} "
                      f"({_stage_text(stations[sid])})" for _, sid in raised[:BANNER_MAX])
    more = f" and {len(raised) - BANNER_MAX} more" if len(raised) > BANNER_MAX else ""
    return _badge_div(top, f"Highest stage {top}: {names}{more}", "banner")


def _fault_banner(stations: Mapping[str, Any]) -> str:
    """Gauges in gauge_fault, loudly: their stations' stages are held (or follow another),
    not measured."""
    faulty = [(sid, st) for sid, st in stations.items() if st.get("gauge_fault")]
    if not faulty:
        return ""
    items = "; ".join(f"{st.get('name') or sid}: {st['gauge_fault']} (stage "
                      f"{_stage_text(st)} held)" for sid, st in faulty)
    return (f'<div class="banner" id="gauge-faults" style="background:#fff3cd;color:#000">'
            f"Gauge fault — {_e(items)}</div>")


def _badge_div(stage: int, text: str, cls: str) -> str:
    return f'<div class="{cls}" id="{cls}" style="{_stage_style(stage)}">{_e(text)}</div>'


def _station(sid: str, st: Mapping[str, Any], points: Sequence[Point], now: datetime,
             tz: ZoneInfo, inhibits: Sequence[Mapping[str, Any]], interval_s: float) -> str:
    stage = int(st.get("stage", 0))
    name = st.get("name") or sid
    head = (f'<div class="top"><span class="name">{_e(name)} <span class="id">{_e(sid)}</span>'
            f'</span><span class="stage" style="{_stage_style(stage)}">{_e(_stage_text(st))}'
            "</span></div>")
    body = _level(st) if st.get("kind") == "level" else _rain(st)
    lines = [head, body, _reading(st, interval_s), _gauges(st)]
    for inh in inhibits:
        if inh.get("target") == f"station:{sid}":
            lines.append(f'<div class="warn">INHIBITED until {_e(_local_iso(inh.get("until"), tz))}'
                         f' — {_e(inh.get("reason", ""))}</div>')
    lines.append(_chart(st, points, now))
    border = STAGE_COLOURS[min(stage, len(STAGE_COLOURS) - 1)]
    return (f'<section class="card station" id="station-{_e(sid)}" data-station="{_e(sid)}" '
            f'data-stage="{stage}" style="border-left-color:{border}">{"".join(lines)}</section>')


def _level(st: Mapping[str, Any]) -> str:
    fb = st.get("freeboard_m")
    value = "—" if fb is None else f"{fb:.2f}"
    out = (f'<div><span class="meta">Freeboard </span><span class="value freeboard">{value}'
           '<span class="unit"> m</span></span><span class="meta"> below the top of the wall'
           "</span></div>")
    rate = st.get("rise_m_per_h")
    if rate is None:
        trend = "trend: not enough readings"
    elif abs(rate) < FLAT_M_PER_H:
        trend = "steady"
    else:
        trend = f"{'rising' if rate > 0 else 'falling'} {abs(rate):.2f} m/h"
    nxt = _next_stage(st)
    minutes = st.get("minutes_to_next")
    if nxt is None:
        eta = "at the top stage"
    elif minutes is not None:
        eta = f"{nxt['name']} ({nxt['threshold']:.2f} m) in {_minutes(minutes)}"
    else:
        eta = f"next: {nxt['name']} at {nxt['threshold']:.2f} m"
    return f'{out}<div class="trend">{_e(trend)} · {_e(eta)}</div>'


def _rain(st: Mapping[str, Any]) -> str:
    def mm(key: str) -> str:
        v = st.get(key)
        return "—" if v is None else f"{v:.1f}"

    partial = ' <span class="warn" title="readings missing in the window">(partial)</span>' \
        if st.get("rain_partial") else ""
    nxt = _next_stage(st)
    target = "" if nxt is None else f" · {nxt['name']} at {nxt['threshold']:g} mm"
    return (f'<div><span class="meta">60 min </span><span class="value rain60">{mm("rain_60m_mm")}'
            f'<span class="unit"> mm</span></span>{partial}<span class="meta">{_e(target)}'
            '</span></div><div class="totals rain">'
            f'<span>10 min <b class="rain10">{mm("rain_10m_mm")}</b> mm{_intensity(st)}</span>'
            f'<span>24 h <b class="rain24">{mm("rain_24h_mm")}</b> mm</span></div>')


def _intensity(st: Mapping[str, Any]) -> str:
    """The last ten minutes as an hourly rate: where the 60-minute total is heading."""
    v = st.get("rain_10m_mm")
    return "" if not v else f' <span class="meta">(≈{v * 6:.0f} mm/h)</span>'


def _reading(st: Mapping[str, Any], interval_s: float) -> str:
    quality = st.get("quality", "missing")
    age = st.get("reading_age_s")
    if age is None:
        read = '<span class="warn">no good reading yet</span>'
    elif age > 2 * interval_s:
        read = f'<span class="warn">STALE: last good reading {_e(ago(age))}</span>'
    else:
        read = f"read {_e(ago(age))}"
    q = f"quality {_e(quality)}" if quality == "good" else \
        f'<span class="warn">quality {_e(quality).upper()}</span>'
    reason = st.get("reason") if quality != "good" else ""
    fault = st.get("gauge_fault") or ""
    extra = "".join(f' · <span class="warn">{_e(x)}</span>' for x in (reason, fault) if x)
    errors = (st.get("gauge") or {}).get("error")
    if errors and not extra:
        extra = f' · <span class="warn">{_e(errors)}</span>'
    return f'<div class="meta reading">{read} · {q}{extra}</div>'


def _gauges(st: Mapping[str, Any]) -> str:
    """A station with two gauges: whether they agree and which carries the station's reading,
    then each gauge (its level, quality, and why it does not count when it does not)."""
    gauges: Mapping[str, Any] = st.get("gauges") or {}
    if len(gauges) < 2:
        return ""
    agree = st.get("gauges_agree")
    charge = [gid for gid, g in gauges.items() if g.get("in_charge")]
    tolerance = st.get("tolerance_m")
    within = "" if tolerance is None else f" (within {tolerance:.2f} m)"
    if agree:
        summary = f"Two gauges agree{within}: their mean is used"
    elif agree is False:
        spread = spread_m(gauges)
        by = "" if spread is None else f" by {spread:.2f} m"
        summary = (f'<span class="warn">Two gauges DISAGREE{by}</span>: the higher, '
                   f'{_e(" ".join(charge))}, is in charge')
    elif charge:
        summary = f'<span class="warn">One gauge only</span>: {_e(" ".join(charge))} in charge'
    else:
        summary = '<span class="warn">No gauge in charge</span>'
    rows = [f'<div class="gaugesum">{summary}</div>']
    for gid, g in gauges.items():
        quality = str(g.get("quality", "missing"))
        q = f"quality {_e(quality)}" if quality == "good" else \
            f'<span class="warn">quality {_e(quality).upper()}</span>'
        why = g.get("gauge_fault") or (g.get("reason") if quality != "good" else "")
        extra = f' · <span class="warn">{_e(why)}</span>' if why else ""
        mark = " · <b>in charge</b>" if g.get("in_charge") else ""
        rows.append(f'<div class="gauge" data-gauge="{_e(gid)}" '
                    f'data-in-charge="{int(bool(g.get("in_charge")))}">'
                    f'{_e(gid)}: <span class="gauge-value">{_e(_metres(g.get("value")))}</span>'
                    f" · {q}{mark}{extra}</div>")
    state = "agree" if agree else "disagree" if agree is False else "one" if charge else "none"
    return f'<div class="meta gauges" data-gauges="{state}">{"".join(rows)}</div>'


def spread_m(gauges: Mapping[str, Any]) -> float | None:
    """How far apart (m) the two gauges of a station read, if both read a level."""
    values = [float(v) for g in gauges.values() if isinstance(v := g.get("value"), int | float)]
    return abs(values[0] - values[1]) if len(values) == len(gauges) == 2 else None


def _metres(value: object) -> str:
    return f"{value:.2f} m" if isinstance(value, int | float) else "—"


def _zones(zones: Mapping[str, Any], stations: Mapping[str, Any], tz: ZoneInfo) -> str:
    rows = []
    for zid, z in zones.items():
        current = z.get("current")
        if z.get("busy") and current:
            state = (f'<span class="warn">BROADCASTING</span> {_e(_who(current, stations))}')
        else:
            state = "idle"
        last = z.get("last")
        if last:
            outcome = last.get("outcome") or last.get("status") or ""
            what = (f"{_local_iso(last.get('started'), tz)} · {_who(last, stations)} · "
                    f"{last.get('sequence', '')} · {outcome}")
        else:
            what = "none since the state store began"
        rows.append(f'<div class="row zone" id="zone-{_e(zid)}" data-zone="{_e(zid)}">'
                    f'<div class="top"><span class="name">{_e(z.get("name") or zid)} '
                    f'<span class="id">{_e(zid)}</span></span><span>{state}</span></div>'
                    f'<div class="meta">last broadcast: {_e(what)}</div></div>')
    return f'<h2>Zones</h2><div id="zones">{"".join(rows)}</div>'


def _who(b: Mapping[str, Any], stations: Mapping[str, Any]) -> str:
    sid = b.get("station", "")
    name = (stations.get(sid) or {}).get("name") or sid
    return f"{name} stage {b.get('stage', '?')} {b.get('stage_name', '')}"


def _inhibits(inhibits: Sequence[Mapping[str, Any]], tz: ZoneInfo) -> str:
    if not inhibits:
        return '<h2>Inhibits</h2><div class="row" id="inhibits">none</div>'
    items = "".join(
        f"<li><b>{_e(i.get('target', '?'))}</b> until {_e(_local_iso(i.get('until'), tz))}"
        f" — {_e(i.get('reason', ''))} ({_e(i.get('by', ''))})</li>" for i in inhibits)
    return f'<h2>Inhibits</h2><div class="row" id="inhibits"><ul>{items}</ul></div>'


def _acks(acks: Mapping[str, Mapping[str, Any]], tz: ZoneInfo) -> str:
    """Operators' acknowledgements of raised stations (gauged/store/acks.py)."""
    if not acks:
        return '<h2>Acknowledged</h2><div class="row" id="acks">none</div>'
    items = "".join(
        f'<li data-station="{_e(sid)}">{_e(sid)} at {_e(a.get("stage_name", ""))} by '
        f'{_e(a.get("by", ""))}, {_e(_local_iso(a.get("time"), tz))}'
        f'{" — " + _e(a["note"]) if a.get("note") else ""}</li>' for sid, a in acks.items())
    return ('<h2>Acknowledged</h2><div class="row" id="acks"><ul>' + items + "</ul>"
            "<small>An acknowledgement silences nothing.</small></div>")


def _plant(status: Mapping[str, Any], now: datetime) -> str:
    rows = []
    for name, up in sorted(status.get("uplinks", {}).items()):
        rows.append(f"<li>{_e(name)}: {_uplink(up)}</li>")
    if not rows:
        rows.append("<li>no uplink configured</li>")
    for name, bus in status.get("buses", {}).items():
        ok = "connected" if bus.get("connected") else '<span class="warn">DISCONNECTED</span>'
        read_s = float(bus.get("read_s") or 0)
        took = f", last cycle read {read_s * 1000:.0f} ms" if read_s else ""
        rows.append(f"<li>bus {_e(name)} ({_e(bus.get('kind', ''))}): {ok}{took}</li>")
    return ('<h2>Uplinks, spool, buses</h2><div class="row" id="uplinks">'
            f'<ul>{"".join(rows)}</ul></div>')


# keys an uplink reports, in the order and wording the page shows them
_UPLINK_KEYS = (("queued", "queued"), ("spool_depth", "spool"), ("spool_bytes", "spool bytes"),
                ("written", "written"), ("dropped", "dropped"), ("quarantined", "quarantined"),
                ("errors", "errors"))


def _uplink(up: Mapping[str, Any]) -> str:
    parts = ["up" if up.get("connected") else '<span class="warn">DOWN</span>']
    shown = {"connected", "last_error", "last_success"}
    for key, label in _UPLINK_KEYS:
        if key in up:
            parts.append(f"{label} {_e(up[key])}")
            shown.add(key)
    for key, v in up.items():  # whatever else it reports (a newer spool), as it is
        if key not in shown and isinstance(v, int | float | str | bool) and v != "":
            parts.append(f"{_e(key.replace('_', ' '))} {_e(v)}")
    ts = unix_time(up.get("last_success"))
    if ts is not None:
        parts.append(f"last write {_e(ago(datetime.now().timestamp() - ts))}")
    if up.get("last_error"):
        parts.append(f'<span class="warn">last error: {_e(up["last_error"])}</span>')
    return ", ".join(parts)


def _site(site: Mapping[str, Any]) -> str:
    """The site's health: standing alarms first (operator alarms, never a siren), then the
    readings and the battery estimate."""
    alarms = site.get("alarms") or []
    values = site.get("values") or {}
    if not alarms and not values:
        return ""
    rows = [f'<li class="warn">{_e(a.get("message", ""))}</li>' for a in alarms]
    if not alarms:
        rows.append("<li>no site alarm</li>")
    for source, estimate in (site.get("battery_estimate") or {}).items():
        rows.append(f"<li>battery {_e(source)}: {_e(estimate)}</li>")
    shown = ", ".join(f"{_e(k)} {_e('—' if v is None else f'{v:g}')}"
                      for k, v in values.items())
    rows.append(f"<li>{shown}</li>")
    return f'<h2>Site health</h2><div class="row" id="site"><ul>{"".join(rows)}</ul></div>'


def _faults(faults: Sequence[str]) -> str:
    if not faults:
        return ""
    items = "".join(f"<li>{_e(f)}</li>" for f in list(faults)[-5:])
    return f'<h2>Recent faults</h2><div class="row" id="faults"><ul>{items}</ul></div>'


# ---- the chart ------------------------------------------------------------------------


def _chart(st: Mapping[str, Any], points: Sequence[Point], now: datetime) -> str:
    """The last hours as an SVG line: freeboard drawn upside down (water rising goes up,
    the top of the wall is the top), rain totals from zero up; dashed lines at the stage
    thresholds in view; a gap where a reading was missing or bad."""
    level = st.get("kind") == "level"
    end = now.timestamp()
    start = end - HOURS * 3600.0
    pts = [p for p in points if p.ts >= start]
    values = [p.value for p in pts if p.value is not None]
    label = "freeboard (m)" if level else "60-min rain (mm)"
    head = (f'<svg class="chart" viewBox="0 0 {CHART_W:g} {CHART_H + AXIS_H:g}" role="img" '
            f'aria-label="{_e(label)}, last {HOURS:g} hours" data-points="{len(values)}">'
            f'<line x1="0" x2="{CHART_W:g}" y1="{CHART_H:g}" y2="{CHART_H:g}" stroke="#ccd"/>'
            + "".join(f'<text x="{CHART_W * i / 2:g}" y="{CHART_H + AXIS_H - 1.5:g}" '
                      f'font-size="7" fill="#555" text-anchor="{anchor}">{text}</text>'
                      for i, (text, anchor) in enumerate(
                          ((f"−{HOURS:g} h", "start"), (f"−{HOURS / 2:g} h", "middle"),
                           ("now", "end")))))
    if not values:
        return head + (f'<text x="{CHART_W / 2:g}" y="{CHART_H / 2:g}" text-anchor="middle" '
                       'font-size="10" fill="#777">no readings yet</text></svg>')
    thresholds = [(g["name"], float(g["threshold"])) for g in st.get("stages", [])]
    nxt = _next_stage(st)
    span = values + ([float(nxt["threshold"])] if nxt is not None else [])
    lo, hi = min(span), max(span)
    if not level:
        lo = 0.0
    least = 0.2 if level else 5.0
    if hi - lo < least:
        mid = (hi + lo) / 2
        lo, hi = (mid - least / 2, mid + least / 2) if level else (0.0, max(hi, least))
    pad = (hi - lo) * 0.08
    lo, hi = (lo - pad if level else lo), hi + pad
    inner = CHART_H - 2 * CHART_PAD

    def x(ts: float) -> float:
        return (ts - start) / (end - start) * CHART_W

    def y(v: float) -> float:
        frac = (v - lo) / (hi - lo)
        return CHART_PAD + (frac if level else 1.0 - frac) * inner

    out = [head]
    above: float | None = None  # the line of the label drawn last, top to bottom
    for name, thr in sorted(thresholds, key=lambda nt: y(nt[1])):
        if lo <= thr <= hi:
            yy = y(thr)
            # a label too close to the line above it goes under its own line
            ty = yy + 7 if above is not None and yy - above < 8 else yy - 1.5
            above = yy
            out.append(f'<line x1="0" x2="{CHART_W:g}" y1="{yy:.1f}" y2="{yy:.1f}" '
                       'stroke="#c62828" stroke-width="0.6" stroke-dasharray="3 3"/>'
                       f'<text x="2" y="{ty:.1f}" font-size="7" fill="#c62828">'
                       f"{_e(name)} {thr:g}</text>")
    segments: list[list[str]] = [[]]
    for p in pts:
        if p.value is None:
            segments.append([])
        else:
            segments[-1].append(f"{x(p.ts):.1f},{y(p.value):.1f}")
    for seg in segments:
        if len(seg) == 1:
            cx, cy = seg[0].split(",")
            out.append(f'<circle cx="{cx}" cy="{cy}" r="1.5" fill="#0d47a1"/>')
        elif seg:
            out.append(f'<polyline fill="none" stroke="#0d47a1" stroke-width="1.6" '
                       f'points="{" ".join(seg)}"/>')
    last = next((p for p in reversed(pts) if p.value is not None), None)
    if last is not None and last.value is not None:
        out.append(f'<circle cx="{x(last.ts):.1f}" cy="{y(last.value):.1f}" r="2.2" '
                   'fill="#0d47a1"/>')
    out.append("</svg>")
    return "".join(out)


# ---- small helpers ----------------------------------------------------------------------


def _next_stage(st: Mapping[str, Any]) -> dict[str, Any] | None:
    stages = st.get("stages") or []
    stage = int(st.get("stage", 0))
    return dict(stages[stage]) if stage < len(stages) else None


def _stage_text(st: Mapping[str, Any]) -> str:
    stage = int(st.get("stage", 0))
    name = str(st.get("stage_name", ""))
    return "NORMAL" if stage == 0 else f"STAGE {stage} · {name.upper()}"


def _stage_style(stage: int) -> str:
    i = min(max(stage, 0), len(STAGE_COLOURS) - 1)
    return f"background:{STAGE_COLOURS[i]};color:{STAGE_TEXT[i]}"


def zone_info(name: object) -> ZoneInfo:
    try:
        return ZoneInfo(str(name or "UTC"))
    except (KeyError, ValueError):
        return ZoneInfo("UTC")


def parse_time(iso: object) -> datetime | None:
    if not isinstance(iso, str) or not iso:
        return None
    try:
        return datetime.fromisoformat(iso)
    except ValueError:
        return None


def _stamp(when: datetime, tz: ZoneInfo) -> str:
    return when.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z")


def _clock(when: datetime, tz: ZoneInfo) -> str:
    return when.astimezone(tz).strftime("%H:%M:%S")


def _local_iso(iso: object, tz: ZoneInfo) -> str:
    when = parse_time(iso)
    return "?" if when is None else when.astimezone(tz).strftime("%m-%d %H:%M %Z")


def ago(seconds: float) -> str:
    s = max(0.0, seconds)
    if s < 90:
        return f"{s:.0f} s ago"
    if s < 5400:
        return f"{s / 60:.0f} min ago"
    return f"{s / 3600:.1f} h ago"


def _minutes(minutes: float) -> str:
    if minutes <= 0:
        return "now"
    if minutes < 90:
        return f"{minutes:.0f} min"
    return str(timedelta(minutes=round(minutes)))[:-3] + " h"
