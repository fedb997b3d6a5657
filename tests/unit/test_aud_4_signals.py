"""AUD-4: siren signals as data, played on an injected clock.

Each flood-fighting signal's on/off edges land within 0.1 s of its steps; the maximum on-time
per broadcast is never exceeded; replay's `broadcast_seconds` agrees with what is played; a
test pattern that resembles a flood-fighting signal is refused by check-config.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from drivers.configs import RelayConfig
from drivers.relays import CoilRelay
from gauged.alarm.queue import broadcast_seconds
from gauged.alarm.types import BroadcastRecord, BroadcastRequest
from gauged.config.load import load_config
from gauged.config.models import SequenceConfig, SirenSignal
from gauged.config.signals import SUIBO_SIGNALS, resembles, resolve
from gauged.daemon.reload import changes
from gauged.errors import ConfigError
from gauged.field.zones import ZoneBroadcaster

REFERENCE = Path(__file__).resolve().parents[2] / "config" / "minato-furukawa.toml"
TOLERANCE_S = 0.1


class VirtualClock:
    """The daemon's clock, injected: sleeping advances it at once (no real waiting)."""

    def __init__(self) -> None:
        self.t = 0.0

    def monotonic(self) -> float:
        return self.t

    def timestamp(self) -> float:
        return 1_780_000_000.0 + self.t

    async def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)
        await asyncio.sleep(0)


class Board:
    """Coils that follow every write; each write stamped with the virtual time."""

    name = "board"

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.coils: dict[int, bool] = {}
        self.edges: list[tuple[int, bool, float]] = []

    async def write_coil(self, unit: int, address: int, value: bool) -> None:
        if self.coils.get(address, False) != value:
            self.edges.append((address, value, self.clock.t))
        self.coils[address] = value

    async def read_coils(self, unit: int, address: int, count: int = 1) -> list[bool]:
        return [self.coils.get(address, False)]


class SilentPlayer:
    async def play(self, zone: str, clip_id: str, path: Path) -> None:
        return None

    async def close(self) -> None:
        return None


async def play(seq: SequenceConfig, siren_max_s: float) -> tuple[list[tuple[float, float]],
                                                                  float]:
    """Play `seq` on a zone with a siren; (the siren's (on, off) times, the end time)."""
    clock = VirtualClock()
    board = Board(clock)
    siren = CoilRelay("z.siren", board, RelayConfig(bus="board", coil=0))  # type: ignore[arg-type]
    zone = ZoneBroadcaster("z", siren=siren, amplifier=None, player=SilentPlayer(),
                           clip_path=Path, clock=clock,  # type: ignore[arg-type]
                           sequences={"s": seq}, siren_max_s=siren_max_s,
                           on_done=lambda record: None)
    request = BroadcastRequest(time=datetime(2026, 7, 1, tzinfo=UTC), zone="z", station="st",
                               stage=3, stage_name="overflow", sequence="s", siren_s=0.0,
                               clips=())
    record = BroadcastRecord(request=request, outcome="playing")
    zone._queue.submit(record, 0.0)
    zone._queue.start_next(0.0)
    await zone.play(record)
    assert record.outcome == "done"
    ons = [t for coil, on, t in board.edges if on]
    offs = [t for coil, on, t in board.edges if not on]
    assert len(ons) == len(offs)
    return list(zip(ons, offs, strict=True)), clock.t


def expected_blasts(steps: list[float]) -> list[tuple[float, float]]:
    out, t = [], 0.0
    for i, seconds in enumerate(steps):
        if i % 2 == 0:
            out.append((t, t + seconds))
        t += seconds
    return out


def signal_sequence(name: str, overrides: dict[str, SirenSignal] | None = None) -> SequenceConfig:
    seq = SequenceConfig(siren_signal=name)
    resolve({"s": seq}, overrides or {})
    return seq


@pytest.mark.parametrize("name", sorted(SUIBO_SIGNALS))
async def test_aud_4_each_signal_plays_its_steps_within_a_tenth_of_a_second(name: str) -> None:
    signal = SUIBO_SIGNALS[name]
    blasts, end = await play(signal_sequence(name), siren_max_s=600.0)
    want = expected_blasts(signal.expanded)
    assert len(blasts) == len(want) == signal.repeats
    for (on, off), (want_on, want_off) in zip(blasts, want, strict=True):
        assert abs(on - want_on) <= TOLERANCE_S
        assert abs(off - want_off) <= TOLERANCE_S
    assert sum(off - on for on, off in blasts) == pytest.approx(signal.on_s, abs=TOLERANCE_S)
    assert end == pytest.approx(sum(signal.expanded), abs=TOLERANCE_S)  # no off after the last


def test_aud_4_the_signals_are_the_prefectures() -> None:
    steps = {name: (s.steps[0], s.steps[1]) for name, s in SUIBO_SIGNALS.items()}
    assert steps == {"suibo_1": (5.0, 15.0), "suibo_2": (5.0, 6.0), "suibo_3": (10.0, 5.0),
                     "suibo_4": (60.0, 5.0)}
    assert all(s.on_s <= 60.0 for s in SUIBO_SIGNALS.values())  # defaults.siren_max_s


@pytest.mark.parametrize("name", sorted(SUIBO_SIGNALS))
@pytest.mark.parametrize("siren_max_s", [3.0, 7.5, 12.0, 25.0, 59.9])
async def test_aud_4_the_maximum_on_time_is_never_exceeded(name: str, siren_max_s: float) -> None:
    seq = signal_sequence(name)
    blasts, end = await play(seq, siren_max_s=siren_max_s)
    on_time = sum(off - on for on, off in blasts)
    assert on_time <= siren_max_s + 1e-9
    assert on_time == pytest.approx(min(siren_max_s, SUIBO_SIGNALS[name].on_s))
    # replay's account of the same broadcast (the vectorised twin of the zone)
    assert broadcast_seconds(seq, {}, siren_max_s) == pytest.approx(end)


async def test_aud_4_own_steps_with_repeats() -> None:
    seq = SequenceConfig(siren_pattern=[2.0, 3.0], siren_repeats=3)
    blasts, end = await play(seq, siren_max_s=60.0)
    assert blasts == [(0.0, 2.0), (5.0, 7.0), (10.0, 12.0)]
    assert end == 12.0


def _reference(tmp_path: Path, extra: str) -> Path:
    text = REFERENCE.read_text(encoding="utf-8")
    text = text.replace('file = "clips/', f'file = "{REFERENCE.parent}/clips/')
    path = tmp_path / "gauged.toml"
    path.write_text(text + "\n" + extra + "\n", encoding="utf-8")
    return path


def test_aud_4_a_sequence_names_a_signal_and_a_ward_overrides_it(tmp_path: Path) -> None:
    config = load_config(_reference(tmp_path, (
        '[sequences.turn_out]\nsiren_signal = "suibo_2"\nclips = ["heavy_rain_ja"]\n'
        '[sequences.caution]\nsiren_signal = "suibo_1"\n'
        '[signals.suibo_1]\nsteps = [6.0, 14.0]\nrepeats = 2\n')))
    assert config.sequences["turn_out"].siren_steps == [5.0, 6.0] * 4 + [5.0]
    assert config.sequences["caution"].siren_steps == [6.0, 14.0, 6.0]
    # the reference ward keeps its single 10-second siren at overflow
    assert config.sequences["level_overflow"].siren_steps == [10.0]


@pytest.mark.parametrize(("extra", "problem"), [
    ('[sequences.x]\nsiren_signal = "suibo_9"\nclips = ["heavy_rain_ja"]',
     "sequence x: siren_signal: unknown signal 'suibo_9'"),
    ('[sequences.x]\nsiren_signal = "suibo_1"\nsiren_s = 10',
     "sequence x: siren_signal: give one of siren_s, siren_signal, not several"),
    ('[sequences.x]\nsiren_signal = "suibo_4"\n[signals.suibo_4]\nsteps = [60, 5]\nrepeats = 2',
     "sequence x: siren_s: 120 s of siren exceeds the maximum siren on-time"),
    ('[sequences.x]\nsiren_s = 5\nsiren_repeats = 3',
     "sequence x: siren_repeats: repeats a siren_pattern; this sequence has none"),
])
def test_aud_4_bad_signal_use_is_refused(tmp_path: Path, extra: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(_reference(tmp_path, extra))
    assert any(problem in line for line in caught.value.problems), caught.value.problems


@pytest.mark.parametrize("pattern", [
    [5.0, 15.0, 5.0],  # signal 1 itself
    [5.0, 6.0, 5.0, 6.0, 5.0],  # signal 2
    [10.0],  # a blast as long as signal 3's
    [4.0, 1.0, 1.0],  # one blast of 4 s: taken for the start of signal 1 or 2
    [3.6],
])
def test_aud_4_a_test_pattern_like_a_flood_fighting_signal_is_refused(
        tmp_path: Path, pattern: list[float]) -> None:
    steps = ", ".join(f"{s:g}" for s in pattern)
    with pytest.raises(ConfigError) as caught:
        load_config(_reference(tmp_path, f"[tests]\nsiren_pattern = [{steps}]"))
    lines = [line for line in caught.value.problems if "siren_pattern" in line]
    assert len(lines) == 1, caught.value.problems
    assert re.search(r"tests: siren_pattern: .* resembles the flood-fighting signal suibo_\d",
                     lines[0])
    assert "Flood Fighting Act art. 20" in lines[0]


def test_aud_4_short_chirps_are_a_fine_test_pattern(tmp_path: Path) -> None:
    config = load_config(_reference(tmp_path, "[tests]\nsiren_pattern = [1, 1, 1]"))
    assert config.tests.siren_pattern == [1.0, 1.0, 1.0]


def test_aud_4_resemblance_follows_a_wards_own_signals() -> None:
    chirp = [1.0, 1.0, 1.0]
    assert not any(resembles(chirp, s) for s in SUIBO_SIGNALS.values())
    ward = SirenSignal(steps=[1.2, 0.8], repeats=5)  # a ward's signal of short blasts
    assert resembles(chirp, ward)  # same rhythm within 30 %
    assert not resembles([0.5, 3.0, 0.5], ward)


def test_aud_4_signals_and_audio_rules_change_on_a_reload(tmp_path: Path) -> None:
    old = load_config(_reference(tmp_path, ""))
    new = load_config(_reference(tmp_path, "[signals.suibo_1]\nsteps = [6, 14]\n"
                                           "[audio]\nclip_max_s = 90"))
    found = changes(old, new)
    assert {str(c.path[0]) for c in found} == {"signals", "audio"}
    assert all(c.live for c in found)
