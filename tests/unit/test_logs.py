"""Log lines for people and journald (gauged/logs.py)."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import pytest

from gauged.logs import JournalFormatter, RepeatGuard, priority, under_journald


def record(msg: str, *args: object, level: int = logging.INFO, lineno: int = 10,
           exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            import sys
            exc_info = sys.exc_info()
    return logging.LogRecord("gauged.test", level, __file__, lineno, msg, args, exc_info)


def test_journald_priorities_prefix_every_line() -> None:
    f = JournalFormatter()
    assert f.format(record("stage station=%s to=%s", "a", "warning")) == \
        "<6>INFO gauged.test: stage station=a to=warning"
    assert f.format(record("x", level=logging.WARNING)).startswith("<4>WARNING ")
    assert f.format(record("x", level=logging.ERROR)).startswith("<3>")
    assert f.format(record("x", level=logging.CRITICAL)).startswith("<2>")
    assert f.format(record("x", level=logging.DEBUG)).startswith("<7>")
    lines = f.format(record("failed", level=logging.ERROR, exc=True)).splitlines()
    assert len(lines) > 2
    assert all(line.startswith("<3>") for line in lines)
    assert priority(logging.INFO + 5) == 6


def test_journal_stream_is_recognised_by_device_and_inode(tmp_path: Path) -> None:
    path = tmp_path / "stderr"
    with path.open("w") as stream:
        st = os.fstat(stream.fileno())
        assert under_journald(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert not under_journald(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
        assert not under_journald(stream, {})
        assert not under_journald(io.StringIO(), {"JOURNAL_STREAM": "1:2"})


def test_repetitions_are_held_back_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    guard = RepeatGuard(window_s=60.0, burst=3)
    now = [1000.0]
    monkeypatch.setattr(guard, "_now", lambda: now[0])
    passed = [guard.filter(record("bus=%s unreachable", "river")) for _ in range(50)]
    assert passed == [True] * 3 + [False] * 47
    # distinct events from the same place are never held back
    assert all(guard.filter(record("stage station=s%d to=warning", i)) for i in range(100))
    # the same text from another line of code is another message
    assert guard.filter(record("bus=%s unreachable", "river", lineno=99))
    now[0] += 61.0
    r = record("bus=%s unreachable", "river")
    assert guard.filter(r)
    assert r.getMessage().startswith("bus=river unreachable [repeated=47 since ")
    r2 = record("bus=%s unreachable", "river")
    assert guard.filter(r2)
    assert r2.getMessage() == "bus=river unreachable"
