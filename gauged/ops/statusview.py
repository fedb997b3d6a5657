"""`gauged status`: the /status document as one terminal screen.

The same facts as the status page (gauged/ops/page.py), for an operator on a console: whether
the daemon is alive, the highest stage, every station (stage, freeboard and trend, or rain
totals; reading age and quality; under a station with two gauges, each gauge and which one
is in charge), the zones and their last broadcasts, inhibits, uplinks and buses, the last
faults. Local times (gateway.timezone); columns are aligned in terminal
cells, so Japanese names (two cells a character) line up too.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from gauged.ops.metrics import unix_time
from gauged.ops.page import ago, parse_time, spread_m, zone_info

FLAT_M_PER_H = 0.005
WIDTH = 120  # terminal cells a line may take


def cells(text: str) -> int:
    """Terminal cells `text` takes (wide and full-width characters take two)."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def pad(text: str, width: int) -> str:
    """`text` cut or padded to `width` terminal cells."""
    out, used = [], 0
    for c in text:
        w = cells(c)
        if used + w > width:
            break
        out.append(c)
        used += w
    return "".join(out) + " " * (width - used)


def cut(text: str, width: int) -> str:
    """`text`, ending in "…" if it takes more than `width` terminal cells."""
    return text if cells(text) <= width else pad(text, width - 1).rstrip() + "…"


def render(status: Mapping[str, Any]) -> str:
    """A one-screen view of a /status document."""
    tz = zone_info(status.get("timezone"))
    now = parse_time(status.get("time"))
    health = [h for h in status.get("health", []) if h != "ok"]
    alive = "RUNNING, healthy" if not health else "FAILING: " + "; ".join(health)
    last = parse_time(status.get("last_cycle"))
    cycle = "no cycle yet" if last is None else (
        f"cycle {status.get('cycles', 0)} at {_hm(last, tz)}"
        + ("" if now is None else f" ({ago((now - last).total_seconds())})"))
    speed = status.get("clock_speed") or 1.0
    lines = [f"gauged {status.get('gateway', '?')} · {alive} · "
             f"{'?' if now is None else now.astimezone(tz).strftime('%Y-%m-%d %H:%M:%S %Z')}"
             f" · {cycle}" + ("" if speed == 1.0 else f" · clock ×{speed:g}")]
    stations: Mapping[str, Any] = status.get("stations", {})
    raised = sorted(((st.get("stage", 0), sid) for sid, st in stations.items()
                     if st.get("stage", 0) > 0), reverse=True)
    lines.append("All stations normal" if not raised else "Raised: " + ", ".join(
        f"{sid} {_stage(stations[sid])}" for _, sid in raised))
    level = {s: st for s, st in stations.items() if st.get("kind") == "level"}
    rain = {s: st for s, st in stations.items() if st.get("kind") != "level"}
    if level:
        lines += ["", f"{pad('RIVER', 30)} {pad('stage', 12)} {'freeboard':>9}  "
                  f"{pad('trend', 32)} reading"]
        for sid, st in level.items():
            fb = st.get("freeboard_m")
            lines.append(f"{_name(sid, st)} {pad(_stage(st), 12)} "
                         f"{'—' if fb is None else f'{fb:.2f} m':>9}  {pad(_trend(st), 32)} "
                         f"{_reading(st)}")
            if len(st.get("gauges") or {}) >= 2:
                lines.append(cut(_gauges(st, WIDTH), WIDTH))
    if rain:
        lines += ["", f"{pad('RAIN', 30)} {pad('stage', 12)} {'10 min':>7} {'60 min':>7} "
                  f"{'24 h':>7}  reading"]
        for sid, st in rain.items():
            lines.append(f"{_name(sid, st)} {pad(_stage(st), 12)} {_mm(st, 'rain_10m_mm')} "
                         f"{_mm(st, 'rain_60m_mm')} {_mm(st, 'rain_24h_mm')}  {_reading(st)}")
    lines += ["", "ZONES"]
    for zid, z in status.get("zones", {}).items():
        current = z.get("current")
        state = f"BROADCASTING {_who(current)}" if z.get("busy") and current else "idle"
        last_b = z.get("last")
        what = "none" if not last_b else (
            f"{_hm(parse_time(last_b.get('started')), tz)} {_who(last_b)} "
            f"{last_b.get('outcome') or last_b.get('status') or ''}".rstrip())
        label = f"{zid} {z.get('name') or ''}"
        lines.append(f"{pad(label, 36)} {state} · last: {what}")
    inhibits = status.get("inhibits") or []
    lines.append("")
    lines.append("INHIBITS " + ("none" if not inhibits else "; ".join(
        f"{i.get('target', '?')} until {_hm(parse_time(i.get('until')), tz)} "
        f"({i.get('reason', '')}, {i.get('by', '')})" for i in inhibits)))
    acks = status.get("acks") or {}
    if acks:  # operators' acknowledgements (gauged/store/acks.py): they silence nothing
        lines.append("ACKED " + "; ".join(
            f"{sid} at {a.get('stage_name', '')} by {a.get('by', '')} "
            f"{_hm(parse_time(a.get('time')), tz)}" for sid, a in acks.items()))
    ups = [f"{name} {_uplink(up)}" for name, up in sorted(status.get("uplinks", {}).items())]
    lines.append("UPLINKS " + ("; ".join(ups) if ups else "none configured"))
    lines.append("BUSES " + "; ".join(
        f"{name} {'up' if b.get('connected') else 'DOWN'} "
        f"{float(b.get('read_s') or 0) * 1000:.0f} ms"
        for name, b in status.get("buses", {}).items()))
    site = status.get("site") or {}
    if site.get("alarms") or site.get("battery_hours_left"):
        alarms = [str(a.get("message", "")) for a in site.get("alarms") or []]
        estimates = [f"battery {b}: {e}" for b, e in (site.get("battery_estimate") or {}).items()]
        lines.append("SITE " + "; ".join(alarms + estimates or ["no site alarm"]))
    faults = status.get("faults") or []
    if faults:
        lines.append("FAULTS (last 3): " + " | ".join(str(f) for f in faults[-3:]))
    return "\n".join(lines)


def _name(sid: str, st: Mapping[str, Any]) -> str:
    return pad(f"{sid} {st.get('name') or ''}", 30)


def _stage(st: Mapping[str, Any]) -> str:
    stage = int(st.get("stage", 0))
    return "normal" if stage == 0 else f"{stage} {str(st.get('stage_name', '')).upper()}"


def _trend(st: Mapping[str, Any]) -> str:
    rate = st.get("rise_m_per_h")
    if rate is None:
        trend = "—"
    elif abs(rate) < FLAT_M_PER_H:
        trend = "steady"
    else:
        trend = f"{'↑' if rate > 0 else '↓'} {abs(rate):.2f} m/h"
    minutes = st.get("minutes_to_next")
    stages = st.get("stages") or []
    stage = int(st.get("stage", 0))
    if minutes is not None and stage < len(stages):
        trend += f", {stages[stage]['name']} in {minutes:.0f} min"
    return trend


def _mm(st: Mapping[str, Any], key: str) -> str:
    v = st.get(key)
    return f"{'—' if v is None else f'{v:.1f}':>7}"


def _reading(st: Mapping[str, Any]) -> str:
    age = st.get("reading_age_s")
    quality = str(st.get("quality", "missing"))
    when = "never read well" if age is None else ago(float(age))
    out = f"{when}, {quality if quality == 'good' else quality.upper()}"
    fault = st.get("gauge_fault")
    return out + (f" ({fault})" if fault else "")


def _gauges(st: Mapping[str, Any], width: int) -> str:
    """The line under a station with two gauges: do they agree, what each read, which is in
    charge, and why a gauge does not count (the reasons share what is left of `width`)."""
    gauges: Mapping[str, Any] = st.get("gauges") or {}
    agree = st.get("gauges_agree")
    tolerance = st.get("tolerance_m")
    if agree:
        head = "agree" + ("" if tolerance is None else f" within {tolerance:.2f} m") + \
            ", mean used"
    elif agree is False:
        spread = spread_m(gauges)
        head = f"DISAGREE{'' if spread is None else f' by {spread:.2f} m'}, the higher used"
    elif any(g.get("in_charge") for g in gauges.values()):
        head = "ONE in charge"
    else:
        head = "NONE in charge"
    parts, whys = [], []
    for gid, g in gauges.items():
        v = g.get("value")
        quality = str(g.get("quality", "missing"))
        part = f"{gid} {'—' if not isinstance(v, int | float) else f'{v:.2f} m'} " + (
            quality if quality == "good" else quality.upper())
        if g.get("in_charge") and not agree:  # agreeing, both are
            part += " (in charge)"
        parts.append(part)
        whys.append(str(g.get("gauge_fault") or (g.get("reason") if quality != "good" else "")
                        or ""))
    start = f"  gauges {head}: "
    # the shorter reason whole if it fits, the longer one what is left (" (…)": 3 cells)
    room = width - cells(start + " · ".join(parts))
    todo = sorted((i for i, w in enumerate(whys) if w), key=lambda i: cells(whys[i]))
    for n, i in enumerate(todo):
        share = room // (len(todo) - n) - 3
        if share < 8:
            break
        shown = cut(whys[i], share)
        parts[i] += f" ({shown})"
        room -= cells(shown) + 3
    return start + " · ".join(parts)


def _who(b: Mapping[str, Any]) -> str:
    return f"{b.get('station', '?')} {b.get('stage_name', '')}"


def _uplink(up: Mapping[str, Any]) -> str:
    parts = ["up" if up.get("connected") else "DOWN"]
    for key in ("queued", "spool_depth", "written", "dropped", "quarantined", "errors"):
        if key in up:
            parts.append(f"{key.replace('_', ' ')} {up[key]}")
    ts = unix_time(up.get("last_success"))
    if ts is not None:
        parts.append(f"last write {ago(datetime.now().timestamp() - ts)}")
    if up.get("last_error"):
        parts.append(f"last error: {up['last_error']}")
    return ", ".join(parts)


def _hm(when: datetime | None, tz: ZoneInfo) -> str:
    return "?" if when is None else when.astimezone(tz).strftime("%H:%M")
