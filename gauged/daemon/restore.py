"""What survives a restart: broadcasts and tests a crash cut short (reported, never re-run),
the stages (restored without re-sounding), rain history and counter baselines; and the
commit at every cycle that makes them durable before anything sounds.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from gauged.alarm.engine import Engine
from gauged.alarm.quality import Quality
from gauged.alarm.types import CycleResult, local_time
from gauged.config.settings import Config
from gauged.field.poll import Poller
from gauged.store.state import RAIN_KEEP_S, SavedBroadcast, StateStore

log = logging.getLogger(__name__)

# Rain counter baselines resume after a restart only when they were read at most this many
# poll intervals before: the rain counted since then fell in about the cycle that reports it.
RESUME_CYCLES = 3


class StateKeeper:
    """Restores the engine and the poller from the state store at start; saves every cycle."""

    def __init__(self, config: Config, engine: Engine, poller: Poller) -> None:
        self.config = config
        self.engine = engine
        self.poller = poller
        self.store: StateStore | None = None
        self.restored: dict[str, Any] = {}  # what the state store gave back at start
        self.interrupted: list[SavedBroadcast] = []
        self.stored_last: dict[str, SavedBroadcast] = {}  # last broadcast per zone at start
        self._saved_stages: dict[str, tuple[int, float | None]] = {}

    def report_interrupted(self, store: StateStore) -> None:
        """Broadcasts and tests a crash cut short: marked, reported, never re-run
        (gauged/store/state.py)."""
        self.store = store
        for b in store.interrupt_broadcasts():
            log.warning("broadcast interrupted by a restart zone=%s station=%s stage=%s "
                        "sequence=%s started=%s: not re-run (no duplicate announcements; the "
                        "stage is restored)", b.zone, b.station, b.stage_name, b.sequence,
                        local_time(datetime.fromtimestamp(b.started, UTC),
                                   self.config.gateway.timezone))
            self.interrupted.append(b)
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

    def save(self, when: datetime, result: CycleResult) -> None:
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
