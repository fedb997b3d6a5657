"""Operator acknowledgements of raised stations, kept in the state file (table `acks`).

An operator acknowledges a station that stands at a raised stage (the `ack` command,
gauged/ops/commands.py): "seen, someone is on it". An acknowledgement silences nothing:
the zone's repeats go on unless the operator also sends `silence`. It holds while the
station stays at or below the acknowledged stage and above normal; it is cleared (kept in
the table with `cleared` and why) when the station returns to normal or rises above the
acknowledged stage (a new situation, to be acknowledged again). Acknowledgements survive a
restart; one per station is in force at a time (a new one replaces the old).

`AckBook` keeps the acknowledgements in force in memory (read at open), so that the cycle
and /status read them without a query; `add` waits for its fsync (a command's outcome is
said only once it is on disk), `clear` returns at once (written in its turn).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from gauged.store.state import StateStore

_TABLE = """
CREATE TABLE IF NOT EXISTS acks (
    id INTEGER PRIMARY KEY, station TEXT NOT NULL, stage INTEGER NOT NULL,
    stage_name TEXT NOT NULL, by TEXT NOT NULL, time REAL NOT NULL, command_id TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '', cleared REAL, cleared_why TEXT NOT NULL DEFAULT ''
)"""
KEEP = 10_000  # rows kept (the newest)


@dataclass(frozen=True)
class Ack:
    """One acknowledgement (times are UNIX seconds on the daemon's clock)."""

    station: str
    stage: int
    stage_name: str
    by: str  # the command's sender
    time: float
    command_id: str
    note: str = ""
    cleared: float | None = None
    cleared_why: str = ""

    def holds(self, stage: int) -> bool:
        """Whether the acknowledgement still holds with the station at `stage`."""
        return 0 < stage <= self.stage

    def as_json(self) -> dict[str, Any]:
        """The JSON form (/status, MQTT `event/ack` and `station/<id>/ack`)."""
        return {"station": self.station, "stage": self.stage, "stage_name": self.stage_name,
                "by": self.by, "time": _iso(self.time), "command_id": self.command_id,
                "note": self.note, "cleared": self.cleared is not None,
                "cleared_time": _iso(self.cleared), "cleared_why": self.cleared_why}


class AckBook:
    """The acknowledgements in force, backed by the state file (see the module docstring)."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        store.write("the acks table", lambda db: db.execute(_TABLE))
        self._rows: dict[str, tuple[int | None, Ack]] = {
            r[1]: (r[0], Ack(*r[1:])) for r in store.rows(
                "SELECT id, station, stage, stage_name, by, time, command_id, note, cleared, "
                "cleared_why FROM acks WHERE id IN (SELECT max(id) FROM acks GROUP BY station)"
                " AND cleared IS NULL ORDER BY station")}

    def current(self) -> dict[str, Ack]:
        """station → the acknowledgement in force."""
        return {station: ack for station, (_, ack) in sorted(self._rows.items())}

    def add(self, ack: Ack) -> bool:
        """Record `ack` (replacing the station's one in force) and wait until it is on disk:
        False when the state file cannot be written (nothing is changed then)."""
        def work(db: sqlite3.Connection) -> int | None:
            db.execute("UPDATE acks SET cleared = ?, cleared_why = 'replaced' WHERE station = ? "
                       "AND cleared IS NULL", (ack.time, ack.station))
            row = db.execute(
                "INSERT INTO acks (station, stage, stage_name, by, time, command_id, note) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)", (ack.station, ack.stage, ack.stage_name,
                                                 ack.by, ack.time, ack.command_id, ack.note))
            db.execute("DELETE FROM acks WHERE id <= (SELECT max(id) FROM acks) - ?", (KEEP,))
            return row.lastrowid
        row = self.store.write("an acknowledgement", work, durable=True)
        if row is None:
            return False
        self._rows[ack.station] = (row, ack)
        return True

    def clear(self, station: str, when: float, why: str) -> Ack | None:
        """End the station's acknowledgement (returns it, cleared), None when there is none."""
        found = self._rows.pop(station, None)
        if found is None:
            return None
        row, ack = found
        self.store.post("an acknowledgement", lambda db: db.execute(
            "UPDATE acks SET cleared = ?, cleared_why = ? WHERE id = ?", (when, why, row)))
        return replace(ack, cleared=when, cleared_why=why)

    def history(self) -> list[Ack]:
        """Every row kept, oldest first (tests, audits)."""
        return [Ack(*r) for r in self.store.rows(
            "SELECT station, stage, stage_name, by, time, command_id, note, cleared, "
            "cleared_why FROM acks ORDER BY id")]


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()
