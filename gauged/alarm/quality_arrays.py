"""The quality judge over whole records: `Judge.judge` for every reading of a scenario at
once (`gauged replay`), judgement for judgement the same as the daemon's (gauged/alarm/quality.py;
tests/unit/test_alm_14_replay_twin.py holds them to it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gauged.alarm.quality import (
    BoolArray,
    FloatArray,
    IntArray,
    Quality,
    related_map,
    tracker_for,
)
from gauged.config.settings import Config


def combine_arrays(a_value: FloatArray, a_good: BoolArray, b_value: FloatArray,
                   b_good: BoolArray, tolerance: float) -> tuple[FloatArray, BoolArray]:
    """`combine` over whole records (replay): the station's value and whether it is good."""
    agree = np.abs(a_value - b_value) <= tolerance
    both = np.where(agree, (a_value + b_value) / 2, np.fmax(a_value, b_value))
    value = np.where(a_good & b_good, both,
                     np.where(a_good, a_value, np.where(b_good, b_value,
                                                        np.fmax(a_value, b_value))))
    return value, a_good | b_good


@dataclass(frozen=True)
class ObservationRecord:
    """One station's observations over a scenario, as arrays (NaN: none), with the index of
    each reading's cycle on the scenario's grid of cycle times."""

    time_us: IntArray
    t: FloatArray
    cycle: IntArray
    value: FloatArray
    key: FloatArray
    watch: FloatArray
    error: BoolArray  # the read failed ("no reading")


@dataclass(frozen=True)
class JudgedRecord:
    """`Judge.judge` over a channel's record: the quality code of every reading and the
    readings at which a gauge_fault started (index, its reason) or cleared (index, "");
    with `texts`, the gauge_fault after every reading ("" when none)."""

    quality: npt.NDArray[np.int8]
    faults: list[tuple[int, str]]
    fault_text: npt.NDArray[np.object_] | None = None


def _last_index(mask: BoolArray) -> IntArray:
    """At each index, the last index at or before it where `mask` holds (−1: none)."""
    return np.maximum.accumulate(np.where(mask, np.arange(mask.size), -1))


def _fill_forward(values: FloatArray) -> FloatArray:
    """Each NaN replaced by the last number before it (NaN while there is none)."""
    last = _last_index(np.isfinite(values))
    return np.where(last >= 0, values[np.maximum(last, 0)], np.nan)


def judge_records(config: Config, records: Mapping[str, ObservationRecord],
                  cycles: int, texts: frozenset[str] = frozenset()) -> dict[str, JudgedRecord]:
    """`Judge.judge` over whole records, reading for reading the same judgements.

    What links the stations (other gauges moving in a cycle, related gauges' watch values)
    is worked out on the grid of cycles first; then each record is judged: readings that
    cannot be anything but good after a good one (in range, a plausible step and fall, not
    flat against anything) are passed in bulk, and a `QualityTracker` judges the others,
    set to the state a good reading leaves before each. `records` are keyed by channel; the
    channels in `texts` also get their gauge_fault after every reading.
    """
    channels = config.channels()
    moved: dict[str, BoolArray] = {}
    runs: dict[str, tuple[IntArray, IntArray]] = {}
    watch: dict[str, FloatArray] = {}
    movers = {"level": np.zeros(cycles, dtype=np.int64), "rain": np.zeros(cycles, dtype=np.int64)}
    for sid, rec in records.items():
        has_key = np.isfinite(rec.key) & ~rec.error
        last = _last_index(has_key)
        prev = np.concatenate([[-1], last[:-1]])
        same = has_key & (prev >= 0) & (rec.key == rec.key[np.maximum(prev, 0)])
        moved[sid] = has_key & (prev >= 0) & ~same
        movers[config.stations[channels[sid][0]].kind] += np.bincount(rec.cycle[moved[sid]],
                                                         minlength=cycles)
        # the run of identical keys each reading ends (readings without a key skipped)
        rows = np.flatnonzero(has_key)
        start_pos = _last_index(~same[rows])  # position (in rows) of each run's first reading
        length = np.zeros(rec.t.size, dtype=np.int64)
        start = np.zeros(rec.t.size, dtype=np.int64)
        length[rows] = np.arange(rows.size) - start_pos + 1
        start[rows] = rows[start_pos]
        runs[sid] = (length, start)
        grid = np.full(cycles, np.nan)
        ok = np.isfinite(rec.watch) & ~rec.error
        grid[rec.cycle[ok]] = rec.watch[ok]
        watch[sid] = _fill_forward(grid)
    related = related_map(config)
    out = {}
    for sid, rec in records.items():
        length, start = runs[sid]
        kind = config.stations[channels[sid][0]].kind
        others = movers[kind][rec.cycle] - moved[sid] > 0
        names = [r for r in related[sid] if r in watch]
        amount = np.full(rec.t.size, -np.inf)
        best = np.full(rec.t.size, -1)
        for k, r in enumerate(names):
            now, then = watch[r][rec.cycle], watch[r][rec.cycle[start]]
            a = np.where(np.isfinite(now) & np.isfinite(then), np.abs(now - then), -np.inf)
            better = a > amount
            amount = np.where(better, a, amount)
            best = np.where(better, k, best)
        best = np.where(length == 1, -1, best)
        out[sid] = _judge_record(config, sid, rec, others, length, names, best, amount,
                                 sid in texts)
    return out


def _judge_record(config: Config, sid: str, rec: ObservationRecord, others: BoolArray,
                  length: IntArray, names: list[str], best: IntArray,
                  amount: FloatArray, texts: bool = False) -> JudgedRecord:
    g = config.gauges[config.channels()[sid][1]]
    tracker = tracker_for(config, sid)
    rules = tracker.rules
    n = rec.t.size
    value, t = rec.value, rec.t
    has_value = np.isfinite(value)
    flat = (best >= 0) & (length >= rules.related_cycles) & (amount >= tracker.related_move)
    if rules.flatline_max_cycles is not None:
        flat |= length >= rules.flatline_max_cycles
    if rules.flatline_cycles is not None:
        flat |= (length >= rules.flatline_cycles) & others
    step = rules.max_step
    if tracker.counter:
        plain = ~flat & (value >= 0)
        if step is not None:
            plain &= value <= step * 1
        trivial = ~rec.error & (~has_value | plain)
    else:
        prev_value = np.concatenate([[np.nan], value[:-1]])
        prev_t = np.concatenate([[np.nan], t[:-1]])
        trivial = ~rec.error & has_value & np.isfinite(prev_value) & ~flat
        if g.range is not None:
            trivial &= (value >= g.range[0]) & (value <= g.range[1])
        if step is not None:
            trivial &= np.abs(value - prev_value) <= step
        if tracker.max_fall is not None:
            trivial &= prev_value - value <= tracker.max_fall * (t - prev_t) / 3600.0
    if n:
        trivial[0] = False
    hard = np.flatnonzero(~trivial)
    quality = np.full(n, Quality.GOOD.code, dtype=np.int8)
    faults: list[tuple[int, str]] = []
    fault_text = np.full(n, "", dtype=object) if texts else None
    fault = ""
    i = 0
    while i < n:
        if rec.error[i]:
            judgement = tracker.judge_error("no reading")
        else:
            related = (names[best[i]], float(amount[i])) if best[i] >= 0 else None
            judgement = tracker.judge(None if not has_value[i] else float(value[i]),
                                      t=float(t[i]), others_moving=bool(others[i]),
                                      related=related, flat_key=float(rec.key[i]))
        quality[i] = judgement.quality.code
        if bool(tracker.fault) != bool(fault):  # a fault starts or clears (as the log says)
            faults.append((i, tracker.fault))
        fault = tracker.fault
        if fault_text is not None:
            fault_text[i] = fault
        if judgement.quality is not Quality.GOOD:
            i += 1
            continue
        k = int(hard[np.searchsorted(hard, i, side="right")]) if hard[-1] > i else n
        if k > i + 1:  # readings i+1 … k−1 are good: the tracker as the last one leaves it
            p = k - 1
            if has_value[p]:
                tracker.last_good, tracker.last_good_t = float(value[p]), float(t[p])
            tracker.fell_to = tracker.fell_at = None
            tracker.flat_value, tracker.flat_cycles = float(rec.key[p]), int(length[p])
        i = k
    return JudgedRecord(quality, faults, fault_text)
