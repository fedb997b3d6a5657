"""The broadcast sequencer: one per loudspeaker zone.

A broadcast is: amplifier ON, the siren for `siren_s` (never longer than the maximum
on-time), the clips in order, amplifier OFF. Every relay write is verified by read-back and
retried a few times; a relay that will not follow is a `relay_fault`, a clip that cannot be
played an `audio_fault`: both are reported and the broadcast goes on with what still works
(a siren without words beats silence). The siren and amplifier are driven OFF whatever
happens, including cancellation.

One broadcast at a time per zone; waiting requests are taken highest stage first.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from drivers.errors import DriverError
from drivers.players import Player
from drivers.relays import CoilRelay
from gauged.clock import Clock
from gauged.engine import BroadcastRequest

log = logging.getLogger(__name__)

RELAY_ATTEMPTS = 3


@dataclass
class BroadcastRecord:
    """What a broadcast did, for the log, storage, MQTT and /status."""

    request: BroadcastRequest
    started: float = 0.0  # simulated UNIX time
    finished: float = 0.0
    siren_on_s: float = 0.0
    clips_played: list[str] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    decided_mono: float = 0.0  # monotonic time of the decision
    first_relay_mono: float | None = None  # monotonic time of the first relay write


class ZoneBroadcaster:
    """Plays the broadcasts of one zone, one at a time."""

    def __init__(self, zone: str, *, siren: CoilRelay | None, amplifier: CoilRelay | None,
                 player: Player, clip_path: Callable[[str], Path], clock: Clock,
                 siren_max_s: float, on_done: Callable[[BroadcastRecord], None]) -> None:
        self.zone = zone
        self.siren = siren
        self.amplifier = amplifier
        self.player = player
        self.clip_path = clip_path
        self.clock = clock
        self.siren_max_s = siren_max_s
        self.on_done = on_done
        self._queue: asyncio.PriorityQueue[tuple[int, int, BroadcastRecord]] = \
            asyncio.PriorityQueue()
        self._order = itertools.count()
        self.current: BroadcastRecord | None = None
        self.last: BroadcastRecord | None = None

    @property
    def relays(self) -> list[CoilRelay]:
        return [r for r in (self.siren, self.amplifier) if r is not None]

    def submit(self, request: BroadcastRequest) -> None:
        """Queue a broadcast; never blocks."""
        record = BroadcastRecord(request=request, decided_mono=time.monotonic())
        self._queue.put_nowait((-request.stage, next(self._order), record))

    async def idle(self) -> None:
        """Wait until every queued broadcast has finished."""
        await self._queue.join()

    async def run(self) -> None:
        """Serve the queue until cancelled."""
        while True:
            _, _, record = await self._queue.get()
            try:
                await self.play(record)
            except Exception:
                # A zone must outlive any single broadcast: log it and serve the next one.
                log.exception("broadcast failed zone=%s station=%s", self.zone,
                              record.request.station)
            finally:
                self._queue.task_done()

    async def play(self, record: BroadcastRecord) -> None:
        req = record.request
        self.current = record
        record.started = self.clock.timestamp()
        log.info("broadcast start zone=%s station=%s stage=%s sequence=%s siren_s=%g clips=%s",
                 self.zone, req.station, req.stage_name, req.sequence, req.siren_s,
                 ",".join(req.clips))
        try:
            if self.amplifier is not None:
                await self._set(record, self.amplifier, True)
            if req.siren_s > 0 and self.siren is not None:
                on_s = min(req.siren_s, self.siren_max_s)
                await self._set(record, self.siren, True)
                t0 = self.clock.timestamp()
                try:
                    await self.clock.sleep(on_s)
                finally:
                    await self._set(record, self.siren, False)
                    record.siren_on_s = self.clock.timestamp() - t0
            for clip in req.clips:
                try:
                    await self.player.play(self.zone, clip, self.clip_path(clip))
                    record.clips_played.append(clip)
                except Exception as exc:  # any player failure is an audio fault, never fatal
                    record.faults.append(f"audio_fault: {exc}")
                    log.error("audio_fault zone=%s clip=%s: %s", self.zone, clip, exc)
        finally:
            if self.amplifier is not None:
                await self._set(record, self.amplifier, False)
            record.finished = self.clock.timestamp()
            self.current = None
            self.last = record
            log.info("broadcast done zone=%s station=%s stage=%s clips_played=%d faults=%d",
                     self.zone, req.station, req.stage_name, len(record.clips_played),
                     len(record.faults))
            self.on_done(record)

    async def _set(self, record: BroadcastRecord, relay: CoilRelay, on: bool) -> None:
        """Drive a relay with read-back, retrying; a relay that will not follow is a fault."""
        if record.first_relay_mono is None:
            record.first_relay_mono = time.monotonic()
        error: DriverError | None = None
        for _ in range(RELAY_ATTEMPTS):
            try:
                await relay.set(on)
                return
            except DriverError as exc:
                error = exc
        record.faults.append(f"relay_fault: {error}")
        log.error("relay_fault zone=%s relay=%s want=%s: %s", self.zone, relay.name,
                  "on" if on else "off", error)
