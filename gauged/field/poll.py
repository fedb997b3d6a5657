"""Polling: which gauges a cycle reads, reading them, and judging what they sent.

The poller reads devices, not gauges: every channel behind one unit id of a bus (the gauges
of the stations and the site's inputs, drivers/device.py) is read together, as few requests
as its plan allows, once per cycle. A gauge with its own unit is a device of one channel.

A device that stops answering must not cost every cycle its full timeout budget (MB-1, MB-9):
its first timeout ends its read for the cycle and marks all its channels missing; after
`after` consecutive cycles without an answer it is probed only every few cycles (2, 4, then
8), and polled every cycle again from its first answer.

Error barriers (QUALITY SYS-5, gauged/barrier.py): an unexpected error reading one gauge (a
driver's bug), decoding what it sent (a custom serial `pattern` that lets `NaN` through to a
rain counter: `int(nan)`) or judging it is contained to that gauge: it is in gauge_fault at
once, reason `internal: ValueError: …`, its station holds its stage, every other gauge is read
and judged as usual. Each error is counted (`internal_errors`, /metrics) and an episode is
logged once, at ERROR with its traceback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Mapping
from datetime import datetime

from drivers.base import Device, Gauge, RawReading
from drivers.configs import LineSpec, RegisterSpec, StatusSpec
from drivers.errors import DeviceError, DeviceTimeout, DriverError, TransportError
from drivers.registry import AnyHub, make_device, make_gauge
from gauged.alarm.quality import Judge, Observation, Quality, in_range
from gauged.alarm.rain import CounterTracker
from gauged.alarm.types import Sample
from gauged.barrier import DECODE, READ, Barrier, Contained
from gauged.config.settings import Config
from gauged.health import BusHealth, GaugeHealth
from gauged.histogram import Histogram

log = logging.getLogger(__name__)

# A gauge read: a loopback simulator answers in about a millisecond, a real RS-485 device at
# 9600 baud in tens of milliseconds, a dead one costs its timeout (1 s by default).
READ_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ProbeSchedule:
    """Per-device back-off in whole cycles."""

    def __init__(self, after: int = 2, max_every: int = 8) -> None:
        self.after = after
        self.max_every = max_every
        self.failures = 0  # consecutive cycles without an answer
        self.every = 1  # poll every N cycles
        self._wait = 0  # cycles to skip before the next probe

    @property
    def down(self) -> bool:
        return self.failures >= self.after

    def due(self) -> bool:
        """Called once per cycle: should this cycle read the device?"""
        if self._wait > 0:
            self._wait -= 1
            return False
        return True

    def answered(self) -> None:
        self.failures = 0
        self.every = 1
        self._wait = 0

    def failed(self) -> None:
        self.failures += 1
        if self.failures >= self.after:
            self.every = min(self.max_every, self.every * 2)
            self._wait = self.every - 1


class Poller:
    """Reads every station's gauges once per cycle and judges the readings (a station with
    two gauges reads both, and its sample is their combination: `Judge.stations`).

    Buses are read in parallel, one task per bus; the devices of a bus one after another (the
    hub serialises anyway; in order, each device's cost is bounded by its own timeout budget).
    `site_raw` holds the last cycle's outcome of each site input (gauged/field/site.py).
    """

    def __init__(self, config: Config, hubs: Mapping[str, AnyHub], *,
                 internal_errors: Counter[tuple[str, str]] | None = None) -> None:
        """`internal_errors`: where to count contained errors per (station, where) (shared
        with the engine's barrier: one table for /metrics)."""
        self.config = config
        # every gauge a station reads, under its channel id (`Config.channels`: the station's
        # id for its first gauge, `station:gauge` for a second one)
        self.channels = config.channels()
        self.gauges: dict[str, Gauge] = {}
        self.judge = Judge(config)
        self.rain_seen: dict[str, float] = {}  # per counter: the rain counted so far (mm)
        self.schedules: dict[str, ProbeSchedule] = {}
        self.counters: dict[str, CounterTracker] = {}
        self.by_bus: dict[str, list[str]] = {}
        self.health: dict[str, GaugeHealth] = {}  # per channel
        self.bus_read_s: dict[str, float] = {}
        # per channel: how long each read of its gauge took, failed ones included (/metrics)
        self.read_latency = {c: Histogram(READ_BUCKETS) for c in self.channels}
        self._config_faults: set[str] = set()
        self.barrier = Barrier(log, internal_errors)
        self._by_kind: dict[str, list[str]] = {"level": [], "rain": []}
        for sid, st in config.stations.items():
            self._by_kind[st.kind].append(sid)
        # every channel of a device, gauges and site inputs (`site:NAME`), by (bus, unit)
        groups: dict[tuple[str, int], dict[str, tuple[RegisterSpec | LineSpec,
                                                      StatusSpec | None]]] = {}
        for c, (_, gid) in self.channels.items():
            g = config.gauges[gid]
            spec = g.spec if g.spec is not None else g.line
            assert spec is not None  # cross_check guarantees it
            self.gauges[c] = make_gauge(hubs[g.bus], g.unit, spec, g.status)
            groups.setdefault((g.bus, g.unit), {})[c] = (spec, g.status)
            if g.quantity == "rain_counter":
                self.counters[c] = CounterTracker(g.counter_bits, g.scale)
                self.rain_seen[c] = 0.0
            self.by_bus.setdefault(g.bus, []).append(c)
            self.health[c] = GaugeHealth()
        # the site's health inputs: their last outcome each cycle (gauged/field/site.py)
        self.site_raw: dict[str, RawReading | DriverError | None] = {}
        for name, inp in config.site.inputs.items():
            d = config.devices[inp.device]
            groups.setdefault((d.bus, d.unit), {})[f"site:{name}"] = (inp.spec, None)
        planned = {(d.bus, d.unit): d for d in config.devices.values()}
        # per bus, its devices in config order, each with its probe schedule
        self.devices: dict[str, list[tuple[Device, ProbeSchedule]]] = {}
        for (bus, unit), chans in groups.items():
            device = make_device(hubs[bus], unit, chans, planned.get((bus, unit)))
            schedule = ProbeSchedule()
            self.devices.setdefault(bus, []).append((device, schedule))
            for c in chans:
                self.schedules[c] = schedule  # the device's channels live and die together
            if len(chans) > 1:
                log.info("device bus=%s unit=%d: %d channels, %d requests a cycle", bus, unit,
                         len(chans), len(device.plan))

    async def read(self, when: datetime) -> dict[str, Sample]:
        """One cycle's samples, every station included (missing ones as missing)."""
        outcomes: dict[str, RawReading | DriverError | Contained | None] = {}

        async def read_bus(bus: str, devices: list[tuple[Device, ProbeSchedule]]) -> None:
            t0 = time.monotonic()
            for device, schedule in devices:
                await self._read_device(device, schedule, outcomes)
            self.bus_read_s[bus] = time.monotonic() - t0

        async with asyncio.TaskGroup() as tg:
            for bus, devices in self.devices.items():
                tg.create_task(read_bus(bus, devices), name=f"gauged[bus:{bus}].poll")
        for key in list(outcomes):
            if key.startswith("site:"):
                out = outcomes.pop(key)
                self.site_raw[key[5:]] = None if isinstance(out, Contained) else out
        return self._judge(outcomes, when)

    async def _read_device(self, device: Device, schedule: ProbeSchedule,
                           outcomes: dict[str, RawReading | DriverError | Contained | None],
                           ) -> None:
        """Read every channel of one device (one plan, one timeout budget) into `outcomes`.

        A device that stays silent is probed less often (ProbeSchedule); a bus that is down
        (gateway unreachable, port gone) fails fast in its hub, which paces its own
        reconnects, so polling it every cycle costs nothing and brings every station back at
        the first cycle after the bus returns."""
        keys = list(device.channels)
        if not schedule.due():
            outcomes.update(dict.fromkeys(keys))
            return
        started = time.monotonic()
        try:
            got = await device.read()
        except Exception as exc:  # a bug, not the device: this device only (SYS-5)
            for k in keys:
                outcomes[k] = self._contained(k, READ, exc) if k in self.channels else None
            schedule.answered()  # no back-off: poll it every cycle, as it may recover
        else:
            outcomes.update(got)
            answered = time.monotonic()
            for k, out in got.items():
                if isinstance(out, RawReading) and k in self.health:
                    self.health[k].answered_mono = answered
            if any(isinstance(o, DeviceTimeout) for o in got.values()):
                schedule.failed()
            elif not all(isinstance(o, TransportError) for o in got.values()):
                schedule.answered()  # an answer, even an exception, is a live device
        elapsed = time.monotonic() - started
        for k in keys:
            if k in self.read_latency:
                self.read_latency[k].observe(elapsed)

    def _judge(self, outcomes: Mapping[str, RawReading | DriverError | Contained | None],
               when: datetime) -> dict[str, Sample]:
        """Turn what the buses answered into observations and judge them together
        (gauged/alarm/quality.py: the same judge replays scenarios)."""
        contained: dict[str, Contained] = {}
        observations: dict[str, Observation] = {}
        for c in self.gauges:
            out = outcomes[c]
            try:
                if isinstance(out, Contained):  # the read itself failed inside gauged
                    contained[c] = out
                    self.health[c].polled = True
                    observations[c] = self._internal(c, out)
                else:
                    observations[c] = self._observe(c, out)
            except Exception as exc:  # decoding this gauge's answer failed (SYS-5)
                contained[c] = self._contained(c, DECODE, exc)
                observations[c] = self._internal(c, contained[c])
        judgements = self.judge.judge(when.timestamp(), observations)
        stations = self.judge.stations(observations, judgements)
        for c, error in self.judge.contained.items():
            contained.setdefault(c, error)
        for c, judgement in judgements.items():
            health = self.health[c]
            if judgement.quality is Quality.GOOD:
                health.last_good = when
            self._log_fault(c, health, self.judge.trackers[c].fault)
        self.barrier.report(judgements, contained)
        return {sid: Sample(r.value, r.judgement.quality, r.judgement.reason, r.fault, r.gauges)
                for sid, r in stations.items()}

    def _contained(self, channel: str, where: str, exc: Exception) -> Contained:
        sid, gauge = self.channels[channel]
        two = self.config.stations[sid].second_gauge is not None
        return Contained(sid, where, exc, gauge if two else "")

    def _internal(self, channel: str, c: Contained) -> Observation:
        """What an internal error makes of a gauge's reading: none, and a gauge_fault at
        once (until its next good reading)."""
        health = self.health[channel]
        health.errors += 1
        health.error = c.reason
        return Observation(error=c.reason, device_fault=True)

    def _observe(self, sid: str, out: RawReading | DriverError | None) -> Observation:
        g = self.config.gauges[self.channels[sid][1]]
        health = self.health[sid]
        health.polled = out is not None
        if out is None:
            schedule = self.schedules[sid]
            return Observation(error=f"not polled: no answer for {schedule.failures} cycles, "
                                     f"probing every {schedule.every} cycles")
        if isinstance(out, DriverError):
            health.errors += 1
            health.error = str(out)
            return self._error(sid, out)
        health.error = ""
        health.raw, health.status = out.value, out.status
        faults = None if out.status is None else out.status & g.status_fault_mask
        raw = float(out.value)
        if sid in self.counters:
            value = self.counters[sid].update(int(out.value))
            if value is not None and value >= 0:
                self.rain_seen[sid] += value
            return Observation(value, key=raw, watch=self.rain_seen[sid], status=faults)
        level = raw * g.scale + g.offset
        return Observation(level, key=level, watch=level if in_range(level, g.range) else None,
                           status=faults)

    def _error(self, sid: str, exc: DriverError) -> Observation:
        if not isinstance(exc, DeviceError):
            return Observation(error=str(exc))
        if exc.code in (1, 2, 3):
            if sid not in self._config_faults:  # a configuration fault is logged once
                self._config_faults.add(sid)
                log.error("gauge config fault station=%s gauge=%s: %s (check the register "
                          "map against the device)", *self.channels[sid], exc)
            return Observation(error=f"configuration: exception {exc.code:02X}",
                               device_fault=True)
        if exc.code == 4:
            return Observation(error="device failure: exception 04", device_fault=True)
        return Observation(error=str(exc))

    def by_kind(self, kind: str) -> list[str]:
        return self._by_kind[kind]

    def buses(self, hubs: Mapping[str, AnyHub]) -> dict[str, BusHealth]:
        """Each bus as the last cycle left it."""
        return {name: BusHealth(self.config.buses[name].kind, hub.connected,
                                round(self.bus_read_s.get(name, 0.0), 4))
                for name, hub in hubs.items()}

    def _log_fault(self, channel: str, health: GaugeHealth, fault: str) -> None:
        sid, gid = self.channels[channel]
        # a station with two gauges names the gauge (the other may still carry the station)
        gauge = f" gauge={gid}" if self.config.stations[sid].second_gauge else ""
        if fault and not health.fault:
            log.warning("gauge_fault station=%s%s reason=%s", sid, gauge, fault)
        elif health.fault and not fault:
            log.info("gauge_fault cleared station=%s%s", sid, gauge)
        health.fault = fault
