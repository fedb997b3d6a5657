"""The daemon: owns the buses, the engine, the zones and the outputs, and runs the cycle.

Start: open the state store (reporting broadcasts a crash cut short: not re-run, see
gauged/store/state.py), open the buses, drive every relay OFF with read-back (the first actuator
action is always OFF), restore the stages without re-sounding, then start the zone
sequencers, the uplinks, the scheduled tests, the status server and the poll loop in one
TaskGroup. Each cycle, at a wall-clock boundary (cycles are then counted on the
monotonic clock, see gauged/clock.py): read every gauge (buses in parallel), judge quality,
derive, evaluate stages, make them durable, hand broadcasts to their zones at once (after
aborting a scheduled test, if one runs), then record (InfluxDB, MQTT, /status). Stop, in
order: the poll loop, the scheduled tests, the zones (each drives its relays OFF), the
uplinks (flushed briefly), the status server; then every relay OFF.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from drivers.configs import RelayConfig
from drivers.errors import DriverError
from drivers.line import SerialLineHub
from drivers.players import make_player
from drivers.registry import make_hub
from drivers.relays import CoilRelay
from gauged.alarm.engine import Engine
from gauged.alarm.quality import Quality
from gauged.alarm.types import BroadcastRecord, BroadcastRequest, CycleResult, StationState
from gauged.clock import Clock, next_boundary
from gauged.config.settings import Config
from gauged.daemon.watchdog import status_line, watch
from gauged.field.poll import Poller
from gauged.field.prooftests import ProofTestRunner, ProofTestScheduler, jobs_from_config
from gauged.field.zones import ZoneBroadcaster
from gauged.ops.commands import Command, CommandHandler, Outcome, Refused
from gauged.ops.history import History
from gauged.ops.inhibits import InhibitError, Inhibits, inhibit_json
from gauged.ops.metrics import BroadcastTally, DaemonCollector, exposition
from gauged.ops.notify import Notifier
from gauged.ops.page import render_page
from gauged.ops.status import StatusServer
from gauged.store.state import RAIN_KEEP_S, JobRun, SavedBroadcast, StateStore
from gauged.uplinks.cap import CapSink
from gauged.uplinks.influx import InfluxSink, Record
from gauged.uplinks.mqtt import MqttPublisher

log = logging.getLogger(__name__)

# Rain counter baselines resume after a restart only when they were read at most this many
# poll intervals before: the rain counted since then fell in about the cycle that reports it.
RESUME_CYCLES = 3


def clock_from(config: Config) -> Clock:
    c = config.clock
    return Clock(c.speed, c.start, c.anchor_unix)


class Daemon:
    """One gateway's worth of gauges, stations and zones."""

    def __init__(self, config: Config, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or clock_from(config)
        self.gateway = config.gateway.id
        self.hubs = {name: make_hub(name, bus) for name, bus in config.buses.items()}
        self.poller = Poller(config, self.hubs)
        self.engine = Engine(config)
        # One player per zone: a player plays one clip at a time, zones play at once.
        self.players = {zid: make_player(config.players[z.player])
                        for zid, z in config.zones.items()}
        self.zones = {
            zid: ZoneBroadcaster(
                zid,
                siren=self._relay(f"{zid}.siren", z.siren_relay),
                amplifier=self._relay(f"{zid}.amplifier", z.amplifier_relay),
                player=self.players[zid], clip_path=config.clip_path, clock=self.clock,
                sequences=config.sequences, siren_max_s=config.defaults.siren_max_s,
                on_done=self._broadcast_done, on_fault=self._fault,
                on_start=self._broadcast_started)
            for zid, z in config.zones.items()
        }
        # the spool lives next to the state file unless [influx] spool_path says otherwise
        self.influx = InfluxSink(
            config.influx, config.influx.spool_path or config.state.path.with_name(
                "spool.sqlite3")) if config.influx.enabled else None
        self.mqtt = MqttPublisher(config.mqtt, self.gateway) if config.mqtt.enabled else None
        self.cap = CapSink(config, self.mqtt.publish_cap if self.mqtt else None) \
            if config.cap.enabled else None
        self.status: StatusServer | None = None
        self.states: dict[str, StationState] = {}
        self.history = History(config.gateway.poll_interval_s)  # the status page's charts
        self.broadcast_tally = BroadcastTally()  # /metrics
        self.cycles = 0
        self.last_cycle: datetime | None = None
        self.last_cycle_mono: float | None = None
        self.cycle_started_mono: float | None = None  # a cycle under way (the watchdog)
        self.faults: list[str] = []
        self.store: StateStore | None = None
        self.tests: ProofTestScheduler | None = None
        self.inhibits: Inhibits | None = None
        self.commands: CommandHandler | None = None
        self._manual = itertools.count(1)
        self._command_test: asyncio.Task[dict[str, Any]] | None = None
        t = config.tests
        # the silent and audible tests, run by the calendar (and on command)
        self.test_runner = ProofTestRunner(
            self.zones, self.clock, hold_s=t.hold_s, audible_clip=t.audible_clip,
            audible_zones=t.audible_zones, clip_path=config.clip_path, on_fault=self._fault,
            inhibited=lambda zone: bool(self.inhibits and self.inhibits.zone_inhibited(zone)))
        self.restored: dict[str, Any] = {}  # what the state store gave back at start
        self.interrupted: list[SavedBroadcast] = []
        self._stored_last: dict[str, SavedBroadcast] = {}  # last broadcast per zone at start
        self._saved_stages: dict[str, tuple[int, float | None]] = {}
        self._skew_reported = 0.0
        self._stop = asyncio.Event()
        self.ready = asyncio.Event()
        if config.test_hooks.stall_in:
            log.warning("test hook set: a cycle will stall in %s after %d cycles (a test-only "
                        "fault, never on a gateway)", config.test_hooks.stall_in,
                        config.test_hooks.stall_after_cycles)

    def _relay(self, name: str, cfg: RelayConfig | None) -> CoilRelay | None:
        if cfg is None:
            return None
        hub = self.hubs[cfg.bus]
        assert not isinstance(hub, SerialLineHub)  # cross_check: relays are on Modbus buses
        return CoilRelay(name, hub, cfg)

    @property
    def relays(self) -> list[CoilRelay]:
        return [r for z in self.zones.values() for r in z.relays]

    def stop(self) -> None:
        """Ask the daemon to stop (signal handlers call this)."""
        self._stop.set()

    # ---- lifecycle -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def opened(self) -> AsyncIterator[Daemon]:
        """Buses open and every relay driven OFF (read back) before and after.

        `run` works inside it; tests use it to drive `cycle` on an injected time.
        """
        async with contextlib.AsyncExitStack() as stack:
            self.store = stack.enter_context(StateStore.open(self.config.state.path))
            self._report_interrupted(self.store)
            if self.influx is not None:  # never fails: a broken spool degrades storage only
                stack.enter_context(self.influx.opened())
            for hub in self.hubs.values():
                await stack.enter_async_context(hub)
            stack.push_async_callback(self._close_players)
            stack.push_async_callback(self.all_relays_off)
            await self.all_relays_off()
            self._restore(self.store)  # before the first cycle, after relays OFF
            self.inhibits = Inhibits(self.config, self.store, self.clock.timestamp)
            self.commands = self._command_handler(self.store)
            if self.cap is not None:  # open CAP alerts follow the restored stages
                self.cap.open(self.engine.stages, self.clock.now())
            self.tests = self._scheduled_tests(self.store)
            yield self

    async def run(self, *, once: bool = False) -> None:
        """Run until `stop()` (or after one cycle with `once`)."""
        metrics = exposition(DaemonCollector(self.snapshot, self.poller.read_latency,
                                             self.broadcast_tally))
        async with self.opened(), StatusServer(
                self.config.status.host, self.config.status.port, self.snapshot,
                self.health, token=self.config.status.token.get_secret_value(),
                control=self.http_command if self.commands is not None else None,
                metrics=metrics, page=self.page) as status:
            self.status = status
            async with asyncio.TaskGroup() as tg:
                zone_tasks = [tg.create_task(z.run(), name=f"gauged[zone:{zid}].broadcast")
                              for zid, z in self.zones.items()]
                uplinks = []
                if self.influx is not None:
                    uplinks.append(tg.create_task(self.influx.run(), name="gauged[influx].write"))
                if self.mqtt is not None:
                    uplinks.append(tg.create_task(self.mqtt.run(), name="gauged[mqtt].publish"))
                if self.cap is not None:
                    uplinks.append(tg.create_task(self.cap.run(), name="gauged[cap].write"))
                poll = tg.create_task(self._poll(once), name="gauged.poll")
                tests = None if once or self.tests is None else tg.create_task(
                    self.tests.run(), name="gauged[tests].schedule")
                self.ready.set()
                # READY only now: config valid, state restored, relays OFF and read back
                notifier = Notifier()
                pinger = None
                if notifier.enabled:
                    notifier.ready(status_line(self))
                    pinger = tg.create_task(watch(self, notifier), name="gauged.watchdog")
                await self._stop.wait()
                log.info("stopping")
                notifier.stopping()
                if pinger is not None:  # systemd watches the stop with TimeoutStopSec
                    await _cancel(pinger)
                watchdog = tg.create_task(_report_stuck_shutdown(10.0),
                                          name="gauged.shutdown-watchdog")
                await _cancel(poll)
                if tests is not None:
                    await _cancel(tests)
                for task in zone_tasks:
                    await _cancel(task)
                await self._flush_uplinks()
                for task in uplinks:
                    await _cancel(task)
                log.debug("stopping: tasks stopped; relays OFF next")
                watchdog.cancel()

    async def _poll(self, once: bool) -> None:
        try:
            if once:
                await self.cycle(self.clock.now())
                for zone in self.zones.values():
                    await zone.idle()
                return
            await self.poll_loop()
        finally:
            if once:
                self.stop()

    async def poll_loop(self) -> None:
        """One cycle per interval, at wall-clock boundaries (:00, :03 … for 180 s)."""
        interval = self.config.gateway.poll_interval_s
        last = 0.0
        while True:
            due = next_boundary(self.clock.timestamp(), interval)
            if due <= last:
                due = last + interval
            await self.clock.sleep_until(due)
            self._check_skew(interval)
            late = self.clock.timestamp() - due
            if last and due - last > interval:
                log.warning("cycle skipped: %d missed after a late cycle",
                            round((due - last) / interval) - 1)
            if late > interval / 2:
                log.warning("cycle late by %.1f s", late)
            await self.cycle(datetime.fromtimestamp(due, UTC))
            last = due

    def _check_skew(self, interval: float) -> None:
        """Report a step of the wall clock once; cycles and tests do not follow it."""
        skew = self.clock.skew()
        if abs(skew - self._skew_reported) > interval / 4:
            log.warning("wall clock stepped by %+.0f s (now %+.0f s from the daemon's clock): "
                        "cycles and scheduled tests keep their monotonic pace, none skipped "
                        "or repeated; a restart re-aligns to the wall clock",
                        skew - self._skew_reported, skew)
            self._skew_reported = skew

    async def _flush_uplinks(self) -> None:
        if self.cap is not None and not await self.cap.flush(2.0):
            log.warning("stopping with %d CAP documents not written", self.cap.health.queued)
        if self.influx is not None and not await self.influx.flush(2.0):
            log.warning("stopping with %d points not written to influx",
                        self.influx.health.queued)
        if self.mqtt is not None:
            await self.mqtt.close()

    async def _close_players(self) -> None:
        for player in self.players.values():
            await player.close()

    async def all_relays_off(self) -> None:
        """Drive every relay OFF and verify; failures are faults, never exceptions."""
        for relay in self.relays:
            try:
                await asyncio.shield(relay.set(False))
            except DriverError as exc:
                self.faults.append(f"{relay.name}: {exc}")
                log.error("relay_fault relay=%s want=off: %s", relay.name, exc)

    # ---- the cycle -------------------------------------------------------------------

    async def cycle(self, when: datetime) -> CycleResult:
        """Read, judge, derive, decide, broadcast, record: one poll cycle at time `when`."""
        self.cycle_started_mono = time.monotonic()
        try:
            return await self._cycle(when)
        finally:
            self.cycle_started_mono = None

    async def _cycle(self, when: datetime) -> CycleResult:
        await self._test_hook("poll")
        samples = await self.poller.read(when)
        await self._test_hook("evaluate")
        result = self.engine.evaluate(when, samples)
        # The new stages are durable before anything sounds: a crash during a broadcast
        # restores them and so cannot sound the same stage twice (one commit, < 1 ms).
        self._save(when, result)
        requests = self._not_inhibited(result.broadcasts)
        if requests:
            await self._abort_tests()
        for request in requests:  # sirens first: nothing below may delay them
            self.zones[request.zone].submit(
                request, self.poller.health[request.station].answered_mono)
        self.cycles += 1
        self.last_cycle, self.last_cycle_mono = when, time.monotonic()
        self._record(when, result)
        for request in result.broadcasts:
            if request not in requests:
                self._record_withheld(request)
        return result

    async def _abort_tests(self) -> None:
        """An alarm needs the zones: a running test lets go of the relays (OFF) first."""
        if self.tests is not None:
            await self.tests.abort("alarm broadcast")  # only waits if a test holds relays
        task = self._command_test
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task})

    def _not_inhibited(self, wanted: list[BroadcastRequest]) -> list[BroadcastRequest]:
        """The requests no inhibit withholds (ending the inhibits whose time is up first)."""
        if self.inhibits is None:
            return wanted
        self.inhibits.expire()
        out = []
        for request in wanted:
            inhibit = self.inhibits.blocking(request)
            if inhibit is None:
                out.append(request)
            else:
                self.inhibits.withhold(request, inhibit)
        return out

    def _record_withheld(self, request: BroadcastRequest) -> None:
        """A broadcast an inhibit withheld: stored and published like one that played."""
        tags = {"gateway": self.gateway, "zone": request.zone, "station": request.station,
                "sequence": request.sequence, "kind": request.kind}
        if self.influx is not None:
            self.influx.write([Record("broadcast", tags | {"outcome": "inhibited"}, {
                "stage": request.stage, "siren_on_s": 0.0, "clips_played": 0, "faults": 0},
                request.time)])
        if self.mqtt is not None:
            self.mqtt.publish_event("broadcast", {
                "zone": request.zone, "station": request.station, "stage": request.stage,
                "stage_name": request.stage_name, "sequence": request.sequence,
                "kind": request.kind, "outcome": "inhibited",
                "time": request.time.isoformat()})

    # ---- inhibits (maintenance; gauged/ops/inhibits.py) ------------------------------------

    def inhibit(self, scope: str, target: str, *, minutes: float | None = None,
                reason: str = "", by: str = "") -> dict[str, Any]:
        """Add an inhibit (raises InhibitError); returns it as /status shows it."""
        if self.inhibits is None:
            raise RuntimeError("the daemon is not open")
        inhibit = self.inhibits.add(scope, target, minutes=minutes, reason=reason, by=by)
        self._publish_inhibits()
        return inhibit_json(inhibit)

    def release(self, scope: str, target: str, by: str = "") -> list[dict[str, Any]]:
        """End the inhibits of a station or zone (raises InhibitError when none)."""
        if self.inhibits is None:
            raise RuntimeError("the daemon is not open")
        ended = self.inhibits.release(scope, target, by)
        self._publish_inhibits()
        return [inhibit_json(i) for i in ended]

    def _publish_inhibits(self) -> None:
        if self.mqtt is not None and self.inhibits is not None:
            self.mqtt.publish_event("inhibits", {"time": self.clock.now().isoformat(),
                                                 "inhibits": self.inhibits.snapshot()})

    # ---- operator commands (gauged/ops/commands.py) ----------------------------------------

    def _command_handler(self, store: StateStore) -> CommandHandler | None:
        c = self.config.commands
        if not c.enabled:
            return None
        handler = CommandHandler(
            c, execute=self._execute, now=self.clock.timestamp, audit=self._audit,
            seen=lambda cid, now: store.command_seen(cid, now,
                                                     c.max_ttl_s + c.clock_skew_s + 60))
        if self.mqtt is not None:
            self.mqtt.on_command = self.mqtt_command
        return handler

    async def mqtt_command(self, payload: bytes, retained: bool) -> dict[str, Any]:
        assert self.commands is not None
        outcome = await self.commands.handle(payload, retained=retained, via="mqtt")
        return outcome.reply(self.clock.timestamp())

    async def http_command(self, payload: bytes) -> dict[str, Any]:
        """POST /command (the status server has checked the token); the reply goes to
        MQTT too, so that every outcome is on the reply topic."""
        assert self.commands is not None
        outcome = await self.commands.handle(payload, via="http")
        reply = outcome.reply(self.clock.timestamp())
        if self.mqtt is not None:
            self.mqtt.publish_reply(reply)
        return reply

    def _audit(self, when: float, outcome: Outcome) -> None:
        cmd = outcome.command
        sender, action = (cmd.sender, cmd.action) if cmd else ("", "")
        detail = {"result": outcome.result} | (
            {"command": cmd.model_dump(exclude_defaults=True)} if cmd else {})
        if self.store is not None:
            self.store.audit_command(when, outcome.id, sender, action, outcome.status,
                                     outcome.reason, detail)
        if self.influx is not None:
            self.influx.write([Record("command", {
                "gateway": self.gateway, "action": action or "-", "status": outcome.status},
                {"ok": int(outcome.status == "done")}, datetime.fromtimestamp(when, UTC))])

    async def _execute(self, command: Command) -> dict[str, Any]:
        """Run an authenticated, fresh, first-seen command; Refused says why not."""
        match command.action:
            case "silence":
                return self._zone(command.zone).silence()
            case "broadcast":
                return self._manual_broadcast(command)
            case "inhibit":
                assert command.scope is not None
                assert command.target is not None
                try:
                    return self.inhibit(command.scope, command.target, minutes=command.minutes,
                                        reason=command.reason, by=command.sender)
                except InhibitError as exc:
                    raise Refused(str(exc)) from None
            case "release":
                assert command.scope is not None
                assert command.target is not None
                try:
                    return {"released": self.release(command.scope, command.target,
                                                     by=command.sender)}
                except InhibitError as exc:
                    raise Refused(str(exc)) from None
            case "test":
                return await self._test_on_command(command)
        raise Refused(f"unknown action {command.action!r}")  # the schema rules this out

    def _zone(self, zone: str | None) -> ZoneBroadcaster:
        if zone not in self.zones:
            raise Refused(f"unknown zone {zone!r}")
        return self.zones[zone]

    def _manual_broadcast(self, command: Command) -> dict[str, Any]:
        zone = self._zone(command.zone)
        unknown = [c for c in command.clips if c not in self.config.clips]
        if unknown:
            raise Refused(f"unknown clip {unknown[0]!r}")
        if self.inhibits is not None and self.inhibits.zone_inhibited(zone.zone):
            raise Refused(f"zone {zone.zone} is inhibited")
        request = BroadcastRequest(
            time=self.clock.now(), zone=zone.zone, station="", stage=0, stage_name="manual",
            sequence=f"manual-{next(self._manual)}", siren_s=0.0, clips=tuple(command.clips),
            kind="manual")
        zone.submit(request)
        return {"queued": {"zone": zone.zone, "clips": command.clips}}

    async def _test_on_command(self, command: Command) -> dict[str, Any]:
        runner = self.test_runner
        if command.job == "audible" and self.config.tests.audible_clip is None:
            raise Refused("no audible test is configured (tests.audible_clip)")
        if busy := runner.busy_zones():
            raise Refused(f"zones broadcasting: {', '.join(busy)}")
        if self.tests is not None and self.tests.running:
            raise Refused("a scheduled test is running")
        assert command.job is not None
        log.info("test %s start on command id=%s sender=%s", command.job, command.id,
                 command.sender)
        task = asyncio.create_task(runner.run(command.job), name="gauged[tests].on-command")
        self._command_test = task
        try:
            await asyncio.wait({task})
        finally:
            self._command_test = None
        if task.cancelled():
            return {"ok": False, "aborted": "alarm broadcast"}
        result = task.result()
        if self.mqtt is not None:
            self.mqtt.publish_event("test", {"job": command.job, "manual": True,
                                             "id": command.id, "result": result,
                                             "gateway": self.gateway})
        return result

    async def _test_hook(self, where: str) -> None:
        """The test-only stall of `[test_hooks]` (config.py; QUALITY SYS-4): hang here for good,
        the event loop alive, as a deadlocked await would."""
        hook = self.config.test_hooks
        if hook.stall_in == where and self.cycles >= hook.stall_after_cycles:
            log.critical("test hook: the cycle stalls in %s after %d cycles", where,
                         self.cycles)
            await asyncio.Event().wait()

    def _record(self, when: datetime, result: CycleResult) -> None:
        tz = self.config.gateway.timezone
        for t in result.transitions:
            log.info("stage station=%s quantity=%s from=%s to=%s value=%g time=%s",
                     t.station, t.quantity, t.from_name, t.to_name, t.value,
                     _local(t.time, tz))
        records: list[Record] = []
        for s in result.states:
            self.states[s.station] = s
            self.history.add(s)
            tags = {"gateway": self.gateway, "station": s.station}
            if s.kind == "level":
                log.debug("reading station=%s level_m=%s freeboard_m=%s quality=%s",
                          s.station, s.level_m, s.freeboard_m, s.quality)
                records.append(Record("level", tags, {
                    "level_m": s.level_m, "freeboard_m": s.freeboard_m,
                    "quality": s.quality.code, "fault": int(bool(s.fault)),
                    "stage": s.stage}, when))
            else:
                records.append(Record("rain", tags, {
                    "counter": _int_or_none(self.poller.health[s.station].raw
                                            if s.quality is not Quality.MISSING else None),
                    "increment_mm": s.rain_increment_mm, "total_60m_mm": s.rain_total_mm,
                    "quality": s.quality.code, "fault": int(bool(s.fault)),
                    "stage": s.stage}, when))
            if self.mqtt is not None:
                shown = station_json(s, tz)
                self.mqtt.publish_state(s.station, shown)
                self.mqtt.publish_reading(s.station, shown)
        self._log_cycle(when, result)
        for t in result.transitions:
            records.append(Record("stage_change", {
                "gateway": self.gateway, "station": t.station, "quantity": t.quantity},
                {"from_stage": t.from_stage, "to_stage": t.to_stage, "value": t.value}, when))
            if self.mqtt is not None:
                self.mqtt.publish_event("transition", {
                    "time": t.time.isoformat(), "station": t.station, "quantity": t.quantity,
                    "from": t.from_name, "to": t.to_name, "value": t.value})
        if self.cap is not None:  # never raises; the folder is written by its own task
            inhibits = self.inhibits
            self.cap.transitions([t for t in result.transitions if inhibits is None or
                                  inhibits.station_inhibit(t.station) is None])
        if self.influx is not None:
            self.influx.write(records + self._health_records(when))

    def _health_records(self, when: datetime) -> list[Record]:
        """Gauge, bus and spool health at the cycle's time (routine telemetry)."""
        assert self.influx is not None
        records = []
        for sid, h in self.poller.health.items():
            records.append(Record("gauge", {
                "gateway": self.gateway, "station": sid,
                "gauge": self.config.stations[sid].gauge}, {
                "raw": h.raw, "ok": int(not h.error), "errors": h.errors,
                "status_word": h.status, "fault": int(bool(h.fault))}, when))
        for name, hub in self.hubs.items():
            records.append(Record("bus", {"gateway": self.gateway, "bus": name}, {
                "connected": int(hub.connected),
                "read_s": self.poller.bus_read_s.get(name)}, when))
        records.append(self.influx.health_record(self.gateway, when))
        return records

    def _log_cycle(self, when: datetime, result: CycleResult) -> None:
        levels = " ".join(f"{s.station}={s.freeboard_m:.2f}m" for s in result.states
                          if s.kind == "level" and s.freeboard_m is not None)
        rain = max((s.rain_total_mm or 0.0 for s in result.states if s.kind == "rain"),
                   default=0.0)
        bad = sum(1 for s in result.states if s.quality is not Quality.GOOD)
        log.info("cycle time=%s freeboard %s rain_60m_max=%.1fmm not_good=%d",
                 _local(when, self.config.gateway.timezone), levels, rain, bad)

    def _fault(self, kind: str, what: str, detail: str) -> None:
        """A relay or audio fault during a broadcast: kept for /status, published at once."""
        self.faults.append(f"{kind}: {what}: {detail}")
        del self.faults[:-50]
        if self.mqtt is not None:
            self.mqtt.publish_event("fault", {"kind": kind, "what": what, "detail": detail,
                                              "time": self.clock.now().isoformat()})

    def _broadcast_started(self, record: BroadcastRecord) -> None:
        req = record.request
        if self.store is not None:
            self.store.broadcast_started(req.zone, req.station, req.stage, req.stage_name,
                                         req.sequence, record.started)

    def _broadcast_done(self, record: BroadcastRecord) -> None:
        req = record.request
        self.broadcast_tally.add(req.zone, record.outcome, record.latency_s)
        if self.store is not None:
            self.store.broadcast_finished(
                req.zone, req.station, req.stage, req.stage_name, req.sequence,
                outcome=record.outcome, started=record.started, finished=record.finished,
                siren_on_s=record.siren_on_s, clips_played=record.clips_played,
                faults=record.faults)
        when = datetime.fromtimestamp(record.finished, UTC)
        if self.influx is not None:
            self.influx.write([Record("broadcast", {
                "gateway": self.gateway, "zone": req.zone, "station": req.station,
                "sequence": req.sequence, "kind": req.kind, "outcome": record.outcome}, {
                "stage": req.stage, "siren_on_s": record.siren_on_s,
                "clips_played": len(record.clips_played), "faults": len(record.faults),
                "latency_ms": None if record.latency_s is None else record.latency_s * 1000,
                **_latency(record)},
                datetime.fromtimestamp(record.started, UTC))])
        if self.mqtt is not None:
            self.mqtt.publish_event("broadcast", broadcast_json(record) | {
                "finished": when.isoformat()})

    # ---- state that survives restarts, scheduled tests ---------------------------------

    def _report_interrupted(self, store: StateStore) -> None:
        """Broadcasts and tests a crash cut short: marked, reported, never re-run
        (gauged/store/state.py)."""
        for b in store.interrupt_broadcasts():
            log.warning("broadcast interrupted by a restart zone=%s station=%s stage=%s "
                        "sequence=%s started=%s: not re-run (no duplicate announcements; the "
                        "stage is restored)", b.zone, b.station, b.stage_name, b.sequence,
                        _local(datetime.fromtimestamp(b.started, UTC),
                               self.config.gateway.timezone))
            self.interrupted.append(b)
        for run in store.interrupt_jobs():
            log.warning("test %s for %s interrupted by a restart: not re-run", run.job,
                        datetime.fromtimestamp(run.fire_time, UTC).isoformat())
        self._stored_last = store.last_broadcasts()

    def _restore(self, store: StateStore) -> None:
        """Stages (without re-sounding), rain history and counter baselines from the store."""
        last = store.last_cycle()
        self.restored = {"path": str(store.path) if store.path else None,
                         "last_cycle": None, "stations": {}}
        if last is None:
            log.info("state store path=%s: nothing to restore", store.path or ":memory:")
            return
        now = self.clock.timestamp()
        age = now - last
        self.restored["last_cycle"] = datetime.fromtimestamp(last, UTC).isoformat()
        if abs(age) > self.config.state.max_age_s:
            log.warning("state store: the last cycle was %.0f s ago, more than state.max_age_s "
                        "= %g s: stages start afresh", age,
                        self.config.state.max_age_s)
            return
        for sid, saved in store.stages().items():
            st = self.config.stations.get(sid)
            if st is None or not 0 <= saved.stage <= len(st.stages):
                log.warning("state store: stage %d of station %s no longer fits the "
                            "configuration: not restored", saved.stage, sid)
                continue
            self.engine.restore(sid, saved.stage, None if saved.entered is None else
                                datetime.fromtimestamp(saved.entered, UTC))
            self.restored["stations"][sid] = saved.stage
        # the rain derivations carry on from the readings they saw (same path as live)
        for sid, readings in store.rain_readings(last - RAIN_KEEP_S).items():
            if sid in self.engine.rain:
                for ts, mm, quality in readings:
                    self.engine.rain[sid].update(ts, mm, quality)
        short = RESUME_CYCLES * self.config.gateway.poll_interval_s
        for sid, (raw, read) in store.counters().items():
            tracker = self.poller.counters.get(sid)
            if tracker is not None and 0 <= now - read <= short:
                tracker.last = raw
        self._saved_stages = self._stage_states()
        staged = [f"{sid}={self.engine.machines[sid].rule.names[stage]}"
                  for sid, stage in self.restored["stations"].items() if stage > 0]
        log.info("state restored path=%s last_cycle=%s age=%.0fs: stages restored without "
                 "re-sounding: %s", store.path or ":memory:", self.restored["last_cycle"], age,
                 ", ".join(staged) or "all normal")

    def _stage_states(self) -> dict[str, tuple[int, float | None]]:
        """Each station's stage and when its own quantity entered it."""
        return {sid: (stage, self.engine.machines[sid].entered)
                for sid, stage in self.engine.stages.items()}

    def _save(self, when: datetime, result: CycleResult) -> None:
        """The cycle's stages, counter baselines and rain readings: one commit."""
        if self.store is None:
            return
        machines = self._stage_states()
        changed = {k: v for k, v in machines.items() if self._saved_stages.get(k) != v}
        counters: dict[str, tuple[int, float]] = {}
        rain = []
        ts = when.timestamp()
        for s in result.states:
            if s.kind != "rain":
                continue
            rain.append((s.station, s.rain_increment_mm, s.quality))
            tracker = self.poller.counters.get(s.station)
            if tracker is not None and tracker.last is not None and \
                    s.quality is not Quality.MISSING:
                counters[s.station] = (tracker.last, ts)
        self.store.save_cycle(ts, stages=changed, counters=counters, rain=rain)
        self._saved_stages = machines

    def _scheduled_tests(self, store: StateStore) -> ProofTestScheduler | None:
        t = self.config.tests
        jobs = jobs_from_config(t.silent, t.audible, timezone=self.config.gateway.timezone,
                                silent_grace_s=t.silent_grace_s,
                                audible_grace_s=t.audible_grace_s)
        if not jobs:
            return None
        runner = self.test_runner
        return ProofTestScheduler(jobs, self.clock, store, run=runner.run, busy=runner.busy_zones,
                             on_result=self._test_done)

    def _test_done(self, run: JobRun) -> None:
        """A scheduled test has a result: stored already; published here."""
        if self.mqtt is not None:
            self.mqtt.publish_event("test", run.as_json() | {"gateway": self.gateway})
        if self.cap is not None and run.job == "audible":  # people heard it: an Exercise
            played = [z["zone"] for z in run.result.get("zones", []) if z.get("played")]
            self.cap.test_played(played, datetime.fromtimestamp(run.fire_time, UTC),
                                 self.clock.now())
        if self.influx is not None:
            items = run.result.get("relays") or run.result.get("zones") or []
            self.influx.write([Record("scheduled_test", {
                "gateway": self.gateway, "job": run.job, "status": run.status}, {
                "ok": int(run.status == "ok"), "items": len(items),
                "faults": sum(1 for i in items if i.get("error"))},
                datetime.fromtimestamp(run.fire_time, UTC))])

    # ---- status ----------------------------------------------------------------------

    def health(self) -> list[str]:
        """Failing checks; empty when healthy."""
        failing = []
        interval_real = self.clock.real_seconds(self.config.gateway.poll_interval_s)
        if self.last_cycle_mono is None:
            if not self.ready.is_set():
                failing.append("starting")
        elif time.monotonic() - self.last_cycle_mono > 2 * interval_real + 5:
            failing.append("poll loop: no cycle for two intervals")
        return failing

    def snapshot(self) -> dict[str, Any]:
        """Everything /status shows."""
        tz = self.config.gateway.timezone
        stations = {}
        for sid, st in self.config.stations.items():
            s = self.states.get(sid)
            entry: dict[str, Any] = {"name": st.name, "kind": st.kind, "zones": st.zones,
                                     "stages": [{"name": g.name, "threshold": g.threshold}
                                                for g in st.stages]}
            if s is not None:
                entry |= station_json(s, tz)
            else:  # no cycle yet: the stage restored at start (or normal)
                stage = self.engine.stages[sid]
                entry |= {"stage": stage,
                          "stage_name": self.engine.machines[sid].rule.names[stage],
                          "quality": Quality.MISSING.value}
            entry["restored_stage"] = self.restored.get("stations", {}).get(sid)
            inhibit = self.inhibits.station_inhibit(sid) if self.inhibits else None
            entry["inhibited_until"] = inhibit_json(inhibit)["until"] if inhibit else None
            health = self.poller.health[sid]
            entry["reading_age_s"] = None if health.last_good is None else round(
                (self.clock.now() - health.last_good).total_seconds(), 1)
            entry["gauge"] = {"error": health.error, "errors": health.errors,
                              "polled": health.polled, "status_word": health.status,
                              "last_good": health.last_good.isoformat()
                              if health.last_good else None}
            stations[sid] = entry
        zones = {
            zid: {"name": self.config.zones[zid].name, "busy": z.current is not None,
                  "inhibited": bool(self.inhibits and self.inhibits.zone_inhibited(zid)),
                  "current": broadcast_json(z.current) if z.current else None,
                  "last": broadcast_json(z.last) | {"status": "finished"} if z.last else
                  self._stored_last[zid].as_json() if zid in self._stored_last else None}
            for zid, z in self.zones.items()
        }
        uplinks: dict[str, Any] = {}
        if self.influx is not None:
            uplinks["influx"] = asdict(self.influx.health)
        if self.mqtt is not None:
            uplinks["mqtt"] = {"connected": self.mqtt.connected}
        if self.cap is not None:
            uplinks["cap"] = self.cap.snapshot()
        return {
            "gateway": self.gateway,
            "time": self.clock.now().isoformat(),
            "timezone": tz,
            "poll_interval_s": self.config.gateway.poll_interval_s,
            "clock_speed": self.clock.speed,
            "cycles": self.cycles,
            "last_cycle": self.last_cycle.isoformat() if self.last_cycle else None,
            "health": self.health() or ["ok"],
            "stations": stations,
            "zones": zones,
            "buses": {n: {"kind": self.config.buses[n].kind, "connected": h.connected,
                          "read_s": round(self.poller.bus_read_s.get(n, 0.0), 4)}
                      for n, h in self.hubs.items()},
            "uplinks": uplinks,
            "faults": self.faults[-20:],
            "state": {"path": str(self.store.path) if self.store and self.store.path else None,
                      "fresh": self.store.fresh if self.store else True,
                      "problem": self.store.problem if self.store else "",
                      "restored": self.restored},
            "interrupted_broadcasts": [b.as_json() for b in self.interrupted],
            "inhibits": self.inhibits.snapshot() if self.inhibits is not None else [],
            "commands": self.commands.snapshot() if self.commands is not None else None,
            "clock_skew_s": round(self.clock.skew(), 1),
            "tests": self.tests.snapshot() if self.tests is not None else {},
        }

    def page(self) -> str:
        """The status page (gauged/ops/page.py): /status and the last hours of every station."""
        history = {sid: self.history.points(sid) for sid in self.config.stations}
        return render_page(self.snapshot(), history)


def station_json(s: StationState, tz: str) -> dict[str, Any]:
    """The JSON form of a station state (MQTT and /status)."""
    out: dict[str, Any] = {"time": s.time.isoformat(), "local_time": _local(s.time, tz),
                           "stage": s.stage, "stage_name": s.stage_name,
                           "quality": s.quality.value, "reason": s.reason,
                           "gauge_fault": s.fault or None}
    if s.kind == "level":
        out |= {"level_m": s.level_m, "freeboard_m": s.freeboard_m,
                "rise_m_per_h": s.rise_m_per_h, "minutes_to_next": s.minutes_to_next}
    else:
        # rain_60m_mm has always been the stage total (60 min unless configured otherwise)
        out |= {"rain_increment_mm": s.rain_increment_mm, "rain_60m_mm": s.rain_total_mm,
                "rain_10m_mm": s.rain_10m_mm, "rain_24h_mm": s.rain_24h_mm,
                "rain_event_mm": s.rain_event_mm, "rain_partial": s.rain_partial}
    return out


def broadcast_json(record: BroadcastRecord) -> dict[str, Any]:
    req = record.request
    return {"zone": req.zone, "station": req.station, "stage": req.stage,
            "stage_name": req.stage_name, "sequence": req.sequence, "kind": req.kind,
            "started": datetime.fromtimestamp(record.started, UTC).isoformat(),
            "outcome": record.outcome,
            "siren_on_s": round(record.siren_on_s, 3), "clips_played": record.clips_played,
            "faults": record.faults, "latency": _latency(record)}


def _latency(record: BroadcastRecord) -> dict[str, float | None]:
    """The latency record of a broadcast, in milliseconds from the gauge's answer."""
    t0 = record.reading_mono or record.decided_mono

    def ms(t: float | None) -> float | None:
        return None if t is None else round((t - t0) * 1000, 2)

    return {"decision_ms": ms(record.decided_mono),
            "first_relay_write_ms": ms(record.first_relay_mono),
            "audio_start_ms": ms(record.audio_start_mono)}


def _local(when: datetime, tz: str) -> str:
    from zoneinfo import ZoneInfo

    return when.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S%z")


def _int_or_none(v: int | float | None) -> int | None:
    return None if v is None else int(v)


async def _report_stuck_shutdown(after_s: float) -> None:
    """If stopping takes longer than `after_s`, say what every task is waiting on."""
    await asyncio.sleep(after_s)
    for task in asyncio.all_tasks():
        frames = task.get_stack(limit=8)
        where = " <- ".join(f"{f.f_code.co_filename.rsplit('/', 1)[-1]}:{f.f_lineno}"
                            f" {f.f_code.co_name}" for f in reversed(frames))
        log.error("stopping is slow: task %s waits at %s", task.get_name(), where or "?")


async def _cancel(task: asyncio.Task[Any]) -> None:
    """Cancel a task of ours and wait for its cleanup; our own cancellation still wins."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
