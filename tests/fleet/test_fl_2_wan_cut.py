"""FL-2: the WAN of two gateways cut for 30 simulated minutes during the storm.

Three gateways at 120 × (a cycle every 1.5 s); ward-01 and ward-02 reach the centre (both
brokers, vmagent) through relays the test cuts (tests/fleet/wan.py), ward-03 directly.
During the cut their sirens and announcements must be exactly what the replay of their
scenario calls for (the siren never waits for the network); the centre shows them dark
(their last will) and, once they are back, current within a cycle of reconnecting; after
the drain the TSDB holds every cycle of every station on both nodes.

The gateway's MQTT reconnect backoff runs on the wall clock (up to 60 s), not on the
accelerated clock: "back" is when the gateway has reconnected, which at 1 × is well within
a 3-minute cycle.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fleetrig import ViewThread, export
from hil import ROOT, expected_timeline
from services import wait_until
from wan import Wan

from gauged.fleet.stack import FleetStack, Gateway

SPEED = 120.0
INTERVAL = 180.0
CUT = ("ward-01", "ward-02")
AMP = {"furukawa_hiroo": 1, "furukawa_shirokane": 3, "ward": 5}
SIREN = {"furukawa_hiroo": 0, "furukawa_shirokane": 2}
PUSHED = '{__name__=~"level_stage|rain_stage"}'
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))

Fleet = tuple[FleetStack, ViewThread, dict[str, Wan]]


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    wans: dict[str, Wan] = {}

    def route(gw: str, kind: str, port: int) -> int:
        if gw not in CUT:
            return port
        wans[f"{gw}/{kind}/{port}"] = wan = Wan(port)  # both brokers are cut, and vmagent
        return wan.port

    # the spool's writer retries every 2 s at most, so the drain starts soon after the cut
    stack = FleetStack(tmp_path, 3, speed=SPEED, lag_min=9.0, route=route,
                       env={"GAUGED_INFLUX__BACKOFF_MAX_S": "2"})
    view = ViewThread(stack)
    try:
        stack.central.start()
        view.start()
        stack.start_gateways()
        yield stack, view, wans
    finally:
        view.close()
        stack.close()
        for wan in wans.values():
            wan.close()


def gateway_doc(view: ViewThread, gw: str) -> dict[str, Any]:
    return next(g for g in view.snapshot()["gateways"] if g["id"] == gw)


def status(g: Gateway) -> dict[str, Any]:
    with HTTP.open(f"{g.status_url}/status", timeout=5) as r:
        doc: dict[str, Any] = json.load(r)
        return doc


def storm_over(g: Gateway, end_ts: float) -> bool:
    s = status(g)
    return (s["last_cycle"] is not None
            and datetime.fromisoformat(s["last_cycle"]).timestamp() >= end_ts
            and not any(z["busy"] for z in s["zones"].values()))


def actuation(g: Gateway, start_ts: float) -> dict[int, list[tuple[int, bool]]]:
    out: dict[int, list[tuple[int, bool]]] = {}
    path = g.records / "relays.jsonl"
    for line in path.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        if r["value"] != r["previous"]:
            cycle = int((datetime.fromisoformat(r["t_sim"]).timestamp() - start_ts)
                        // INTERVAL)
            out.setdefault(int(r["coil"]), []).append((cycle, bool(r["value"])))
    return out


def replay(stack: FleetStack, g: Gateway) -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-m", "gauged", "replay", "--config", str(g.config), "--start",
         stack.start_time.isoformat(), "--json", str(g.scenario)],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=True).stdout
    return [json.loads(line) for line in out.splitlines()]


def test_fl_2_wan_cut_on_two_gateways_sirens_as_replay_centre_dark_then_complete(
        fleet: Fleet) -> None:
    stack, view, wans = fleet
    start = stack.start_ts

    def sim_at(minutes: float) -> bool:
        return stack.sim_now().timestamp() >= start + minutes * 60

    wait_until(lambda: all(not g["dark"] and g["age_s"] is not None
                           for g in view.snapshot()["gateways"]), 30, "every gateway live")
    # the storm rises on ward-01 from minute 36 and on ward-02 from minute 45
    wait_until(lambda: sim_at(45), 60, "minute 45 of the storm")
    for wan in wans.values():
        wan.cut()
    wait_until(lambda: all(gateway_doc(view, gw)["dark"] for gw in CUT), 10,
               "the cut gateways dark at the centre")
    assert all(gateway_doc(view, gw)["availability"] == "offline" for gw in CUT)  # LWT
    assert not gateway_doc(view, "ward-03")["dark"]
    cut_at = stack.sim_now().timestamp()
    wait_until(lambda: stack.sim_now().timestamp() >= cut_at + 30 * 60, 30,
               "30 simulated minutes of cut")
    for wan in wans.values():
        wan.restore()

    def online() -> bool:
        return all(gateway_doc(view, gw)["availability"] == "online" for gw in CUT)

    wait_until(online, 70, "the cut gateways reconnected (their backoff: at most 60 s)")
    back = time.monotonic()

    def current() -> bool:
        now = stack.sim_now()
        return all((now - datetime.fromisoformat(s["time"])).total_seconds() <= INTERVAL
                   for s in view.snapshot()["stations"] if s["gateway"] in CUT)

    wait_until(current, stack.cycle_real_s + 0.5, "the cut gateways current within a cycle")
    assert not any(g["dark"] for g in view.snapshot()["gateways"])
    assert time.monotonic() - back <= stack.cycle_real_s + 0.5

    # the storm plays out on both cut gateways (4 h after each one's lag)
    for k, gw in enumerate(CUT):
        g = stack.gateway(gw)
        wait_until(lambda g=g, k=k: storm_over(g, start + 4 * 3600 + k * 540), 120,
                   f"the storm to play out on {gw}")
    stack.stop_gateways()
    for gw in CUT:
        g = stack.gateway(gw)
        events = replay(stack, g)
        assert actuation(g, start) == expected_timeline(events, start, AMP, SIREN), gw
        played: dict[str, list[str]] = {}
        for r in (json.loads(x) for x in
                  (g.records / "audio.jsonl").read_text(encoding="utf-8").splitlines()):
            played.setdefault(r["zone"], []).append(r["clip"])
        wanted: dict[str, list[str]] = {}
        for e in events:
            if e["event"] == "broadcast" and e["outcome"] in ("done", "pre-empted"):
                wanted.setdefault(e["zone"], []).extend(e["clips"])
        assert played == wanted, gw
        assert wanted, f"{gw}: the storm broadcast nothing"

    # after the drain: every cycle of every station, on both nodes, the cut included
    step = int(INTERVAL * 1000)
    seen: dict[tuple[str, str], list[int]] = {}

    def complete() -> bool:
        stack.central.flush()
        a, b = (export(n.url, PUSHED) for n in stack.central.nodes)
        seen.clear()
        for labels, stamps in a.items():
            d = dict(labels)
            seen[(d["gateway"], d["station"])] = stamps
        return a == b and len(seen) == 33 and all(
            v == list(range(v[0], v[-1] + step, step)) and v[-1] >= (start + 4 * 3600) * 1000
            for (gw, _), v in seen.items() if gw in CUT)

    wait_until(complete, 60, "both nodes complete after the drain", interval=0.5)
    for (gw, station), stamps in seen.items():
        if gw in CUT:
            assert stamps[0] <= cut_at * 1000 - step, (gw, station)
