"""Log lines for the people tailing them, and for journald.

One line per event that matters, `what key=value key=value: free text`, from the module
that saw it (`stage station=shin_hiroo quantity=level from=notice to=warning …`,
`broadcast start zone=…`, `gauge_fault station=…` / `gauge_fault cleared station=…`,
`relay_fault …`, `uplink mqtt down …` / `uplink mqtt up …`, `bus=… unreachable` /
`bus=… connected again`). Transitions are logged, not states (STYLE 9).

On a terminal a line reads `2026-11-23 01:20:00,123 WARNING gauged.poll: gauge_fault …`.
Under systemd, when `$JOURNAL_STREAM` names our stderr, the time is left out (journald
stamps every entry) and every line starts with `<N>`, its syslog priority, which journald
turns into the entry's PRIORITY (`SyslogLevelPrefix=yes`, the default): DEBUG 7, INFO 6,
WARNING 4, ERROR 3, CRITICAL 2; `journalctl -u gauged -p warning` then shows the faults
only. A traceback's lines carry the prefix of their record, so they keep its priority.

Repetition guard: the same text from the same line of code is let through REPEAT_BURST
times within REPEAT_WINDOW_S seconds, then held back and counted; the first one let through
after that says how many were held back (`[repeated=57 since 01:20:03]`). A storm costs a
few lines a minute; distinct events (other stations, other values) are never held back.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import OrderedDict
from typing import TextIO

REPEAT_WINDOW_S = 60.0
REPEAT_BURST = 3
_MAX_KEYS = 2048

# syslog priorities of the logging levels (sd-daemon(3): <7> debug … <2> crit)
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}

TERMINAL_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(levelname)s %(name)s: %(message)s"


def priority(levelno: int) -> int:
    """The syslog priority of a logging level (levels between take the next one down)."""
    for level in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno >= level:
            return _PRIORITY[level]
    return 7


class JournalFormatter(logging.Formatter):
    """Prefixes every line of a record with `<N>`, its syslog priority."""

    def __init__(self) -> None:
        super().__init__(JOURNAL_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())


class RepeatGuard(logging.Filter):
    """Holds back a line repeated from one place (see the module docstring)."""

    def __init__(self, window_s: float = REPEAT_WINDOW_S, burst: int = REPEAT_BURST) -> None:
        super().__init__()
        self.window_s = window_s
        self.burst = burst
        self._now = time.monotonic
        # key → [window start (monotonic), lines let through in it, held back, first held
        # back (wall time)]
        self._seen: OrderedDict[tuple[str, int, str], list[float]] = OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a bad format string: let logging report it as usual
            return True
        key = (record.name, record.lineno, text)
        now = self._now()
        entry = self._seen.get(key)
        if entry is None or now - entry[0] >= self.window_s:
            held, since = (entry[2], entry[3]) if entry is not None else (0, 0.0)
            self._seen[key] = [now, 1, 0, 0.0]
            self._seen.move_to_end(key)
            while len(self._seen) > _MAX_KEYS:
                self._seen.popitem(last=False)
            if held:
                stamp = time.strftime("%H:%M:%S", time.localtime(since))
                record.msg, record.args = f"{text} [repeated={held:.0f} since {stamp}]", None
            return True
        if entry[1] < self.burst:
            entry[1] += 1
            return True
        if not entry[2]:
            entry[3] = time.time()
        entry[2] += 1
        return False


def under_journald(stream: TextIO, environ: dict[str, str] | None = None) -> bool:
    """True when `stream` is the journal stream systemd gave us (`$JOURNAL_STREAM`)."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return st.st_dev == int(dev) and st.st_ino == int(ino)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Ours: `setup` replaces it when called again."""


def setup(level: str = "INFO", stream: TextIO | None = None) -> logging.Handler | None:
    """Log to stderr, in journal form under systemd; the repetition guard on every line.

    Like `logging.basicConfig`, leaves a root logger that has handlers of someone else's
    (pytest's capture, an embedding program) alone and returns None.
    """
    # pymodbus logs every connection failure at ERROR; the hub reports transitions itself.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    if root.handlers:
        return None
    stream = sys.stderr if stream is None else stream
    handler = _Handler(stream)
    handler.setFormatter(JournalFormatter() if under_journald(stream)
                         else logging.Formatter(TERMINAL_FORMAT))
    handler.addFilter(RepeatGuard())
    root.addHandler(handler)
    root.setLevel(level)
    return handler
