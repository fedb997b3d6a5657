"""What a start does with the broadcasts the last run left unfinished (gauged/daemon/restore.py):
each judged once against the journal, the restored stages, the age limit and the inhibits.

The reference configuration, a real state store in a temporary folder and the daemon's own
engine and keeper; no device is opened.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gauged.alarm.types import BroadcastRequest
from gauged.config.load import load_config
from gauged.daemon.daemon import Daemon
from gauged.ops.inhibits import Inhibits
from gauged.store.state import JournalEntry, StateStore

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_782_000_000.0  # some UNIX time: the start
WARNING, OVERFLOW = 3, 4  # stages of shin_hiroo


def request(stage: int, *, ago_min: float = 2.0, station: str = "shin_hiroo",
            zone: str = "furukawa_hiroo", kind: str = "stage") -> BroadcastRequest:
    names = {0: "normal", 2: "notice", 3: "warning", 4: "overflow"}
    return BroadcastRequest(
        time=datetime.fromtimestamp(NOW - ago_min * 60, UTC), zone=zone, station=station,
        stage=stage, stage_name=names.get(stage, "manual"),
        sequence=f"level_{names.get(stage, 'x')}", siren_s=0.0, clips=("c",), kind=kind)


@pytest.fixture
def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Daemon:
    monkeypatch.setenv("GAUGED_STATE__PATH", str(tmp_path / "state.sqlite3"))
    return Daemon(load_config(ROOT / "config" / "minato-furukawa.toml"))


def judged(daemon: Daemon, tmp_path: Path, rows: list[tuple[BroadcastRequest, str]],
           stages: dict[str, int], edit: list[JournalEntry] | None = None,
           inhibit: tuple[str, str] | None = None) -> dict[int, tuple[str, str]]:
    """Journal `rows` (request, fate), save `stages`, start again: {id: (restart, note)}."""
    path = tmp_path / "state.sqlite3"
    with StateStore.open(path) as store:
        entries = [JournalEntry.of(store.journal_id(), r, fate) for r, fate in rows]
        store.save_cycle(NOW - 60, stages={sid: (s, None) for sid, s in stages.items()},
                         counters={}, rain=[], journal=edit or entries)
        if inhibit is not None:
            store.add_inhibit(inhibit[0], inhibit[1], "maintenance", NOW - 30, None)
    with StateStore.open(path) as store:
        daemon.keeper.open(store)
        daemon.keeper.restore(store, NOW)
        inhibits = Inhibits(daemon.config, store, lambda: NOW)

        def blocking(r: BroadcastRequest) -> str | None:
            found = inhibits.blocking(r)
            return None if found is None else f"{found.scope} {found.target}"

        decisions = daemon.keeper.recover(NOW, blocking)
        unfinished = store.journal_unfinished()
    # each row judged once: what is left for the next start is the replays (queued, as
    # the zones have not run here)
    replays = [d.replay for d in decisions if d.replay is not None]
    assert [(e.id, e.fate) for e in unfinished] == [(r.id, "queued") for r in replays]
    return {d.entry.id: (d.restart, d.note) for d in decisions}


def test_a_young_broadcast_whose_stage_stands_is_replayed(daemon: Daemon,
                                                          tmp_path: Path) -> None:
    got = judged(daemon, tmp_path, [(request(WARNING), "queued")],
                 {"shin_hiroo": OVERFLOW})  # at a higher stage since: still stands
    assert got[1][0] == "replayed"
    assert "its stage stands" in got[1][1]


def test_a_stage_lowered_since_is_reported(daemon: Daemon, tmp_path: Path) -> None:
    got = judged(daemon, tmp_path, [(request(WARNING), "playing")], {"shin_hiroo": 2})
    assert got[1] == ("reported", "its stage no longer stands: shin_hiroo at notice")


def test_older_than_the_limit_is_reported(daemon: Daemon, tmp_path: Path) -> None:
    got = judged(daemon, tmp_path, [(request(WARNING, ago_min=15.5), "queued")],
                 {"shin_hiroo": WARNING})
    assert got[1] == ("reported", "decided 15.5 min ago, more than [state] "
                                  "replay_max_age_min = 15")


def test_a_higher_stage_broadcast_since_supersedes(daemon: Daemon, tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    with StateStore.open(path) as store:
        warning = JournalEntry.of(store.journal_id(), request(WARNING, ago_min=6), "queued")
        overflow = dataclasses.replace(
            JournalEntry.of(store.journal_id(), request(OVERFLOW, ago_min=3), "played"),
            started=NOW - 170, finished=NOW - 100)
    got = judged(daemon, tmp_path, [], {"shin_hiroo": OVERFLOW}, edit=[warning, overflow])
    assert got == {1: ("superseded", "overflow (shin_hiroo) was broadcast on the zone since")}


def test_a_cut_replay_is_not_replayed_again(daemon: Daemon, tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    with StateStore.open(path) as store:
        replay = dataclasses.replace(
            JournalEntry.of(store.journal_id(), request(WARNING), "playing"),
            replay_of=7, cut_before=True, started=NOW - 50)
        never = dataclasses.replace(
            JournalEntry.of(store.journal_id(), request(WARNING, station="shirokane",
                                                       zone="furukawa_shirokane"), "queued"),
            replay_of=8, cut_before=True)
    got = judged(daemon, tmp_path, [], {"shin_hiroo": WARNING, "shirokane": WARNING},
                 edit=[replay, never])
    assert got[1] == ("reported", "cut short again after a replay: not replayed a second time")
    assert got[2][0] == "replayed"  # a replay that never started is judged like any other


def test_an_inhibited_zone_is_reported_not_played(daemon: Daemon, tmp_path: Path) -> None:
    got = judged(daemon, tmp_path, [(request(WARNING), "queued")], {"shin_hiroo": WARNING},
                 inhibit=("zone", "furukawa_hiroo"))
    assert got[1] == ("reported", "inhibited: zone furukawa_hiroo")


def test_an_all_clear_stands_while_its_station_is_normal_an_operator_s_broadcast_always(
        daemon: Daemon, tmp_path: Path) -> None:
    got = judged(daemon, tmp_path, [
        (request(0, kind="all_clear"), "queued"),
        (request(0, kind="all_clear", station="shirokane", zone="furukawa_shirokane"),
         "queued"),
        (request(0, kind="manual", station="", zone="ward"), "playing")],
        {"shin_hiroo": 0, "shirokane": 2})
    assert got[1][0] == "replayed"
    assert got[2] == ("reported", "its station is above normal again: shirokane at notice")
    assert got[3][0] == "replayed"
