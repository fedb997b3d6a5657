"""SIGHUP: read the configuration again and apply what may change while the daemon runs
(QUALITY SYS-6; signals in gauged/daemon/signals.py).

The new file (and the `GAUGED_…` environment, as at start) is validated exactly as at start
(gauged/config/load.py) and compared field by field with the running configuration:

- **live** (applied at once, between two cycles): what a station decides and says — its
  stages (thresholds, names, sequences, repeats, rates of rise), margin, confirm and clear
  samples, dwell, stage quantity, inputs and `combine`, the zones it drives, `all_clear`,
  `follow`, crest, name, CAP area and two-gauge tolerance; a zone's name and `min_gap_min`;
  every sequence and clip; the `defaults` of stages, sirens and inhibits (margins, samples,
  dwell, `siren_max_s`, `inhibit_*`); the texts and codes of CAP documents;
- **restart needed** (everything else): the buses, gauges, players and relays (the devices
  and the ports they are on), which stations and zones exist and which gauges a station
  reads, the rain and rate-of-rise derivations (they need their history), the gateway
  section (id, time zone, poll interval), the status server, InfluxDB, MQTT, commands, the
  state file, the scheduled tests, the clock. A reload that changes any of these applies
  nothing: each such field is logged with "needs a restart", and the daemon runs on as it
  was (`systemctl restart gauged` applies the file).

A file that is not valid is refused the same way, each problem logged as at start (file,
station, field). Nothing of a refused reload is applied.

What a live reload keeps: every station's stage and when it entered it, its rain history
and rate of rise, when it last sounded, what each zone heard (`Engine.carry_over`): nothing
sounds for the reload itself. A station whose new thresholds put it higher escalates at the
next cycle by the usual rules (confirmation included), and broadcasts as any escalation
does; lower thresholds clear by the usual hysteresis. A broadcast playing goes on as it
started (its sequence was read when it started; a clip removed by the reload is still found
in the configuration it started with); one queued plays the new sequence of its name.
Active inhibits keep their end; the new limits apply to the next one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from gauged.alarm.engine import Engine
from gauged.config.audio import check_clips
from gauged.config.checks import missing_clip_files
from gauged.config.load import load_config
from gauged.config.settings import Config
from gauged.errors import ConfigError
from gauged.field.poll import Poller
from gauged.field.prooftests import ProofTestRunner
from gauged.field.zones import ZoneBroadcaster
from gauged.ops.inhibits import Inhibits
from gauged.uplinks.cap import CapSink

log = logging.getLogger(__name__)

Path_ = tuple[str | int, ...]

# Fields that may change live, with everything under them (`*`: any one name or index).
LIVE = tuple(tuple(p.split(".")) for p in (
    "stations.*.name", "stations.*.crest_m", "stations.*.zones", "stations.*.stages",
    "stations.*.margin", "stations.*.clear_samples", "stations.*.confirm_samples",
    "stations.*.dwell_min", "stations.*.quantity", "stations.*.combine", "stations.*.inputs",
    "stations.*.all_clear", "stations.*.follow", "stations.*.area", "stations.*.tolerance_m",
    "zones.*.name", "zones.*.min_gap_min", "sequences", "clips", "signals", "audio",
    "defaults.level_margin_m", "defaults.rain_margin_mm", "defaults.clear_samples",
    "defaults.confirm_samples", "defaults.dwell_min", "defaults.siren_max_s",
    "defaults.inhibit_default_min", "defaults.inhibit_max_h",
    "cap.sender", "cap.sender_name", "cap.category", "cap.event_level", "cap.event_rain",
    "cap.expires_h", "cap.exercise", "cap.level", "cap.rain",
))

# Why a field needs a restart, by its first name (and the entry-level exceptions).
RESTART = {
    "buses": "the bus and device layout", "gauges": "the bus and device layout",
    "players": "the players", "stations": "which stations exist and the gauges they read",
    "zones": "which zones exist, their relays and player",
    "defaults": "the rain and rate-of-rise derivations (they need their history)",
    "gateway": "the gateway id, time zone and poll interval", "status": "the status server",
    "influx": "the InfluxDB uplink", "mqtt": "the MQTT uplink", "cap": "where CAP goes",
    "commands": "the command handler", "state": "the state file", "tests":
    "the scheduled tests", "clock": "the clock", "test_hooks": "the test hooks",
}

SHOWN = 80  # characters of a value in a log line


@dataclass(frozen=True)
class Change:
    """One field that differs between the running configuration and the new one."""

    path: Path_
    old: Any  # `MISSING` when the entry is new
    new: Any  # `MISSING` when the entry is gone

    @property
    def name(self) -> str:
        return dotted(self.path)

    @property
    def live(self) -> bool:
        """Under a LIVE field (a station or zone that appears or goes away is not: no
        pattern names one whole)."""
        parts = [str(p) for p in self.path]
        return any(len(parts) >= len(pattern) and
                   all(want in ("*", got) for want, got in zip(pattern, parts, strict=False))
                   for pattern in LIVE)

    def describe(self) -> str:
        return f"{self.name}: {_show(self.old)} → {_show(self.new)}"


class _Missing:
    def __repr__(self) -> str:
        return "(none)"


MISSING: Any = _Missing()


def changes(old: Config, new: Config) -> list[Change]:
    """Every field that differs, deepest first found (a list of another length is one
    change of the whole list)."""
    out: list[Change] = []
    _diff((), _plain(old, exclude={"source"}), _plain(new, exclude={"source"}), out)
    return out


def _plain(model: BaseModel, exclude: set[str] | None = None) -> dict[str, Any]:
    return {k: _value(getattr(model, k)) for k in type(model).model_fields
            if k not in (exclude or set())}


def _value(v: Any) -> Any:
    if isinstance(v, BaseModel):
        return _plain(v)
    if isinstance(v, dict):
        return {k: _value(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_value(x) for x in v]
    return v


def _diff(path: Path_, a: Any, b: Any, out: list[Change]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in [*a, *(k for k in b if k not in a)]:
            _diff((*path, key), a.get(key, MISSING), b.get(key, MISSING), out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _diff((*path, i), x, y, out)
    elif a != b:
        out.append(Change(path, a, b))


def dotted(path: Path_) -> str:
    text = ""
    for p in path:
        text += f"[{p}]" if isinstance(p, int) else (f".{p}" if text else p)
    return text


def _show(v: Any) -> str:
    if isinstance(v, SecretStr):
        return "(secret)"
    if isinstance(v, dict):
        v = {k: "(secret)" if isinstance(x, SecretStr) else x for k, x in v.items()}
    text = repr(v) if not isinstance(v, str) else f'"{v}"'
    return text if len(text) <= SHOWN else text[:SHOWN - 1] + "…"


class ReloadRefused(Exception):
    """A reload that applies nothing; `lines` say why (each one logged)."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("; ".join(lines))
        self.lines = lines


@dataclass
class Prepared:
    """A new configuration, valid and with live changes only, and its engine (not yet
    carrying the running state)."""

    config: Config
    engine: Engine
    changes: list[Change]


async def prepare(running: Config, path: Path) -> Prepared:
    """Read and validate `path` (off the event loop) against the running configuration;
    raises ReloadRefused. The running daemon is not touched."""
    try:
        config = await asyncio.to_thread(load_config, path, check_files=True)
        engine = Engine(config)
    except ConfigError as exc:
        raise ReloadRefused(list(exc.problems)) from None
    found = changes(running, config)
    restart = [c for c in found if not c.live]
    if restart:
        raise ReloadRefused([f"{c.describe()} needs a restart ({RESTART.get(str(c.path[0]), '')})"
                       for c in restart])
    for line in await asyncio.to_thread(missing_clip_files, config):
        log.warning("reload: %s (the siren still sounds; the clip is an audio_fault)", line)
    return Prepared(config, engine, found)


def apply(prepared: Prepared, running: Engine, *, poller: Poller,
          zones: Mapping[str, ZoneBroadcaster], runner: ProofTestRunner,
          inhibits: Inhibits | None, cap: CapSink | None) -> Engine:
    """Make the parts of the daemon run on `prepared.config` (synchronously: no cycle runs
    in between) and return the engine that carries the running one's state."""
    config, engine = prepared.config, prepared.engine
    engine.carry_over(running)
    poller.config = poller.judge.config = config  # same gauges: names, tolerances
    seconds = {cid: c.duration_s for cid, c in check_clips(config)[0].items()}
    for zone in zones.values():
        zone.clip_seconds = {**zone.clip_seconds, **seconds}  # a clip dropped may still play
        zone.sequences = config.sequences
        zone.siren_max_s = config.defaults.siren_max_s
        zone.clip_path = _clip_path(config, zone.clip_path)
    runner.clip_path = _clip_path(config, runner.clip_path)
    if inhibits is not None:
        inhibits.config = config
    if cap is not None:
        cap.config = cap.tracker.config = config
    return engine


def _clip_path(config: Config, before: Callable[[str], Path]) -> Callable[[str], Path]:
    """Clips of the new configuration; one it no longer has (a broadcast that started before
    the reload may still name it) from the configuration before."""
    def path(clip: str) -> Path:
        return config.clip_path(clip) if clip in config.clips else before(clip)
    return path


def log_outcome(prepared: Prepared) -> None:
    if not prepared.changes:
        log.info("reload: %s: no changes", prepared.config.source)
        return
    for change in prepared.changes:
        log.warning("reload: %s", change.describe())
    log.warning("reload applied: %s: %d change(s); stages, rain history and repeats carried "
                "over, nothing re-sounded", prepared.config.source, len(prepared.changes))
