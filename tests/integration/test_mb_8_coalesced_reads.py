"""Coalesced reads of a multi-channel logger (QUALITY MB-8).

A logger with six register channels on nearby registers (two levels, a rain counter, battery,
temperature, UPS state) beside a shared status word, and two contacts, is read in two
requests a cycle (one holding read, one discrete read) instead of nine: the values are those
of per-channel reads and the simulator counts exactly the planned requests. A device that
refuses the long read with exception 02 is read channel by channel from then on, logged once.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from loggerbus import UNIT, logger_rig
from services import PtyPairFactory

from drivers.base import RawReading
from drivers.device import ModbusDevice
from drivers.modbus import ModbusGauge
from gauged.alarm.quality import Quality

BUSES = ("tcp", "rs485")
STATIONS = {"tcp": ("tcp_level", "tcp_level2", "tcp_rain"),
            "rs485": ("rtu_level", "rtu_level2", "rtu_rain")}


def logger_of(rig: object, bus: str) -> ModbusDevice:
    (device, _), = rig.daemon.poller.devices[bus]  # type: ignore[attr-defined]
    assert isinstance(device, ModbusDevice)
    return device


async def test_mb_8_coalesced_reads_equal_per_channel_reads(tmp_path: Path,
                                                            pty_pair: PtyPairFactory) -> None:
    async with logger_rig(tmp_path, pty_pair) as rig:
        await rig.cycle()
        for bus in BUSES:
            device = logger_of(rig, bus)
            # holding 0…14 in one read, discrete 0…1 in another; one per value and status: nine
            assert [(r.kind, r.address, r.count) for r in device.plan] == [
                ("holding", 0, 15), ("discrete", 0, 2)]
            assert len(device.single) == 9
        for _ in range(3):
            before = rig.fleet.request_counts()
            await rig.cycle()
            after = rig.fleet.request_counts()
            for bus in BUSES:
                assert after[(bus, UNIT)] - before[(bus, UNIT)] == 2, bus
        for bus in BUSES:
            for sid in STATIONS[bus]:
                assert rig.state(sid).quality is Quality.GOOD, sid
            # the same instant, read both ways: joined and one gauge per channel
            device = logger_of(rig, bus)
            joined = await device.read()
            for key, channel in device.channels.items():
                alone = await ModbusGauge(device.hub, UNIT, channel.spec, channel.status).read()
                assert isinstance(joined[key], RawReading)
                assert joined[key] == alone, (bus, key)
            assert len(joined) == 8
        level = rig.state("tcp_level").level_m
        assert level is not None
        assert abs(level - 1.234) < 0.0015
        battery = rig.daemon.poller.site_raw["tcp_battery"]
        assert isinstance(battery, RawReading)
        assert battery.value == 1360


async def test_mb_8_long_read_refused_falls_back_to_per_channel_reads(
        tmp_path: Path, pty_pair: PtyPairFactory, caplog: pytest.LogCaptureFixture) -> None:
    async with logger_rig(tmp_path, pty_pair) as rig:
        await rig.cycle()
        good = {sid: rig.state(sid).level_m for bus in BUSES for sid in STATIONS[bus]}
        caplog.set_level(logging.WARNING, logger="drivers.device")
        for bus in BUSES:
            rig.fleet.set_fault(bus, UNIT, max_read=2)  # a map with holes: short reads only
        counts = []
        for _ in range(3):
            before = rig.fleet.request_counts()
            await rig.cycle()
            after = rig.fleet.request_counts()
            counts.append({bus: after[(bus, UNIT)] - before[(bus, UNIT)] for bus in BUSES})
            for bus in BUSES:
                for sid in STATIONS[bus]:
                    assert rig.state(sid).quality is Quality.GOOD, sid
        for bus in BUSES:
            device = logger_of(rig, bus)
            assert device.fell_back
            # the refused read, the holding values one by one, then the (short) discrete read
            assert counts[0][bus] == 1 + 7 + 1
            assert counts[1][bus] == counts[2][bus] == len(device.single) == 9
            refused = [r for r in caplog.records if "exception 02" in r.getMessage()
                       and f"bus={bus} " in r.getMessage()]
            assert len(refused) == 1, refused
        for sid, level in good.items():  # level stations: the same values as before (± wobble)
            now = rig.state(sid).level_m
            assert (level is None) == (now is None)
            if level is not None and now is not None:
                assert abs(now - level) <= 0.0015, sid
