"""The pure broadcast queue of a zone (gauged/alarm/queue.py) and the length of a broadcast."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gauged.alarm.queue import ZoneQueue, broadcast_seconds, sequence_of
from gauged.alarm.types import BroadcastRecord, BroadcastRequest
from gauged.config.models import SequenceConfig

T0 = datetime(2024, 6, 1, tzinfo=UTC)


def record(stage: int, sequence: str | None = None, station: str = "shin_hiroo") -> BroadcastRecord:
    return BroadcastRecord(request=BroadcastRequest(
        time=T0, zone="z1", station=station, stage=stage, stage_name=f"s{stage}",
        sequence=sequence or f"seq{stage}", siren_s=0.0, clips=()))


def test_a_sequence_already_waiting_is_dropped_and_not_queued() -> None:
    q = ZoneQueue()
    first, again = record(2), record(2, station="shirokane")
    assert q.submit(first, 1.0) is None
    assert q.submit(again, 2.0) is None
    assert (first.outcome, again.outcome) == ("queued", "dropped")
    assert again.decided_mono == 2.0
    assert q.waiting == 1
    assert q.start_next(3.0) == ([], first)
    # started: no longer waiting, so the same sequence may queue again
    later = record(2)
    q.submit(later, 4.0)
    assert later.outcome == "queued"
    assert q.waiting == 1


def play_out(q: ZoneQueue, now: float) -> tuple[list[BroadcastRecord], BroadcastRecord | None]:
    """Finish what plays (done) and start the next at `now`."""
    if q.playing is not None:
        q.playing.outcome = "done"
        q.finished(q.playing)
    return q.start_next(now)


def test_highest_stage_first_then_first_come() -> None:
    q = ZoneQueue()
    warning = record(3, "w")
    q.submit(warning, 0.0)
    q.start_next(0.0)
    # all decided after the warning started, none higher than it: nothing pre-empted
    low, high_a, mid, high_b = record(1), record(3, "a"), record(2), record(3, "b")
    for r in (low, high_a, mid, high_b):
        assert q.submit(r, 1.0) is None
    assert q.waiting == 4
    assert play_out(q, 10.0) == ([], high_a)
    assert high_a.outcome == "playing"
    assert q.playing is high_a
    assert play_out(q, 20.0) == ([], high_b)  # the same stage: first come, never superseded
    # stage 3 has started since mid and low were decided: both superseded, in priority order
    assert play_out(q, 30.0) == ([mid, low], None)
    assert q.empty


def test_priority_among_records_decided_after_the_last_start() -> None:
    q = ZoneQueue()
    first = record(3, "first")
    q.submit(first, 0.0)
    q.start_next(0.0)
    low, mid = record(1), record(2)
    q.submit(low, 1.0)
    q.submit(mid, 1.0)
    assert play_out(q, 10.0) == ([], mid)
    # mid (stage 2) started at 10.0, after low was decided: low is superseded
    assert play_out(q, 20.0) == ([low], None)


def test_a_higher_stage_pre_empts_the_playing_one_a_lower_or_equal_does_not() -> None:
    q = ZoneQueue()
    notice = record(2)
    q.submit(notice, 0.0)
    _, playing = q.start_next(0.0)
    assert playing is notice
    assert q.submit(record(1), 1.0) is None
    assert q.submit(record(2, "other"), 1.5) is None
    assert notice.outcome == "playing"
    overflow = record(4)
    assert q.submit(overflow, 2.0) is notice
    assert notice.outcome == "pre-empted"
    # while the caller stops it, a second higher stage does not pre-empt it again
    assert q.submit(record(5), 2.1) is None
    with pytest.raises(RuntimeError, match="while a broadcast is playing"):
        q.start_next(2.2)
    q.finished(notice)
    q.start_next(3.0)
    assert q.playing is not None
    assert q.playing.request.stage == 5


def test_superseded_when_a_higher_stage_started_at_or_after_the_decision() -> None:
    q = ZoneQueue()
    warning = record(3)
    q.submit(warning, 10.0)
    q.start_next(10.0)
    notice_before = record(2, "before")
    notice_tie = record(2, "tie")
    q.submit(notice_before, 9.0)  # decided before the warning started
    q.submit(notice_tie, 10.0)  # decided at the very instant it started: superseded (>=)
    warning.outcome = "done"
    q.finished(warning)
    superseded, playing = q.start_next(20.0)
    assert superseded == [notice_before, notice_tie]
    assert notice_before.outcome == notice_tie.outcome == "superseded"
    assert playing is None
    assert q.empty


def test_not_superseded_when_decided_after_the_higher_start_or_not_lower() -> None:
    q = ZoneQueue()
    warning = record(3)
    q.submit(warning, 10.0)
    q.start_next(10.0)
    after = record(2, "after")
    same = record(3, "same")
    q.submit(after, 10.5)  # decided after the warning started: the public has not heard it
    q.submit(same, 5.0)  # the same stage is never superseded
    warning.outcome = "done"
    q.finished(warning)
    assert q.start_next(20.0) == ([], same)
    same.outcome = "done"
    q.finished(same)
    # the last start is now stage 3 at 20.0, after `after` was decided: superseded now
    assert q.start_next(30.0) == ([after], None)


def test_silence_drops_the_waiting_and_stops_the_playing() -> None:
    q = ZoneQueue()
    playing, low, same = record(2), record(1), record(2, "other")
    q.submit(playing, 0.0)
    q.start_next(0.0)
    q.submit(low, 1.0)
    q.submit(same, 1.0)
    dropped, stopped = q.silence()
    assert dropped == [same, low]  # in priority order
    assert stopped is playing
    assert playing.outcome == low.outcome == same.outcome == "silenced"
    assert q.waiting == 0
    assert q.playing is playing
    q.finished(playing)
    assert q.empty
    # the silenced sequences are no longer waiting: they queue again
    again = record(1)
    q.submit(again, 5.0)
    assert again.outcome == "queued"
    assert q.start_next(5.0) == ([], again)


def test_silence_does_not_stop_a_record_already_being_stopped() -> None:
    q = ZoneQueue()
    notice, warning = record(2), record(3)
    q.submit(notice, 0.0)
    q.start_next(0.0)
    assert q.submit(warning, 1.0) is notice
    assert q.silence() == ([warning], None)
    assert (notice.outcome, warning.outcome) == ("pre-empted", "silenced")
    q.finished(notice)
    assert q.start_next(2.0) == ([], None)


def test_finished_refuses_a_record_that_is_not_playing() -> None:
    q = ZoneQueue()
    r = record(2)
    q.submit(r, 0.0)
    with pytest.raises(ValueError, match="not the one playing"):
        q.finished(r)


def test_broadcast_seconds_caps_the_siren_and_counts_repeats_and_gaps() -> None:
    # signal-3 like: 10 on / 5 off × 3, capped at 25 s of siren: 10 + 5 + 10 + 5 + 5 (cap),
    # the last off step kept, then nothing more (the budget is spent)
    seq = SequenceConfig(siren_pattern=[10, 5, 10, 5, 10, 5, 10], pre_roll_s=2.0,
                         clips=["ja", "en"], repeats=3, gap_s=4.0)
    clips = {"ja": 7.5, "en": 6.0}
    siren = 10 + 5 + 10 + 5 + 5 + 5
    assert broadcast_seconds(seq, clips, 25.0) == pytest.approx(2.0 + siren + 3 * 13.5 + 2 * 4.0)
    # an uncapped pattern plays whole; no siren relay (max 0) plays none of it
    assert broadcast_seconds(seq, clips, 100.0) == pytest.approx(2 + 55 + 40.5 + 8)
    assert broadcast_seconds(seq, clips, 0.0) == pytest.approx(2 + 40.5 + 8)
    # a budget spent exactly at the end of an on step: the next off step still sleeps
    assert broadcast_seconds(seq, clips, 20.0) == pytest.approx(2 + 10 + 5 + 10 + 5 + 40.5 + 8)
    # one repeat: no gap
    one = SequenceConfig(siren_s=10, clips=["ja"], gap_s=30.0)
    assert broadcast_seconds(one, clips, 60.0) == pytest.approx(17.5)
    with pytest.raises(KeyError):
        broadcast_seconds(one, {}, 60.0)


def test_sequence_of_prefers_the_configured_sequence() -> None:
    configured = SequenceConfig(siren_s=10, clips=["ja"], repeats=2)
    r = BroadcastRequest(time=T0, zone="z1", station="s", stage=4, stage_name="overflow",
                         sequence="overflow", siren_s=3.0, clips=("x",))
    assert sequence_of(r, {"overflow": configured}) is configured
    fallback = sequence_of(r, {})
    assert (fallback.siren_steps, fallback.clips, fallback.repeats) == ([3.0], ["x"], 1)


def test_a_stop_abandons_what_waits_as_not_started_and_leaves_the_playing_one() -> None:
    q = ZoneQueue()
    playing, low, high = record(2), record(1), record(3, station="shirokane")
    q.submit(playing, 1.0)
    q.start_next(1.5)
    q.submit(low, 2.0)
    assert q.submit(high, 3.0) is playing  # (pre-empts it; the caller stops it)
    left = q.abandon()
    assert left == [high, low]  # priority order
    assert [r.outcome for r in left] == ["not-started", "not-started"]
    assert q.playing is playing  # the caller ends it (interrupted, or pre-empted as here)
    assert q.waiting == 0
    assert q.abandon() == []
    q.finished(playing)
    assert q.empty
    again = record(1)
    q.submit(again, 4.0)  # its sequence no longer counts as waiting
    assert again.outcome == "queued"


def test_replays_do_not_supersede_one_another_a_live_start_still_does() -> None:
    q = ZoneQueue()
    # a restart replays an overflow that was cut and a warning queued behind it
    overflow, warning = record(4), record(3, station="shirokane")
    overflow.replay = warning.replay = True
    q.submit(overflow, 1.0)
    q.submit(warning, 1.0)
    assert q.start_next(2.0) == ([], overflow)
    overflow.outcome = "done"
    q.finished(overflow)
    assert q.start_next(3.0) == ([], warning)  # played after it, as before the restart
    warning.outcome = "done"
    q.finished(warning)
    # a live overflow that starts after a replayed warning was queued supersedes it
    live, late = record(4, sequence="live4"), record(3, sequence="again3")
    late.replay = True
    q.submit(late, 4.0)
    q.submit(live, 5.0)
    assert q.start_next(5.0) == ([], live)
    live.outcome = "done"
    q.finished(live)
    assert q.start_next(6.0) == ([late], None)
    assert late.outcome == "superseded"
