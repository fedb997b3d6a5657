"""Rules of devices and their channels (`[devices.NAME]`, gauges and site inputs naming one).

- a device sits on a known Modbus bus, and no other device or gauge of its own uses its unit
  id on that bus;
- a gauge, a zone's relay or a site input names a known device (one that also gives a bus or
  unit must give its device's);
- no two channels of one device (gauge values, status words, site inputs) overlap on the same
  registers, except gauges sharing one identical status word.
"""

from __future__ import annotations

from drivers.configs import RegisterSpec, SerialLineBusConfig, StatusSpec
from drivers.registers import MAX_READ_REGISTERS, MERGE_MAX_GAP, merged_read, plan_reads
from gauged.config.settings import Config

Span = tuple[str, int, int]  # kind, first address, end


def _span(spec: RegisterSpec | StatusSpec) -> Span:
    return spec.kind, spec.address, spec.address + spec.count


def device_problems(config: Config) -> list[str]:
    """Each problem as `entry: field: message`."""
    problems: list[str] = []
    add = problems.append
    owner: dict[tuple[str, int], str] = {}
    for name, d in config.devices.items():
        bus = config.buses.get(d.bus)
        if bus is None:
            add(f"device {name}: bus: unknown bus {d.bus!r}")
        elif isinstance(bus, SerialLineBusConfig):
            add(f"device {name}: bus: a device with channels needs a Modbus bus; {d.bus} is "
                f"a serial_line")
        key = (d.bus, d.unit)
        if key in owner:
            add(f"device {name}: unit: unit id {d.unit} on bus {d.bus} is already device "
                f"{owner[key]}")
        else:
            owner[key] = name
    for name, g in config.gauges.items():
        if g.device is None:
            if (g.bus, g.unit) in owner:
                who = owner[(g.bus, g.unit)]
                add(f"gauge {name}: unit: unit id {g.unit} on bus {g.bus} is device {who}; "
                    f"give the gauge `device = \"{who}\"` instead of its own unit")
            continue
        problem = _named_device(config, g.device, g.bus, g.unit)
        if problem:
            add(f"gauge {name}: device: {problem}" +
                ("" if problem.startswith("unknown") else " (leave bus and unit out)"))
    for zone, z in config.zones.items():
        for field in ("siren_relay", "amplifier_relay"):
            relay = getattr(z, field)
            if relay is None or relay.device is None:
                continue
            problem = _named_device(config, relay.device, relay.bus, relay.unit)
            if problem:
                add(f"zone {zone}: {field}.device: {problem}")
    for name, inp in config.site.inputs.items():
        if inp.device not in config.devices:
            add(f"site input {name}: device: unknown device {inp.device!r}")
    problems += _overlaps(config)
    return problems


def _named_device(config: Config, device: str, bus: str, unit: int) -> str:
    """What is wrong with a channel naming `device` and filled in as (`bus`, `unit`): "" when
    nothing is."""
    dev = config.devices.get(device)
    if dev is None:
        return f"unknown device {device!r}"
    if (bus, unit) != (dev.bus, dev.unit):
        return f"device {device} is unit {dev.unit} on bus {dev.bus}, not unit {unit} on bus {bus}"
    return ""


def _overlaps(config: Config) -> list[str]:
    """Channels of one device on the same registers."""
    by_device: dict[tuple[str, int], list[tuple[str, Span, bool]]] = {}
    for name, g in config.gauges.items():
        if g.spec is None:
            continue
        spans = by_device.setdefault((g.bus, g.unit), [])
        spans.append((f"gauge {name}: register", _span(g.spec), False))
        if g.status is not None:
            spans.append((f"gauge {name}: status", _span(g.status), True))
    for name, inp in config.site.inputs.items():
        d = config.devices.get(inp.device)
        if d is not None:
            by_device.setdefault((d.bus, d.unit), []).append(
                (f"site input {name}: register", _span(inp.spec), False))
    for zone, z in config.zones.items():  # a relay coil of an I/O device is a channel too
        for field in ("siren_relay", "amplifier_relay"):
            relay = getattr(z, field)
            if relay is not None and (relay.bus, relay.unit) in by_device:
                by_device[(relay.bus, relay.unit)].append(
                    (f"zone {zone}: {field}", ("coil", relay.coil, relay.coil + 1), False))
    problems = []
    for (bus, unit), spans in by_device.items():
        for i, (where, (kind, start, end), status) in enumerate(spans):
            for other, (k2, s2, e2), status2 in spans[:i]:
                if kind != k2 or end <= s2 or e2 <= start:
                    continue
                if status and status2 and (start, end) == (s2, e2):
                    continue  # one status word shared by the device's gauges
                problems.append(f"{where}: {kind} {start}…{end - 1} of unit {unit} on bus "
                                f"{bus} overlaps {other.replace(': ', ' ')}")
                break
    return problems


def read_plan(config: Config) -> list[str]:
    """The requests a cycle makes, per bus: joined as planned (drivers.registers.plan_reads,
    what the poller does) and one per channel (a value with its nearby status word in one
    request: what gauged did before devices with channels). One line per bus and a total."""
    groups: dict[tuple[str, int], list[tuple[str, int, int]]] = {}
    per_bus: dict[str, list[int]] = {}  # bus: [joined, one per channel]
    for _, gid in config.channels().values():
        g = config.gauges[gid]
        counts = per_bus.setdefault(g.bus, [0, 0])
        if g.spec is None:  # a text-protocol gauge: one request
            counts[0] += 1
            counts[1] += 1
            continue
        spans = groups.setdefault((g.bus, g.unit), [])
        spans.append(_read(g.spec))
        if g.status is not None:
            spans.append(_read(g.status))
        counts[1] += 1 if g.status is None or merged_read(g.spec, g.status) else 2
    for inp in config.site.inputs.values():
        d = config.devices.get(inp.device)
        if d is not None:
            groups.setdefault((d.bus, d.unit), []).append(_read(inp.spec))
            per_bus.setdefault(d.bus, [0, 0])[1] += 1
    devices = {(d.bus, d.unit): d for d in config.devices.values()}
    for (bus, unit), spans in groups.items():
        d = devices.get((bus, unit))
        per_bus[bus][0] += len(plan_reads(
            spans, max_gap=d.max_gap if d else MERGE_MAX_GAP,
            max_registers=d.max_registers if d else MAX_READ_REGISTERS))
    total = [sum(c[i] for c in per_bus.values()) for i in (0, 1)]
    return [f"read plan: {total[0]} requests a cycle (one per channel: {total[1]})",
            *(f"  bus {bus}: {j} requests a cycle (one per channel: {s})"
              for bus, (j, s) in per_bus.items())]


def _read(spec: RegisterSpec | StatusSpec) -> tuple[str, int, int]:
    return spec.kind, spec.address, spec.count
