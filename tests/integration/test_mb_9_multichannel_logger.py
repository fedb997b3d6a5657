"""A multi-channel logger at one unit id over Modbus TCP and over RTU (QUALITY MB-9).

Every channel decodes: two levels (float32 word-swapped, int16 scaled) behind a shared status
word, a rain counter, and the cabinet's battery, temperature, UPS, mains and door. When the
logger dies every one of its channels is missing, and the cycle spends the device's timeout
budget once (one request, and its retries), not once per channel; after three cycles each of
its cabinet inputs is an operator alarm (`input_missing`), cleared when it answers again.
"""

from __future__ import annotations

from pathlib import Path

from loggerbus import LEVELS, UNIT, logger_rig
from services import PtyPairFactory

from drivers.base import RawReading
from drivers.errors import DeviceTimeout
from gauged.alarm.quality import Quality

BUSES = {"tcp": "tcp", "rs485": "rtu"}


async def test_mb_9_logger_over_tcp_and_rtu_every_channel_decoded(
        tmp_path: Path, pty_pair: PtyPairFactory) -> None:
    async with logger_rig(tmp_path, pty_pair) as rig:
        for _ in range(3):
            await rig.cycle()
        for prefix in BUSES.values():
            for sid in (f"{prefix}_level", f"{prefix}_level2"):
                state = rig.state(sid)
                assert state.quality is Quality.GOOD, sid
                assert state.level_m is not None
                assert abs(state.level_m - LEVELS[sid]) < 0.0015
                assert state.freeboard_m is not None
                assert abs(state.freeboard_m - (4.0 - state.level_m)) < 1e-9
            rain = rig.state(f"{prefix}_rain")
            assert rain.quality is Quality.GOOD
            assert rain.rain_increment_mm is not None
            assert rain.rain_increment_mm > 0
            site = {k: v for k, v in rig.daemon.poller.site_raw.items()
                    if k.startswith(prefix)}
            assert site == {f"{prefix}_battery": RawReading(1360), f"{prefix}_temp":
                            RawReading(250), f"{prefix}_ups": RawReading(0),
                            f"{prefix}_mains": RawReading(1), f"{prefix}_door": RawReading(0)}


async def test_mb_9_dead_logger_marks_every_channel_and_costs_its_budget_once(
        tmp_path: Path, pty_pair: PtyPairFactory) -> None:
    async with logger_rig(tmp_path, pty_pair) as rig:
        await rig.cycle()
        stages = {sid: s.stage for sid, s in rig.daemon.states.items()}
        for bus in BUSES:
            rig.fleet.set_fault(bus, UNIT, no_answer=1.0)
        before = rig.fleet.request_counts()
        await rig.cycle()
        after = rig.fleet.request_counts()
        for bus, prefix in BUSES.items():
            cfg = rig.config.buses[bus]
            attempts = 1 + cfg.retries
            # one request (and its retries) for the whole device, not one per channel
            assert after[(bus, UNIT)] - before[(bus, UNIT)] == attempts, bus
            assert rig.daemon.poller.bus_read_s[bus] < 3 * attempts * cfg.timeout_s
            for sid in (f"{prefix}_level", f"{prefix}_level2", f"{prefix}_rain"):
                state = rig.state(sid)
                assert state.quality is Quality.MISSING, sid
                assert state.stage == stages[sid]  # missing data holds the stage
            for name in ("battery", "temp", "ups", "mains", "door"):
                out = rig.daemon.poller.site_raw[f"{prefix}_{name}"]
                assert isinstance(out, DeviceTimeout), (prefix, name, out)
        for _ in range(2):  # three cycles without a reading: each cabinet input says so
            await rig.cycle()
        missing = sorted(f.split(": ")[1] for f in rig.daemon.faults
                         if f.startswith("site: input_missing:"))
        assert missing == sorted(f"input_missing:{p}_{n}" for p in BUSES.values()
                                 for n in ("battery", "temp", "ups", "mains", "door"))
        for bus in BUSES:  # it comes back: every channel at once
            rig.fleet.clear_faults(bus, UNIT)
        for _ in range(4):  # probed again within the back-off
            await rig.cycle()
        for prefix in BUSES.values():
            assert rig.state(f"{prefix}_level").quality is Quality.GOOD
            assert isinstance(rig.daemon.poller.site_raw[f"{prefix}_mains"], RawReading)
        cleared = [f for f in rig.daemon.faults if f.startswith("site_cleared: input_missing:")]
        assert len(cleared) == 10
