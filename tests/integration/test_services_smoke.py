"""The test services work: VictoriaMetrics takes InfluxDB v2 writes, mosquitto keeps retained
messages, both survive stop()/start() on the same port, and an authenticated broker refuses a
wrong password."""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import aiomqtt
import pytest
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision
from services import (
    Mosquitto,
    MosquittoFactory,
    Series,
    VictoriaFactory,
    VictoriaMetrics,
    free_port,
    port_accepts,
)

CYCLE_MS = 180_000  # one poll cycle


def _past_cycles(count: int) -> list[int]:
    """`count` cycle-aligned timestamps (ms) ending an hour ago."""
    last = (int(time.time() * 1000) - 3_600_000) // CYCLE_MS * CYCLE_MS
    return [last - (count - 1 - i) * CYCLE_MS for i in range(count)]


def _by_name(series: list[Series]) -> dict[str, Series]:
    return {s["metric"]["__name__"]: s for s in series}


def _write_levels(tsdb: VictoriaMetrics, run: str, stamps: list[int]) -> None:
    points = [
        {
            "measurement": "river",
            "tags": {"station": "shin_hiroo", "run": run},
            "fields": {"level_m": 1.25 + i, "freeboard_m": 2.5 - i},
            "time": stamp,
        }
        for i, stamp in enumerate(stamps)
    ]
    with InfluxDBClient(url=tsdb.url, token="test-token", org="test-org") as client:
        client.write_api(write_options=SYNCHRONOUS).write(
            bucket="gauged", record=points, write_precision=WritePrecision.MS
        )


def test_free_port_is_a_bindable_loopback_port() -> None:
    port = free_port()
    assert 1024 <= port <= 65535
    assert not port_accepts("127.0.0.1", port)


def test_victoria_returns_influx_points_with_their_values_and_timestamps(
    victoria: VictoriaMetrics,
) -> None:
    run = uuid.uuid4().hex
    stamps = _past_cycles(3)
    _write_levels(victoria, run, stamps)

    series = _by_name(victoria.wait_for(f'{{run="{run}"}}', lambda s: len(s) == 2, timeout=10))

    level = series["river_level_m"]
    assert level["metric"] == {"__name__": "river_level_m", "station": "shin_hiroo", "run": run}
    assert level["values"] == [1.25, 2.25, 3.25]
    assert level["timestamps"] == stamps
    assert series["river_freeboard_m"]["values"] == [2.5, 1.5, 0.5]
    assert series["river_freeboard_m"]["timestamps"] == stamps


async def test_victoria_takes_async_client_writes_and_keeps_one_point_per_timestamp(
    victoria: VictoriaMetrics,
) -> None:
    run = uuid.uuid4().hex
    stamp = _past_cycles(1)[0]

    async with InfluxDBClientAsync(url=victoria.url, token="t", org="o") as client:
        write_api = client.write_api()
        for value in (0.5, 0.75):  # the same point sent again, with another value
            line = f"rain,run={run} mm={value} {stamp * 1_000_000}"  # default precision: ns
            await write_api.write("gauged", record=line)

    (rain,) = await victoria.wait_for_async(f'rain_mm{{run="{run}"}}', lambda s: len(s) == 1)
    assert rain["values"] == [0.75]
    assert rain["timestamps"] == [stamp]


async def test_victoria_keeps_its_data_across_stop_and_start(victoria: VictoriaMetrics) -> None:
    run = uuid.uuid4().hex
    stamps = _past_cycles(2)
    await asyncio.to_thread(_write_levels, victoria, run, stamps)
    match = f'river_level_m{{run="{run}"}}'
    await victoria.wait_for_async(match, lambda s: len(s) == 1)
    port, pid = victoria.port, victoria.pid

    victoria.stop()
    assert not victoria.running
    assert not port_accepts(victoria.host, port)

    victoria.start()
    assert victoria.port == port
    assert victoria.pid != pid
    (level,) = victoria.export(match)
    assert level["timestamps"] == stamps


async def _receive_one(
    broker: Mosquitto, topic: str, username: str | None = None, password: str | None = None
) -> aiomqtt.Message:
    async with aiomqtt.Client(
        broker.host, broker.port, identifier="reader", username=username, password=password
    ) as reader:
        await reader.subscribe(topic, qos=1)
        async with asyncio.timeout(5):
            async for message in reader.messages:
                return message
    raise AssertionError("no message")


async def test_mosquitto_keeps_a_retained_message_for_a_later_subscriber(
    mosquitto: Mosquitto,
) -> None:
    topic = f"gauged/test/{uuid.uuid4().hex}/state"
    payload = b'{"station": "shirokane", "stage": "warning"}'
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="writer") as writer:
        await writer.publish(topic, payload, qos=1, retain=True)

    message = await _receive_one(mosquitto, topic)

    assert message.payload == payload
    assert message.retain
    assert str(message.topic) == topic


async def test_mosquitto_comes_back_on_the_same_port_after_stop(mosquitto: Mosquitto) -> None:
    port = mosquitto.port
    mosquitto.stop()
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(mosquitto.host, port, timeout=2):
            pass

    mosquitto.start()

    assert mosquitto.port == port
    async with aiomqtt.Client(mosquitto.host, port) as client:
        await client.publish("gauged/test/ping", b"1", qos=1)


async def test_mosquitto_with_passwords_refuses_a_wrong_password(
    mosquitto_factory: MosquittoFactory,
) -> None:
    broker = mosquitto_factory(
        users={"gauged": "right-password", "operator": "op-password"},
        acl="user gauged\ntopic readwrite gauged/#\n\nuser operator\ntopic read gauged/#\n",
    )
    assert broker.password_path is not None
    assert broker.password_path.exists()
    assert "right-password" not in broker.password_path.read_text()  # stored hashed

    for username, password in (("gauged", "wrong"), (None, None)):
        with pytest.raises(aiomqtt.MqttCodeError, match=r"[Nn]ot authori[sz]ed"):
            async with aiomqtt.Client(
                broker.host, broker.port, username=username, password=password
            ):
                pass

    async with aiomqtt.Client(
        broker.host, broker.port, username="gauged", password="right-password"
    ) as client:
        await client.publish("gauged/state/shirokane", b"notice", qos=1, retain=True)
    message = await _receive_one(
        broker, "gauged/state/#", username="operator", password="op-password"
    )
    assert message.payload == b"notice"


def test_services_are_killed_by_close(
    mosquitto_factory: MosquittoFactory, victoria_factory: VictoriaFactory
) -> None:
    services = [mosquitto_factory(), victoria_factory()]
    pids = [service.pid for service in services]

    for service in services:
        service.close()

    for pid in pids:
        assert pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
