"""What every signal does to the daemon (QUALITY SYS-6): no catchable signal ends it without
its relays driven OFF.

- SIGTERM (systemd's stop), SIGINT (Ctrl-C), SIGQUIT: the ordered stop (gauged/daemon/
  daemon.py: inputs stop, broadcasts end with relays OFF, uplinks flushed, every relay OFF
  with read-back), exit 0.
- SIGHUP (`systemctl reload`, ExecReload=): the configuration is read again and what may
  change live is applied (gauged/daemon/reload.py); the daemon never stops for it.
- SIGABRT (systemd's watchdog, WatchdogSignal=): the ordered stop too, bounded by
  `ABORT_GRACE_S`, then the process aborts itself, so that systemd still sees (and
  records) a watchdog kill and restarts it. If the event loop itself is wedged, nothing
  runs: systemd's SIGKILL follows, and the next start drives every relay OFF first.
- Every other signal whose default would end or stop the process (SIGUSR1, SIGUSR2,
  SIGALRM, SIGPWR, SIGXCPU, SIGTSTP, the real-time signals …) is logged at WARNING and
  otherwise ignored: a stray signal must not silence the sirens.
- Left to the kernel: SIGKILL and SIGSTOP (not catchable), and the faults of native code
  (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGSYS, SIGTRAP), after which no Python code can be
  trusted to run; the next start drives every relay OFF first.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

STOP = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
RELOAD = signal.SIGHUP
ABORT = signal.SIGABRT
ABORT_GRACE_S = 10.0  # real seconds the ordered stop may take after SIGABRT

# Signals whose default action is to ignore them, the uncatchable ones, and those of faults
# in native code: left alone.
_LEFT_ALONE = {signal.SIGCHLD, signal.SIGCONT, signal.SIGURG, signal.SIGWINCH, signal.SIGPIPE,
               signal.SIGKILL, signal.SIGSTOP, signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE,
               signal.SIGILL, signal.SIGSYS, signal.SIGTRAP}


def ignored() -> list[int]:
    """The signals that are logged and ignored."""
    handled = {*STOP, RELOAD, ABORT}
    return sorted(int(s) for s in signal.valid_signals() if s not in handled | _LEFT_ALONE)


class Signals:
    """The daemon's signal handlers, installed on the running event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, stop: Callable[[], None],
                 reload: Callable[[], None]) -> None:
        self.loop = loop
        self._stop = stop
        self._reload = reload
        self.aborting = False  # SIGABRT came: abort once stopped
        self.installed: list[int] = []

    def install(self) -> None:
        for stop in STOP:
            self._add(stop, self._on_stop, stop)
        self._add(RELOAD, self._on_reload)
        self._add(ABORT, self._on_abort)
        for other in ignored():
            self._add(other, self._on_ignored, other)

    def _add(self, sig: int, callback: Callable[..., None], *args: object) -> None:
        try:
            self.loop.add_signal_handler(sig, callback, *args)
        except (ValueError, OSError, RuntimeError):  # a signal this platform keeps for itself
            return
        self.installed.append(sig)

    def remove(self) -> None:
        for sig in self.installed:
            self.loop.remove_signal_handler(sig)
        self.installed.clear()

    def _on_stop(self, sig: int) -> None:
        log.info("%s: stopping", _name(sig))
        self._stop()

    def _on_reload(self) -> None:
        log.info("SIGHUP: reloading the configuration")
        self._reload()

    def _on_abort(self) -> None:
        if self.aborting:
            return
        self.aborting = True
        log.error("SIGABRT (the watchdog?): stopping with every relay OFF, then aborting "
                  "(at most %g s)", ABORT_GRACE_S)
        self.loop.call_later(ABORT_GRACE_S, abort, "the stop after SIGABRT is too slow")
        self._stop()

    def _on_ignored(self, sig: int) -> None:
        log.warning("%s ignored: the daemon goes on (SIGHUP reloads, SIGTERM stops)",
                    _name(sig))


@contextmanager
def handled(loop: asyncio.AbstractEventLoop, *, stop: Callable[[], None],
            reload: Callable[[], None]) -> Iterator[Signals]:
    """The daemon's handlers while the block runs; after it, if SIGABRT came, abort."""
    signals = Signals(loop, stop=stop, reload=reload)
    signals.install()
    try:
        yield signals
    finally:
        signals.remove()
    if signals.aborting:
        abort("stopped after SIGABRT")


def abort(why: str) -> None:
    """End the process with SIGABRT (its default action: systemd sees the watchdog kill)."""
    log.critical("aborting: %s", why)
    logging.shutdown()
    signal.signal(signal.SIGABRT, signal.SIG_DFL)
    os.abort()


def _name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"
