"""The broadcast sequencer: one per loudspeaker zone.

A broadcast plays a sequence (config `sequences`): amplifier ON, the pre-roll, the siren
pattern (on, off, on … seconds; the total on-time never exceeds `defaults.siren_max_s`),
the clips in order × `repeats` with `gap_s` between, amplifier OFF.

Every relay write is verified by read-back and retried (`RELAY_ATTEMPTS`, 3 attempts; the
retry and the report live in gauged/field/relays.py); a relay that will not follow is a
`relay_fault`, a clip that cannot be played an `audio_fault`: both are reported at once
through `on_fault` and the broadcast goes on with what still works (a siren without words
beats silence); a relay that follows again is logged once as `relay_fault cleared`. Siren
and amplifier are driven OFF whatever happens: at the end, on an error, on cancellation and
when pre-empted.

One broadcast at a time per zone. Waiting requests are taken highest stage first; a request
of a higher stage than the one playing pre-empts it: the playing one is stopped (relays
OFF), recorded as `pre-empted`, and not replayed (the situation has moved on); likewise a
waiting lower-stage request is `superseded` once a higher stage has sounded after it was
decided. Every request is logged with what became of it: played, pre-empted, superseded,
or dropped as a duplicate of one already waiting. These decisions are `ZoneQueue`'s
(gauged/alarm/queue.py, pure), shared with `gauged replay`; this class plays them.

When the daemon stops (the zone's `run` is cancelled), the broadcast playing is cut
(relays OFF) and recorded `interrupted`, and every one still waiting is logged and handed
on as `not-started`: the broadcast journal (gauged/store/state.py) keeps both for the next
start, which replays or reports them (gauged/daemon/restore.py). A broadcast whose player
raises is `failed`.

Each clip's decoded duration (`clip_seconds`, gauged/config/audio.py) gives a broadcast its
expected audio length (`audio_s`, logged at its start); its record keeps when the first clip
started and the last ended (`audio_start_mono`, `audio_end_mono`: the latency record's
`audio_start_ms` and `audio_end_ms`). A sequence's siren steps may come from a named siren
signal (gauged/config/signals.py); the on-time is capped at `siren_max_s` all the same.

Callbacks: `on_start` before the first relay write of a broadcast, `on_done` when one that
started has ended (relays OFF), `on_unplayed` for one that never starts (dropped,
superseded, not-started), `on_fault` for each relay or audio fault. None of them may block:
they run between the decision and the relays.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from drivers.players import Player
from drivers.relays import CoilRelay
from gauged.alarm.queue import ZoneQueue, sequence_of
from gauged.alarm.types import BroadcastRecord, BroadcastRequest
from gauged.clock import Clock
from gauged.config.models import SequenceConfig
from gauged.field.relays import drive, report_fault, state_name
from gauged.tasks import wait_child

log = logging.getLogger(__name__)


class ZoneBroadcaster:
    """Plays the broadcasts of one zone, one at a time, highest stage first."""

    def __init__(self, zone: str, *, siren: CoilRelay | None, amplifier: CoilRelay | None,
                 player: Player, clip_path: Callable[[str], Path], clock: Clock,
                 sequences: Mapping[str, SequenceConfig], siren_max_s: float,
                 on_done: Callable[[BroadcastRecord], None],
                 on_fault: Callable[[str, str, str], None] | None = None,
                 on_start: Callable[[BroadcastRecord], None] | None = None,
                 on_unplayed: Callable[[BroadcastRecord], None] | None = None,
                 clip_seconds: Mapping[str, float] | None = None) -> None:
        self.zone = zone
        self.siren = siren
        self.amplifier = amplifier
        self.player = player
        self.clip_path = clip_path
        self.clock = clock
        self.sequences = sequences
        self.siren_max_s = siren_max_s
        self.on_done = on_done
        self.on_fault = on_fault or (lambda kind, what, detail: None)
        # called before the first relay write of a broadcast (the state store records it)
        self.on_start = on_start or (lambda record: None)
        self.on_unplayed = on_unplayed or (lambda record: None)
        # each clip's decoded duration (gauged/config/audio.py): the broadcast's timeline
        self.clip_seconds: Mapping[str, float] = clip_seconds or {}
        # the decisions (who plays, who waits, what became of each) are the pure ZoneQueue's,
        # shared with `gauged replay`; this class plays them and keeps the times
        self._queue = ZoneQueue()
        self._wake = asyncio.Event()  # set by `submit`: something may wait to start
        self._settled = asyncio.Event()  # nothing plays or waits (`idle`)
        self._settled.set()
        self._progress = asyncio.Event()  # set whenever a broadcast moves on (`underway`)
        self._running = False  # `run` serves the queue
        self._playing: asyncio.Task[None] | None = None
        self.current: BroadcastRecord | None = None
        self.last: BroadcastRecord | None = None
        # (relay, state) whose last write failed: a stuck-OFF relay still follows an OFF
        self._faulty: set[tuple[str, bool]] = set()

    @property
    def relays(self) -> list[CoilRelay]:
        return [r for r in (self.siren, self.amplifier) if r is not None]

    @property
    def busy(self) -> bool:
        """A broadcast is playing or waiting (a scheduled test keeps off the zone)."""
        return self.current is not None or self._playing is not None or \
            not self._queue.empty

    def submit(self, request: BroadcastRequest, reading_mono: float | None = None,
               journal: int | None = None, *, replay: bool = False) -> BroadcastRecord:
        """Queue a broadcast (never blocks); pre-empt a lower-stage one that is playing.
        `journal`: its row in the broadcast journal; `replay`: played again after a restart
        (see `ZoneQueue`). Returns its record."""
        record = BroadcastRecord(request=request, reading_mono=reading_mono, journal=journal,
                                 replay=replay)
        preempted = self._queue.submit(record, time.monotonic())
        if record.outcome == "dropped":
            log.info("broadcast dropped zone=%s station=%s sequence=%s: the same sequence is "
                     "already waiting", self.zone, request.station, request.sequence)
            self.on_unplayed(record)
            return record
        log.info("broadcast queued zone=%s station=%s stage=%s sequence=%s kind=%s%s",
                 self.zone, request.station, request.stage_name, request.sequence,
                 request.kind, " (a replay after a restart)" if replay else "")
        self._wake.set()
        self._settle()
        if preempted is not None:
            log.warning("broadcast pre-empted zone=%s station=%s stage=%s by station=%s "
                        "stage=%s", self.zone, preempted.request.station,
                        preempted.request.stage_name, request.station, request.stage_name)
            self._stop(preempted)
        return record

    def silence(self) -> dict[str, object]:
        """An operator's silence: the playing broadcast stops (relays OFF, outcome
        `silenced`) and the waiting ones are dropped. Stages stand; a later transition or
        repeat broadcasts as usual."""
        records, playing = self._queue.silence()
        dropped = [record.request for record in records]
        stopped = None
        if playing is not None:
            self._stop(playing)
            stopped = playing.request
        self._settle()
        log.warning("broadcast silenced zone=%s playing=%s dropped=%d", self.zone,
                    f"{stopped.station}/{stopped.stage_name}" if stopped else "-", len(dropped))
        return {"stopped": None if stopped is None else {
                    "station": stopped.station, "stage": stopped.stage_name,
                    "sequence": stopped.sequence},
                "dropped": [f"{r.station}/{r.stage_name}" for r in dropped]}

    def _stop(self, record: BroadcastRecord) -> None:
        """Stop the playing `record` (its outcome already says why). A broadcast whose task
        has not begun yet is not cancelled (that would skip its report): `play` sees the
        outcome and ends it at once."""
        if self.current is record and self._playing is not None:
            self._playing.cancel()

    def _settle(self) -> None:
        if self._queue.empty and self._playing is None:
            self._settled.set()
        else:
            self._settled.clear()

    async def idle(self) -> None:
        """Wait until every queued broadcast has finished."""
        await self._settled.wait()

    async def underway(self) -> None:
        """Wait until every broadcast that can start now has issued its first relay write
        (or started its first clip, or ended). A broadcast waiting behind one that plays
        is not waited for; nor is anything while `run` does not serve the queue.

        The cycle waits for this before it records anything (the log, the spool, the
        uplinks), so that a siren never waits for them (QUALITY ALM-1, PERF-3)."""
        while self._owes_start():
            self._progress.clear()
            await self._progress.wait()

    def _owes_start(self) -> bool:
        if not self._running:
            return False
        current = self._queue.playing
        if current is None:
            return self._queue.waiting > 0
        if current.outcome == "playing":
            return current.first_relay_mono is None and current.audio_start_mono is None
        return self._queue.waiting > 0  # being stopped: the next starts after its OFF writes

    def _moved(self) -> None:
        self._progress.set()

    async def run(self) -> None:
        """Serve the queue until cancelled.

        Each broadcast plays in a task of its own (awaited here, never left behind) so that
        `submit` can cancel it when a higher stage pre-empts it.
        """
        self._running = True
        try:
            await self._serve()
        finally:
            self._running = False
            self._abandon()
            self._moved()

    async def _serve(self) -> None:
        while True:
            superseded, record = self._queue.start_next(time.monotonic())
            for old in superseded:
                log.info("broadcast superseded zone=%s station=%s stage=%s: a higher stage "
                         "was broadcast since", self.zone, old.request.station,
                         old.request.stage_name)
                self.on_unplayed(old)
            if record is None:
                self._settle()
                self._wake.clear()
                self._moved()
                await self._wake.wait()
                continue
            task = asyncio.create_task(self.play(record), name=f"gauged[zone:{self.zone}].play")
            self._playing = task
            try:
                # a pre-emption cancels `task`, not us; our stop stops the broadcast too
                await wait_child(task)
            finally:
                self._playing = None
                if self._queue.playing is record:  # its task ended before it could say so
                    self._queue.finished(record)
                self._settle()
            if not task.cancelled() and task.exception() is not None:
                # A zone must outlive any single broadcast: log it and serve the next one.
                log.error("broadcast failed zone=%s station=%s", self.zone,
                          record.request.station, exc_info=task.exception())

    def _abandon(self) -> None:
        """The zone stops: what still waits will not start in this run of the daemon."""
        for record in self._queue.abandon():
            req = record.request
            log.warning("broadcast not started zone=%s station=%s stage=%s sequence=%s: the "
                        "daemon stops (the next start replays or reports it)", self.zone,
                        req.station, req.stage_name, req.sequence)
            self.on_unplayed(record)
        self._settle()

    async def play(self, record: BroadcastRecord) -> None:
        """Play one broadcast (`playing`, from `ZoneQueue.start_next`); relays OFF at the
        end whatever happens. Cancelled while it plays (the daemon stops), it is
        `interrupted`; if the player or a relay raises, `failed`."""
        req = record.request
        seq = sequence_of(req, self.sequences)
        record.started = self.clock.timestamp()
        record.started_mono = time.monotonic()
        if record.outcome != "playing":
            # pre-empted or silenced in the turn of the loop before this task began
            self._ended(record)
            return
        self.current = record
        record.audio_s = self._audio_seconds(seq)
        log.info("broadcast start zone=%s station=%s stage=%s sequence=%s siren_s=%g clips=%s "
                 "audio_s=%s", self.zone, req.station, req.stage_name, req.sequence,
                 seq.siren_on_s, ",".join(seq.clips),
                 "-" if record.audio_s is None else f"{record.audio_s:.1f}")
        try:
            self.on_start(record)
            if self.amplifier is not None:
                await self._set(record, self.amplifier, True)
            await self.clock.sleep(seq.pre_roll_s)
            if self.siren is not None:
                await self._siren(record, seq.siren_steps)
            for n in range(seq.repeats):
                if n:
                    await self.clock.sleep(seq.gap_s)
                for clip in seq.clips:
                    await self._clip(record, clip)
            if seq.clips:
                record.audio_end_mono = time.monotonic()
            record.outcome = "done"
        except asyncio.CancelledError:
            if record.outcome == "playing":  # not a pre-emption or a silence: a stop
                record.outcome = "interrupted"
                log.warning("broadcast interrupted zone=%s station=%s stage=%s: the daemon "
                            "stops (the next start replays or reports it)", self.zone,
                            req.station, req.stage_name)
            raise
        except Exception:
            record.outcome = "failed"
            raise
        finally:
            # Shielded: a cancellation (stop, pre-emption) must not cut the OFF writes short.
            await asyncio.shield(self._all_off(record))
            self._ended(record)

    def _audio_seconds(self, seq: SequenceConfig) -> float | None:
        """How long the clips of `seq` play, gaps included; None if a duration is unknown."""
        if not seq.clips:
            return None
        if any(clip not in self.clip_seconds for clip in seq.clips):
            return None
        once = sum(self.clip_seconds[clip] for clip in seq.clips)
        return seq.repeats * once + (seq.repeats - 1) * seq.gap_s

    def _ended(self, record: BroadcastRecord) -> None:
        """The broadcast is over (relays OFF): free the zone and report it."""
        req = record.request
        record.finished = self.clock.timestamp()
        self.current = None
        self._queue.finished(record)
        self.last = record
        self._moved()
        audio = "-" if record.audio_start_mono is None or record.audio_end_mono is None else \
            f"{record.audio_end_mono - record.audio_start_mono:.2f}"
        log.info("broadcast %s zone=%s station=%s stage=%s siren_on_s=%.1f "
                 "clips_played=%d faults=%d latency_ms=%s audio_played_s=%s", record.outcome,
                 self.zone, req.station, req.stage_name, record.siren_on_s,
                 len(record.clips_played), len(record.faults),
                 "-" if record.latency_s is None else f"{record.latency_s * 1000:.1f}", audio)
        self.on_done(record)

    async def _siren(self, record: BroadcastRecord, steps: list[float]) -> None:
        assert self.siren is not None
        budget = self.siren_max_s
        for i, seconds in enumerate(steps):
            if i % 2:  # an off step
                await self.clock.sleep(seconds)
                continue
            on_s = min(seconds, budget)
            if on_s <= 0:
                break  # the maximum on-time is spent
            await self._set(record, self.siren, True)
            t0 = self.clock.monotonic()  # a step of the wall clock must not count as siren
            try:
                await self.clock.sleep(on_s)
            finally:
                await asyncio.shield(self._set(record, self.siren, False))
                record.siren_on_s += self.clock.monotonic() - t0
            budget -= on_s

    async def _clip(self, record: BroadcastRecord, clip: str) -> None:
        if record.audio_start_mono is None:
            record.audio_start_mono = time.monotonic()
            self._moved()
        try:
            await self.player.play(self.zone, clip, self.clip_path(clip))
            record.clips_played.append(clip)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any player failure is an audio fault, never fatal
            record.faults.append(f"audio_fault: {clip}: {exc}")
            log.error("audio_fault zone=%s clip=%s: %s", self.zone, clip, exc)
            self.on_fault("audio_fault", f"{self.zone}/{clip}", str(exc))

    async def _all_off(self, record: BroadcastRecord) -> None:
        for relay in (self.siren, self.amplifier):
            if relay is not None:
                await self._set(record, relay, False)

    async def _set(self, record: BroadcastRecord, relay: CoilRelay, on: bool) -> None:
        """Drive a relay with read-back, retrying (`drive`); a relay that will not follow
        is a fault of the broadcast."""
        now = time.monotonic()
        if record.first_relay_mono is None:
            record.first_relay_mono = now
            self._moved()
        record.relay_writes.append((relay.name, on, now))
        error = await drive(relay, on)
        if error is None:
            if (relay.name, on) in self._faulty:  # the recovery, once, as the fault was
                self._faulty.discard((relay.name, on))
                log.info("relay_fault cleared zone=%s relay=%s want=%s", self.zone,
                         relay.name, state_name(on))
            return
        self._faulty.add((relay.name, on))
        record.faults.append(f"relay_fault: {relay.name}: {error}")
        report_fault(log, relay.name, on, error, zone=self.zone, on_fault=self.on_fault)
