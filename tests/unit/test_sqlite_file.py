"""Our SQLite files (gauged/store/sqlite_file.py): schema and version on open, and a file that
cannot be used set aside, for the state store and the spool alike."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gauged.store.sqlite_file import Unusable, open_wal
from gauged.uplinks.spool import Spool

SCHEMA = "CREATE TABLE t (x INTEGER);"


def test_a_new_file_gets_the_schema_and_a_newer_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    db = open_wal(path, SCHEMA, 3)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == 3
    db.close()
    open_wal(path, SCHEMA, 3).close()  # opens again as it is
    with pytest.raises(Unusable, match="schema version 3, this gauged reads 4"):
        open_wal(path, SCHEMA, 4)


def test_a_spool_file_that_is_not_a_spool_is_set_aside_and_a_fresh_one_starts(
        tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite3"
    path.write_bytes(b"this is not a database, " * 200)
    spool = Spool.open(path, 1 << 20)
    try:
        assert spool.db is not None  # a fresh spool on disk, not in memory
        aside = [p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name]
        assert len(aside) == 1
        assert (tmp_path / aside[0]).read_bytes().startswith(b"this is not a database")
    finally:
        spool.close()


def test_an_older_version_is_upgraded_in_one_transaction_or_left_as_it_was(
        tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    db = open_wal(path, SCHEMA, 1)
    db.execute("INSERT INTO t VALUES (7)")
    db.close()
    broken = "CREATE TABLE u (y INTEGER); INSERT INTO u SELECT x FROM t; SELECT * FROM nowhere"
    with pytest.raises(sqlite3.OperationalError, match="nowhere"):
        open_wal(path, SCHEMA, 2, upgrades={1: broken})
    db = open_wal(path, SCHEMA, 1)  # untouched: still version 1, no table u
    assert db.execute("SELECT name FROM sqlite_master").fetchall() == [("t",)]
    db.close()
    upgrade = "CREATE TABLE u (y INTEGER); INSERT INTO u SELECT x * 2 FROM t; DROP TABLE t"
    db = open_wal(path, "CREATE TABLE u (y INTEGER);", 2, upgrades={1: upgrade})
    assert db.execute("SELECT y FROM u").fetchall() == [(14,)]
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    db.close()
