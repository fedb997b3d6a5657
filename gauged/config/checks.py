"""Rules that span sections of the configuration (a station's gauge exists, units are unique
on a bus, a calendar parses …): each problem as `entry: field: message`."""

from __future__ import annotations

import math
import wave

from drivers.configs import RelayConfig, SerialLineBusConfig
from gauged.config.audio import player_problems
from gauged.config.cron import cron_trigger
from gauged.config.devices import device_problems
from gauged.config.settings import Config
from gauged.config.signals import signal_problems


def cross_check(config: Config) -> list[str]:
    """Rules that span sections; each problem as `entry: field: message`."""
    problems: list[str] = []
    add = problems.append
    interval = config.gateway.poll_interval_s

    if config.commands.enabled and len(config.commands.secret.get_secret_value()) < 16:
        add("commands: secret: commands need a shared secret of at least 16 characters")

    for name, bus in config.buses.items():
        attempts = 1 + getattr(bus, "retries", 0)
        if bus.timeout_s * attempts >= interval:
            budget = f"{bus.timeout_s} s" + (f" × {attempts} attempts" if attempts > 1 else "")
            add(f"bus {name}: timeout_s: {budget} is not shorter than the poll interval "
                f"({interval} s)")

    units: dict[tuple[str, int], str] = {}
    for name, g in config.gauges.items():
        bus_cfg = config.buses.get(g.bus)
        if bus_cfg is None:
            add(f"gauge {name}: bus: unknown bus {g.bus!r}")
        elif isinstance(bus_cfg, SerialLineBusConfig):
            if g.line is None:
                add(f"gauge {name}: line: a gauge on serial_line bus {g.bus} needs a `line` "
                    f"table (command, pattern, checksum)")
            if g.spec is not None or g.status is not None:
                add(f"gauge {name}: register: a gauge on serial_line bus {g.bus} has no "
                    f"Modbus register or status")
        else:
            if g.spec is None:
                add(f"gauge {name}: register: a gauge on {bus_cfg.kind} bus {g.bus} needs a "
                    f"`register`")
            if g.line is not None:
                add(f"gauge {name}: line: `line` is for serial_line buses; {g.bus} is "
                    f"{bus_cfg.kind}")
        key = (g.bus, g.unit)
        if g.device is not None:
            pass  # a channel of a device: gauged/config/devices.py checks its unit
        elif key in units:
            add(f"gauge {name}: unit: unit id {g.unit} on bus {g.bus} is already "
                f"used by gauge {units[key]}")
        else:
            units[key] = name
        if g.range is not None and not g.range[0] < g.range[1]:
            add(f"gauge {name}: range: minimum {g.range[0]} is not below maximum "
                f"{g.range[1]}")
        if g.quantity == "rain_counter" and g.spec is not None and g.spec.data_type not in (
                "uint16", "uint32"):
            add(f"gauge {name}: register.data_type: a rain counter must be uint16 or uint32, "
                f"not {g.spec.data_type}")
        if g.spec is not None and g.spec.data_type == "bool":
            add(f"gauge {name}: register.kind: a gauge value needs registers, not "
                f"{g.spec.kind} bits")

    used_gauges: dict[str, str] = {}
    for name, st in config.stations.items():
        if st.second_gauge is not None and st.kind == "rain":
            add(f"station {name}: second_gauge: a rain station reads one gauge; only level "
                f"stations take a second gauge")
        elif st.second_gauge is not None and st.second_gauge == st.gauge:
            add(f"station {name}: second_gauge: {st.gauge} is already the station's gauge")
        elif st.second_gauge is not None and f"{name}:{st.second_gauge}" in config.stations:
            add(f"station {name}: second_gauge: its channel id {name}:{st.second_gauge} is "
                f"also a station's name")
        if st.tolerance_m is not None and st.second_gauge is None:
            add(f"station {name}: tolerance_m: a tolerance is for a station with a "
                f"second_gauge")
        for field, gid in (("gauge", st.gauge), ("second_gauge", st.second_gauge)):
            if gid is None or (field == "second_gauge" and (
                    st.kind == "rain" or gid == st.gauge)):
                continue
            gauge = config.gauges.get(gid)
            if gauge is None:
                add(f"station {name}: {field}: unknown gauge {gid!r}")
                continue
            want = "level_m" if st.kind == "level" else "rain_counter"
            if gauge.quantity != want:
                add(f"station {name}: {field}: a {st.kind} station needs a {want} gauge; "
                    f"{gid} measures {gauge.quantity}")
            if gid in used_gauges:
                add(f"station {name}: {field}: gauge {gid} already feeds station "
                    f"{used_gauges[gid]}")
            used_gauges.setdefault(gid, name)
        if st.kind == "level" and st.crest_m is None:
            add(f"station {name}: crest_m: a level station needs the crest height "
                f"(freeboard = crest_m − level)")
        if st.kind == "rain" and st.crest_m is not None:
            add(f"station {name}: crest_m: only level stations have a crest")
        if not st.zones and (any(s.sequence for s in st.stages) or st.all_clear):
            add(f"station {name}: zones: stages broadcast but no zone is named")
        if st.all_clear is not None and st.all_clear not in config.sequences:
            add(f"station {name}: all_clear: unknown sequence {st.all_clear!r}")
        for zone in st.zones:
            if zone not in config.zones:
                add(f"station {name}: zones: unknown zone {zone!r}")
        for other in st.related:
            o = config.stations.get(other)
            if o is None or other == name:
                add(f"station {name}: related: {other!r} is not another station")
            elif o.kind != st.kind:
                add(f"station {name}: related: {other} is a {o.kind} station; related "
                    f"gauges measure the same kind ({st.kind})")
        if st.follow is not None:
            o = config.stations.get(st.follow)
            if o is None or st.follow == name:
                add(f"station {name}: follow: {st.follow!r} is not another station")
            elif len(o.stages) != len(st.stages):
                add(f"station {name}: follow: {st.follow} has {len(o.stages)} stages, this "
                    f"station {len(st.stages)}; a station follows one with the same stages")
            elif o.follow is not None:
                add(f"station {name}: follow: {st.follow} follows {o.follow} itself; name "
                    f"a station that reads its own gauge")
        seen_names: set[str] = set()
        for i, stage in enumerate(st.stages):
            where = f"station {name}: stages[{i}]"
            if not math.isfinite(stage.threshold):
                add(f"{where}.threshold: must be a finite number")
            if stage.name in seen_names or stage.name == "normal":
                add(f"{where}.name: stage name {stage.name!r} is used twice")
            seen_names.add(stage.name)
            if i > 0:
                prev = st.stages[i - 1].threshold
                if st.kind == "level" and not stage.threshold < prev:
                    add(f"{where}.threshold: {stage.threshold} m must be below the previous "
                        f"stage's {prev} m (freeboard shrinks as the river rises)")
                if st.kind == "rain" and not stage.threshold > prev:
                    add(f"{where}.threshold: {stage.threshold} mm must be above the previous "
                        f"stage's {prev} mm")
            if stage.repeat_min is not None and stage.sequence is None:
                add(f"{where}.repeat_min: the stage has no sequence to repeat")
            if stage.repeat_min is not None and stage.repeat_min * 60 < interval:
                add(f"{where}.repeat_min: {stage.repeat_min:g} min is shorter than the poll "
                    f"interval ({interval} s)")
            if stage.sequence is not None:
                seq = config.sequences.get(stage.sequence)
                if seq is None:
                    add(f"{where}.sequence: unknown sequence {stage.sequence!r}")
                elif seq.siren_on_s > 0:
                    for zone in st.zones:
                        z = config.zones.get(zone)
                        if z is not None and z.siren_relay is None:
                            add(f"{where}.sequence: {stage.sequence} sounds a siren but zone "
                                f"{zone} has no siren_relay")

    relays: dict[tuple[str, int, int], str] = {}
    for name, zc in config.zones.items():
        if zc.player not in config.players:
            add(f"zone {name}: player: unknown player {zc.player!r}")
        for field in ("siren_relay", "amplifier_relay"):
            relay: RelayConfig | None = getattr(zc, field)
            if relay is None:
                continue
            relay_bus = config.buses.get(relay.bus)
            if relay_bus is None:
                add(f"zone {name}: {field}.bus: unknown bus {relay.bus!r}")
            elif isinstance(relay_bus, SerialLineBusConfig):
                add(f"zone {name}: {field}.bus: relays need a Modbus bus; {relay.bus} is a "
                    f"serial_line")
            rkey = (relay.bus, relay.unit, relay.coil)
            if rkey in relays:
                add(f"zone {name}: {field}.coil: coil {relay.coil} of unit {relay.unit} on "
                    f"bus {relay.bus} is already {relays[rkey]}")
            else:
                relays[rkey] = f"{name}.{field}"
            if (relay.bus, relay.unit) in units:
                add(f"zone {name}: {field}.unit: unit {relay.unit} on bus {relay.bus} is "
                    f"gauge {units[(relay.bus, relay.unit)]}")

    for name, seq in config.sequences.items():
        if seq.siren_s and seq.siren_pattern:
            add(f"sequence {name}: siren_pattern: give siren_s or siren_pattern, not both")
        if any(step < 0 for step in seq.siren_pattern):
            add(f"sequence {name}: siren_pattern: durations cannot be negative")
        if seq.siren_on_s > config.defaults.siren_max_s:
            add(f"sequence {name}: siren_s: {seq.siren_on_s:g} s of siren exceeds the maximum "
                f"siren on-time "
                f"defaults.siren_max_s = {config.defaults.siren_max_s} s")
        if not seq.clips and seq.siren_on_s == 0:
            add(f"sequence {name}: clips: a sequence needs a siren or at least one clip")
        for i, clip in enumerate(seq.clips):
            if clip not in config.clips:
                add(f"sequence {name}: clips[{i}]: unknown clip {clip!r}")
    problems += _check_tests(config)
    problems += player_problems(config)
    problems += signal_problems(config.sequences, config.signals, config.tests.siren_pattern,
                                config.defaults.siren_max_s)
    problems += _check_cap(config)
    problems += combine_problems(config)
    problems += device_problems(config)
    return problems


def _check_tests(config: Config) -> list[str]:
    t, problems = config.tests, []
    for name in ("silent", "audible"):
        expr = getattr(t, name)
        if expr:
            try:
                cron_trigger(expr, config.gateway.timezone)
            except ValueError as exc:
                problems.append(f"tests: {name}: {exc}")
    if t.audible and t.audible_clip is None:
        problems.append("tests: audible_clip: the audible test needs a clip")
    if t.audible_clip is not None and t.audible_clip not in config.clips:
        problems.append(f"tests: audible_clip: unknown clip {t.audible_clip!r}")
    problems += [f"tests: audible_zones: unknown zone {z!r}" for z in t.audible_zones
                 if z not in config.zones]
    return problems


def _check_cap(config: Config) -> list[str]:
    """With CAP on: a sender, and a CAP reading for every stage that broadcasts."""
    cap, problems = config.cap, list[str]()
    if not cap.enabled:
        return problems
    if not cap.sender:
        problems.append("cap: sender: CAP alerts need a sender (e.g. an e-mail address)")
    for sid, st in config.stations.items():
        for i, stage in enumerate(st.stages):
            if stage.sequence is not None and cap.stage(st.kind, stage.name) is None:
                problems.append(f"station {sid}: stages[{i}].name: no CAP urgency, severity "
                                f"and certainty for {st.kind} stage {stage.name!r}: add "
                                f"[cap.{st.kind}.{stage.name}]")
    return problems


def missing_clip_files(config: Config) -> list[str]:
    """Clips whose file is missing: a warning, not an error (the siren still sounds)."""
    return [f"{config.source}: clip {cid}: file: {config.clip_path(cid)} not found"
            for cid in config.clips if not config.clip_path(cid).is_file()]


def clip_seconds(config: Config) -> dict[str, float]:
    """How long each clip plays (s), from its WAV header; 0 for a clip that cannot be read
    (the broadcast goes on without it). Replay times the zone queue with it."""
    out = {}
    for cid in config.clips:
        try:
            with wave.open(str(config.clip_path(cid)), "rb") as clip:
                frames, rate = clip.getnframes(), clip.getframerate()
            out[cid] = frames / rate if rate > 0 else 0.0
        except (OSError, EOFError, wave.Error):
            out[cid] = 0.0
    return out


def combine_problems(config: Config) -> list[str]:
    """Rules of `inputs` that span stations, as `station X: inputs[i].field: message`."""
    problems = []
    for sid, st in config.stations.items():
        for i, inp in enumerate(st.inputs):
            source = inp.station or sid
            other = config.stations.get(source)
            where = f"station {sid}: inputs[{i}]"
            if other is None:
                problems.append(f"{where}.station: unknown station {source!r}")
            elif (inp.quantity == "freeboard") != (other.kind == "level"):
                problems.append(f"{where}.quantity: {inp.quantity!r} is not a quantity of "
                                f"{other.kind} station {source}")
    return problems
