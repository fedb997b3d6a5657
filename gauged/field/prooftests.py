"""Proof tests of the outputs: a silent and an audible siren test on crontab calendars.

- **Silent test**: in every zone, each relay is driven ON, read back, held `[tests] hold_s`,
  driven OFF and read back, one relay at a time: the siren while the amplifier is OFF, then
  the amplifier while the siren is OFF and the player plays nothing. The amplifier is never
  ON together with a player playing, and nothing is audible where the siren tone reaches the
  loudspeakers through the zone's amplifier (as on disaster-radio loudspeaker poles). A relay
  that does not turn OFF stops the zone's test there.
- **Audible test**: in each of `audible_zones` (all by default), amplifier ON, the test
  siren pattern `[tests] siren_pattern` (short chirps that check-config refuses when they
  resemble a flood-fighting signal, gauged/config/signals.py) where the zone has a siren
  relay, the chime clip `audible_clip`, amplifier OFF, each relay write read back.

Relays are driven through gauged/field/relays.py: an ON is written once (what the relay does
when asked once is what the test reports), an OFF is retried like every other OFF
(`RELAY_ATTEMPTS`); a relay that will not follow is a `relay_fault`, reported through
`on_fault`. OFF is driven whatever happens, on cancellation too.

Results (`ok`, `failed`, `skipped`, `aborted`, `interrupted`, with one entry per relay or
zone) are stored in the state database, published as the MQTT event `test`, and shown in
/status.

**Calendars** are crontab lines in the gateway's time zone (`"0 10 * * 1"`: Mondays at
10:00), turned into APScheduler 3 `CronTrigger`s. Weekdays follow crontab (Sunday = 0 or 7),
not `CronTrigger.from_crontab`, which counts from Monday = 0 in APScheduler 3 (there
`"0 10 * * 1"` would be Tuesday). A line restricting both the day of the month and the
weekday is refused: crontab fires on either, a CronTrigger only on both.

**The calendar runs on the daemon's clock.** APScheduler's schedulers read `datetime.now()`
and sleep in real seconds: they cannot run on the accelerated clock of the demo and the
tests. So the calendar is driven here with `CronTrigger.get_next_fire_time` on the daemon's
clock, which reads the wall clock and notices its steps (gauged/clock.py). A step forward
over a fire time runs it once, late (logged), within its misfire grace, like a restart
would; a step back over fire times already dealt with runs none of them again (a calendar
never goes back, and one run per fire time is kept in the state store). APScheduler's three
job options are implemented here, each set deliberately:

- `misfire_grace_time` (`silent_grace_s`, 6 h; `audible_grace_s`, 10 min): a fire time
  missed while the daemon was down still runs when the daemon comes back within the grace.
  The silent test is inaudible, so running it hours late is harmless and beats losing the
  week's test; a chime at an unexpected hour puzzles the public, so it runs nearly on time
  or not at all (logged at WARNING as missed).
- `coalesce=True`: several missed fire times run once, as the latest one: a test checks
  the equipment now, and a second run in a row proves nothing more.
- `max_instances=1`: one run at a time, for both jobs together (they share the relays); a
  fire time that comes due while a test runs is dropped, never queued behind it.

**Exactly one run per fire time, across restarts.** Before its first relay write, a run is
recorded under its job and scheduled fire time (primary key); a second attempt for the same
fire time finds the row and does not run. At start, fire times after the later of the last
recorded one and the moment the calendar was armed (first configured), and within the grace,
run once (coalesced); a run cut short by a crash is marked `interrupted` and not repeated.

**One test at a time, and alarms come first.** The runner runs one test at a time, whoever
asks (the calendar or an operator's command): a second is refused before it touches a relay
(`ProofTestNotStarted`; the calendar records it `skipped`, a command is refused). A test
does not start while any zone is broadcasting (`skipped`): checked when it is asked for and
again when it begins, so a broadcast handed to a zone in between still keeps it off. A broadcast
decided while a test runs aborts it before the broadcast is handed to its zone
(`ProofTestRunner.abort`): the test's task is cancelled, its `finally` drives the relay it
holds OFF (read back), and the abort returns only once every OFF write of the test is over,
even one that outlives the test's task (a second cancellation), so that no late OFF can
cut the alarm's siren and no relay is left ON.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drivers.errors import DriverError
from drivers.relays import CoilRelay
from gauged.clock import Clock
from gauged.config.cron import cron_trigger, plan
from gauged.errors import GaugedError
from gauged.field.relays import drive, report_fault, state_name
from gauged.field.zones import ZoneBroadcaster
from gauged.store.state import JobRun, StateStore
from gauged.tasks import wait_child

if TYPE_CHECKING:  # (gauged/config/cron.py builds the triggers, importing APScheduler then)
    from apscheduler.triggers.cron import CronTrigger

log = logging.getLogger(__name__)

LATE_S = 60.0  # a run later than this after its fire time is logged at WARNING


# ---- the tests themselves ---------------------------------------------------------------

class ProofTestNotStarted(GaugedError):
    """A test was not started (another one runs, or zones broadcast); the message says why.
    Raised before any relay is touched."""


class ProofTestRunner:
    """Runs the silent and the audible test on the zones' relays and players, one at a time.

    `run` may be called from several tasks: a call while a test runs (or while the OFF
    writes of an aborted one are still under way) raises ProofTestNotStarted at once.
    `abort` stops the running test and returns once its relays are OFF (or reported
    faulty).
    """

    def __init__(self, zones: Mapping[str, ZoneBroadcaster], clock: Clock, *,
                 hold_s: float, audible_clip: str | None, audible_zones: Sequence[str],
                 clip_path: Callable[[str], Path],
                 on_fault: Callable[[str, str, str], None] | None = None,
                 inhibited: Callable[[str], bool] = lambda zone: False,
                 siren_pattern: Sequence[float] = ()) -> None:
        self.zones = zones
        self.siren_pattern = list(siren_pattern)  # the audible test's siren, on, off, … s
        self.inhibited = inhibited  # zones under a maintenance inhibit are left alone
        self.clock = clock
        self.hold_s = hold_s
        self.audible_clip = audible_clip
        self.audible_zones = list(audible_zones) or list(zones)
        self.clip_path = clip_path
        self.on_fault = on_fault or (lambda kind, what, detail: None)
        self._task: asyncio.Task[Any] | None = None  # the task running a test now
        self._job: str | None = None
        self._offs: set[asyncio.Task[None]] = set()  # OFF writes under way

    def busy_zones(self) -> list[str]:
        return [zid for zid, zone in self.zones.items() if zone.busy]

    @property
    def running(self) -> str | None:
        """The job of the test that holds the relays (or `releasing`: an aborted test's OFF
        writes are still under way), None when none does."""
        if self._task is not None:
            return self._job
        return "releasing" if self._offs else None

    async def run(self, job: str) -> dict[str, Any]:
        """Run the `silent` or `audible` test; ProofTestNotStarted when another test holds
        the relays or a zone is broadcasting (checked here, when the test begins, not only
        when it was asked for)."""
        if (other := self.running) is not None:
            raise ProofTestNotStarted(f"a test is running ({other})")
        if busy := self.busy_zones():
            raise ProofTestNotStarted(f"zones broadcasting: {', '.join(busy)}")
        self._task, self._job = asyncio.current_task(), job
        try:
            return await (self.silent() if job == "silent" else self.audible())
        finally:
            self._task = self._job = None

    async def abort(self) -> None:
        """Stop the running test, if any (its relays driven OFF), and wait until every OFF
        write of it is over: after this no write of a test can reach a relay."""
        task = self._task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            await asyncio.wait({task})
        while self._offs:
            await asyncio.wait(set(self._offs))

    async def silent(self) -> dict[str, Any]:
        """Each relay ON, read back, hold, OFF, read back; one at a time, nothing played."""
        entries: list[dict[str, Any]] = []
        for zid, zone in self.zones.items():
            if self.inhibited(zid):
                entries.append({"zone": zid, "skipped": "inhibited"})
                continue
            for relay in zone.relays:  # the siren first, while the amplifier is OFF
                entry: dict[str, Any] = {"zone": zid, "relay": relay.name, "on": False,
                                         "off": False, "error": ""}
                entries.append(entry)
                try:
                    error = await drive(relay, True, attempts=1)
                    if error is None:
                        entry["on"] = True
                        await self.clock.sleep(self.hold_s)
                    else:
                        self._fault(entry, relay, True, error)
                finally:
                    await self._release(relay, entry)
                if not entry["off"]:
                    break  # never turn the next relay ON beside one stuck ON
        return {"ok": all(e["on"] and e["off"] for e in entries if "skipped" not in e),
                "relays": entries}

    async def audible(self) -> dict[str, Any]:
        """Amplifier ON, the chime, amplifier OFF, in each audible zone."""
        assert self.audible_clip is not None  # config cross_check
        clip = self.audible_clip
        entries: list[dict[str, Any]] = []
        for zid in self.audible_zones:
            zone = self.zones[zid]
            if self.inhibited(zid):
                entries.append({"zone": zid, "skipped": "inhibited"})
                continue
            entry: dict[str, Any] = {"zone": zid, "clip": clip, "played": False, "error": ""}
            entries.append(entry)
            amp = zone.amplifier
            try:
                await self._chime(zid, zone, clip, entry)
            except DriverError as exc:
                # The player's AudioFault is a DriverError: it lands here, reported as the
                # amplifier's relay_fault (want on), as it always has been.
                self._fault(entry, amp, True, exc)
            except Exception as exc:  # any other player failure is an audio fault
                entry["error"] = f"audio_fault: {exc}"
                log.error("audio_fault zone=%s clip=%s (audible test): %s", zid, clip, exc)
                self.on_fault("audio_fault", f"{zid}/{clip}", str(exc))
            finally:
                if amp is not None:
                    await self._release(amp, entry)
        ok = all(e["played"] and e.get("off", True) and e.get("on", True) and
                 e.get("siren", {}).get("ok", True) for e in entries if "skipped" not in e)
        return {"ok": ok, "zones": entries}

    async def _chime(self, zid: str, zone: ZoneBroadcaster, clip: str,
                     entry: dict[str, Any]) -> None:
        """Amplifier ON (when the zone has one), then the clip; the caller drives it OFF."""
        amp = zone.amplifier
        if amp is not None:
            entry |= {"relay": amp.name, "on": False, "off": False}
            error = await drive(amp, True, attempts=1)
            if error is not None:
                self._fault(entry, amp, True, error)
                return
            entry["on"] = True
        if self.siren_pattern and zone.siren is not None:
            await self._test_siren(zone.siren, entry)
        await zone.player.play(zid, clip, self.clip_path(clip))
        entry["played"] = True

    async def _test_siren(self, siren: CoilRelay, entry: dict[str, Any]) -> None:
        """The test pattern on the siren relay: each blast ON (read back), held, OFF (read
        back, retried); a relay that will not follow ends the pattern there."""
        state: dict[str, Any] = {"relay": siren.name, "on_s": 0.0, "ok": False, "error": ""}
        entry["siren"] = state
        for i, seconds in enumerate(self.siren_pattern):
            if i % 2:  # an off step
                await self.clock.sleep(seconds)
                continue
            blast: dict[str, Any] = {"on": False, "off": False, "error": ""}
            try:
                error = await drive(siren, True, attempts=1)
                if error is None:
                    blast["on"] = True
                    await self.clock.sleep(seconds)
                    state["on_s"] += seconds
                else:
                    self._fault(blast, siren, True, error)
            finally:
                await self._release(siren, blast)
            if not (blast["on"] and blast["off"]):
                state["error"] = blast["error"]
                return
        state["ok"] = True

    async def _release(self, relay: CoilRelay, entry: dict[str, Any]) -> None:
        """Drive `relay` OFF, shielded from a cancellation and tracked (`abort` waits for
        it even when a second cancellation ends the test's task before the write is
        over)."""
        off = asyncio.create_task(self._off(relay, entry),
                                  name=f"gauged[tests].off:{relay.name}")
        self._offs.add(off)
        off.add_done_callback(self._offs.discard)
        await asyncio.shield(off)

    async def _off(self, relay: CoilRelay, entry: dict[str, Any]) -> None:
        error = await drive(relay, False)
        if error is None:
            entry["off"] = True
        else:
            self._fault(entry, relay, False, error)

    def _fault(self, entry: dict[str, Any], relay: CoilRelay | None, on: bool,
               exc: Exception) -> None:
        name = relay.name if relay is not None else "?"
        entry["error"] = (entry["error"] + "; " if entry["error"] else "") + \
            f"relay_fault: want {state_name(on)}: {exc}"
        report_fault(log, name, on, exc, during="scheduled test", on_fault=self.on_fault)


# ---- the calendar -------------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    """One scheduled test: its calendar and its APScheduler-style options."""

    name: str  # silent or audible
    calendar: str  # the crontab line
    trigger: CronTrigger
    misfire_grace_time: float  # seconds
    coalesce: bool = True
    max_instances: int = 1


@dataclass
class JobStatus:
    calendar: str
    next: datetime | None = None
    last: JobRun | None = None
    runs: int = 0  # runs since start


class ProofTestScheduler:
    """Follows the calendars of the jobs on the daemon's clock and runs them (see above)."""

    def __init__(self, jobs: Sequence[Job], clock: Clock, store: StateStore, *,
                 run: Callable[[str], Coroutine[Any, Any, dict[str, Any]]],
                 busy: Callable[[], list[str]],
                 on_result: Callable[[JobRun], None] = lambda run: None) -> None:
        for job in jobs:
            if not job.coalesce or job.max_instances != 1:
                raise ValueError("scheduled tests run coalesced, one instance at a time")
        self.jobs = list(jobs)
        self.clock = clock
        self.store = store
        self._run = run
        self._busy = busy
        self.on_result = on_result
        self._lock = asyncio.Lock()  # max_instances=1 across both jobs: they share relays
        self._running: asyncio.Task[dict[str, Any]] | None = None
        self._abort_reason = ""
        self.status = {job.name: JobStatus(job.calendar, last=store.last_job_run(job.name))
                       for job in jobs}

    async def run(self) -> None:
        """Follow every calendar until cancelled."""
        async with asyncio.TaskGroup() as tg:
            for job in self.jobs:
                tg.create_task(self._follow(job), name=f"gauged[tests:{job.name}].calendar")

    @property
    def running(self) -> bool:
        return self._running is not None and not self._running.done()

    async def abort(self, reason: str) -> None:
        """Stop a running test now (relays OFF) and wait until it has let go of the relays."""
        task = self._running
        if task is None or task.done():
            return
        self._abort_reason = reason
        task.cancel()
        await asyncio.wait({task})

    async def _follow(self, job: Job) -> None:
        tz = job.trigger.timezone
        armed = self.store.arm_job(job.name, job.calendar, self.clock.timestamp())
        last = self.store.last_job_run(job.name)
        floor = max(armed, last.fire_time if last is not None else armed)
        after = datetime.fromtimestamp(floor, tz)
        while True:
            now = self.clock.now().astimezone(tz)
            p = plan(job.trigger, after=after, now=now, grace_s=job.misfire_grace_time)
            if p.first_missed is not None:
                log.warning("test %s missed its fire time %s and any later one older than "
                            "misfire_grace_time (%g s): not run", job.name,
                            p.first_missed.isoformat(), job.misfire_grace_time)
            after = max(after, now)  # a step back of the clock re-opens no fire time
            if p.due:
                if len(p.due) > 1:
                    log.info("test %s: %d missed fire times coalesced into one run",
                             job.name, len(p.due))
                late = (now - p.due[-1]).total_seconds()
                if late > LATE_S:  # the daemon was down, or the clock stepped over it
                    log.warning("test %s for %s runs late by %.0f s", job.name,
                                p.due[-1].isoformat(), late)
                steps = len(self.clock.steps)
                await self._execute(job, p.due[-1])
                if len(self.clock.steps) != steps:
                    # the clock stepped while it ran: what it stepped over is planned afresh
                    after = p.due[-1]
                    continue
                # max_instances=1: fire times that came due while it ran are dropped
                after = max(now, self.clock.now().astimezone(tz))
                dropped = plan(job.trigger, after=p.due[-1], now=after,
                               grace_s=(after - p.due[-1]).total_seconds())
                if dropped.due:
                    log.warning("test %s: %d fire time(s) came due while it ran: dropped "
                                "(max_instances=1)", job.name, len(dropped.due))
                continue
            self.status[job.name].next = p.next
            if p.next is None:
                return  # the calendar has ended
            await self.clock.sleep_until(p.next.timestamp())

    async def _execute(self, job: Job, fire: datetime) -> None:
        async with self._lock:
            fire_ts = fire.timestamp()
            if not self.store.job_started(job.name, fire_ts, self.clock.timestamp()):
                log.info("test %s for %s already ran: not run again", job.name,
                         fire.isoformat())
                return
            busy = self._busy()
            if busy:
                log.warning("test %s for %s skipped: zones broadcasting: %s", job.name,
                            fire.isoformat(), ", ".join(busy))
                self._finish(job, fire_ts, "skipped", {"reason": "broadcasting",
                                                       "zones": busy})
                return
            log.info("test %s start fire_time=%s", job.name, fire.isoformat())
            self._abort_reason = ""
            task = asyncio.create_task(self._run(job.name), name=f"gauged[tests:{job.name}].run")
            self._running = task
            try:
                await wait_child(task)  # `abort` cancels `task`, not us
            except asyncio.CancelledError:  # the daemon stops: the test has stopped too
                self._finish(job, fire_ts, "aborted", {"reason": "daemon stopping"})
                raise
            finally:
                self._running = None
            if task.cancelled():
                self._finish(job, fire_ts, "aborted", {"reason": self._abort_reason})
            elif isinstance(exc := task.exception(), ProofTestNotStarted):
                log.warning("test %s for %s skipped: %s", job.name, fire.isoformat(), exc)
                self._finish(job, fire_ts, "skipped", {"reason": str(exc)})
            elif exc is not None:
                log.error("test %s failed", job.name, exc_info=exc)
                self._finish(job, fire_ts, "failed", {"error": repr(exc)})
            else:
                result = task.result()
                self._finish(job, fire_ts, "ok" if result.get("ok") else "failed", result)

    def _finish(self, job: Job, fire_ts: float, status: str, result: dict[str, Any]) -> None:
        now = self.clock.timestamp()
        self.store.job_finished(job.name, fire_ts, status, now, result)
        run = self.store.last_job_run(job.name)
        if run is None or run.fire_time != fire_ts:  # the store could not keep it
            run = JobRun(job.name, fire_ts, now, now, status, result)
        self.status[job.name].last = run
        self.status[job.name].runs += 1
        level = logging.INFO if status == "ok" else logging.WARNING
        log.log(level, "test %s %s fire_time=%s", job.name, status,
                datetime.fromtimestamp(fire_ts, job.trigger.timezone).isoformat())
        self.on_result(run)

    def snapshot(self) -> dict[str, Any]:
        """What /status shows of the scheduled tests."""
        return {name: {"calendar": st.calendar,
                       "next": st.next.isoformat() if st.next else None,
                       "runs_since_start": st.runs,
                       "last": st.last.as_json() if st.last else None}
                for name, st in self.status.items()}


def jobs_from_config(silent: str, audible: str, *, timezone: str, silent_grace_s: float,
                     audible_grace_s: float) -> list[Job]:
    """The configured jobs (a blank calendar is no job)."""
    jobs = []
    for name, calendar, grace in (("silent", silent, silent_grace_s),
                                  ("audible", audible, audible_grace_s)):
        if calendar.strip():
            jobs.append(Job(name, calendar, cron_trigger(calendar, timezone), grace))
    return jobs
