"""The fleet view's model (gauged/fleet/view.py): darkness, order, redeliveries, tolerance
of unknown fields. Pure logic: messages are fed with an injected arrival time."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from gauged.fleet.page import render_fleet
from gauged.fleet.view import BrokerAddress, FleetState


def state_msg(stage: int, level: float = 1.0, **extra: Any) -> bytes:
    return json.dumps({"time": "2026-12-08T00:00:00+00:00", "stage": stage,
                       "stage_name": ["normal", "watch", "notice"][stage], "quality": "good",
                       "level_m": level, "rise_m_per_h": 0.2, "gauge_fault": None}
                      | extra).encode()


def fed(now: float = 1000.0) -> FleetState:
    fleet = FleetState(cycle_s=3.0)
    fleet.started = now - 100
    fleet.apply("primary", "gauged/gw1/availability", b"online", False, now)
    fleet.apply("primary", "gauged/gw1/station/a/state", state_msg(0), False, now)
    fleet.apply("primary", "gauged/gw1/station/b/state", state_msg(2, 3.5), False, now)
    fleet.apply("primary", "gauged/gw2/availability", b"online", False, now)
    fleet.apply("primary", "gauged/gw2/station/c/state", state_msg(1), False, now)
    return fleet


def test_raised_stations_come_first_then_by_gateway_and_station() -> None:
    doc = fed().snapshot(1000.5)
    assert [(s["gateway"], s["station"], s["stage"]) for s in doc["stations"]] == [
        ("gw1", "b", 2), ("gw2", "c", 1), ("gw1", "a", 0)]
    b = doc["stations"][0]
    assert (b["value"], b["unit"], b["trend"], b["age_s"]) == (3.5, "m", "rising", 0.5)
    assert [g["raised"] for g in doc["gateways"]] == [1, 1]


def test_a_gateway_is_dark_after_two_silent_cycles_or_by_its_last_will() -> None:
    fleet = fed()
    assert not any(g["dark"] for g in fleet.snapshot(1005.9)["gateways"])
    fleet.apply("primary", "gauged/gw2/station/c/state", state_msg(1), False, 1004.0)
    dark = {g["id"]: g["dark"] for g in fleet.snapshot(1006.1)["gateways"]}
    assert dark == {"gw1": True, "gw2": False}  # 6.1 s > two 3-s cycles of silence
    fleet.apply("primary", "gauged/gw2/availability", b"offline", True, 1006.2)
    doc = fleet.snapshot(1006.3)
    assert all(g["dark"] for g in doc["gateways"])
    assert all(s["gateway_dark"] for s in doc["stations"])


def test_online_on_either_broker_is_online() -> None:
    fleet = fed()
    fleet.apply("backup", "gauged/gw1/availability", b"offline", True, 1000.0)
    gw1 = fleet.snapshot(1001.0)["gateways"][0]
    assert (gw1["availability"], gw1["dark"]) == ("online", False)
    assert gw1["brokers"] == {"backup": "offline", "primary": "online"}


def test_retained_only_gateway_has_no_age_and_goes_dark_without_live_messages() -> None:
    fleet = FleetState(cycle_s=3.0)
    fleet.started = 1000.0
    fleet.apply("primary", "gauged/gw9/availability", b"online", True, 1000.0)
    fleet.apply("primary", "gauged/gw9/station/a/state", state_msg(1), True, 1000.0)
    assert fleet.snapshot(1001.0)["gateways"][0]["age_s"] is None
    assert not fleet.snapshot(1001.0)["gateways"][0]["dark"]
    assert fleet.snapshot(1006.5)["gateways"][0]["dark"]


def test_redelivered_events_are_kept_once_and_extra_fields_are_tolerated() -> None:
    fleet = fed()
    event = json.dumps({"id": "e-1", "zone": "z", "station": "b", "stage_name": "notice",
                        "outcome": "done", "started": "2026-12-08T00:00:00+00:00",
                        "something_new": [1, 2]}).encode()
    for _ in range(3):  # a QoS-1 redelivery repeats the id
        fleet.apply("primary", "gauged/gw1/event/broadcast", event, False, 1001.0)
    fleet.apply("backup", "gauged/gw1/event/broadcast", event, False, 1001.0)
    assert len(fleet.snapshot(1001.0)["broadcasts"]) == 1
    fleet.apply("primary", "gauged/gw1/station/a/state",
                state_msg(0, id="s-9", unknown={"x": 1}), False, 1001.0)
    assert fleet.snapshot(1001.0)["stations"][-1]["station"] == "a"


def test_junk_is_ignored() -> None:
    fleet = fed()
    for topic, payload in (("gauged/gw1/station/a/state", b"not json"),
                           ("gauged/gw1/station/a/state", b"[1, 2]"),
                           ("other/gw1/station/a/state", state_msg(2)),
                           ("gauged", b"x")):
        fleet.apply("primary", topic, payload, False, 1000.0)
    assert fleet.snapshot(1000.0)["stations"][-1]["stage"] == 0


def test_page_names_every_gateway_and_escapes_text() -> None:
    fleet = fed()
    fleet.apply("primary", "gauged/gw1/station/<x>/state", state_msg(1), False, 1000.0)
    page = render_fleet(fleet.snapshot(1000.0))
    assert 'data-gateway="gw1"' in page
    assert 'data-gateway="gw2"' in page
    assert "<x>" not in page
    assert "&lt;x&gt;" in page


def test_broker_address_parsing() -> None:
    assert BrokerAddress.parse("10.0.0.1:8883", 0) == BrokerAddress("10.0.0.1", 8883, "primary")
    assert BrokerAddress.parse("b:1", 1).name == "backup"
    for bad in ("nohost", ":1883", "h:x"):
        with pytest.raises(ValueError, match=re.escape(repr(bad))):
            BrokerAddress.parse(bad, 0)
