"""SYS-5 in the pure core: an unexpected exception evaluating or judging one station is that
station's gauge_fault (reason internal), its stage held; the others go on. The exceptions are
injected by replacing one station's part (pure-logic unit tests); the daemon-level test with
a real fault is tests/integration/test_sys_5_error_barriers.py.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gauged.alarm.engine import Engine
from gauged.alarm.quality import Judge, Observation, Quality
from gauged.alarm.types import CycleResult, Sample
from gauged.barrier import DECODE, EVALUATE, Barrier, Contained, internal_reason
from gauged.config.load import load_config
from gauged.config.settings import Config

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 7, 1, tzinfo=UTC)
GOOD = Quality.GOOD
# Shin-Hiroo (crest 4.60): 3.7 m is freeboard 0.9, warning. Shirokane (crest 4.30): 3.4 m is
# freeboard 0.9, warning; 1.0 m is freeboard 3.3, normal.
HIROO_WARNING, SHIROKANE_WARNING, SHIROKANE_CALM = 3.7, 3.4, 1.0


@pytest.fixture
def config() -> Config:
    return load_config(ROOT / "config" / "minato-furukawa.toml")


def at(i: int) -> datetime:
    return T0 + timedelta(minutes=3 * i)


def boom(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("boom")


def stage_names(result: CycleResult) -> dict[str, str]:
    return {s.station: s.stage_name for s in result.states}


def test_sys_5_an_exception_deriving_one_station_holds_it_and_the_others_escalate(
        config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = Engine(config)
    engine.restore("shirokane", 3)  # at warning when its evaluation starts failing
    monkeypatch.setattr(engine.trends["shirokane"], "rate", boom)
    results = [engine.evaluate(at(i), {"shin_hiroo": Sample(level, GOOD),
                                       "shirokane": Sample(SHIROKANE_CALM, GOOD)})
               for i, level in enumerate([1.0, 2.7, HIROO_WARNING, HIROO_WARNING])]
    for result in results:  # every cycle: Shirokane faulted, its warning held, nothing said
        assert set(result.contained) == {"shirokane"}
        assert result.contained["shirokane"].where == EVALUATE
        state = next(s for s in result.states if s.station == "shirokane")
        assert state.fault == state.reason == "internal: RuntimeError: boom"
        assert state.quality is Quality.BAD
        assert state.stage_name == "warning"
        assert all(t.station != "shirokane" for t in result.transitions)
    # while Shin-Hiroo escalated and broadcast as if nothing happened
    assert [(t.station, t.to_name) for r in results for t in r.transitions] == [
        ("shin_hiroo", "notice"), ("shin_hiroo", "warning")]
    assert [(b.station, b.stage_name) for r in results for b in r.broadcasts] == [
        ("shin_hiroo", "notice"), ("shin_hiroo", "warning")]
    assert (engine.stages["shirokane"], engine.stages["shin_hiroo"]) == (3, 3)

    monkeypatch.undo()  # the error is gone: Shirokane is measured again and may come down
    after = [engine.evaluate(at(4 + i), {"shirokane": Sample(SHIROKANE_CALM, GOOD)})
             for i in range(2)]
    assert all(not r.contained and r.states[0].fault == "" for r in after)
    assert [(t.from_name, t.to_name) for r in after for t in r.transitions] == [
        ("warning", "normal")]


def test_sys_5_an_exception_inside_one_stations_stage_machine_moves_nothing(
        config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine raises after it has moved (the worst case): the move is undone."""
    engine = Engine(config)
    machine = engine.machines["shirokane"]
    real = machine.update

    def update_then_raise(*args: Any, **kwargs: Any) -> Any:
        real(*args, **kwargs)
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(machine, "update", update_then_raise)
    for i in range(3):
        result = engine.evaluate(at(i), {"shin_hiroo": Sample(HIROO_WARNING, GOOD),
                                         "shirokane": Sample(SHIROKANE_WARNING, GOOD)})
        assert stage_names(result) == {"shin_hiroo": "warning", "shirokane": "normal"}
        assert result.states[1].fault == "internal: ZeroDivisionError: division by zero"
        assert [t.station for t in result.transitions] == (["shin_hiroo"] if i == 0 else [])
        assert [b.station for b in result.broadcasts] == (["shin_hiroo"] if i == 0 else [])
        assert machine.stage == 0  # the machine's own move undone, not only the station's
    monkeypatch.undo()
    result = engine.evaluate(at(3), {"shirokane": Sample(SHIROKANE_WARNING, GOOD)})
    assert [(t.station, t.to_name) for t in result.transitions] == [("shirokane", "warning")]
    assert [b.sequence for b in result.broadcasts] == ["level_warning"]


def test_sys_5_an_exception_judging_one_gauge_is_its_gauge_fault_at_once(
        config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    judge = Judge(config)
    monkeypatch.setattr(judge.trackers["shirokane"], "judge", boom)
    observations = {"shin_hiroo": Observation(1.0, key=1.0, watch=1.0),
                    "shirokane": Observation(1.0, key=1.0, watch=1.0)}
    judged = judge.judge(T0.timestamp(), observations)
    assert judged["shin_hiroo"].quality is GOOD
    assert judged["shirokane"].quality is Quality.MISSING
    assert judged["shirokane"].reason == "internal: RuntimeError: boom"
    assert judge.trackers["shirokane"].fault == "internal: RuntimeError: boom"  # at once
    assert set(judge.contained) == {"shirokane"}
    stations = judge.stations(observations, judged)
    assert stations["shirokane"].fault == "internal: RuntimeError: boom"
    assert stations["shin_hiroo"].fault == ""
    monkeypatch.undo()  # the next good reading clears it
    judge.judge(at(1).timestamp(), observations)
    assert judge.trackers["shirokane"].fault == ""
    assert judge.contained == {}


def test_sys_5_a_barrier_logs_an_episode_once_and_counts_every_error(
        caplog: pytest.LogCaptureFixture) -> None:
    barrier = Barrier(logging.getLogger("test.barrier"))
    try:
        int(float("nan"))
    except ValueError as exc:
        nan = Contained("rain_line", DECODE, exc)
    caplog.set_level(logging.INFO, logger="test.barrier")
    for _ in range(5):
        barrier.report(["rain_line", "shin_hiroo"], {"rain_line": nan})
    other = Contained("rain_line", DECODE, TypeError("unsupported operand"))
    barrier.report(["rain_line"], {"rain_line": other})  # another error: news, logged
    barrier.report(["rain_line"], {"rain_line": other})
    barrier.report(["rain_line"], {})  # a cycle without it: the episode ends
    barrier.report(["rain_line"], {})
    records = [(r.levelname, r.getMessage().split(" (")[0]) for r in caplog.records]
    assert records == [
        ("ERROR", "internal error station=rain_line where=decode: internal: ValueError: "
                  "cannot convert float NaN to integer"),
        ("ERROR", "internal error station=rain_line where=decode: internal: TypeError: "
                  "unsupported operand"),
        ("INFO", "internal error cleared station=rain_line where=decode: a cycle went through "
                 "without it"),
    ]
    assert caplog.records[0].exc_info is not None  # with its traceback
    assert barrier.counts == {("rain_line", "decode"): 7}
    assert internal_reason(KeyError()) == "internal: KeyError"
