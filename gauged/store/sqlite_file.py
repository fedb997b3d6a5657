"""One SQLite file of ours (the state store, the spool): opened in WAL mode with
`synchronous=FULL`, its schema created in a new file and its version checked; a file that
cannot be used is renamed aside (`<name>.corrupt-<UTC time>`, with its `-wal` and `-shm`)."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from gauged.errors import GaugedError

log = logging.getLogger(__name__)


class Unusable(GaugedError):
    """The file is SQLite but not a database of this kind that this gauged can use."""


def open_wal(path: Path, schema: str, version: int, *, integrity_check: bool = False,
             pragmas: Sequence[str] = (), check_same_thread: bool = True,
             upgrades: Mapping[int, str] = {}) -> sqlite3.Connection:
    """Open `path` (autocommit; transactions are explicit), creating `schema` in a new file.
    A file of an older version found in `upgrades` is brought to `version` by that SQL
    script, in one transaction (a crash leaves the old file as it was).

    Raises `Unusable` (or sqlite3.DatabaseError) for a file that is not such a database."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=check_same_thread)
    try:
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise Unusable(f"journal mode {mode}, not wal")
        db.execute("PRAGMA synchronous = FULL")
        for pragma in pragmas:
            db.execute(f"PRAGMA {pragma}")
        if integrity_check:
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise Unusable(f"integrity check: {' '.join(check.split())[:200]}")
        found = db.execute("PRAGMA user_version").fetchone()[0]
        tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if found == 0 and tables == 0:
            _script(db, schema, version)
        elif found in upgrades and found != version:
            log.info("upgrading %s from schema version %d to %d", path, found, version)
            _script(db, upgrades[found], version)
        elif found != version:
            raise Unusable(f"schema version {found}, this gauged reads {version}")
    except BaseException:
        db.close()
        raise
    return db


def _script(db: sqlite3.Connection, script: str, version: int) -> None:
    """Run `script` (statements separated by `;`) and set the version, in one transaction."""
    with contextlib.closing(db.cursor()) as cur:
        cur.execute("BEGIN IMMEDIATE")
        try:
            for statement in script.split(";"):
                if statement.strip():
                    cur.execute(statement)
            cur.execute(f"PRAGMA user_version = {version}")
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise


def set_aside(path: Path) -> Path | None:
    """Rename an unusable file (and its WAL and shared-memory files) aside; None (logged)
    when it cannot be renamed."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    try:
        path.rename(aside)
        for suffix in ("-wal", "-shm"):
            extra = path.with_name(path.name + suffix)
            if extra.exists():
                extra.rename(aside.with_name(aside.name + suffix))
    except OSError as exc:
        log.error("cannot rename %s aside: %s", path, exc)
        return None
    return aside
