"""Read a configuration file: validate it, cross-check it, say what it holds.

`load_config(path)` returns a `Config` or raises ConfigError with one line per problem, each
naming the file, the section entry (station, gauge, zone …) and the field.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gauged.config.audio import check_clips
from gauged.config.checks import cross_check
from gauged.config.devices import read_plan
from gauged.config.settings import Config, toml_path
from gauged.errors import ConfigError

_SINGULAR = {
    "buses": "bus", "gauges": "gauge", "stations": "station", "zones": "zone",
    "players": "player", "sequences": "sequence", "clips": "clip",
}


def _where(loc: tuple[int | str, ...]) -> tuple[str, str]:
    """Split a pydantic error location into (entry, field): ('station shin_hiroo', 'crest_m')."""
    parts = [str(p) for p in loc]
    if len(parts) >= 2 and parts[0] in _SINGULAR:
        entry = f"{_SINGULAR[parts[0]]} {parts[1]}"
        rest = loc[2:]
        if parts[0] in ("buses", "players") and len(rest) > 1:
            rest = rest[1:]  # the `kind` that chose the model adds nothing for a reader
    else:
        entry = parts[0] if parts else "(top)"
        rest = loc[1:]
    field = ""
    for p in rest:
        if isinstance(p, int):
            field += f"[{p}]"
        else:
            field += f".{p}" if field else str(p)
    return entry, field or "(entry)"


def load_config(path: Path | str, *, check_files: bool = False) -> Config:
    """Read, validate and cross-check the configuration at `path`; with `check_files`, also
    decode every clip (gauged/config/audio.py: check-config, `run`, a reload).

    Raises ConfigError with one line per problem: `file: entry: field: message`.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"{path}: (file): cannot read: no such file"])
    try:
        tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: (file): TOML syntax: {exc}"]) from None
    token = toml_path.set(path)
    try:
        config = Config(source=path)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            entry, field = _where(err["loc"])
            lines.append(f"{path}: {entry}: {field}: {err['msg']}")
        raise ConfigError(lines) from None
    finally:
        toml_path.reset(token)
    problems = [f"{path}: {p}" for p in cross_check(config)]
    if check_files and not problems:
        problems = check_clips(config)[1]
    if problems:
        raise ConfigError(problems)
    return config



def summary(config: Config) -> list[str]:
    """A one-screen description of a valid configuration."""
    kinds: dict[str, int] = {}
    for st in config.stations.values():
        kinds[st.kind] = kinds.get(st.kind, 0) + 1
    lines = [
        f"{config.source}: OK",
        f"gateway {config.gateway.id}: one cycle every {config.gateway.poll_interval_s:g} s, "
        f"time zone {config.gateway.timezone}",
        f"{len(config.buses)} buses, {len(config.gauges)} gauges, "
        f"{kinds.get('level', 0)} level and {kinds.get('rain', 0)} rain stations, "
        f"{len(config.zones)} zones, {len(config.sequences)} sequences, "
        f"{len(config.clips)} clips",
    ]
    for sid, st in config.stations.items():
        unit = "m freeboard" if st.kind == "level" else "mm/60 min"
        stages = ", ".join(
            f"{s.name} {'≤' if st.kind == 'level' else '≥'}{s.threshold:g}"
            + (f" → {s.sequence}" if s.sequence else "") for s in st.stages)
        lines.append(f"  {sid:<20} {st.kind:<5} [{unit}] {stages}; zones {', '.join(st.zones)}")
    sinks = [n for n, on in (("influx", config.influx.enabled), ("mqtt", config.mqtt.enabled),
                             ("cap", config.cap.enabled)) if on]
    lines.append(f"status http://{config.status.host}:{config.status.port}/; "
                 f"uplinks: {', '.join(sinks) or 'none'}")
    lines += read_plan(config)  # gauged/config/devices.py
    return lines


def as_public_dict(config: Config) -> dict[str, Any]:
    """The configuration without secrets (SecretStr stays masked)."""
    return config.model_dump(mode="json", exclude={"source"})
