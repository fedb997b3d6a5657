"""SYS-6 at unit level: which changes a reload applies live and which need a restart
(gauged/daemon/reload.py), and the engine carrying its state over to the new configuration
(`Engine.carry_over`): nothing re-sounds, new thresholds act at the next cycle.

The through-the-process tests are in tests/integration/test_sys_6_reload.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gauged.alarm.engine import Engine
from gauged.alarm.quality import Quality
from gauged.alarm.types import Sample
from gauged.config.load import load_config
from gauged.config.settings import Config
from gauged.daemon.reload import ReloadRefused, changes, prepare

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "config" / "minato-furukawa.toml"
T0 = datetime(2026, 7, 1, tzinfo=UTC)
HIROO = ('    { name = "notice", threshold = 2.0, sequence = "level_notice" },\n'
         '    { name = "warning", threshold = 1.0, sequence = "level_warning" },\n'
         '    { name = "overflow", threshold = 0.0, sequence = "level_overflow" },\n')


def config(tmp_path: Path, edit: str = "", replace: tuple[str, str] = ("", ""),
           name: str = "g.toml") -> Config:
    text = REFERENCE.read_text(encoding="utf-8").replace('file = "clips/',
                                                         f'file = "{ROOT}/config/clips/')
    if replace[0]:
        assert replace[0] in text
        text = text.replace(replace[0], replace[1], 1)
    path = tmp_path / name
    path.write_text(text + edit, encoding="utf-8")
    return load_config(path)


def hiroo(notice: str = "2.0", overflow: str = "0.0") -> tuple[str, str]:
    return HIROO, HIROO.replace("threshold = 2.0", f"threshold = {notice}").replace(
        "threshold = 0.0", f"threshold = {overflow}")


def test_sys_6_thresholds_sequences_clips_are_live_devices_need_a_restart(
        tmp_path: Path) -> None:
    old = config(tmp_path, name="old.toml")
    new = config(tmp_path, '\n[sequences.extra]\nclips = ["furukawa_rising_ja"]\n',
                 hiroo(notice="2.1"), name="new.toml")
    found = changes(old, new)
    assert [(c.name, c.live) for c in found] == [
        ("stations.shin_hiroo.stages[1].threshold", True), ("sequences.extra", True)]
    assert found[0].describe() == "stations.shin_hiroo.stages[1].threshold: 2.0 → 2.1"

    moved = config(tmp_path, replace=("port = 15020\n", "port = 15022\n"), name="moved.toml")
    [port] = changes(old, moved)
    assert (port.name, port.live) == ("buses.river.port", False)
    secret = config(tmp_path, '\n[commands]\nenabled = true\nsecret = "a-new-secret-0123456"\n',
                    name="secret.toml")
    described = [c.describe() for c in changes(old, secret)]
    assert "commands.secret: (secret) → (secret)" in described
    assert not any("a-new-secret" in d for d in described)  # never in a log line
    # a station that appears is no live change (it needs its gauge polled)
    more = config(tmp_path, '\n[gauges.extra]\nbus = "river"\nunit = 9\nquantity = "level_m"\n'
                  'register = { kind = "holding", address = 0, data_type = "int16" }\n'
                  '\n[stations.extra]\nkind = "level"\ngauge = "extra"\ncrest_m = 4.3\n'
                  'zones = ["furukawa_shirokane"]\n'
                  'stages = [{ name = "watch", threshold = 2.0 }]\n', name="more.toml")
    assert {(c.name, c.live) for c in changes(old, more)} == {
        ("gauges.extra", False), ("stations.extra", False)}


async def test_sys_6_prepare_refuses_a_restart_change_and_an_invalid_file(
        tmp_path: Path) -> None:
    running = config(tmp_path, name="running.toml")
    text = (tmp_path / "running.toml").read_text(encoding="utf-8")
    path = tmp_path / "next.toml"
    path.write_text(text.replace("port = 15020\n", "port = 15022\n")
                    .replace(*hiroo(notice="2.1"), 1), encoding="utf-8")
    with pytest.raises(ReloadRefused) as refused:
        await prepare(running, path)
    assert refused.value.lines == [
        "buses.river.port: 15020 → 15022 needs a restart (the bus and device layout)"]
    path.write_text(text.replace('zones = ["furukawa_hiroo"]', 'zones = ["nowhere"]', 1),
                    encoding="utf-8")
    with pytest.raises(ReloadRefused) as refused:
        await prepare(running, path)
    assert refused.value.lines == [f"{path}: station shin_hiroo: zones: unknown zone 'nowhere'"]
    path.write_text(text.replace(*hiroo(notice="2.1"), 1), encoding="utf-8")
    prepared = await prepare(running, path)
    assert [c.name for c in prepared.changes] == ["stations.shin_hiroo.stages[1].threshold"]


def level(m: float) -> dict[str, Sample]:
    return {"shin_hiroo": Sample(m, Quality.GOOD)}


def test_sys_6_the_engine_carries_its_state_over_and_re_sounds_nothing(tmp_path: Path) -> None:
    old = Engine(config(tmp_path, name="old.toml"))
    when = T0
    result = old.evaluate(when, level(3.8))  # freeboard 0.8: warning, sounded
    assert [b.stage_name for b in result.broadcasts] == ["warning"]
    for _ in range(3):
        when += timedelta(minutes=3)
        assert old.evaluate(when, level(3.8)).broadcasts == []
    entered = old.machines["shin_hiroo"].entered

    new = Engine(config(tmp_path, replace=hiroo(notice="2.1"), name="new.toml"))
    new.carry_over(old)
    assert new.stages["shin_hiroo"] == 3
    assert new.machines["shin_hiroo"].entered == entered
    assert new.announcers["shin_hiroo"].episode
    for _ in range(3):  # the same river: nothing moves, nothing sounds
        when += timedelta(minutes=3)
        result = new.evaluate(when, level(3.8))
        assert result.transitions == []
        assert result.broadcasts == []

    higher = Engine(config(tmp_path, replace=hiroo(overflow="0.9"), name="higher.toml"))
    higher.carry_over(new)
    when += timedelta(minutes=3)
    result = higher.evaluate(when, level(3.8))  # the new threshold is reached: it sounds
    assert [(t.from_name, t.to_name) for t in result.transitions] == [("warning", "overflow")]
    assert [b.stage_name for b in result.broadcasts] == ["overflow"]
