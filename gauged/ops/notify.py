"""systemd's notification protocol (sd_notify) and the watchdog rule.

`Notifier` sends `READY=1`, `STATUS=…`, `WATCHDOG=1`, `RELOADING=1` and `STOPPING=1` as AF_UNIX
datagrams
to `$NOTIFY_SOCKET` (a path, or an abstract socket when it starts with `@`); without
`$NOTIFY_SOCKET` (not started by systemd) every call does nothing. `WATCHDOG_USEC` (and
`WATCHDOG_PID`, if set, naming this process) turns the watchdog on: pings go out every
WATCHDOG_USEC / 2.

When to ping: only while every component that must keep moving does, each judged against
its *own* budget, never against WatchdogSec (a 180 s cycle with WatchdogSec=30 is normal):

- the poll loop: a cycle under way is younger than its budget (the poll interval in real
  seconds, plus the slowest bus's connect timeout and every gauge's timeout × attempts, plus
  MARGIN_S); between cycles,
  the last one ended (or the loop started) at most one poll interval plus MARGIN_S ago;
- the stage engine runs inside the cycle (read, evaluate, save, hand over): a stuck
  evaluation is a cycle over its budget; a hung event loop sends nothing at all;
- the outputs: no zone sequencer has been playing one broadcast for longer than that
  broadcast can last (its sequence: pre-roll, siren pattern capped at siren_max_s, gaps,
  each clip bounded by its player's timeout, plus MARGIN_S).

The uplinks (InfluxDB, MQTT) are not part of the rule: a network outage is a state the
daemon handles (the spool grows), not a reason to restart it.

When a check fails the pings stop and the reason is logged once (at ERROR); systemd then
kills the process with SIGABRT after WatchdogSec and restarts it, and the new process drives
every relay OFF before anything else.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)

MARGIN_S = 5.0  # real seconds of slack on every budget (scheduling, a slow disk, GC)


class Notifier:
    """Sends notifications to the service manager; silent when there is none."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self.address: str | bytes | None = None
        if address.startswith("@"):
            self.address = b"\0" + address[1:].encode()
        elif address.startswith("/"):
            self.address = address
        self.watchdog_s: float | None = None
        usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
        if self.address is not None and usec.isdigit() and int(usec) > 0 and \
                (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1e6
        self._sock: socket.socket | None = None
        self._failed = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send `KEY=value` lines in one datagram; False if there is no manager or it failed.

        Never raises: a service manager that went away must not take the daemon with it.
        """
        if self.address is None:
            return False
        message = "\n".join(fields).encode("utf-8", errors="replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(message, self.address)
        except OSError as exc:
            if not self._failed:  # once: the next success says it is back
                log.warning("sd_notify failed socket=%s: %s", _show(self.address), exc)
            self._failed = True
            return False
        if self._failed:
            log.info("sd_notify works again socket=%s", _show(self.address))
            self._failed = False
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={_one_line(status)}")

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={_one_line(status)}")

    def reloading(self, status: str = "reloading the configuration") -> bool:
        """`RELOADING=1` with the CLOCK_MONOTONIC time it was sent (`MONOTONIC_USEC`, which
        systemd ≥ 253 checks for Type=notify-reload); `ready` says the reload is over."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", f"STATUS={_one_line(status)}")

    def ping(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self, status: str = "stopping") -> bool:
        return self.send("STOPPING=1", f"STATUS={_one_line(status)}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200]


def _show(address: str | bytes) -> str:
    return "@" + address[1:].decode(errors="replace") if isinstance(address, bytes) \
        else address


def stalled(now: float, *, interval_s: float, cycle_budget_s: float,
            cycle_started: float | None, last_cycle_end: float | None, loop_started: float,
            zones: Mapping[str, tuple[float, float] | None]) -> list[str]:
    """What is not making progress at monotonic time `now` (empty: ping).

    `interval_s` and every budget are real seconds. `cycle_started` is when the cycle under
    way began (None between cycles); `last_cycle_end` when the last one ended (None before the
    first); `loop_started` when the poll loop began. `zones` maps each zone to (age, budget)
    of the broadcast it plays, in real seconds, or None when it is idle.
    """
    problems = []
    if cycle_started is not None:
        age = now - cycle_started
        if age > cycle_budget_s:
            problems.append(f"poll: cycle under way for {age:.0f} s, budget "
                            f"{cycle_budget_s:.0f} s")
    else:
        since = now - (loop_started if last_cycle_end is None else last_cycle_end)
        if since > interval_s + MARGIN_S:
            problems.append(f"poll: no cycle started for {since:.0f} s, interval "
                            f"{interval_s:.0f} s")
    for zone, playing in zones.items():
        if playing is not None and playing[0] > playing[1]:
            problems.append(f"zone {zone}: one broadcast for {playing[0]:.0f} s, budget "
                            f"{playing[1]:.0f} s")
    return problems
