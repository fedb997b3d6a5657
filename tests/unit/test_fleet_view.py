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
    event = json.dumps({"event_id": "gw1-k3x-7", "gateway": "gw1", "id": 12, "zone": "z",
                        "station": "b", "stage_name": "notice", "outcome": "done",
                        "started": "2026-12-08T00:00:00+00:00",
                        "something_new": [1, 2]}).encode()
    for _ in range(3):  # a QoS-1 redelivery repeats the event_id
        fleet.apply("primary", "gauged/gw1/event/broadcast", event, False, 1001.0)
    fleet.apply("backup", "gauged/gw1/event/broadcast", event, False, 1001.0)  # failover copy
    assert len(fleet.snapshot(1001.0)["broadcasts"]) == 1
    fleet.apply("primary", "gauged/gw1/station/a/state",
                state_msg(0, id="s-9", unknown={"x": 1}), False, 1001.0)
    assert fleet.snapshot(1001.0)["stations"][-1]["station"] == "a"


def test_events_sharing_an_id_but_not_an_event_id_are_both_kept() -> None:
    """`id` is a journal row or a command id, not the event's: two tests run by one command
    (or two events of one journal row) are two events."""
    fleet = fed()
    for n, outcome in ((1, "passed"), (2, "failed")):
        fleet.apply("primary", "gauged/gw1/event/fault", json.dumps(
            {"event_id": f"gw1-k3x-{n}", "gateway": "gw1", "id": "c-0001", "kind": "relay",
             "what": "siren", "detail": outcome}).encode(), False, 1001.0)
    faults = fleet.snapshot(1001.0)["faults"]
    assert [f["detail"] for f in faults] == ["failed", "passed"]
    # the same event_id on another gateway is another event
    fleet.apply("primary", "gauged/gw2/event/fault", json.dumps(
        {"event_id": "gw1-k3x-1", "kind": "relay"}).encode(), False, 1001.0)
    assert len(fleet.snapshot(1001.0)["faults"]) == 3


def test_events_without_event_id_are_kept_once_per_body() -> None:
    fleet = fed()
    body = json.dumps({"kind": "relay", "what": "amp", "detail": "x"}).encode()
    for _ in range(2):
        fleet.apply("primary", "gauged/gw1/event/fault", body, False, 1001.0)
    fleet.apply("primary", "gauged/gw1/event/fault",
                json.dumps({"kind": "relay", "what": "amp", "detail": "y"}).encode(),
                False, 1001.0)
    assert [f["detail"] for f in fleet.snapshot(1001.0)["faults"]] == ["y", "x"]


def ack_msg(stage: int, by: str = "op-tanaka", time: str = "2026-12-08T01:30:00+00:00",
            **extra: Any) -> bytes:
    return json.dumps({"station": "b", "stage": stage, "stage_name": "notice", "by": by,
                       "time": time, "command_id": "c-1", "note": "on site",
                       "cleared": False, "cleared_time": None, "cleared_why": ""}
                      | extra).encode()


def station(doc: dict[str, Any], gw: str, sid: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in doc["stations"]
                                 if (s["gateway"], s["station"]) == (gw, sid))
    return found


def test_a_retained_ack_is_shown_on_its_station_until_cleared() -> None:
    fleet = fed()
    assert station(fleet.snapshot(1000.0), "gw1", "b")["ack"] is None
    fleet.apply("primary", "gauged/gw1/station/b/ack", ack_msg(2), True, 1000.0)
    doc = fleet.snapshot(1000.0)
    assert station(doc, "gw1", "b")["ack"] == {
        "by": "op-tanaka", "time": "2026-12-08T01:30:00+00:00", "stage": 2,
        "stage_name": "notice", "note": "on site", "command_id": "c-1"}
    assert [s["ack"] for s in doc["stations"] if s["station"] != "b"] == [None, None]
    page = render_fleet(doc)
    assert 'data-station="b" data-stage="2" data-ack="op-tanaka"' in page
    assert "op-tanaka, 2026-12-08 01:30 UTC, at notice · on site" in page
    assert 'data-station="a" data-stage="0" data-ack=""' in page
    fleet.apply("primary", "gauged/gw1/station/b/ack", b"", True, 1001.0)  # cleared
    assert station(fleet.snapshot(1001.0), "gw1", "b")["ack"] is None
    fleet.apply("primary", "gauged/gw1/station/b/ack", ack_msg(2, cleared=True), False, 1002.0)
    assert station(fleet.snapshot(1002.0), "gw1", "b")["ack"] is None


def test_an_ack_that_no_longer_holds_is_not_shown() -> None:
    """Above the acknowledged stage, or back at normal, the station is not being seen to,
    whatever a broker still retains."""
    fleet = fed()
    fleet.apply("primary", "gauged/gw1/station/b/ack", ack_msg(1, stage_name="watch"), True,
                1000.0)
    assert station(fleet.snapshot(1000.0), "gw1", "b")["ack"] is None  # b is at stage 2
    fleet.apply("primary", "gauged/gw1/station/b/ack", ack_msg(2), True, 1000.0)
    fleet.apply("primary", "gauged/gw1/station/b/state", state_msg(0), False, 1001.0)
    assert station(fleet.snapshot(1001.0), "gw1", "b")["ack"] is None
    fleet.apply("primary", "gauged/gw1/station/b/state", state_msg(1), False, 1002.0)
    assert station(fleet.snapshot(1002.0), "gw1", "b")["ack"]["by"] == "op-tanaka"


def test_the_broker_the_gateway_is_on_tells_the_ack() -> None:
    """A backup still retains an ack the gateway cleared on the primary after failing back:
    the broker where the gateway is online is believed; with none online, the newest."""
    fleet = fed()
    fleet.apply("backup", "gauged/gw1/availability", b"offline", True, 1000.0)
    fleet.apply("backup", "gauged/gw1/station/b/ack", ack_msg(2, by="op-old"), True, 1000.0)
    fleet.apply("primary", "gauged/gw1/station/b/ack", b"", True, 1000.0)
    assert station(fleet.snapshot(1000.0), "gw1", "b")["ack"] is None
    fleet.apply("primary", "gauged/gw1/station/b/ack",
                ack_msg(2, by="op-new", time="2026-12-08T01:40:00+00:00"), False, 1001.0)
    assert station(fleet.snapshot(1001.0), "gw1", "b")["ack"]["by"] == "op-new"
    fleet.apply("primary", "gauged/gw1/availability", b"offline", True, 1002.0)
    assert station(fleet.snapshot(1002.0), "gw1", "b")["ack"]["by"] == "op-new"


def test_junk_acks_are_none() -> None:
    fleet = fed()
    for payload in (b"not json", b"[1]", json.dumps({"stage": "x", "by": "y"}).encode()):
        fleet.apply("primary", "gauged/gw1/station/b/ack", payload, True, 1000.0)
        assert station(fleet.snapshot(1000.0), "gw1", "b")["ack"] is None


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
