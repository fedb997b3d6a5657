"""The command executor: what an operator's command does (gauged/ops/commands.py checks it
first), and the maintenance actions behind it: inhibit, release, silence, a manual
broadcast, a test on command, an acknowledgement (gauged/store/acks.py).

Every action is refused with a reason rather than half done. One test runs at a time,
scheduled or on command (the runner refuses a second, gauged/field/prooftests.py), and a
manual broadcast waits for no test: it is refused while one runs. A test on command gives
way to an alarm like a scheduled test does (`abort_test`: relays OFF before the alarm is
handed to its zone).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Mapping
from typing import Any

from gauged.alarm.types import BroadcastRequest
from gauged.clock import Clock
from gauged.config.settings import Config
from gauged.daemon.recorder import Recorder
from gauged.field.prooftests import ProofTestNotStarted, ProofTestRunner, ProofTestScheduler
from gauged.field.zones import ZoneBroadcaster
from gauged.ops.commands import Command, CommandHandler, Outcome, Refused
from gauged.ops.inhibits import InhibitError, Inhibits, inhibit_json
from gauged.store.acks import Ack, AckBook
from gauged.store.state import JournalEntry, StateStore
from gauged.store.writer import settled
from gauged.tasks import wait_child
from gauged.uplinks.mqtt import MqttPublisher

log = logging.getLogger(__name__)

JOURNAL_WAIT_S = 0.5  # how long a manual broadcast waits for its journal row (no fsync)


class CommandExecutor:
    """Runs authenticated, fresh, first-seen commands on the daemon's zones and inhibits."""

    def __init__(self, config: Config, zones: Mapping[str, ZoneBroadcaster], clock: Clock,
                 recorder: Recorder, runner: ProofTestRunner) -> None:
        self.config = config
        self.zones = zones
        self.clock = clock
        self.recorder = recorder
        self.runner = runner
        self.inhibits: Inhibits | None = None  # set when the daemon opens its store
        self.store: StateStore | None = None  # (the broadcast journal)
        self.acks: AckBook | None = None  # set when the daemon opens its store
        self.scheduler: ProofTestScheduler | None = None
        self.commands: CommandHandler | None = None  # set with `handler` at open
        self._manual = itertools.count(1)
        self._mqtt: MqttPublisher | None = None

    # ---- inhibits (maintenance; gauged/ops/inhibits.py) --------------------------------

    def inhibit(self, scope: str, target: str, *, minutes: float | None = None,
                reason: str = "", by: str = "") -> dict[str, Any]:
        """Add an inhibit (raises InhibitError); returns it as /status shows it."""
        if self.inhibits is None:
            raise RuntimeError("the daemon is not open")
        inhibit = self.inhibits.add(scope, target, minutes=minutes, reason=reason, by=by)
        self.recorder.inhibits(self.inhibits.snapshot())
        return inhibit_json(inhibit)

    def release(self, scope: str, target: str, by: str = "") -> list[dict[str, Any]]:
        """End the inhibits of a station or zone (raises InhibitError when none)."""
        if self.inhibits is None:
            raise RuntimeError("the daemon is not open")
        ended = self.inhibits.release(scope, target, by)
        self.recorder.inhibits(self.inhibits.snapshot())
        return [inhibit_json(i) for i in ended]

    # ---- commands ----------------------------------------------------------------------

    def handler(self, store: StateStore, mqtt: MqttPublisher | None) -> CommandHandler | None:
        """The command handler (None when commands are off), subscribed on MQTT if there."""
        c = self.config.commands
        if not c.enabled:
            return None
        handler = CommandHandler(
            c, gateway=self.config.gateway.id, execute=self.execute,
            now=self.clock.timestamp, audit=self.audit,
            # the record waits for its fsync (up to a second on a slow card): in a thread,
            # so that a command never holds up the event loop, and with it a siren
            seen=lambda cid, now: asyncio.to_thread(store.command_seen, cid, now,
                                                    c.max_ttl_s + c.clock_skew_s + 60))
        self._mqtt = mqtt
        if mqtt is not None:
            mqtt.on_command = self.mqtt_command
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
        if self._mqtt is not None:
            self._mqtt.publish_reply(reply)
        return reply

    def audit(self, when: float, outcome: Outcome) -> None:
        cmd = outcome.command
        sender, action = (cmd.sender, cmd.action) if cmd else ("", "")
        detail = {"result": outcome.result} | (
            {"command": cmd.model_dump(exclude_defaults=True)} if cmd else {})
        self.recorder.command(when, outcome.id, sender, action, outcome.status,
                              outcome.reason, detail)

    async def execute(self, command: Command) -> dict[str, Any]:
        """Run a command; Refused says why not."""
        match command.action:
            case "silence":
                return self._zone(command.zone).silence()
            case "broadcast":
                return await self._manual_broadcast(command)
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
            case "ack":
                return await self._ack(command)
        raise Refused(f"unknown action {command.action!r}")  # the schema rules this out

    def _zone(self, zone: str | None) -> ZoneBroadcaster:
        if zone is None or zone not in self.zones:
            raise Refused(f"unknown zone {zone!r}")
        return self.zones[zone]

    async def _manual_broadcast(self, command: Command) -> dict[str, Any]:
        """Journal the operator's broadcast (like any decided one: a restart replays or
        reports it), then queue it."""
        zone = self._zone(command.zone)
        unknown = [c for c in command.clips if c not in self.config.clips]
        if unknown:
            raise Refused(f"unknown clip {unknown[0]!r}")
        if self.inhibits is not None and self.inhibits.zone_inhibited(zone.zone):
            raise Refused(f"zone {zone.zone} is inhibited")
        if (test := self.runner.running) is not None:  # it would share the zone's relays
            raise Refused(f"a test is running ({test})")
        request = BroadcastRequest(
            time=self.clock.now(), zone=zone.zone, station="", stage=0, stage_name="manual",
            sequence=f"manual-{next(self._manual)}", siren_s=0.0, clips=tuple(command.clips),
            kind="manual")
        row = None
        if self.store is not None:
            row = self.store.journal_id()
            if not await settled(self.store.journal_add([JournalEntry.of(row, request,
                                                                         "queued")]),
                                 JOURNAL_WAIT_S):
                log.warning("state store: the journal row of a manual broadcast is not "
                            "written after %g s: queued without waiting", JOURNAL_WAIT_S)
        zone.submit(request, journal=row)
        return {"queued": {"zone": zone.zone, "clips": command.clips, "journal": row}}

    async def _ack(self, command: Command) -> dict[str, Any]:
        """Acknowledge a raised station: on disk first, then logged and published. The
        zones are not touched (an acknowledgement silences nothing)."""
        station = command.station
        if station is None or station not in self.config.stations:
            raise Refused(f"unknown station {station!r}")
        state = self.recorder.states.get(station)
        if state is None or state.stage <= 0:
            raise Refused(f"station {station} is not raised (stage "
                          f"{state.stage_name if state else 'unknown'})")
        if self.acks is None:
            raise Refused("the daemon is not open")
        ack = Ack(station=station, stage=state.stage, stage_name=state.stage_name,
                  by=command.sender, time=self.clock.timestamp(), command_id=command.id,
                  note=command.reason)
        if not await asyncio.to_thread(self.acks.add, ack):  # waits for its fsync
            raise Refused("the state file cannot be written: the acknowledgement is not kept")
        self.recorder.ack(ack)
        return {"ack": ack.as_json()}

    async def _test_on_command(self, command: Command) -> dict[str, Any]:
        runner = self.runner
        if command.job == "audible" and self.config.tests.audible_clip is None:
            raise Refused("no audible test is configured (tests.audible_clip)")
        if busy := runner.busy_zones():
            raise Refused(f"zones broadcasting: {', '.join(busy)}")
        if self.scheduler is not None and self.scheduler.running:
            raise Refused("a scheduled test is running")
        if (test := runner.running) is not None:
            raise Refused(f"a test is running ({test})")
        assert command.job is not None
        log.info("test %s start on command id=%s sender=%s", command.job, command.id,
                 command.sender)
        # a task of its own, so that an alarm's `abort_test` cancels the test, not us
        task = asyncio.create_task(runner.run(command.job), name="gauged[tests].on-command")
        await wait_child(task)
        if task.cancelled():
            return {"ok": False, "aborted": "alarm broadcast"}
        if isinstance(exc := task.exception(), ProofTestNotStarted):
            raise Refused(str(exc))  # a broadcast (or a test) came first after all
        result = task.result()
        self.recorder.manual_test(command.job, command.id, result)
        return result

    async def abort_test(self) -> None:
        """An alarm needs the zones: a running test, on command or scheduled, lets go of the
        relays first; returns once its relays are OFF."""
        await self.runner.abort()
