"""The field bus under faults (QUALITY MB-1…MB-5, MB-7, ALM-3).

The daemon and the simulators share one event loop; the time of each cycle is injected
(`rig.cycle()`), so a test runs as many cycles as it needs without waiting for a clock.
The devices are real: Modbus TCP on loopback, Modbus RTU and a text-protocol line on socat
pty pairs with line-time emulation at 9600 baud.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from fieldbus import CREST, LEVEL_STATIONS, field_rig, until
from services import PtyPairFactory

from drivers.errors import DriverError
from gauged.alarm.quality import Quality

GOOD, MISSING, BAD = Quality.GOOD, Quality.MISSING, Quality.BAD
RTU = [f"rs485_{i}" for i in range(1, 11)]


def unit_of(sid: str) -> int:
    return int(sid.rsplit("_", 1)[1])


async def test_mb_1_dead_devices_do_not_stall_the_bus(tmp_path: Path,
                                                      pty_pair: PtyPairFactory) -> None:
    dead = {2, 5, 9}
    async with field_rig(tmp_path, pty_pair) as rig:
        bus = rig.config.buses["rs485"]
        budget = bus.timeout_s * (1 + bus.retries)  # type: ignore[union-attr]
        await rig.cycle()  # all alive: the cost of a healthy bus
        healthy_s = rig.daemon.poller.bus_read_s["rs485"]
        for unit in dead:
            rig.fleet.set_fault("rs485", unit, no_answer=True)
        for n in range(12):
            result = await rig.cycle()
            states = {s.station: s for s in result.states}
            for sid in RTU:
                if unit_of(sid) in dead:
                    assert states[sid].quality is MISSING
                    if n >= 1:  # stale after two cycles without a good reading
                        assert states[sid].fault.startswith(("stale", "not polled"))
                else:  # the seven live ones: read, and good, every cycle
                    assert states[sid].quality is GOOD, (n, sid, states[sid].reason)
            polled_dead = sum(1 for u in dead if rig.daemon.poller.health[f"rs485_{u}"].polled)
            spent = rig.daemon.poller.bus_read_s["rs485"]
            # each dead device polled this cycle costs at most its timeout budget
            assert spent <= healthy_s + polled_dead * budget + 0.15, (n, spent, polled_dead)
        # after two silent cycles a dead device is only probed now and then
        assert not rig.daemon.poller.health["rs485_2"].polled or \
            rig.daemon.poller.schedules["rs485_2"].every > 1
        # and it is back every cycle from its first answer
        rig.fleet.clear_faults("rs485")
        for _ in range(10):
            result = await rig.cycle()
            if all(s.quality is GOOD for s in result.states if s.station in RTU):
                break
        else:
            pytest.fail("the dead devices did not come back within 10 cycles")


@pytest.mark.parametrize("rate", [0.01, 0.10])
async def test_mb_2_junk_and_split_frames_never_give_a_corrupt_value(
        tmp_path: Path, pty_pair: PtyPairFactory, rate: float) -> None:
    # every station at its own level, so that a reply taken for another device shows
    levels = {sid: 1.0 + 0.05 * i for i, sid in enumerate(LEVEL_STATIONS)}
    async with field_rig(tmp_path, pty_pair, levels=levels) as rig:
        for bus, knobs in (("tcp", {"junk": rate, "split": rate, "wrong_unit": rate}),
                           ("rs485", {"junk": rate, "split": rate, "bad_crc": rate,
                                      "wrong_unit": rate}),
                           ("line", {"junk": rate, "split": rate, "bad_checksum": rate})):
            rig.fleet.set_fault(bus, **knobs)
        good = 0
        for _ in range(25):
            result = await rig.cycle()
            for s in result.states:
                if s.kind == "level" and s.quality is GOOD:
                    good += 1
                    assert s.level_m is not None
                    assert abs(s.level_m - levels[s.station]) <= 0.021, s  # noise ±20 mm
        injected = sum(rig.fleet.faults_injected(bus) for bus in ("tcp", "rs485", "line"))
        assert injected > 0
        assert good >= 0.6 * 25 * len(LEVEL_STATIONS)


async def test_mb_3_exception_codes_are_mapped_deliberately(
        tmp_path: Path, pty_pair: PtyPairFactory, caplog: pytest.LogCaptureFixture) -> None:
    async with field_rig(tmp_path, pty_pair) as rig:
        rig.fleet.set_fault("tcp", 1, exception=2)  # illegal address: configuration
        rig.fleet.set_fault("tcp", 2, exception=4)  # device failure: station fault
        rig.fleet.set_fault("tcp", 3, busy_count=1)  # busy once: retried, read this cycle
        rig.fleet.set_fault("tcp", 4, exception=11)  # gateway target silent: a timeout
        rig.fleet.set_fault("tcp", 5, exception=6)  # busy for ever: bounded retries
        caplog.set_level(logging.INFO)
        states = {s.station: s for s in (await rig.cycle()).states}
        assert states["tcp_1"].fault.startswith("configuration: exception 02")
        assert states["tcp_2"].fault == "device failure: exception 04"
        assert states["tcp_3"].quality is GOOD
        assert states["tcp_4"].quality is MISSING
        assert states["tcp_4"].fault == ""  # a timeout is not (yet) a station fault
        assert states["tcp_5"].quality is MISSING
        busy_requests = rig.fleet.faults_injected("tcp", 5, "exception")
        assert 2 <= busy_requests <= 4  # retried, but boundedly
        for _ in range(4):
            states = {s.station: s for s in (await rig.cycle()).states}
        assert states["tcp_4"].fault.startswith(("stale", "not polled"))
        config_logs = [r for r in caplog.records if "gauge config fault" in r.getMessage()
                       and "station=tcp_1" in r.getMessage()]
        assert len(config_logs) == 1  # logged once, not every cycle
        assert all(s.stage == 0 for s in states.values())


async def test_mb_5_serial_adapter_removed_and_re_added(tmp_path: Path,
                                                        pty_pair: PtyPairFactory) -> None:
    async with field_rig(tmp_path, pty_pair) as rig:
        result = await rig.cycle()
        assert all(s.quality is GOOD for s in result.states if s.station in RTU)
        rig.ptys["rs485"].stop()  # the USB adapter is pulled
        for _ in range(2):
            states = {s.station: s for s in (await rig.cycle()).states}
        # detected within two cycles: every station of the line is missing and faulted
        assert all(states[sid].quality is MISSING for sid in RTU)
        assert all(states[sid].fault for sid in RTU)
        assert not rig.daemon.hubs["rs485"].connected
        rig.ptys["rs485"].start()  # plugged back in: same path, new pty
        deadline = time.monotonic() + 15
        while True:  # the hub reopens with backoff (capped at 0.4 s here): no restart
            states = {s.station: s for s in (await rig.cycle()).states}
            if all(states[sid].quality is GOOD for sid in RTU):
                break
            assert time.monotonic() < deadline, {sid: states[sid].reason for sid in RTU}
            await asyncio.sleep(0.05)  # let the backoff and the simulator's reopen run
        assert rig.daemon.hubs["rs485"].connected


async def test_mb_7_shutdown_mid_request_propagates_cancellation(
        tmp_path: Path, pty_pair: PtyPairFactory) -> None:
    async with field_rig(tmp_path, pty_pair) as rig:
        for bus in ("tcp", "rs485", "line"):
            rig.fleet.set_fault(bus, 1, delay_s=5.0)  # every bus is mid-request for 5 s
        cycle = asyncio.create_task(rig.cycle())
        await until(lambda: all(rig.fleet.faults_injected(b, 1, "delay_s")
                                for b in ("tcp", "rs485", "line")), 5.0, "requests in flight")
        t0 = time.monotonic()
        cycle.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cycle
        assert time.monotonic() - t0 <= 1.0
        # and the hubs serve the next cycle
        rig.fleet.clear_faults()
        result = await rig.cycle()
        assert sum(1 for s in result.states if s.quality is GOOD) >= len(LEVEL_STATIONS) - 3


# ALM-3: what each fault does to a device (`simulators/faults.py` has the knobs)
ALM3_KNOBS: dict[str, dict[str, object]] = {
    "spike_up": {"spike": 1.0},  # freeboard −0.5: overflow if believed
    "spike_down": {"spike": -3.0},  # freeboard 3.5: normal if believed
    "out_of_range": {"spike": 20.0},
    "status": {"status": 1},
    "silent": {"no_answer": True},  # a timeout
    "exception_04": {"exception": 4},
    "nan": {"nan": True},
}
MODBUS_ONLY = {"exception_04", "nan"}
# Held for 2–4 cycles. A spike held is not among them: the same jump twice in a row is a
# step, which a river can make (and which is then believed); a fall held is a step toward
# safety (below).
HELD = ("silent", "exception_04", "nan", "out_of_range", "status")
DEVICE_FAULTS = {"exception_04", "status"}  # the device says so: a station fault at once
FROZEN = [("tcp", 1), ("tcp", 2), ("line", 3)]  # frozen from cycle 5 on: a flat line
# Persistent steps toward safety: the level falls to a constant inside its range, or to a
# noisy plateau, and stays there; then the gauge reads true again. (first cycle, cycles,
# name, knobs); "to_zero" is set from the level read just before (the step to 0.0 m).
# A noisy plateau (± 20 mm) is held up to 16 cycles, longer than the fall allowance (4 m/h
# since the last good reading) takes to cover its 2.5 m drop (13 cycles): it stays on the
# fault's path, so waiting never makes it plausible.
STEPS: dict[tuple[str, int], list[tuple[int, int, str, dict[str, object]]]] = {
    ("tcp", 5): [(1, 10, "step_constant", {"stuck": True, "spike": -3.0}),  # crest − 3 m
                 (16, 15, "step_noisy", {"spike": -2.5})],
    ("rs485", 3): [(2, 16, "step_noisy", {"spike": -2.5}),
                   (20, 10, "step_constant", {"stuck": True, "spike": -3.4})],  # 0.1 m
    ("rs485", 8): [(3, 18, "step_constant", {"stuck": True, "spike": "to_zero"}),
                   (25, 6, "step_noisy", {"spike": -3.0})],
    ("line", 2): [(4, 7, "step_constant", {"stuck": True, "spike": -3.0}),
                  (15, 12, "step_constant", {"stuck": True, "spike": "to_zero"})],
}


@dataclass
class Episode:
    """One fault on one device: `name` from cycle `start` for `cycles` cycles."""

    kind: str  # "one" (one cycle), "held" (2–4 cycles), "step", "frozen" (to the end)
    name: str
    start: int
    cycles: int

    def ended(self, n: int) -> bool:
        return n >= self.start + self.cycles


async def test_alm_3_faulty_data_never_sounds_a_siren_nor_moves_a_stage(
        tmp_path: Path, pty_pair: PtyPairFactory) -> None:
    """One-cycle faults, the same fault held for 2–4 cycles, frozen gauges and persistent
    steps toward safety, on 23 river gauges at `warning` for 32 cycles: no stage moves, no
    broadcast, and every faulty reading is flagged within its criterion's cycles."""
    level = CREST - 0.5  # freeboard 0.5 m: every river station at `warning`
    levels = dict.fromkeys(LEVEL_STATIONS, level)
    edit = lambda t: t.replace("max_step = 0.5, stale_cycles = 2 }",  # noqa: E731
                               "max_step = 0.5, stale_cycles = 2, flatline_cycles = 3 }")
    async with field_rig(tmp_path, pty_pair, levels=levels, edit=edit) as rig:
        assert rig.config.gauges["tcp_1"].quality.flatline_cycles == 3
        assert rig.config.gauges["tcp_1"].quality.stale_cycles == 2
        for _ in range(2):
            await rig.cycle()
        assert all(rig.state(sid).stage_name == "warning" for sid in LEVEL_STATIONS)
        rng = random.Random(3)
        devices = [("tcp", i) for i in range(1, 11)] + [("rs485", i) for i in range(1, 11)] \
            + [("line", i) for i in range(1, 4)]
        active: dict[tuple[str, int], Episode] = {}
        last: dict[tuple[str, int], Episode] = {}  # each device's last episode
        recovering: dict[tuple[str, int], int] = {}  # a step just ended: its last cycle
        injected: Counter[str] = Counter()  # device-cycles that served a fault, by kind:name
        held_runs: Counter[str] = Counter()  # held episodes, by fault
        for n in range(32):
            for device in devices:
                bus, unit = device
                sid = f"{bus}_{unit}"
                episode = active.get(device)
                if episode is not None:
                    if not episode.ended(n):
                        continue  # held: the knobs stay (setting `stuck` again re-freezes)
                    rig.fleet.clear_faults(bus, unit)
                    del active[device]
                    if episode.kind == "step":
                        recovering[device] = n - 1
                if n == 5 and device in FROZEN:
                    active[device] = Episode("frozen", "frozen", n, 10**6)
                    rig.fleet.set_fault(bus, unit, stuck=True)
                    continue
                if device in FROZEN:
                    continue
                if device in STEPS:
                    for start, cycles, name, knobs in STEPS[device]:
                        if start == n:
                            if knobs["spike"] == "to_zero":  # what `stuck` freezes is
                                read = rig.state(sid).level_m  # the row read last cycle
                                assert read is not None
                                knobs = {**knobs, "spike": -read}
                            rig.fleet.set_fault(bus, unit, **knobs)
                            active[device] = Episode("step", name, n, cycles)
                    continue
                if rig.daemon.poller.schedules[sid].down or rng.random() >= 0.8:
                    continue  # backing off after a silence (a fault would not be read)
                names = [k for k in ALM3_KNOBS if bus != "line" or k not in MODBUS_ONLY]
                if rng.random() < 0.5:
                    name = rng.choice([k for k in names if k in HELD])
                    new = Episode("held", name, n, rng.randint(2, 4))
                    held_runs[name] += 1
                else:
                    previous = last.get(device)
                    if previous is not None and previous.name.startswith("spike") and \
                            previous.start + previous.cycles == n:
                        names = [k for k in names if not k.startswith("spike")]
                    new = Episode("one", rng.choice(names), n, 1)
                rig.fleet.set_fault(bus, unit, **ALM3_KNOBS[new.name])
                active[device] = last[device] = new
            served = {d: rig.fleet.faults_injected(*d) for d in devices}
            result = await rig.cycle()
            # no stage moves, no broadcast decided, merged (an all-clear held) or withheld
            assert result.transitions == [], (n, result.transitions)
            assert result.broadcasts == [], (n, result.broadcasts)
            assert result.merged == [], (n, result.merged)
            assert result.withheld == [], (n, result.withheld)
            states = {s.station: s for s in result.states}
            assert all(states[sid].stage_name == "warning" for sid in LEVEL_STATIONS), n
            for device, episode in active.items():
                bus, unit = device
                sid, k = f"{bus}_{unit}", n - episode.start  # k: the episode's k-th cycle
                s, why = states[sid], (n, sid, episode, states[sid])
                if rig.daemon.poller.health[sid].polled:  # read: the fault was served
                    assert rig.fleet.faults_injected(bus, unit) > served[device], why
                    injected[f"{episode.kind}:{episode.name}"] += 1
                if episode.kind == "frozen":
                    if k >= 2:  # the third identical reading: a flat line
                        assert s.quality is not GOOD, why
                        assert s.fault.startswith("flatline"), why
                    continue
                assert s.quality is not GOOD, why  # flagged in the cycle
                if episode.name in DEVICE_FAULTS:
                    assert s.fault, why  # a device fault at once
                if episode.kind == "held" and k >= 1:
                    assert s.fault, why  # stale_cycles = 2: a fault from the second cycle
                if episode.kind == "step":
                    assert s.reason.startswith("implausible fall"), why
                    assert s.level_m is not None, why
                    assert s.level_m <= 1.1, why  # the step was read
                    if k >= 1:  # two implausible falls in a row: a gauge_fault
                        assert s.fault.startswith("implausible fall"), why
            for device, ended in list(recovering.items()):
                sid = f"{device[0]}_{device[1]}"
                if states[sid].quality is GOOD:  # reads true again: believed, nothing said
                    del recovering[device]
                else:
                    assert n - ended < 2, (n, sid, states[sid])  # back within two cycles
        assert not recovering, recovering
        for bus, unit in FROZEN:  # the frozen ones are caught as flat lines
            state = rig.state(f"{bus}_{unit}")
            assert state.fault.startswith("flatline"), (bus, unit, state)
        # every kind of fault was injected, and held faults of every kind
        kinds = {f"one:{k}" for k in ALM3_KNOBS} | {f"held:{k}" for k in HELD} | \
            {"step:step_constant", "step:step_noisy", "frozen:frozen"}
        assert kinds <= set(injected), (kinds - set(injected), injected)
        assert all(held_runs[k] >= 2 for k in HELD), held_runs
        assert injected.total() >= 500, injected
        assert sum(rig.fleet.faults_injected(bus) for bus in ("tcp", "rs485", "line")) >= 500
        assert all(rig.state(sid).stage_name == "warning" for sid in LEVEL_STATIONS)
        # the only broadcasts are those of the first, clean escalation to `warning`
        decided = [b for r in rig.results for b in r.broadcasts]
        assert {b.stage_name for b in decided} == {"warning"}
        assert {b.time for b in decided} <= {rig.time(0), rig.time(1)}
        merged = [m.request for r in rig.results for m in r.merged]
        assert {m.time for m in merged} <= {rig.time(0), rig.time(1)}, merged


async def test_mb_4_tcp_gateway_down_one_attempt_at_a_time_back_within_two_caps(
        tmp_path: Path, pty_pair: PtyPairFactory) -> None:
    """A 10-minute outage compressed: 10 backoff caps of 0.4 s instead of 60 s."""
    tcp = [f"tcp_{i}" for i in range(1, 11)]
    async with field_rig(tmp_path, pty_pair) as rig:
        hub = rig.daemon.hubs["tcp"]
        cap = rig.config.buses["tcp"].reconnect_max_s
        assert all(s.quality is GOOD for s in (await rig.cycle()).states if s.station in tcp)
        rig.fleet.set_fault("tcp", 1, disconnect=True)  # the gateway drops and refuses
        first = hub.connect_attempts
        t_down = time.monotonic()

        async def station_keeps_asking(sid: str) -> None:
            # ten stations hammering one dead gateway at once, for ten caps
            while time.monotonic() - t_down < 10 * cap:
                with contextlib.suppress(DriverError):
                    await rig.daemon.poller.gauges[sid].read()
                await asyncio.sleep(0.005)

        async with asyncio.TaskGroup() as tg:
            for sid in tcp:
                tg.create_task(station_keeps_asking(sid), name=f"test[{sid}].ask")
        attempts = [t for t in hub.attempt_times if t >= t_down]
        tried = hub.connect_attempts - first
        # one attempt at a time, paced by the backoff: never more than one per half-cap …
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        assert tried == len(attempts)
        assert 3 <= tried <= 10 * cap / (cap / 2) + 2, (tried, gaps)
        assert all(g >= 0.25 * min(0.5, cap) for g in gaps), gaps  # ½ × the first step
        assert max(gaps) <= cap + 0.1, gaps  # … and never slower than the cap
        assert len({round(g, 3) for g in gaps[2:]}) > 1, gaps  # jitter: not one fixed delay
        # the gateway comes back: every station within two caps
        rig.fleet.clear_faults("tcp")
        t_up = time.monotonic()
        while True:
            states = {s.station: s for s in (await rig.cycle()).states}
            if all(states[sid].quality is GOOD for sid in tcp):
                break
            assert time.monotonic() - t_up <= 2 * cap, {sid: states[sid].reason for sid in tcp}
            await asyncio.sleep(0.02)
        assert time.monotonic() - t_up <= 2 * cap
