"""systemd's notification protocol (sd_notify) and the watchdog rule.

`Notifier` sends `READY=1`, `STATUS=…`, `WATCHDOG=1` and `STOPPING=1` as AF_UNIX datagrams
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

import asyncio
import logging
import os
import socket
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from gauged.broadcast import RELAY_ATTEMPTS
from gauged.config import SequenceConfig
from gauged.quality import Quality

if TYPE_CHECKING:
    from gauged.app import Daemon
    from gauged.broadcast import BroadcastRecord, ZoneBroadcaster

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


# ---- the daemon's side: budgets, the pinger task, the status line --------------------------

CLIP_BOUND_S = 300.0  # a clip without a player timeout (aplay): longer is a wedged player


def cycle_budget(daemon: Daemon) -> float:
    """Real seconds a cycle may take: the poll interval, plus the slowest bus reading every
    gauge to its timeout (each attempt) after a connect that timed out, plus MARGIN_S."""
    config = daemon.config
    worst = 0.0
    for bus, sids in daemon.poller.by_bus.items():
        cfg = config.buses[bus]
        worst = max(worst, (1 + len(sids) * (1 + cfg.retries)) * cfg.timeout_s)
    return daemon.clock.real_seconds(config.gateway.poll_interval_s) + worst + MARGIN_S


def broadcast_budget(daemon: Daemon, zone: ZoneBroadcaster, record: BroadcastRecord) -> float:
    """Real seconds one broadcast may take, from its sequence (see the module docstring)."""
    config = daemon.config
    req = record.request
    seq = config.sequences.get(req.sequence) or SequenceConfig(siren_s=req.siren_s,
                                                               clips=list(req.clips))
    on, off = seq.siren_steps[0::2], seq.siren_steps[1::2]
    sim_s = seq.pre_roll_s + min(sum(on), config.defaults.siren_max_s) + sum(off) + \
        seq.gap_s * (seq.repeats - 1)
    player = config.players[config.zones[zone.zone].player]
    clip_s = getattr(player, "timeout_s", CLIP_BOUND_S) + 1.0
    writes = 2 + 2 * len(on)
    relay_s = max((config.buses[r.config.bus].timeout_s + 1.0 for r in zone.relays),
                  default=0.0) * RELAY_ATTEMPTS * 2 * writes
    return daemon.clock.real_seconds(sim_s) + seq.repeats * len(seq.clips) * clip_s + \
        relay_s + MARGIN_S


def progress(daemon: Daemon, now: float, loop_started: float) -> list[str]:
    """`stalled` applied to the daemon at monotonic time `now`."""
    zones: dict[str, tuple[float, float] | None] = {}
    for zid, zone in daemon.zones.items():
        record = zone.current
        zones[zid] = None if record is None else (
            daemon.clock.real_seconds(daemon.clock.timestamp() - record.started),
            broadcast_budget(daemon, zone, record))
    return stalled(now, interval_s=daemon.clock.real_seconds(
                       daemon.config.gateway.poll_interval_s),
                   cycle_budget_s=cycle_budget(daemon),
                   cycle_started=daemon.cycle_started_mono,
                   last_cycle_end=daemon.last_cycle_mono, loop_started=loop_started,
                   zones=zones)


def status_line(daemon: Daemon) -> str:
    """One line for `systemctl status`: cycles, raised stages, data quality, faults, uplinks."""
    raised = [f"{sid}={daemon.engine.machines[sid].rule.names[stage]}"
              for sid, stage in daemon.engine.stages.items() if stage > 0]
    parts = [f"cycles={daemon.cycles}"]
    if daemon.last_cycle is not None:
        parts.append(f"last={daemon.last_cycle.strftime('%H:%M:%SZ')}")
    parts.append("stages=" + (",".join(raised) if raised else "all-normal"))
    not_good = sum(1 for s in daemon.states.values() if s.quality is not Quality.GOOD)
    parts.append(f"not_good={not_good}")
    parts.append(f"faults={len(daemon.faults)}")
    playing = [zid for zid, z in daemon.zones.items() if z.current is not None]
    if playing:
        parts.append("broadcasting=" + ",".join(playing))
    if daemon.influx is not None:
        parts.append("influx=" + ("up" if daemon.influx.health.connected else "down"))
    if daemon.mqtt is not None:
        parts.append("mqtt=" + ("up" if daemon.mqtt.connected else "down"))
    return " ".join(parts)


async def watch(daemon: Daemon, notifier: Notifier, status_every_s: float = 5.0) -> None:
    """Ping the watchdog while `progress` finds nothing stalled; keep STATUS= current.

    A task of `Daemon.run`'s TaskGroup, started with the poll loop. Stops pinging at the
    first stall (logged once at ERROR) and resumes if progress comes back (logged at INFO)
    before systemd acts.
    """
    loop_started = time.monotonic()
    period = status_every_s if notifier.watchdog_s is None else \
        min(status_every_s, notifier.watchdog_s / 2)
    shown, stalls = "", ""
    while True:
        problems = progress(daemon, time.monotonic(), loop_started)
        if not problems:
            if notifier.watchdog_s is not None:
                notifier.ping()
            if stalls:
                log.info("watchdog pings resume: progress again")
                stalls = ""
        elif not stalls:  # the first stall is what the log and STATUS= show
            stalls = "; ".join(problems)
            log.error("watchdog pings stopped: %s", stalls)
        line = status_line(daemon) if not stalls else f"STALLED: {stalls}"
        if line != shown:
            notifier.status(line)
            shown = line
        await asyncio.sleep(period)
