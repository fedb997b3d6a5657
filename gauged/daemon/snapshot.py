"""The status snapshot: what /status shows (and, through it, /metrics, the page and
`gauged status`), built from the parts' typed state.

`status` reads the daemon through `DaemonView` (gauged/daemon/view.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from datetime import datetime
from typing import Any

from gauged.alarm.engine import Engine
from gauged.alarm.quality import GaugeReading, Quality
from gauged.alarm.types import StationState
from gauged.config.settings import Config
from gauged.daemon.view import DaemonView
from gauged.field.zones import ZoneBroadcaster
from gauged.health import GaugeHealth
from gauged.ops.inhibits import Inhibits, inhibit_json
from gauged.store.state import SavedBroadcast
from gauged.uplinks.base import Uplink


def status(d: DaemonView) -> dict[str, Any]:
    """Everything /status shows."""
    keeper, store = d.keeper, d.store
    return {
        "gateway": d.gateway,
        "time": d.clock.now().isoformat(),
        "timezone": d.config.gateway.timezone,
        "poll_interval_s": d.config.gateway.poll_interval_s,
        "clock_speed": d.clock.speed,
        "cycles": d.cycles,
        "last_cycle": d.last_cycle.isoformat() if d.last_cycle else None,
        "health": d.health() or ["ok"],
        "stations": stations(
            d.config, d.engine, d.states, d.poller.health,
            restored=keeper.restored.get("stations", {}), inhibits=d.inhibits,
            now=d.clock.now()),
        "zones": zones(d.config, d.zones, inhibits=d.inhibits, stored_last=keeper.stored_last),
        "buses": {n: {"kind": b.kind, "connected": b.connected, "read_s": b.read_s}
                  for n, b in d.poller.buses(d.hubs).items()},
        "uplinks": uplinks(d.uplinks),
        "faults": d.faults[-20:],
        "state": {"path": str(store.path) if store and store.path else None,
                  "fresh": store.fresh if store else True,
                  "problem": store.problem if store else "",
                  "restored": keeper.restored},
        # what the start found unfinished in the broadcast journal, and what it did with
        # each (replayed, reported, superseded: gauged/daemon/restore.py); the cut ones also
        # under their old name
        "restart_broadcasts": keeper.restart_broadcasts,
        "interrupted_broadcasts": keeper.interrupted,
        "inhibits": d.inhibits.snapshot() if d.inhibits is not None else [],
        "commands": d.commands.snapshot() if d.commands is not None else None,
        "clock_skew_s": round(d.clock.skew(), 1),
        "tests": d.tests.snapshot() if d.tests is not None else {},
        "site": d.site.snapshot(),
    }


def stations(config: Config, engine: Engine, states: Mapping[str, StationState],
             gauges: Mapping[str, GaugeHealth], *, restored: Mapping[str, int],
             inhibits: Inhibits | None, now: datetime) -> dict[str, Any]:
    """Every station: its config, its last state (or the stage restored at start), its gauge."""
    tz = config.gateway.timezone
    channels = config.channels()
    out = {}
    for sid, st in config.stations.items():
        s = states.get(sid)
        entry: dict[str, Any] = {"name": st.name, "kind": st.kind, "zones": st.zones,
                                 "stages": [{"name": g.name, "threshold": g.threshold}
                                            for g in st.stages]}
        if s is not None:
            entry |= s.as_json(tz)
        else:  # no cycle yet: the stage restored at start (or normal)
            stage = engine.stages[sid]
            entry |= {"stage": stage, "stage_name": engine.machines[sid].rule.names[stage],
                      "quality": Quality.MISSING.value}
        entry["restored_stage"] = restored.get(sid)
        inhibit = inhibits.station_inhibit(sid) if inhibits else None
        entry["inhibited_until"] = inhibit_json(inhibit)["until"] if inhibit else None
        health = gauges[sid]
        # a station with two gauges: the age of the newer good reading of either
        goods = [good for c, (owner, _) in channels.items()
                 if owner == sid and (good := gauges[c].last_good) is not None]
        last_good = max(goods) if goods else None
        entry["reading_age_s"] = None if last_good is None else round(
            (now - last_good).total_seconds(), 1)
        entry["gauge"] = {"error": health.error, "errors": health.errors,
                          "polled": health.polled, "status_word": health.status,
                          "last_good": health.last_good.isoformat()
                          if health.last_good else None}
        if st.second_gauge is not None:
            entry["tolerance_m"] = st.tolerance
            if s is not None and len(s.gauges) == 2:
                a, b = s.gauges
                entry |= redundant((a, b), st.tolerance, {
                    gid: gauges[c] for c, (owner, gid) in channels.items() if owner == sid})
        out[sid] = entry
    return out


def redundant(readings: tuple[GaugeReading, GaugeReading], tolerance: float,
              health: Mapping[str, GaugeHealth]) -> dict[str, Any]:
    """A two-gauge station's `gauges` (each gauge's reading, its read errors and last good
    reading, and whether it carries the station's reading: `in_charge`) and `gauges_agree`
    (both good and within the tolerance: true; both good but further apart: false; else
    null: there is nothing to compare)."""
    agree, charge = in_charge(*readings, tolerance)
    out = {}
    for r in readings:
        h = health[r.gauge]
        out[r.gauge] = r.as_json() | {
            "in_charge": r.gauge in charge, "errors": h.errors,
            "last_good": h.last_good.isoformat() if h.last_good else None}
    return {"gauges": out, "gauges_agree": agree}


def in_charge(a: GaugeReading, b: GaugeReading,
              tolerance: float) -> tuple[bool | None, tuple[str, ...]]:
    """Whether two gauges agree (None unless both are good) and which of them carry the
    station's reading, as `combine` (gauged/alarm/quality.py) decides it: both when they
    agree (their mean), the higher when they disagree, the good one when only one is, none
    when neither is. tests/unit/test_redundant_gauges.py holds this to `combine`."""
    if not (a.good and b.good):
        return None, tuple(r.gauge for r in (a, b) if r.good)
    assert a.value is not None
    assert b.value is not None
    if abs(a.value - b.value) <= tolerance:
        return True, (a.gauge, b.gauge)
    return False, ((a if a.value > b.value else b).gauge,)  # the higher level


def zones(config: Config, broadcasters: Mapping[str, ZoneBroadcaster], *,
          inhibits: Inhibits | None,
          stored_last: Mapping[str, SavedBroadcast]) -> dict[str, Any]:
    """Every zone: busy or not, inhibited or not, what it plays and what it played last."""
    return {
        zid: {"name": config.zones[zid].name, "busy": z.current is not None,
              "inhibited": bool(inhibits and inhibits.zone_inhibited(zid)),
              "current": z.current.as_json() if z.current else None,
              "last": z.last.as_json() | {"status": "finished"} if z.last else
              stored_last[zid].as_json() if zid in stored_last else None}
        for zid, z in broadcasters.items()
    }


def uplinks(parts: list[Uplink]) -> dict[str, Any]:
    """Each uplink's typed health, under its name."""
    return {u.name: asdict(u.health()) for u in parts}
