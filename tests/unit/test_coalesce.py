"""The read plan of a multi-channel device (drivers.registers.plan_reads) and the device's
fallback and failure rules (drivers.device.ModbusDevice) against a scripted hub."""

from __future__ import annotations

import pytest

from drivers.base import RawReading
from drivers.configs import RegisterSpec, StatusSpec
from drivers.device import Channel, ModbusDevice
from drivers.errors import DeviceError, DeviceTimeout
from drivers.registers import Read, plan_reads


def test_nearby_spans_of_one_kind_join_and_gaps_split() -> None:
    spans = [("holding", 0, 2), ("holding", 3, 1), ("holding", 6, 1), ("holding", 20, 2),
             ("input", 0, 1), ("discrete", 0, 1), ("discrete", 5, 1)]
    assert plan_reads(spans, max_gap=8) == [
        Read("holding", 0, 7), Read("holding", 20, 2), Read("input", 0, 1),
        Read("discrete", 0, 6)]
    assert plan_reads(spans, max_gap=0) == [
        Read("holding", 0, 2), Read("holding", 3, 1), Read("holding", 6, 1),
        Read("holding", 20, 2), Read("input", 0, 1), Read("discrete", 0, 1),
        Read("discrete", 5, 1)]
    assert len(plan_reads(spans, max_gap=-1)) == len(spans)


def test_a_read_never_exceeds_the_limit_and_shared_spans_are_read_once() -> None:
    spans = [("holding", a, 2) for a in range(0, 300, 2)] + [("holding", 0, 2)]
    plan = plan_reads(spans, max_gap=8, max_registers=125)
    assert all(r.count <= 125 for r in plan)
    assert sum(r.count for r in plan) == 300
    assert [r.count for r in plan_reads(spans, max_gap=8, max_registers=10)] == [10] * 30


class ScriptedHub:
    """Registers 0…99 hold their address; reads longer than `longest` answer 02; `silent`
    makes every read time out."""

    name = "fake"

    def __init__(self, longest: int = 125, silent: bool = False) -> None:
        self.longest, self.silent, self.reads = longest, silent, list[tuple[str, int, int]]()

    async def read_registers(self, unit: int, kind: str, address: int, count: int) -> list[int]:
        self.reads.append((kind, address, count))
        if self.silent:
            raise DeviceTimeout("silent")
        if count > self.longest:
            raise DeviceError("02", 2)
        return list(range(address, address + count))

    async def read_bits(self, unit: int, kind: str, address: int, count: int) -> list[int]:
        return await self.read_registers(unit, kind, address, count)


def channels() -> dict[str, Channel]:
    status = StatusSpec(address=6)
    return {"a": Channel(RegisterSpec(address=0, data_type="uint32"), status),
            "b": Channel(RegisterSpec(address=3), status),
            "c": Channel(RegisterSpec(address=9))}


async def test_the_device_reads_its_plan_and_decodes_each_channel() -> None:
    hub = ScriptedHub()
    device = ModbusDevice(hub, 1, channels())  # type: ignore[arg-type]
    got = await device.read()
    assert hub.reads == [("holding", 0, 10)]
    assert got == {"a": RawReading(1, 6), "b": RawReading(3, 6), "c": RawReading(9)}


async def test_a_refused_joined_read_falls_back_for_good(caplog: pytest.LogCaptureFixture) -> None:
    hub = ScriptedHub(longest=2)
    device = ModbusDevice(hub, 1, channels())  # type: ignore[arg-type]
    first = await device.read()
    second = await device.read()
    assert first == second == {"a": RawReading(1, 6), "b": RawReading(3, 6), "c": RawReading(9)}
    assert device.fell_back
    assert hub.reads == [("holding", 0, 10)] + [("holding", 0, 2), ("holding", 3, 1),
                                                 ("holding", 6, 1), ("holding", 9, 1)] * 2
    assert sum("exception 02" in r.getMessage() for r in caplog.records) == 1


async def test_a_silent_device_fails_every_channel_after_one_request() -> None:
    hub = ScriptedHub(silent=True)
    device = ModbusDevice(hub, 1, channels(), max_gap=0)  # type: ignore[arg-type]
    got = await device.read()
    assert len(hub.reads) == 1
    assert set(got) == {"a", "b", "c"}
    assert all(isinstance(v, DeviceTimeout) for v in got.values())


async def test_a_refused_single_read_is_that_channel_s_fault_only() -> None:
    hub = ScriptedHub(longest=1)
    device = ModbusDevice(hub, 1, {"wide": Channel(RegisterSpec(address=0, data_type="uint32")),
                                   "narrow": Channel(RegisterSpec(address=20))})  # type: ignore[arg-type]
    got = await device.read()
    assert isinstance(got["wide"], DeviceError)
    assert got["wide"].code == 2
    assert got["narrow"] == RawReading(20)
    assert not device.fell_back
