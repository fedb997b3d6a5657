"""Siren signals as data, and the rule that a siren test must not sound like one (DESIGN §1).

Flood Fighting Act art. 20: each prefecture defines the flood-fighting signals (水防信号), and
no one may use them, or signals like them, without cause. Prefectures publish nearly the same
four, each repeated:

| signal    | meaning                               | on     | off  |
|-----------|---------------------------------------|--------|------|
| `suibo_1` | caution level reached                 | ≈5 s   | 15 s |
| `suibo_2` | flood fighters turn out               | 5 s    | 6 s  |
| `suibo_3` | residents turn out                    | 10 s   | 5 s  |
| `suibo_4` | evacuate                              | ≈1 min | 5 s  |

`SUIBO_SIGNALS` holds them with repeat counts that fit the default maximum siren on-time
(`defaults.siren_max_s`, 60 s); a ward overrides any of them (steps, repeats) under
`[signals.<name>]`, and may add its own. A sequence names one with `siren_signal`, or gives
its own `siren_pattern` (× `siren_repeats`), or `siren_s` for a single blast.

**A test pattern resembles a signal** (`resembles`), and check-config refuses it as
`[tests] siren_pattern`, when, for some signal,
- one of its blasts lasts at least `BLAST_SHARE` (70 %) of the signal's blast: heard alone,
  it is taken for the signal's first blast (with the reference signals: any blast of 3.5 s or
  more); or
- it holds the signal's rhythm: a blast, a pause and a blast each within `RHYTHM_TOLERANCE`
  (30 %) of the signal's on, off and on.
Short chirps (a second on, a second off) are what a test may sound.
"""

from __future__ import annotations

from collections.abc import Mapping

from gauged.config.models import SequenceConfig, SirenSignal

SUIBO_SIGNALS: dict[str, SirenSignal] = {
    "suibo_1": SirenSignal(steps=[5.0, 15.0], repeats=3,
                           label="水防信号 第1信号: 警戒水位に達したとき (caution level reached)"),
    "suibo_2": SirenSignal(steps=[5.0, 6.0], repeats=5,
                           label="水防信号 第2信号: 水防団員が出動すべきとき (fighters turn out)"),
    "suibo_3": SirenSignal(steps=[10.0, 5.0], repeats=4,
                           label="水防信号 第3信号: 居住者の出動を求めるとき (residents turn out)"),
    "suibo_4": SirenSignal(steps=[60.0, 5.0], repeats=1,
                           label="水防信号 第4信号: 立ち退くべきとき (evacuate)"),
}

BLAST_SHARE = 0.7
RHYTHM_TOLERANCE = 0.3


def signal_table(overrides: Mapping[str, SirenSignal]) -> dict[str, SirenSignal]:
    """The flood-fighting signals with a ward's `[signals]` over them."""
    return {**SUIBO_SIGNALS, **overrides}


def _near(value: float, target: float) -> bool:
    return abs(value - target) <= RHYTHM_TOLERANCE * target


def resembles(pattern: list[float], signal: SirenSignal) -> bool:
    """Whether on, off, … `pattern` could be taken for `signal` (module docstring)."""
    on, off = signal.steps[0], (signal.steps[1] if len(signal.steps) > 1 else None)
    blasts = pattern[0::2]
    if any(blast >= BLAST_SHARE * on for blast in blasts):
        return True
    if off is None:
        return False
    return any(_near(pattern[i], on) and _near(pattern[i + 1], off) and
               _near(pattern[i + 2], on) for i in range(0, len(pattern) - 2, 2))


def resolve(sequences: Mapping[str, SequenceConfig],
            overrides: Mapping[str, SirenSignal]) -> None:
    """Give each sequence that names a known signal its steps (unknown names are
    `signal_problems`')."""
    table = signal_table(overrides)
    for seq in sequences.values():
        if seq.siren_signal is not None and seq.siren_signal in table:
            seq.use_signal(table[seq.siren_signal].expanded)


def signal_problems(sequences: Mapping[str, SequenceConfig],
                    overrides: Mapping[str, SirenSignal], test_pattern: list[float],
                    siren_max_s: float) -> list[str]:
    """Each problem as `entry: field: message`."""
    problems = []
    table = signal_table(overrides)
    for name, seq in sequences.items():
        given = [f for f, on in (("siren_s", seq.siren_s > 0),
                                 ("siren_pattern", bool(seq.siren_pattern)),
                                 ("siren_signal", seq.siren_signal is not None)) if on]
        if len(given) > 1 and given != ["siren_s", "siren_pattern"]:  # that pair: checks.py
            problems.append(f"sequence {name}: {given[-1]}: give one of "
                            f"{', '.join(given)}, not several")
        if seq.siren_signal is not None and seq.siren_signal not in table:
            problems.append(f"sequence {name}: siren_signal: unknown signal "
                            f"{seq.siren_signal!r} (known: {', '.join(sorted(table))})")
        if seq.siren_repeats > 1 and not seq.siren_pattern:
            problems.append(f"sequence {name}: siren_repeats: repeats a siren_pattern; "
                            f"this sequence has none")
    if test_pattern:
        if any(not step > 0 for step in test_pattern):
            problems.append("tests: siren_pattern: every step lasts a positive time")
        for sid, signal in table.items():
            if resembles(test_pattern, signal):
                problems.append(
                    f"tests: siren_pattern: {test_pattern} resembles the flood-fighting "
                    f"signal {sid} ({signal.steps[0]:g} s on"
                    + (f", {signal.steps[1]:g} s off" if len(signal.steps) > 1 else "")
                    + f"): Flood Fighting Act art. 20 forbids sounding it, or one like it, "
                    f"without cause; use blasts shorter than "
                    f"{BLAST_SHARE * signal.steps[0]:g} s")
                break
        if sum(test_pattern[0::2]) > siren_max_s:
            problems.append(f"tests: siren_pattern: {sum(test_pattern[0::2]):g} s of siren "
                            f"exceeds defaults.siren_max_s = {siren_max_s:g} s")
    return problems
