"""The gateway's side of a fleet, without a broker: the brokers list, event ids, Home
Assistant discovery documents and the measurement prefix (DESIGN §7)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from gauged.config.models import BrokerConfig, InfluxConfig, MqttConfig
from gauged.uplinks import discovery, influx
from gauged.uplinks.mqtt import MqttPublisher, boot_id
from gauged.uplinks.records import Record


def test_brokers_list_in_either_form_and_the_single_broker_form_still_works() -> None:
    c = MqttConfig(brokers=["10.0.0.1:8883", {"host": "10.0.0.2"}, "central-b"])
    assert [str(b) for b in c.endpoints()] == ["10.0.0.1:8883", "10.0.0.2:1883",
                                               "central-b:1883"]
    assert MqttConfig(host="broker", port=1884).endpoints() == [BrokerConfig(host="broker",
                                                                             port=1884)]
    with pytest.raises(ValidationError, match="port"):
        MqttConfig(brokers=["10.0.0.1:99999"])
    with pytest.raises(ValidationError, match="keepalive_s"):
        MqttConfig(keepalive_s=0)
    assert MqttConfig().discovery is False  # off by default


def test_measurement_prefix_is_checked_and_defaults_to_none() -> None:
    assert InfluxConfig().measurement_prefix == ""
    with pytest.raises(ValidationError, match="measurement_prefix"):
        InfluxConfig(measurement_prefix="city level")


def test_event_ids_are_unique_per_gateway_and_across_restarts() -> None:
    first = MqttPublisher(MqttConfig(), "gw-3")
    again = MqttPublisher(MqttConfig(), "gw-3")  # a restart
    ids = [first.event_id() for _ in range(3)] + [again.event_id() for _ in range(3)]
    assert len(set(ids)) == 6
    assert all(i.startswith("gw-3-") for i in ids)
    assert [i.rsplit("-", 1)[1] for i in ids] == ["1", "2", "3", "1", "2", "3"]
    # the same millisecond (or a clock set back) still gives another boot
    assert boot_id(1_782_000_000.0) != boot_id(1_782_000_000.0)
    assert int(boot_id(1_782_000_000.0)[:-6], 36) == 1_782_000_000_000  # ms, base 36


def test_every_queued_event_carries_its_id_and_gateway() -> None:
    p = MqttPublisher(MqttConfig(), "gw-3")
    p.publish_event("transition", {"station": "s", "id": 7})
    p.publish_event("fault", {"kind": "relay_fault"})
    events = [json.loads(payload) for _, payload in p._events]
    assert [e["event_id"] for e in events] == [f"gw-3-{p.boot}-1", f"gw-3-{p.boot}-2"]
    assert {e["gateway"] for e in events} == {"gw-3"}
    assert events[0]["id"] == 7  # an event's own `id` (a journal row, a command) is kept


def test_discovery_documents_for_a_level_station_and_the_gateway() -> None:
    docs = discovery.station_documents("homeassistant", "gauged/gw.3", "gw.3", "0.1.0",
                                       "shin_hiroo", "level")
    value = json.loads(docs["homeassistant/sensor/gw_3/shin_hiroo_value/config"])
    stage = json.loads(docs["homeassistant/sensor/gw_3/shin_hiroo_stage/config"])
    assert value["state_topic"] == stage["state_topic"] == "gauged/gw.3/station/shin_hiroo/state"
    assert value["value_template"] == "{{ value_json.level_m }}"
    assert value["unit_of_measurement"] == "m"
    assert stage["value_template"] == "{{ value_json.stage_name }}"
    assert value["availability_topic"] == "gauged/gw.3/availability"
    assert value["unique_id"] != stage["unique_id"]
    assert value["device"]["identifiers"] == ["gauged_gw_3"]
    rain = discovery.station_documents("homeassistant", "gauged/gw.3", "gw.3", "0.1.0",
                                       "ward", "rain")
    assert json.loads(rain["homeassistant/sensor/gw_3/ward_value/config"])[
        "unit_of_measurement"] == "mm"
    gateway = discovery.gateway_documents("homeassistant", "gauged/gw.3", "gw.3", "0.1.0")
    doc = json.loads(gateway["homeassistant/binary_sensor/gw_3/availability/config"])
    assert (doc["payload_on"], doc["payload_off"]) == ("online", "offline")


def test_the_measurement_prefix_is_written_and_the_spool_cap_still_knows_the_kind() -> None:
    when = datetime(2026, 7, 1, tzinfo=UTC)
    rec = Record("level", {"gateway": "gw", "station": "s"}, {"level_m": 1.5}, when)
    assert rec.line("gauged_").startswith("gauged_level,gateway=gw,station=s ")
    assert rec.line().startswith("level,gateway=gw,station=s ")
    assert rec.routine  # the spool's cap knows it as `level` whatever the prefix
    points = influx._points([rec], "city_")
    assert [p.line.split(",", 1)[0] for p in points] == ["city_level"]
    assert points[0].kept is False


async def test_a_socket_closed_before_its_write_registration_is_left_alone() -> None:
    """aiomqtt registers paho's socket for writing a moment later, on the loop: when the
    broker went away meanwhile, the closed socket must raise nothing into the loop, and a
    new socket that took its number must not get its writer."""
    import asyncio
    import socket

    from gauged.uplinks.mqtt import _Client

    loop = asyncio.get_running_loop()
    errors: list[dict] = []
    loop.set_exception_handler(lambda _, context: errors.append(context))
    pairs = [socket.socketpair() for _ in range(3)]
    try:
        client = _Client("127.0.0.1", 1)
        (gone, _), (reused, _), (kept, _) = pairs
        client._on_socket_register_write(client._client, None, kept)
        client._on_socket_register_write(client._client, None, gone)
        gone.close()  # paho closes it before the loop gets to the registration
        number = reused.fileno()
        client._on_socket_register_write(client._client, None, reused)
        reused.close()
        newcomer, other = socket.socketpair()  # the next connection takes the number
        pairs.append((newcomer, other))
        assert number in (newcomer.fileno(), other.fileno())
        for _ in range(3):
            await asyncio.sleep(0)
        assert errors == []
        assert not loop.remove_writer(newcomer.fileno())
        assert not loop.remove_writer(other.fileno())
        assert loop.remove_writer(kept.fileno())  # an open socket is registered as before
    finally:
        loop.set_exception_handler(None)
        for pair in pairs:
            for s in pair:
                s.close()
