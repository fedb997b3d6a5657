"""`gauged status`: the /status JSON as a terminal page."""

from __future__ import annotations

from typing import Any


def render(status: dict[str, Any]) -> str:
    """A compact, fixed-width view of a /status document."""
    lines = [
        f"gauged {status['gateway']}  time {status['time']}  cycles {status['cycles']}  "
        f"health {', '.join(status['health'])}",
        "",
        f"{'station':<20} {'kind':<5} {'stage':<9} {'value':>12} {'quality':<8} reading time",
    ]
    for sid, st in status["stations"].items():
        if st["kind"] == "level":
            v = st.get("freeboard_m")
            value = "—" if v is None else f"{v:.2f} m"
        else:
            v = st.get("rain_60m_mm")
            value = "—" if v is None else f"{v:.1f} mm/h"
        lines.append(f"{sid:<20} {st['kind']:<5} {st['stage_name']:<9} {value:>12} "
                     f"{st['quality']:<8} {st.get('local_time', '—')}")
    lines.append("")
    for zid, z in status["zones"].items():
        last = z.get("last")
        what = "—" if not last else (f"{last['sequence']} ({last['station']}, "
                                     f"{last['started']})")
        lines.append(f"zone {zid:<20} {'BROADCASTING' if z['busy'] else 'idle':<13} "
                     f"last: {what}")
    for name, up in status.get("uplinks", {}).items():
        lines.append(f"uplink {name}: {'up' if up.get('connected') else 'DOWN'}"
                     + (f", queued {up['queued']}" if "queued" in up else ""))
    return "\n".join(lines)
