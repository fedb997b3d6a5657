"""Maintenance inhibits (gauged/ops/inhibits.py) over a real state file, with an injected clock;
repeats and the all-clear after a restart (gauged/alarm/engine.py `Announcer`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gauged.alarm.engine import Engine
from gauged.alarm.quality import Quality
from gauged.alarm.types import BroadcastRequest, Sample
from gauged.config.load import load_config
from gauged.errors import ConfigError
from gauged.ops.inhibits import InhibitError, Inhibits
from gauged.store.state import StateStore

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "repeat_and_all_clear" / "config.toml"
T0 = datetime(2026, 7, 1, tzinfo=UTC)


def request(station: str, zone: str = "ward") -> BroadcastRequest:
    return BroadcastRequest(time=T0, zone=zone, station=station, stage=3,
                            stage_name="warning", sequence="level_warning", siren_s=0.0,
                            clips=())


def test_inhibits_block_by_station_or_zone_survive_a_restart_and_expire(
        tmp_path: Path) -> None:
    config = load_config(ROOT / "config" / "minato-furukawa.toml")
    now = [T0.timestamp()]
    zone = next(iter(config.zones))
    with StateStore.open(tmp_path / "state.sqlite3") as store:
        inhibits = Inhibits(config, store, lambda: now[0])
        inhibits.add("station", "shirokane", minutes=30, reason="gauge swap", by="ops")
        inhibits.add("zone", zone, minutes=90)
        assert inhibits.blocking(request("shirokane", zone="elsewhere")) is not None
        assert inhibits.blocking(request("shin_hiroo", zone=zone)) is not None
        assert inhibits.blocking(request("shin_hiroo", zone="elsewhere")) is None
    with StateStore.open(tmp_path / "state.sqlite3") as store:  # a restart keeps them
        now[0] += 29 * 60
        inhibits = Inhibits(config, store, lambda: now[0])
        assert {(i["scope"], i["reason"]) for i in inhibits.snapshot()} == {
            ("station", "gauge swap"), ("zone", "")}
        assert inhibits.expire() == []
        now[0] += 60  # 30 minutes after it was added, the station inhibit is over
        assert [i.target for i in inhibits.expire()] == ["shirokane"]
        assert inhibits.blocking(request("shirokane", zone="elsewhere")) is None
        now[0] += 3600
        assert [i.target for i in inhibits.expire()] == [zone]
        assert inhibits.snapshot() == []
    with StateStore.open(tmp_path / "state.sqlite3") as store:
        assert Inhibits(config, store, lambda: now[0]).active == []


def test_a_new_inhibit_replaces_the_old_one_and_the_default_time_applies(
        tmp_path: Path) -> None:
    config = load_config(ROOT / "config" / "minato-furukawa.toml")
    now = [T0.timestamp()]
    with StateStore.open(tmp_path / "state.sqlite3") as store:
        inhibits = Inhibits(config, store, lambda: now[0])
        first = inhibits.add("station", "shirokane")
        assert first.expires == now[0] + config.defaults.inhibit_default_min * 60
        second = inhibits.add("station", "shirokane", minutes=5)
        assert [i.id for i in inhibits.active] == [second.id]
        with pytest.raises(InhibitError, match="minutes must be above 0"):
            inhibits.add("station", "shirokane", minutes=0)


def level_engine() -> Engine:
    return Engine(load_config(GOLDEN))


def sample(level: float) -> dict[str, Sample]:
    return {"river": Sample(level, Quality.GOOD)}


def test_a_restored_stage_does_not_repeat_at_once_and_still_gets_its_all_clear() -> None:
    engine = level_engine()
    engine.restore("river", 2, T0)  # warning, repeat_min = 15
    kinds = []
    for i in range(12):  # 36 minutes at warning
        result = engine.evaluate(T0 + timedelta(minutes=3 * i), sample(3.2))
        kinds += [(i, b.kind) for b in result.broadcasts]
    # the repeat clock starts at the first cycle after the restart: 15 and 30 minutes on
    assert kinds == [(5, "repeat"), (10, "repeat")]
    for i in range(12, 14):
        result = engine.evaluate(T0 + timedelta(minutes=3 * i), sample(1.5))
    assert [(b.kind, b.stage, b.sequence) for b in result.broadcasts] == [
        ("all_clear", 0, "all_clear")]


def test_no_all_clear_when_nothing_was_broadcast() -> None:
    engine = level_engine()
    engine.restore("river", 0)
    result = engine.evaluate(T0, sample(1.0))
    assert result.broadcasts == []
    engine.restore("river", 1)  # notice broadcasts too: an all-clear follows it
    engine.evaluate(T0, sample(1.5))
    result = engine.evaluate(T0 + timedelta(minutes=3), sample(1.5))
    assert [b.kind for b in result.broadcasts] == ["all_clear"]


@pytest.mark.parametrize(("edit", "problem"), [
    (("repeat_min = 15", "repeat_min = 2"), "repeat_min: 2 min is shorter than the poll"),
    (('sequence = "notice" }', 'repeat_min = 30 }'), "repeat_min: the stage has no sequence"),
    (('all_clear = "all_clear"', 'all_clear = "nope"'), "all_clear: unknown sequence 'nope'"),
])
def test_repeat_and_all_clear_are_checked(tmp_path: Path, edit: tuple[str, str],
                                           problem: str) -> None:
    text = GOLDEN.read_text(encoding="utf-8")
    assert edit[0] in text
    path = tmp_path / "config.toml"
    path.write_text(text.replace(edit[0], edit[1], 1), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert any(problem in p and "station river: " in p and str(path) in p
               for p in info.value.problems), info.value.problems
