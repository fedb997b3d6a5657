"""What survives a restart: the stages (restored without re-sounding), rain history and
counter baselines, the broadcasts a stop or a crash left unplayed or cut short (replayed or
reported, below), tests a crash cut short (reported, never re-run); and the commit at every
cycle that makes the stages and the cycle's broadcast journal rows durable before anything
sounds.

Broadcasts after a restart (QUALITY ALM-5, ALM-15; README "State, restarts and scheduled
tests"). Every broadcast is journaled before it reaches its zone (gauged/store/state.py). At
start, after every relay has been driven OFF and the stages restored, each journal row left
`queued` or `not-started` (never started) or `playing` or `interrupted` (cut short) is
judged once, in the order decided:

- a higher stage was broadcast on its zone since it was decided: `superseded` (as the zone's
  queue would have done);
- decided more than `[state] replay_max_age_min` ago (default 15 min), or its stage no
  longer stands (for a stage or a repeat: no station it names is still at that stage or
  higher; for an all-clear: one of them is above normal again), or its zone or station is
  inhibited now, or it was cut short once before and this is its replay: `reported`, not
  played (log WARNING, MQTT `event/broadcast_missed`, /status `restart_broadcasts`);
- otherwise `replayed`: played again from its start, under a new journal row that names the
  one it replays. A replay that never starts is judged again at the next start (with the
  first decision's time, so the age limit still ends it); a replay that is cut short is
  reported, never replayed a second time.

A broadcast that finished is never replayed, and the stage the first cycle reads again
makes no transition (the stages are restored): each decided broadcast is heard once.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any

from gauged.alarm.engine import Engine
from gauged.alarm.quality import Quality
from gauged.alarm.types import BroadcastRequest, CycleResult, local_time
from gauged.config.settings import Config
from gauged.field.poll import Poller
from gauged.store.state import (
    RAIN_KEEP_S,
    JournalEntry,
    RestartDecision,
    SavedBroadcast,
    StateStore,
)

log = logging.getLogger(__name__)

# Rain counter baselines resume after a restart only when they were read at most this many
# poll intervals before: the rain counted since then fell in about the cycle that reports it.
RESUME_CYCLES = 3


class StateKeeper:
    """Restores the engine and the poller from the state store at start; judges the
    unfinished broadcasts; saves every cycle with its journal rows."""

    def __init__(self, config: Config, engine: Engine, poller: Poller) -> None:
        self.config = config
        self.engine = engine
        self.poller = poller
        self.store: StateStore | None = None
        self.restored: dict[str, Any] = {}  # what the state store gave back at start
        # every unfinished broadcast found at start, with what was done (for /status)
        self.restart_broadcasts: list[dict[str, Any]] = []
        self.stored_last: dict[str, SavedBroadcast] = {}  # last broadcast per zone at start
        self._saved_stages: dict[str, tuple[int, float | None]] = {}

    @property
    def interrupted(self) -> list[dict[str, Any]]:
        """The broadcasts found cut short at start (/status `interrupted_broadcasts`)."""
        return [b for b in self.restart_broadcasts if b["fate"] == "interrupted"]

    def open(self, store: StateStore) -> None:
        """Tests a crash cut short: marked, reported, never re-run."""
        self.store = store
        for run in store.interrupt_jobs():
            log.warning("test %s for %s interrupted by a restart: not re-run", run.job,
                        datetime.fromtimestamp(run.fire_time, UTC).isoformat())
        self.stored_last = store.last_broadcasts()

    def restore(self, store: StateStore, now: float) -> None:
        """Stages (without re-sounding), rain history and counter baselines from the store."""
        last = store.last_cycle()
        self.restored = {"path": str(store.path) if store.path else None,
                         "last_cycle": None, "stations": {}}
        if last is None:
            log.info("state store path=%s: nothing to restore", store.path or ":memory:")
            return
        age = now - last
        self.restored["last_cycle"] = datetime.fromtimestamp(last, UTC).isoformat()
        if abs(age) > self.config.state.max_age_s:
            log.warning("state store: the last cycle was %.0f s ago, more than state.max_age_s "
                        "= %g s: stages start afresh", age,
                        self.config.state.max_age_s)
            return
        engine = self.engine
        # The last cycle lies ahead of the clock: the clock is behind (a gateway without a
        # battery clock, not yet set by NTP; gauged/daemon/timeline.py re-dates the history
        # when it is). What the store holds is on another time line: the stages are restored
        # without their entry times, and the rain totals start afresh (partial for their
        # windows: they may raise a stage, never lower it).
        ahead = age < -self.config.gateway.poll_interval_s
        if ahead:
            log.warning("state store: the last cycle %s is %.0f s ahead of the clock: the "
                        "clock is behind (not yet synchronised?); stages restored, rain "
                        "history not", self.restored["last_cycle"], -age)
        for sid, saved in store.stages().items():
            st = self.config.stations.get(sid)
            if st is None or not 0 <= saved.stage <= len(st.stages):
                log.warning("state store: stage %d of station %s no longer fits the "
                            "configuration: not restored", saved.stage, sid)
                continue
            engine.restore(sid, saved.stage, None if saved.entered is None or ahead else
                           datetime.fromtimestamp(saved.entered, UTC))
            self.restored["stations"][sid] = saved.stage
        # the rain derivations carry on from the readings they saw (same path as live)
        for sid, readings in store.rain_readings(last - RAIN_KEEP_S).items():
            if sid in engine.rain and not ahead:
                for ts, mm, quality in readings:
                    engine.rain[sid].update(ts, mm, quality)
        short = RESUME_CYCLES * self.config.gateway.poll_interval_s
        for sid, (raw, read) in store.counters().items():
            tracker = self.poller.counters.get(sid)
            if tracker is not None and 0 <= now - read <= short:
                tracker.last = raw
        self._saved_stages = self._stage_states()
        staged = [f"{sid}={engine.machines[sid].rule.names[stage]}"
                  for sid, stage in self.restored["stations"].items() if stage > 0]
        log.info("state restored path=%s last_cycle=%s age=%.0fs: stages restored without "
                 "re-sounding: %s", store.path or ":memory:", self.restored["last_cycle"], age,
                 ", ".join(staged) or "all normal")

    def _stage_states(self) -> dict[str, tuple[int, float | None]]:
        """Each station's stage and when its own quantity entered it."""
        return {sid: (stage, self.engine.machines[sid].entered)
                for sid, stage in self.engine.stages.items()}

    def save(self, when: datetime, result: CycleResult,
             journal: list[JournalEntry]) -> Future[None] | None:
        """The cycle's stages, counter baselines, rain readings and journal rows: one
        commit, submitted to the store's writer thread (None: no store)."""
        if self.store is None:
            return None
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
        self._saved_stages = machines
        return self.store.submit_cycle(ts, stages=changed, counters=counters, rain=rain,
                                       journal=journal)

    def journal(self, result: CycleResult) -> list[JournalEntry]:
        """The cycle's journal rows: its broadcasts (`queued`, in the order of
        `result.broadcasts`, first), then those merged into another and those an inhibit
        withheld."""
        store = self.store
        if store is None:
            return []
        rows = [JournalEntry.of(store.journal_id(), r, "queued") for r in result.broadcasts]
        for m in result.merged:
            note = "another station of the zone still stands at a stage" if m.into is None \
                else f"into {m.into.station} {m.into.stage_name}"
            rows.append(JournalEntry.of(store.journal_id(), m.request, "merged", note))
        rows += [JournalEntry.of(store.journal_id(), r, "inhibited") for r in result.withheld]
        return rows

    # ---- broadcasts a stop or a crash left unfinished ----------------------------------

    def recover(self, now: float,
                blocking: Callable[[BroadcastRequest], str | None]) -> list[RestartDecision]:
        """Judge every unfinished journal row (see the module docstring), once, durably;
        returns the decisions (the caller submits the replays and reports the rest).
        `blocking(request)`: the inhibit that withholds it now, described, or None."""
        store = self.store
        if store is None:
            return []
        unfinished = store.journal_unfinished()
        if not unfinished:
            return []
        started = store.journal_started(min(e.decided for e in unfinished))
        decisions = []
        for entry in unfinished:
            fate = "interrupted" if entry.fate in ("playing", "interrupted") else "not-started"
            restart, note = self._judge(entry, fate, now, started, blocking)
            replay = None
            if restart == "replayed":
                replay = dataclasses.replace(
                    entry, id=store.journal_id(), fate="queued", started=None, finished=None,
                    siren_on_s=0.0, clips_played=[], faults=[],
                    replay_of=entry.replay_of or entry.id,
                    cut_before=entry.cut_before or fate == "interrupted", restart=None,
                    replay=None, note=f"replays {entry.id} after a restart")
            decisions.append(RestartDecision(entry, fate, restart, note, replay))
        store.journal_restart(decisions, now)
        tz = self.config.gateway.timezone
        for d in decisions:
            e = d.entry
            what = "interrupted by a restart" if d.fate == "interrupted" else \
                "not started before a restart"
            outcome = f"replayed now ({d.note})" if d.restart == "replayed" else \
                f"not replayed: {d.restart}: {d.note}"
            log.warning("broadcast %s zone=%s station=%s stage=%s sequence=%s kind=%s "
                        "decided=%s: %s", what, e.zone, e.station, e.stage_name, e.sequence,
                        e.kind, local_time(datetime.fromtimestamp(e.decided, UTC), tz),
                        outcome)
            self.restart_broadcasts.append(e.as_json() | {
                "fate": d.fate, "status": d.fate, "restart": d.restart, "note": d.note,
                "replay": d.replay.id if d.replay else None})
        self.stored_last = store.last_broadcasts()
        return decisions

    def _judge(self, entry: JournalEntry, fate: str, now: float,
               started: list[JournalEntry],
               blocking: Callable[[BroadcastRequest], str | None]) -> tuple[str, str]:
        """(replayed | reported | superseded, why)."""
        limit_min = self.config.state.replay_max_age_min
        age_min = (now - entry.decided) / 60.0
        if entry.zone not in self.config.zones:
            return "reported", f"zone {entry.zone} is no longer configured"
        for later in started:
            if later.zone == entry.zone and later.id != entry.id and \
                    later.stage > entry.stage and later.started is not None and \
                    later.started >= entry.decided:
                return "superseded", (f"{later.stage_name} ({later.station}) was broadcast "
                                      f"on the zone since")
        if abs(age_min) > limit_min:
            return "reported", (f"decided {age_min:.1f} min ago, more than [state] "
                                f"replay_max_age_min = {limit_min:g}")
        if fate == "interrupted" and entry.cut_before:
            return "reported", "cut short again after a replay: not replayed a second time"
        gone = self._no_longer_stands(entry)
        if gone:
            return "reported", gone
        inhibit = blocking(entry.request())
        if inhibit:
            return "reported", f"inhibited: {inhibit}"
        return "replayed", f"decided {age_min:.1f} min ago, its stage stands"

    def _no_longer_stands(self, entry: JournalEntry) -> str:
        """Why the stage of `entry` no longer stands ("" when it does)."""
        if entry.kind == "manual":
            return ""  # an operator's broadcast: only a silence withdraws it
        stations = [sid for sid in entry.stations or (entry.station,)
                    if sid in self.engine.stages]
        if not stations:
            return f"station {entry.station} is no longer configured"
        now = {sid: self.engine.stages[sid] for sid in stations}
        names = ", ".join(f"{sid} at {self.engine.machines[sid].rule.names[stage]}"
                          for sid, stage in now.items())
        if entry.kind == "all_clear":
            return "" if all(stage == 0 for stage in now.values()) else \
                f"its station is above normal again: {names}"
        if any(stage >= entry.stage for stage in now.values()):
            return ""
        restored = "" if self.restored.get("stations") else \
            " (no stage was restored: the state was older than [state] max_age_s)"
        return f"its stage no longer stands: {names}{restored}"
