"""The broadcast journal (gauged/store/state.py): every decided broadcast has a row, written
before it reaches its zone, and the row follows its fate. The daemon runs in the test's
event loop against the field-bus simulators (tests/fieldbus.py); the journal is read from
the state file through a connection of the test's own.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fieldbus import LEVEL_STATIONS, FieldRig, background, field_rig, ramp, until
from services import PtyPairFactory

from gauged.alarm.types import BroadcastRequest
from gauged.field.zones import ZoneBroadcaster
from gauged.store.state import JournalEntry

SPEED = 50.0


def journal(rig: FieldRig) -> list[dict[str, Any]]:
    """The journal as committed (another connection sees only what is committed)."""
    assert rig.daemon.store is not None
    path = rig.daemon.store.path
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM journal ORDER BY id")]


@contextlib.asynccontextmanager
async def zone_running(rig: FieldRig) -> AsyncIterator[ZoneBroadcaster]:
    zone = rig.daemon.zones["riverside"]
    async with background(zone.run(), name="zone:riverside"):
        yield zone


def decide(rig: FieldRig, station: str, stage: int, sequence: str) -> tuple[BroadcastRequest,
                                                                             int]:
    """A broadcast as the daemon decides one: journaled (`queued`), then submitted."""
    store = rig.daemon.store
    assert store is not None
    request = BroadcastRequest(time=datetime.now(UTC), zone="riverside", station=station,
                               stage=stage, stage_name=f"s{stage}", sequence=sequence,
                               siren_s=0.0, clips=("warning",))
    row = store.journal_id()
    store.journal_add([JournalEntry.of(row, request, "queued")]).result()
    rig.daemon.zones["riverside"].submit(request, journal=row)
    return request, row


async def test_a_zone_s_every_broadcast_has_its_fate_in_the_journal(
        tmp_path: Path, pty_pair: PtyPairFactory) -> None:
    async with field_rig(tmp_path, pty_pair, speed=SPEED) as rig, zone_running(rig) as zone:
        _, a = decide(rig, "tcp_1", 2, "warning")
        await until(lambda: zone.current is not None and zone.current.journal == a, 5.0,
                    "the warning to play")
        _, b = decide(rig, "tcp_2", 1, "notice")  # lower: waits
        _, c = decide(rig, "tcp_3", 1, "notice")  # the same sequence waits already: dropped
        _, d = decide(rig, "tcp_4", 3, "overflow")  # higher: pre-empts the warning
        await zone.idle()  # the notice was decided before the overflow started: superseded
        _, e = decide(rig, "tcp_5", 2, "warning")
        await until(lambda: zone.current is not None and zone.current.journal == e, 5.0,
                    "the second warning to play")
        zone.silence()
        await zone.idle()
        await until(lambda: [r["fate"] for r in journal(rig)] == [
            "pre-empted", "superseded", "dropped", "played", "silenced"], 5.0,
            "every fate written")
    rows = {r["id"]: r for r in journal(rig)}
    assert rows[d]["started"] is not None
    assert rows[d]["finished"] is not None
    assert rows[d]["siren_on_s"] >= 10.0
    assert rows[b]["started"] is None  # never played
    assert rows[c]["started"] is None
    assert rows[a]["started"] is not None


async def test_a_cycle_journals_its_broadcasts_before_they_sound_and_merged_or_inhibited_too(
        tmp_path: Path, pty_pair: PtyPairFactory) -> None:
    # tcp_1 and tcp_2 stand at warning from the first cycle (one broadcast names both);
    # tcp_3 rises later (a jump: a spike the next reading confirms), while the zone is
    # inhibited
    async with field_rig(tmp_path, pty_pair, speed=SPEED,
                         levels=dict.fromkeys(LEVEL_STATIONS, 1.0) | {
                             "tcp_1": 3.3, "tcp_2": 3.3},
                         profiles={"tcp_3": ramp([1.0, 1.0, 3.3])}) as rig, \
            zone_running(rig) as zone:
        result = await rig.cycle()
        assert [(b.station, b.named) for b in result.broadcasts] == [
            ("tcp_1", ("tcp_1", "tcp_2"))]
        # committed before the zone got the broadcast: at the latest `playing` by now
        rows = journal(rig)
        assert [(r["station"], r["fate"], r["note"]) for r in rows] == [
            ("tcp_1", rows[0]["fate"], ""), ("tcp_2", "merged", "into tcp_1 warning")]
        assert rows[0]["fate"] in ("queued", "playing")
        assert rows[0]["stations"] == '["tcp_1", "tcp_2"]'
        await zone.idle()
        rig.daemon.inhibit("zone", "riverside", minutes=30, reason="speaker repair")
        for _ in range(4):
            result = await rig.cycle()
            if result.withheld:
                break
        assert [b.station for b in result.withheld] == ["tcp_3"]
        await until(lambda: [r["fate"] for r in journal(rig)] == [
            "played", "merged", "inhibited"], 5.0, "the fates written")
