"""The broadcast queue of one loudspeaker zone, as decisions only: pure and synchronous.

The live daemon (`ZoneBroadcaster`, gauged/field/zones.py) plays broadcasts on relays and
players; `gauged replay` plays none. Both ask a `ZoneQueue` what becomes of each request, so
that replay reproduces the daemon's outcomes exactly. Times are explicit floats in seconds
on the caller's clock (monotonic in the daemon, scenario time in replay).

The rules (DESIGN.md §2, "broadcast"):

- One broadcast plays at a time. Waiting records are taken highest stage first, then in
  the order they were submitted.
- A submitted record whose sequence is already waiting (queued, not started) is `dropped`:
  the public would hear the same message twice in a row.
- A submitted record of a higher stage than the one playing pre-empts it: the playing one
  becomes `pre-empted` (the caller stops it) and is not replayed.
- A waiting record is `superseded` when it is taken if a higher stage started at or after
  the time it was decided (`>=`: a start and a decision at the same instant supersede).
  The start of a replay (`record.replay`: a broadcast a restart plays again) does not
  count: the restart has judged every replay against the journal's history already, and
  its replays, submitted together, would otherwise supersede one another.
- An operator's silence makes the playing record and every waiting one `silenced`.
- When the daemon stops, every waiting record becomes `not-started` (`abandon`): the
  broadcast journal keeps it for the next start to replay or report.

`broadcast_seconds` says how long a sequence plays on the simulated clock, so that replay
knows when the zone is free again.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Mapping

from gauged.alarm.types import BroadcastRecord, BroadcastRequest
from gauged.config.models import SequenceConfig


class ZoneQueue:
    """The decision state of one zone: who plays, who waits, what became of each record.

    The caller drives it: `submit` each request as it is decided, `start_next` whenever
    nothing plays, `finished` when the playing record has ended (the caller has set its
    outcome `done`, `pre-empted` or `silenced`), `silence` on the operator's command. It
    never plays anything and never reads a clock.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, BroadcastRecord]] = []  # (-stage, order, record)
        self._order = itertools.count()
        self._waiting: set[str] = set()  # sequences queued and not started yet
        self._last_started: tuple[int, float] | None = None  # (stage, time)
        self._playing: BroadcastRecord | None = None

    @property
    def playing(self) -> BroadcastRecord | None:
        """The record started last and not `finished` yet (its outcome may already say
        `pre-empted` or `silenced` while the caller stops it)."""
        return self._playing

    @property
    def waiting(self) -> int:
        """How many records wait to start."""
        return len(self._heap)

    @property
    def empty(self) -> bool:
        """Nothing plays and nothing waits."""
        return self._playing is None and not self._heap

    def submit(self, record: BroadcastRecord, now: float) -> BroadcastRecord | None:
        """Take a record decided at `now` (`record.decided_mono = now`).

        Its sequence already waiting: `record.outcome = "dropped"` and it is not queued.
        Otherwise it waits (outcome `queued`). Returns the playing record if this one
        pre-empts it (a higher stage, and the playing one still `playing`), after marking
        it `pre-empted`: the caller stops it, then calls `finished`. Else None.
        """
        record.decided_mono = now
        request = record.request
        if request.sequence in self._waiting:
            record.outcome = "dropped"
            return None
        record.outcome = "queued"
        heapq.heappush(self._heap, (-request.stage, next(self._order), record))
        self._waiting.add(request.sequence)
        playing = self._playing
        # A record past `playing` (its caller is ending it) cannot be pre-empted any more.
        if playing is not None and playing.outcome == "playing" and \
                request.stage > playing.request.stage:
            playing.outcome = "pre-empted"
            return playing
        return None

    def start_next(self, now: float) -> tuple[list[BroadcastRecord], BroadcastRecord | None]:
        """Start the next record at `now`: returns (the records found `superseded` on the
        way, the record now `playing` or None when nothing waits).

        Raises RuntimeError while a record is playing (`finished` was not called).
        """
        if self._playing is not None:
            raise RuntimeError("start_next while a broadcast is playing")
        superseded: list[BroadcastRecord] = []
        while self._heap:
            _, _, record = heapq.heappop(self._heap)
            self._waiting.discard(record.request.sequence)
            started = self._last_started
            if started is not None and started[0] > record.request.stage and \
                    started[1] >= record.decided_mono:
                # a higher stage has sounded since this was decided: it would only confuse
                record.outcome = "superseded"
                superseded.append(record)
                continue
            record.outcome = "playing"
            if not record.replay:
                self._last_started = (record.request.stage, now)
            self._playing = record
            return superseded, record
        return superseded, None

    def finished(self, record: BroadcastRecord) -> None:
        """The playing `record` has ended (its outcome is the caller's to set)."""
        if record is not self._playing:
            raise ValueError("finished: this record is not the one playing")
        self._playing = None

    def silence(self) -> tuple[list[BroadcastRecord], BroadcastRecord | None]:
        """An operator's silence: every waiting record becomes `silenced` and is dropped;
        returns them (in priority order) and the playing record if it is still `playing`,
        now `silenced` too (the caller stops it, then calls `finished`)."""
        dropped = [record for _, _, record in sorted(self._heap)] if self._heap else []
        self._heap.clear()
        self._waiting.clear()
        for record in dropped:
            record.outcome = "silenced"
        playing = self._playing
        if playing is None or playing.outcome != "playing":
            return dropped, None
        playing.outcome = "silenced"
        return dropped, playing

    def abandon(self) -> list[BroadcastRecord]:
        """The daemon stops: every waiting record becomes `not-started` and is dropped;
        returns them in priority order (the playing one, if any, is the caller's)."""
        left = [record for _, _, record in sorted(self._heap)]
        self._heap.clear()
        self._waiting.clear()
        for record in left:
            record.outcome = "not-started"
        return left


def sequence_of(request: BroadcastRequest,
                sequences: Mapping[str, SequenceConfig]) -> SequenceConfig:
    """The sequence a request plays: the configured one of its name, else the siren and
    clips the request carries."""
    return sequences.get(request.sequence) or SequenceConfig(siren_s=request.siren_s,
                                                            clips=list(request.clips))


def broadcast_seconds(seq: SequenceConfig, clip_seconds: Mapping[str, float],
                      siren_max_s: float) -> float:
    """How long `ZoneBroadcaster.play` takes for `seq` on the simulated clock.

    The pre-roll, then the siren steps (on, off, on …: each on step capped by what is left
    of `siren_max_s`, stopping at the first on step with nothing left; off steps as they
    are), then the clips × `repeats` with `gap_s` between repeats. `clip_seconds` holds the
    duration of every clip of `seq` (KeyError otherwise). For a zone without a siren relay
    pass `siren_max_s = 0`: the siren is skipped. Relay writes take no simulated time.
    """
    total = seq.pre_roll_s
    budget = siren_max_s
    for i, seconds in enumerate(seq.siren_steps):
        if i % 2:  # an off step
            total += seconds
            continue
        on_s = min(seconds, budget)
        if on_s <= 0:
            break  # the maximum on-time is spent
        total += on_s
        budget -= on_s
    clips_s = sum(clip_seconds[clip] for clip in seq.clips)
    return total + seq.repeats * clips_s + (seq.repeats - 1) * seq.gap_s
