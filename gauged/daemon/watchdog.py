"""The daemon's side of the systemd watchdog: budgets, the pinger task, the status line.

The rule (what must keep moving, each against its own budget) and the protocol are in
gauged/ops/notify.py.
"""

from __future__ import annotations

import asyncio
import logging
import time

from gauged.alarm.quality import Quality
from gauged.alarm.types import BroadcastRecord
from gauged.config.models import SequenceConfig
from gauged.daemon.view import DaemonView
from gauged.field.relays import RELAY_ATTEMPTS
from gauged.field.zones import ZoneBroadcaster
from gauged.ops.notify import MARGIN_S, Notifier, stalled
from gauged.uplinks.influx import InfluxSink
from gauged.uplinks.mqtt import MqttPublisher

log = logging.getLogger(__name__)


CLIP_BOUND_S = 300.0  # a clip without a player timeout (aplay): longer is a wedged player


def cycle_budget(daemon: DaemonView) -> float:
    """Real seconds a cycle may take: the poll interval, plus the slowest bus reading every
    gauge to its timeout (each attempt) after a connect that timed out, plus MARGIN_S."""
    config = daemon.config
    worst = 0.0
    for bus, sids in daemon.poller.by_bus.items():
        cfg = config.buses[bus]
        worst = max(worst, (1 + len(sids) * (1 + cfg.retries)) * cfg.timeout_s)
    return daemon.clock.real_seconds(config.gateway.poll_interval_s) + worst + MARGIN_S


def broadcast_budget(daemon: DaemonView, zone: ZoneBroadcaster, record: BroadcastRecord) -> float:
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


def progress(daemon: DaemonView, now: float, loop_started: float) -> list[str]:
    """`stalled` applied to the daemon at monotonic time `now`."""
    zones: dict[str, tuple[float, float] | None] = {}
    for zid, zone in daemon.zones.items():
        record = zone.current
        zones[zid] = None if record is None else (
            now - (record.started_mono if record.started_mono is not None else now),
            broadcast_budget(daemon, zone, record))
    return stalled(now, interval_s=daemon.clock.real_seconds(
                       daemon.config.gateway.poll_interval_s),
                   cycle_budget_s=cycle_budget(daemon),
                   cycle_started=daemon.cycle_started_mono,
                   last_cycle_end=daemon.last_cycle_mono, loop_started=loop_started,
                   zones=zones)


def status_line(daemon: DaemonView) -> str:
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
    for uplink in daemon.uplinks:
        if isinstance(uplink, InfluxSink | MqttPublisher):
            parts.append(f"{uplink.name}=" + ("up" if uplink.health().connected else "down"))
    return " ".join(parts)


async def watch(daemon: DaemonView, notifier: Notifier, status_every_s: float = 5.0) -> None:
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
