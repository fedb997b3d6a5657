"""The daemon: owns the buses, the engine, the zones and the outputs, and runs the cycle.

Start: open the state store (reporting tests a crash cut short), open the buses, drive every
relay OFF with read-back (the first actuator action is always OFF), restore the stages
without re-sounding, judge the broadcasts the last run left unplayed or cut short (replayed
or reported, gauged/daemon/restore.py), then start the zone sequencers, the uplinks, the
scheduled tests, the status server and the poll loop in one TaskGroup.

Each cycle, at a wall-clock boundary (following steps of the wall clock, see
gauged/daemon/timeline.py): read every gauge (buses in parallel), judge quality, derive,
evaluate stages; commit the stages and the journal rows of the cycle's broadcasts (in the state
store's writer thread: the event loop waits for that commit, at most GUARD_WAIT_S, and never
for an fsync); hand the broadcasts to their zones (after aborting a scheduled test, if one
runs) and wait until each that can start has issued its first relay write; only then record
(gauged/daemon/recorder.py: the log, /status and every uplink, the spool among them). So a
siren waits for neither storage nor uplinks (QUALITY ALM-1, PERF-3).

Stop, in order: the poll loop, the scheduled tests, the zones (each drives its relays OFF;
the broadcast cut short is journaled `interrupted`, those still waiting `not-started`), the
uplinks (flushed briefly), the status server; then every relay OFF; the state store is
closed last (everything journaled is on disk).

Commands run through gauged/daemon/executor.py, /status is assembled from
gauged/daemon/snapshot.py, the watchdog's budgets are in gauged/daemon/watchdog.py. Before
anything touches the state or a relay, the daemon takes its state folder's lock and `run`
checks the status port (gauged/daemon/startup.py: one daemon per state folder; a start-up
problem is one line and exit 1). An unexpected error in one station's read, decode, judging
or evaluation is contained to that station (gauged/barrier.py, QUALITY SYS-5); one that
escapes a whole cycle ends that cycle only.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from drivers.configs import RelayConfig
from drivers.line import SerialLineHub
from drivers.players import make_player
from drivers.registry import make_hub
from drivers.relays import CoilRelay
from gauged.alarm.engine import Engine
from gauged.alarm.site import SiteEvent
from gauged.alarm.types import BroadcastRequest, CycleResult, StationState
from gauged.barrier import CYCLE, Barrier, Contained
from gauged.clock import Clock, OffsetWall
from gauged.config.audio import check_clips
from gauged.config.settings import Config
from gauged.daemon import reload, snapshot
from gauged.daemon.executor import CommandExecutor
from gauged.daemon.memory import release_free_memory
from gauged.daemon.recorder import Recorder
from gauged.daemon.restore import StateKeeper
from gauged.daemon.sitewatch import SiteWatch
from gauged.daemon.startup import check_status_port, instance_lock, listening
from gauged.daemon.timeline import CycleTimer, redate
from gauged.daemon.watchdog import status_line, watch
from gauged.errors import StartupError
from gauged.field.poll import Poller
from gauged.field.prooftests import ProofTestRunner, ProofTestScheduler, jobs_from_config
from gauged.field.relays import drive_off
from gauged.field.zones import ZoneBroadcaster
from gauged.ops.commands import CommandHandler
from gauged.ops.inhibits import Inhibits
from gauged.ops.metrics import DaemonCollector, exposition
from gauged.ops.notify import Notifier
from gauged.ops.page import render_page
from gauged.ops.status import StatusServer
from gauged.store.acks import AckBook
from gauged.store.state import RestartDecision, StateStore
from gauged.store.writer import settled
from gauged.tasks import cancel_and_wait, report_stuck
from gauged.uplinks.base import Uplink
from gauged.uplinks.cap import CapSink
from gauged.uplinks.influx import InfluxSink
from gauged.uplinks.mqtt import MqttPublisher

log = logging.getLogger(__name__)

# How long a cycle with broadcasts waits for the commit of its stages and journal rows
# (normally well under a millisecond: no fsync) before the sirens go ahead without it.
GUARD_WAIT_S = 0.5
# How long a cycle waits for its broadcasts' first relay writes before it records (a relay
# that does not answer holds only its own zone; the others wrote long before).
UNDERWAY_WAIT_S = 2.0


def clock_from(config: Config) -> Clock:
    c = config.clock
    offset = config.test_hooks.wall_offset_file
    if offset is None:
        return Clock(c.speed, c.start, c.anchor_unix)
    log.warning("test hook set: the wall clock is the system clock plus the seconds in %s "
                "(a test-only clock, never on a gateway)", offset)
    return Clock(c.speed, c.start, c.anchor_unix, wall=OffsetWall(offset))


ON_BATTERY_PAGE = ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
                   "<meta http-equiv=\"refresh\" content=\"60\"><title>gauged</title></head>"
                   "<body><p>Mains power lost: the site runs on its battery and this page is "
                   "off to save energy. Every alarm works as usual; "
                   "<a href=\"status\">/status</a> and <a href=\"metrics\">/metrics</a> "
                   "answer.</p></body></html>\n")


class Daemon:
    """One gateway's worth of gauges, stations and zones."""

    def __init__(self, config: Config, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or clock_from(config)
        self.gateway = config.gateway.id
        tz = config.gateway.timezone
        self.hubs = {name: make_hub(name, bus) for name, bus in config.buses.items()}
        # unexpected errors contained per (station, where) (gauged/barrier.py; /metrics)
        self.internal_errors: Counter[tuple[str, str]] = Counter()
        self.poller = Poller(config, self.hubs, internal_errors=self.internal_errors)
        self.site = SiteWatch(config)  # the site's own health: operator alarms only
        self.engine = Engine(config)
        self.barrier = Barrier(log, self.internal_errors)  # the engine's, per station
        self.cycle_barrier = Barrier(log, self.internal_errors)  # the last resort
        self.lock: Path | None = None  # the state folder's lock, while held
        # the spool lives next to the state file unless [influx] spool_path says otherwise
        self.influx = InfluxSink(
            config.influx, config.influx.spool_path or config.state.path.with_name(
                "spool.sqlite3"), gateway=self.gateway,
            gauge_names=config.channels()) \
            if config.influx.enabled else None
        self.mqtt = MqttPublisher(config.mqtt, self.gateway, timezone=tz) \
            if config.mqtt.enabled else None
        self.cap = CapSink(config, self.mqtt.publish_cap if self.mqtt else None) \
            if config.cap.enabled else None
        self.uplinks: list[Uplink] = [u for u in (self.influx, self.mqtt, self.cap) if u]
        self.recorder = Recorder(self.uplinks, self.clock, timezone=tz,
                                 poll_interval_s=config.gateway.poll_interval_s)
        self.recorder.follow = {sid: st.follow for sid, st in config.stations.items()
                                if st.follow is not None}
        # Every clip decoded (gauged/config/audio.py): its duration times the broadcasts; a
        # bad one refuses the start in `opened` (QUALITY AUD-1)
        self.clips, self.clip_problems = check_clips(config)
        # One player per zone: a player plays one clip at a time, zones play at once.
        self.players = {zid: make_player(config.players[z.player])
                        for zid, z in config.zones.items()}
        self.zones = {
            zid: ZoneBroadcaster(
                zid, siren=self._relay(f"{zid}.siren", z.siren_relay),
                amplifier=self._relay(f"{zid}.amplifier", z.amplifier_relay),
                player=self.players[zid], clip_path=config.clip_path, clock=self.clock,
                sequences=config.sequences, siren_max_s=config.defaults.siren_max_s,
                on_done=self.recorder.broadcast_done, on_fault=self.recorder.fault,
                on_start=self.recorder.broadcast_started,
                on_unplayed=self.recorder.broadcast_unplayed,
                clip_seconds={cid: c.duration_s for cid, c in self.clips.items()})
            for zid, z in config.zones.items()
        }
        self.keeper = StateKeeper(config, self.engine, self.poller)
        t = config.tests
        # the silent and audible tests, run by the calendar (and on command)
        self.test_runner = ProofTestRunner(
            self.zones, self.clock, hold_s=t.hold_s, audible_clip=t.audible_clip,
            audible_zones=t.audible_zones, clip_path=config.clip_path,
            on_fault=self.recorder.fault,
            inhibited=lambda zone: bool(self.inhibits and self.inhibits.zone_inhibited(zone)),
            siren_pattern=t.siren_pattern)
        self.executor = CommandExecutor(config, self.zones, self.clock, self.recorder,
                                        self.test_runner)
        self.status: StatusServer | None = None
        self.store: StateStore | None = None
        self.tests: ProofTestScheduler | None = None
        self.inhibits: Inhibits | None = None
        self.commands: CommandHandler | None = None
        self.cycles = 0
        self.last_cycle: datetime | None = None
        self.last_cycle_mono: float | None = None
        self.cycle_started_mono: float | None = None  # a cycle under way (the watchdog)
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()  # SIGHUP: gauged/daemon/reload.py
        self.notifier: Notifier | None = None  # while running
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

    @property
    def states(self) -> dict[str, StationState]:
        return self.recorder.states

    @property
    def faults(self) -> list[str]:
        return self.recorder.faults

    def stop(self) -> None:
        """Ask the daemon to stop (signal handlers call this)."""
        self._stop.set()

    def request_reload(self) -> None:
        """Ask the daemon to read its configuration again (SIGHUP; gauged/daemon/reload.py);
        requests that come while one is under way make one more."""
        self._reload.set()

    # ---- lifecycle -------------------------------------------------------------------

    @contextlib.contextmanager
    def claimed(self) -> Iterator[None]:
        """The state folder's lock held (gauged/daemon/startup.py; raises StartupError)."""
        if self.lock is not None:
            yield
            return
        with instance_lock(self.config.state.path, self.config.source) as lock:
            self.lock = lock
            try:
                yield
            finally:
                self.lock = None

    @contextlib.asynccontextmanager
    async def opened(self, check: Callable[[], None] | None = None) -> AsyncIterator[Daemon]:
        """Buses open and every relay driven OFF (read back) before and after.

        `run` works inside it; tests use it to drive `cycle` on an injected time. First of
        all the state folder's lock is taken, then `check` runs (`run`: the status port is
        free): both before the state is opened or a relay driven.
        """
        async with contextlib.AsyncExitStack() as stack:
            stack.enter_context(self.claimed())
            if self.clip_problems:
                raise StartupError("not starting: " + "; ".join(self.clip_problems))
            if check is not None:
                check()
            self.store = stack.enter_context(StateStore.open(self.config.state.path))
            self.recorder.store = self.executor.store = self.store
            self.recorder.acks = self.executor.acks = AckBook(self.store)
            if self.mqtt is not None:  # the acknowledgements in force, retained again
                for ack in self.recorder.acks.current().values():
                    self.mqtt.retain_ack(ack)
            self.keeper.open(self.store)
            for uplink in self.uplinks:  # never fails: a broken spool degrades storage only
                await stack.enter_async_context(uplink)
            for hub in self.hubs.values():
                await stack.enter_async_context(hub)
            stack.push_async_callback(self._close_players)
            stack.push_async_callback(self.all_relays_off)
            await self.all_relays_off()
            self.keeper.restore(self.store, self.clock.timestamp())  # after relays OFF
            self.inhibits = self.executor.inhibits = Inhibits(self.config, self.store,
                                                              self.clock.timestamp)
            self._recover(self.keeper.recover(self.clock.timestamp(), self._blocking))
            self.commands = self.executor.commands = self.executor.handler(self.store, self.mqtt)
            if self.cap is not None:  # open CAP alerts follow the restored stages
                self.cap.open(self.engine.stages, self.clock.now())
            self.tests = self.executor.scheduler = self._scheduled_tests(self.store)
            # What start-up built lives as long as the daemon: out of the collector's sight,
            # so that a full collection (30 to 45 ms with it, bench PERF-3) cannot land
            # between a gauge's answer and a siren's relay write.
            gc.collect()
            gc.freeze()
            release_free_memory()  # what start-up freed goes back to the system (PERF-5)
            yield self

    async def run(self, *, once: bool = False) -> None:
        """Run until `stop()` (or after one cycle with `once`)."""
        metrics = exposition(DaemonCollector(self.snapshot, self.poller.read_latency,
                                             self.recorder.broadcast_tally,
                                             lambda: {u.name: u.health() for u in self.uplinks},
                                             channels=self.poller.channels,
                                             gauges=self.poller.health,
                                             internal_errors=self.internal_errors))
        host, port, source = self.config.status.host, self.config.status.port, \
            self.config.source
        async with self.opened(lambda: check_status_port(host, port, source)), listening(
                StatusServer(host, port, self.snapshot, self.health,
                             token=self.config.status.token.get_secret_value(),
                             control=self.http_command if self.commands is not None else None,
                             metrics=metrics, page=self.page), source) as status:
            self.status = status
            async with asyncio.TaskGroup() as tg:
                zone_tasks = [tg.create_task(z.run(), name=f"gauged[zone:{zid}].broadcast")
                              for zid, z in self.zones.items()]
                uplinks = [tg.create_task(u.run(), name=f"gauged[{u.name}].send")
                           for u in self.uplinks]
                poll = tg.create_task(self._poll(once), name="gauged.poll")
                tests = None if once or self.tests is None else tg.create_task(
                    self.tests.run(), name="gauged[tests].schedule")
                reloads = tg.create_task(self._reloads(), name="gauged.reload")
                self.ready.set()
                # READY only now: config valid, state restored, relays OFF and read back
                self.notifier = notifier = Notifier()
                pinger = None
                if notifier.enabled:
                    notifier.ready(status_line(self))
                    pinger = tg.create_task(watch(self, notifier), name="gauged.watchdog")
                await self._stop.wait()
                log.info("stopping")
                notifier.stopping()
                if pinger is not None:  # systemd watches the stop with TimeoutStopSec
                    await cancel_and_wait(pinger)
                watchdog = tg.create_task(report_stuck(10.0, "stopping is slow"),
                                          name="gauged.shutdown-watchdog")
                for task in [reloads, poll, *([tests] if tests else []), *zone_tasks]:
                    await cancel_and_wait(task)
                await self._flush_uplinks()
                for task in uplinks:
                    await cancel_and_wait(task)
                log.debug("stopping: tasks stopped; relays OFF next")
                watchdog.cancel()

    # ---- reload (SIGHUP; gauged/daemon/reload.py) ---------------------------------------

    async def _reloads(self) -> None:
        while True:
            await self._reload.wait()
            self._reload.clear()
            await self.reload()

    async def reload(self) -> bool:
        """Read the configuration file again; apply it if it is valid and changes only what
        may change live, else refuse it and run on unchanged. RELOADING=1, then READY=1."""
        if self.notifier is not None:
            self.notifier.reloading()
        applied = False
        try:
            prepared = await reload.prepare(self.config, self.config.source)
            engine = reload.apply(prepared, self.engine, poller=self.poller, zones=self.zones,
                                  runner=self.test_runner, inhibits=self.inhibits, cap=self.cap)
        except reload.ReloadRefused as exc:
            for line in exc.lines:
                log.error("reload refused: %s", line)
            log.error("reload refused: nothing applied; the daemon runs on unchanged")
        except Exception:  # a reload must never take the daemon down
            log.exception("reload failed; the daemon runs on (restart it to apply the file)")
        else:
            self.engine = self.keeper.engine = engine
            self.config = self.keeper.config = self.executor.config = prepared.config
            self.recorder.follow = {sid: st.follow for sid, st in self.config.stations.items()
                                    if st.follow is not None}
            reload.log_outcome(prepared)
            applied = True
        if self.notifier is not None:
            self.notifier.ready(("" if applied else "reload refused; ") + status_line(self))
        return applied

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
        """One cycle per interval, at wall-clock boundaries (:00, :03 … for 180 s), following
        steps of the wall clock (gauged/daemon/timeline.py)."""
        timer = CycleTimer(self.clock, self.config.gateway.poll_interval_s, self._redate)
        while True:
            when = await timer.wait()
            await self._contained_cycle(when)
            timer.ran(when)

    async def _contained_cycle(self, when: datetime) -> None:
        """A cycle whose unexpected error ends it, not the daemon (logged once while it
        recurs, counted; no cycle completes, so the watchdog pings stop if it persists)."""
        try:
            await self.cycle(when)
        except Exception as exc:  # the barrier of last resort (QUALITY SYS-5)
            self.cycle_barrier.report([CYCLE], {CYCLE: Contained("", CYCLE, exc)})
        else:
            self.cycle_barrier.report([CYCLE], {})

    def _redate(self, seconds: float) -> None:
        """The wall clock stepped by `seconds`: re-date the alarm history (between cycles)."""
        redate(seconds, engine=self.engine, judge=self.poller.judge,
               gauges=self.poller.health.values(), inhibits=self.inhibits)

    async def _flush_uplinks(self) -> None:
        """CAP and InfluxDB get 2 s each to write what is queued; MQTT says `offline` last."""
        if self.cap is not None and not await self.cap.flush(2.0):
            log.warning("stopping with %d CAP documents not written", self.cap.health().queued)
        if self.influx is not None and not await self.influx.flush(2.0):
            log.warning("stopping with %d points not written to influx",
                        self.influx.health().queued)
        if self.mqtt is not None:
            await self.mqtt.flush(2.0)

    async def _close_players(self) -> None:
        for player in self.players.values():
            await player.close()

    async def all_relays_off(self) -> None:
        """Drive every relay OFF and verify; failures are faults, never exceptions."""
        await drive_off(self.relays, lambda r, exc: self.faults.append(f"{r.name}: {exc}"),
                        attempts=1, logger=log)

    def _blocking(self, request: BroadcastRequest) -> str | None:
        """The inhibit that would withhold `request` now, described (None: none)."""
        inhibit = self.inhibits.blocking(request) if self.inhibits is not None else None
        if inhibit is None:
            return None
        return f"{inhibit.scope} {inhibit.target}" + (f" ({inhibit.reason})"
                                                      if inhibit.reason else "")

    def _recover(self, decisions: list[RestartDecision]) -> None:
        """After relays OFF and the stages restored: replay what the restart judged so (the
        zones play it once they run) and report the rest."""
        for d in decisions:
            if d.replay is not None:
                self.zones[d.replay.zone].submit(d.replay.request(), journal=d.replay.id,
                                                 replay=True)
            elif d.restart == "reported":
                self.recorder.missed(d.entry.as_json() | {"fate": d.fate, "note": d.note})

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
        if self.inhibits is not None:
            self.inhibits.expire()
        result = self.engine.evaluate(when, samples, self._withhold)
        self.barrier.report(samples, result.contained)  # logged once per episode, counted
        # The new stages and the journal rows of the broadcasts are committed before anything
        # sounds: a crash during a broadcast restores them, so the stage cannot sound twice,
        # and the next start finds the broadcast to replay or report. The commit runs in the
        # store's thread and takes no fsync (gauged/store/state.py, "Durability").
        journal = self.keeper.journal(result)
        commit = self.keeper.save(when, result, journal)
        requests = result.broadcasts
        if requests and commit is not None and not await settled(commit, GUARD_WAIT_S):
            log.warning("state store: the cycle's commit is not done after %g s: the "
                        "broadcasts go ahead without waiting for it", GUARD_WAIT_S)
        if requests:  # an alarm needs the zones: a running test lets go of the relays first
            if self.tests is not None:
                await self.tests.abort("alarm broadcast")  # only waits if a test holds relays
            await self.executor.abort_test()
        # the journal's first rows are the broadcasts' (none without a store)
        rows: list[int | None] = [row.id for row in journal[:len(requests)]] or \
            [None] * len(requests)
        zones = []
        for request, row in zip(requests, rows, strict=True):  # sirens first
            zone = self.zones[request.zone]
            zone.submit(request, self.poller.health[request.station].answered_mono,
                        journal=row)
            zones.append(zone)
        await self._underway(zones)  # nothing below may delay a first relay write
        self.cycles += 1
        self.last_cycle, self.last_cycle_mono = when, time.monotonic()
        inhibits = self.inhibits
        site_events = await self._site_health(when)
        self.recorder.cycle(when, result, gauges=self.poller.health,
                            buses=self.poller.buses(self.hubs),
                            inhibited=frozenset(sid for sid in self.config.stations
                                                if inhibits and inhibits.station_inhibit(sid)),
                            site=self.site.monitor.values,
                            site_alarms=frozenset(self.site.monitor.active))
        self.recorder.site(site_events)
        for request in result.withheld:
            self.recorder.withheld(request)
        for merged in result.merged:
            self.recorder.merged(merged)
        return result

    async def _site_health(self, when: datetime) -> list[SiteEvent]:
        """The site's health, judged once the cycle's broadcasts are under way: it can
        neither delay nor cause a siren. An error here is logged and costs the site's alarms
        one cycle, nothing more."""
        try:
            events = await self.site.cycle(when, self.poller.site_raw)
        except Exception:
            log.exception("site health: this cycle's readings were not judged")
            return []
        if self.influx is not None:  # on battery: fewer, longer uplink batches if asked
            self.influx.pace(self.config.site.on_battery_uplink_every_s
                             if self.site.mains_lost else 0.0)
        return events

    async def _underway(self, zones: list[ZoneBroadcaster]) -> None:
        """Wait (bounded) until the broadcasts just submitted have issued their first relay
        writes, so that the recording after it never delays one."""
        if not zones:
            return
        try:
            async with asyncio.timeout(UNDERWAY_WAIT_S):
                for zone in zones:
                    await zone.underway()
        except TimeoutError:
            log.warning("a zone has not issued its first relay write after %g s; recording "
                        "the cycle anyway", UNDERWAY_WAIT_S)

    def _withhold(self, request: BroadcastRequest) -> bool:
        """An inhibit withholds `request` (logged and kept with the inhibit)."""
        inhibit = self.inhibits.blocking(request) if self.inhibits is not None else None
        if inhibit is None:
            return False
        assert self.inhibits is not None
        self.inhibits.withhold(request, inhibit)
        return True

    async def _test_hook(self, where: str) -> None:
        """The test-only stall of `[test_hooks]` (gauged/config/models.py; QUALITY SYS-4): hang
        here for good, the event loop alive, as a deadlocked await would."""
        hook = self.config.test_hooks
        if hook.stall_in == where and self.cycles >= hook.stall_after_cycles:
            log.critical("test hook: the cycle stalls in %s after %d cycles", where,
                         self.cycles)
            await asyncio.Event().wait()

    # ---- commands, inhibits and scheduled tests (gauged/daemon/executor.py) ---------------

    async def http_command(self, payload: bytes) -> dict[str, Any]:
        """POST /command (gauged/daemon/executor.py)."""
        return await self.executor.http_command(payload)

    def inhibit(self, scope: str, target: str, *, minutes: float | None = None,
                reason: str = "", by: str = "") -> dict[str, Any]:
        """Add an inhibit (raises InhibitError); returns it as /status shows it."""
        return self.executor.inhibit(scope, target, minutes=minutes, reason=reason, by=by)

    def release(self, scope: str, target: str, by: str = "") -> list[dict[str, Any]]:
        """End the inhibits of a station or zone (raises InhibitError when none)."""
        return self.executor.release(scope, target, by)

    def _scheduled_tests(self, store: StateStore) -> ProofTestScheduler | None:
        t = self.config.tests
        jobs = jobs_from_config(t.silent, t.audible, timezone=self.config.gateway.timezone,
                                silent_grace_s=t.silent_grace_s,
                                audible_grace_s=t.audible_grace_s)
        if not jobs:
            return None
        runner = self.test_runner
        return ProofTestScheduler(jobs, self.clock, store, run=runner.run,
                                  busy=runner.busy_zones, on_result=self.recorder.proof_test)

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
        """Everything /status shows (gauged/daemon/snapshot.py), and the operators'
        acknowledgements in force (gauged/store/acks.py)."""
        acks = self.recorder.acks.current() if self.recorder.acks is not None else {}
        return snapshot.status(self) | {"acks": {s: a.as_json() for s, a in acks.items()}}

    def page(self) -> str:
        """The status page (gauged/ops/page.py): /status and the last hours of every station.
        On battery with `[site] on_battery_page = false`, a short notice instead (no charts
        to draw on every refresh); /status and /metrics answer as always."""
        if self.site.mains_lost and not self.config.site.on_battery_page:
            return ON_BATTERY_PAGE
        history = {sid: self.recorder.history.points(sid) for sid in self.config.stations}
        return render_page(self.snapshot(), history)
