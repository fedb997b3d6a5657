"""Acknowledgements of raised stations (gauged/store/acks.py): kept in the state file, one in
force per station, cleared with a reason, read back after a restart."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gauged.store.acks import Ack, AckBook
from gauged.store.state import StateStore

T0 = 1_782_000_000.0


def ack(station: str = "shin_hiroo", stage: int = 3, cid: str = "c-1", t: float = T0) -> Ack:
    return Ack(station=station, stage=stage, stage_name=f"stage-{stage}", by="ops-1", time=t,
               command_id=cid, note="crew on the way")


def test_an_ack_holds_from_its_stage_down_to_the_first_raised_stage() -> None:
    a = ack(stage=3)
    assert [a.holds(stage) for stage in range(5)] == [False, True, True, True, False]


def test_acks_are_kept_replaced_and_cleared_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    with StateStore.open(path) as store:
        book = AckBook(store)
        assert book.current() == {}
        assert book.add(ack("shin_hiroo", 2, "c-1"))
        assert book.add(ack("shin_hiroo", 3, "c-2", T0 + 60))  # replaces c-1
        assert book.add(ack("shirokane", 2, "c-3"))
        assert {s: a.command_id for s, a in book.current().items()} == {
            "shin_hiroo": "c-2", "shirokane": "c-3"}
    with StateStore.open(path) as store:  # a restart
        book = AckBook(store)
        assert {s: a.command_id for s, a in book.current().items()} == {
            "shin_hiroo": "c-2", "shirokane": "c-3"}
        cleared = book.clear("shirokane", T0 + 600, "back to normal")
        assert cleared is not None
        assert (cleared.cleared, cleared.cleared_why) == (T0 + 600, "back to normal")
        assert cleared.as_json()["cleared"] is True
        assert book.clear("shirokane", T0 + 601, "again") is None  # nothing in force
        assert list(book.current()) == ["shin_hiroo"]
    with StateStore.open(path) as store:
        book = AckBook(store)
        assert list(book.current()) == ["shin_hiroo"]
        assert [(a.command_id, a.cleared_why) for a in book.history()] == [
            ("c-1", "replaced"), ("c-2", ""), ("c-3", "back to normal")]
    with sqlite3.connect(path) as db:  # the state file's own schema is untouched
        assert db.execute("SELECT count(*) FROM acks").fetchone()[0] == 3


def test_an_ack_that_cannot_be_written_is_not_in_force(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    with StateStore.open(path) as store:
        book = AckBook(store)
        store.write("a lock", lambda db: db.execute("DROP TABLE acks"))  # writes now fail
        assert not book.add(ack())
        assert book.current() == {}
        assert "acknowledgement" in store.problem


def test_the_json_form_names_station_stage_sender_and_command() -> None:
    shown = ack().as_json()
    assert shown == {
        "station": "shin_hiroo", "stage": 3, "stage_name": "stage-3", "by": "ops-1",
        "time": "2026-06-21T00:00:00+00:00", "command_id": "c-1", "note": "crew on the way",
        "cleared": False, "cleared_time": None, "cleared_why": ""}


def test_the_page_and_the_terminal_view_list_the_acks_escaped() -> None:
    from gauged.ops.page import render_page
    from gauged.ops.statusview import render

    status = {"gateway": "gw", "time": "2026-07-01T03:00:00+00:00", "timezone": "Asia/Tokyo",
              "poll_interval_s": 180, "health": ["ok"], "stations": {}, "zones": {},
              "uplinks": {}, "buses": {}, "faults": [], "cycles": 1}
    assert 'id="acks">none<' in render_page(status, {})
    shown = ack(t=1_782_871_200.0).as_json() | {"note": "<b>crew</b>"}
    page = render_page(status | {"acks": {"shin_hiroo": shown}}, {})
    assert ('<li data-station="shin_hiroo">shin_hiroo at stage-3 by ops-1, 07-01 11:00 JST'
            " — &lt;b&gt;crew&lt;/b&gt;</li>") in page
    assert "An acknowledgement silences nothing." in page
    text = render(status | {"acks": {"shin_hiroo": shown}})
    assert "ACKED shin_hiroo at stage-3 by ops-1 11:00" in text
