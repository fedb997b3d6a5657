"""Fault knobs: what a simulated device does wrong, per device (bus + unit), and counts of it.

Knobs (absent = off; a probability is a number in 0..1, ``true`` meaning 1):

==================  ============  ===============================================================
knob                value         effect on each request to the device
==================  ============  ===============================================================
``delay_s``         seconds       answer this much later (the bus waits: nothing else is sent);
                                  a delay under way follows the knob: clearing it ends the wait
``late_s``          seconds       answer this much later without holding the bus: meant to be
                                  past the client's timeout, so the reply lands during the next
                                  request (a stale reply)
``no_answer``       probability   say nothing
``exception``       code          answer this Modbus exception code (1..255; 02, 04, 06, 0B ...)
``exception_rate``  probability   how often ``exception`` applies (default 1)
``busy_count``      count         answer exception 06 (busy) to the next N requests, then normally
``junk``            probability   garbage bytes instead of the reply (never a valid frame: on RTU
                                  the CRC is wrong, on TCP the protocol id is not 0, on a line the
                                  first byte is not ``*``)
``split``           probability   the reply in two pieces with a gap (``split_gap_s``, default
                                  2 × the 3.5-character silence on a serial line, 20 ms on TCP)
``split_gap_s``     seconds       the gap of ``split``
``bad_crc``         probability   RTU: the reply's CRC is wrong
``bad_checksum``    probability   line gauge: the reply's checksum is wrong
``wrong_unit``      probability   the reply carries another unit id (another device's, if the bus
                                  has one): a foreign or stale reply, otherwise well formed
``disconnect``      flag          TCP: the gateway closes every connection and refuses new ones
                                  while set (whichever unit of the bus carries the knob); serial:
                                  the device is silent
``stuck``           flag          values freeze at what they were when the knob was set; a relay
                                  board acknowledges coil writes but its coils do not move
``spike``           number        add this to the value (metres for a level, mm for a rain counter)
``spike_rate``      probability   how often ``spike`` applies (default 1)
``nan``             probability   no valid value: float types read NaN, integer types their
                                  sentinel (0x8000.. signed, 0xFFFF.. unsigned); bool: nothing;
                                  a line gauge sends ``NaN`` in place of its number (as
                                  dataloggers print a value they do not have)
``status``          integer       the status word (Modbus, if the map has one) or status byte
                                  (line gauge) the device reports
``max_read``        count         Modbus: answer 02 (illegal address) to a read of more than N
                                  registers or bits, as a logger whose map has holes does
``mains_off`` …     …             the cabinet of a logger with site inputs: ``mains_off``,
                                  ``drain_v_per_h``, ``battery_v``, ``door_open``,
                                  ``charger_fault``, ``ups_on_battery``, ``cabinet_temp_c``
                                  (simulators/logger.py)
==================  ============  ===============================================================

Not every knob applies to every device: ``bad_crc`` is RTU only, ``bad_checksum`` line only, and
``exception``, ``exception_rate`` and ``busy_count`` Modbus only; setting one where it has no
meaning is a :class:`FaultError`.

Every fault injected is counted per device under the name of the knob that caused it (one count
per request it changed; ``disconnect`` on TCP counts each connection dropped). Random draws come
from one generator per device seeded with ``(seed, bus, unit)``, so a run is repeatable whatever
the interleaving of buses.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from simulators.errors import ConfigError, FaultError

Transport = Literal["tcp", "rtu", "line"]
KnobValue = float | int | bool

_MODBUS: frozenset[Transport] = frozenset({"tcp", "rtu"})
_ALL: frozenset[Transport] = frozenset({"tcp", "rtu", "line"})

_KnobType = Literal["probability", "seconds", "flag", "code", "number", "count", "status"]


@dataclass(frozen=True, slots=True)
class _Knob:
    type: _KnobType
    transports: frozenset[Transport] = _ALL


KNOBS: dict[str, _Knob] = {
    "delay_s": _Knob("seconds"),
    "late_s": _Knob("seconds"),
    "no_answer": _Knob("probability"),
    "exception": _Knob("code", _MODBUS),
    "exception_rate": _Knob("probability", _MODBUS),
    "busy_count": _Knob("count", _MODBUS),
    "junk": _Knob("probability"),
    "split": _Knob("probability"),
    "split_gap_s": _Knob("seconds"),
    "bad_crc": _Knob("probability", frozenset({"rtu"})),
    "bad_checksum": _Knob("probability", frozenset({"line"})),
    "wrong_unit": _Knob("probability"),
    "disconnect": _Knob("flag"),
    "stuck": _Knob("flag"),
    "spike": _Knob("number"),
    "spike_rate": _Knob("probability"),
    "nan": _Knob("probability"),
    "status": _Knob("status"),
    "max_read": _Knob("count", _MODBUS),
    # the cabinet of a multi-channel logger (simulators/logger.py)
    "mains_off": _Knob("flag", _MODBUS),
    "drain_v_per_h": _Knob("number", _MODBUS),
    "battery_v": _Knob("number", _MODBUS),
    "door_open": _Knob("flag", _MODBUS),
    "charger_fault": _Knob("flag", _MODBUS),
    "ups_on_battery": _Knob("flag", _MODBUS),
    "cabinet_temp_c": _Knob("number", _MODBUS),
}

_TRANSPORT_NAMES = {"tcp": "Modbus TCP", "rtu": "Modbus RTU", "line": "serial_line"}


def normalize(name: str, value: object, transport: Transport) -> KnobValue | None:
    """The stored form of knob ``name`` = ``value`` on a ``transport`` device.

    ``None`` removes the knob. Raises :class:`FaultError` naming the knob and the problem.
    """
    knob = KNOBS.get(name)
    if knob is None:
        raise FaultError(f"unknown fault knob {name!r} (known: {', '.join(sorted(KNOBS))})")
    if transport not in knob.transports:
        places = " and ".join(_TRANSPORT_NAMES[t] for t in sorted(knob.transports))
        raise FaultError(
            f"knob {name!r} has no meaning on a {_TRANSPORT_NAMES[transport]} device "
            f"(only on {places})"
        )
    if value is None:
        return None
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if knob.type == "probability":
        if isinstance(value, bool):
            return 1.0 if value else 0.0
        if number is not None and 0.0 <= number <= 1.0:
            return float(number)
        raise FaultError(f"knob {name!r}: a probability is true, false or 0..1, got {value!r}")
    if knob.type == "flag":
        if isinstance(value, bool):
            return value
        raise FaultError(f"knob {name!r}: must be true or false, got {value!r}")
    if knob.type == "seconds":
        if number is not None and math.isfinite(number) and number >= 0.0:
            return float(number)
        raise FaultError(f"knob {name!r}: must be a number of seconds ≥ 0, got {value!r}")
    if knob.type == "number":
        if number is not None and math.isfinite(number):
            return float(number)
        raise FaultError(f"knob {name!r}: must be a finite number, got {value!r}")
    high = {"code": 255, "count": 1 << 31, "status": 255 if transport == "line" else 0xFFFF}[
        knob.type
    ]
    low = 1 if knob.type == "code" else 0
    if isinstance(number, int) and low <= number <= high:
        return number
    raise FaultError(f"knob {name!r}: must be an integer in {low}..{high}, got {value!r}")


@dataclass(slots=True)
class Plan:
    """What a device does with one request, drawn from its knobs."""

    answer: bool = True
    disconnect: bool = False
    exception: int | None = None
    wrong_unit: bool = False
    junk: bool = False
    corrupt: bool = False  # bad CRC (RTU) or bad checksum (line)
    split: bool = False
    split_gap_s: float | None = None
    delay_s: float = 0.0
    late_s: float = 0.0
    stuck: bool = False
    spike: float = 0.0
    nan: bool = False
    status: int | None = None
    applied: set[str] = field(default_factory=set)  # value faults the reply really carried


class DeviceFaults:
    """The knobs of one device, its random generator and its counts."""

    def __init__(self, bus: str, unit: int, transport: Transport, seed: int) -> None:
        self.bus = bus
        self.unit = unit
        self.transport = transport
        self.knobs: dict[str, KnobValue] = {}
        self.counts: Counter[str] = Counter()
        self.requests = 0
        #: Values (gauge name → engineering value) frozen when ``stuck`` was set.
        self.frozen: dict[str, float] = {}
        self._rng = random.Random(f"{seed}/{bus}/{unit}")
        self._changed = asyncio.Event()  # set whenever a knob changes (see hold())

    @property
    def rng(self) -> random.Random:
        """The device's generator (junk bytes, split points, foreign unit ids)."""
        return self._rng

    def update(
        self, knobs: Mapping[str, object], snapshot: Callable[[], dict[str, float]]
    ) -> None:
        """Set knobs (``None``, ``false`` or 0 remove one, except a ``*_rate``, which only ``None``
        removes); all are checked before any is applied.

        ``snapshot`` gives the device's current values, frozen when ``stuck`` goes on.
        """
        values = {name: normalize(name, value, self.transport) for name, value in knobs.items()}
        was_stuck = bool(self.knobs.get("stuck"))
        for name, value in values.items():
            # None, false and 0 mean "off": the knob goes. A rate of 0 is kept (its absence
            # would mean 1).
            if value is None or (not value and not name.endswith("_rate")):
                self.knobs.pop(name, None)
            else:
                self.knobs[name] = value
        stuck = bool(self.knobs.get("stuck"))
        if stuck and not was_stuck:
            self.frozen = snapshot()
        elif not stuck:
            self.frozen = {}
        self._changed.set()

    def clear(self) -> None:
        """Remove every knob (counts are kept)."""
        self.knobs.clear()
        self.frozen = {}
        self._changed.set()

    async def hold(self, since: float) -> None:
        """Wait out ``delay_s`` counted from ``since`` (monotonic), following the knob.

        A delay under way ends as soon as the knob is cleared or lowered below the time
        already waited, so that clearing a long delay frees the bus at once.
        """
        while True:
            remaining = since + float(self.knobs.get("delay_s", 0.0)) - time.monotonic()
            if remaining <= 0:
                return
            self._changed.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._changed.wait()
            except TimeoutError:
                pass

    def count(self, kind: str, n: int = 1) -> None:
        """Count ``n`` injected faults of ``kind`` (a knob name)."""
        self.counts[kind] += n

    def _chance(self, name: str, default: float = 0.0) -> bool:
        probability = float(self.knobs.get(name, default))
        return probability > 0.0 and self._rng.random() < probability

    def plan(self) -> Plan:
        """Draw what happens to one request, counting the faults that decide it now.

        Value faults (``stuck``, ``spike``, ``nan``, ``status``) are counted by the device when
        the reply really carries them (:meth:`settle`).
        """
        self.requests += 1
        knobs = self.knobs
        if not knobs:
            return Plan()
        if knobs.get("disconnect"):
            if self.transport != "tcp":
                self.count("disconnect")  # TCP counts dropped connections instead
            return Plan(answer=False, disconnect=True)
        if self._chance("no_answer"):
            self.count("no_answer")
            return Plan(answer=False)
        plan = Plan()
        busy = int(knobs.get("busy_count", 0))
        if busy > 0:
            plan.exception = 0x06
            self.count("busy_count")
            if busy == 1:
                del knobs["busy_count"]
            else:
                knobs["busy_count"] = busy - 1
        elif "exception" in knobs and self._chance("exception_rate", 1.0):
            plan.exception = int(knobs["exception"])
            self.count("exception")
        for name in ("wrong_unit", "junk", "split"):
            if self._chance(name):
                setattr(plan, name, True)
                self.count(name)
        corrupt = "bad_checksum" if self.transport == "line" else "bad_crc"
        if not plan.junk and self._chance(corrupt):
            plan.corrupt = True
            self.count(corrupt)
        if "split_gap_s" in knobs:
            plan.split_gap_s = float(knobs["split_gap_s"])
        for name in ("delay_s", "late_s"):
            seconds = float(knobs.get(name, 0.0))
            if seconds > 0.0:
                setattr(plan, name, seconds)
                self.count(name)
        plan.stuck = bool(knobs.get("stuck"))
        if "spike" in knobs and self._chance("spike_rate", 1.0):
            plan.spike = float(knobs["spike"])
        plan.nan = self._chance("nan")
        if "status" in knobs:
            plan.status = int(knobs["status"])
        return plan

    def settle(self, plan: Plan) -> None:
        """Count the value faults the reply of ``plan`` carried."""
        for kind in plan.applied:
            self.count(kind)

    def snapshot(self) -> dict[str, Any]:
        """Knobs, request count and fault counts, JSON-ready."""
        return {
            "bus": self.bus,
            "unit": self.unit,
            "knobs": dict(self.knobs),
            "requests": self.requests,
            "faults": dict(sorted(self.counts.items())),
        }


@dataclass(frozen=True, slots=True)
class FaultEntry:
    """One ``[[fault]]`` table of a faults file: knobs for one device or a whole bus."""

    bus: str
    unit: int | None  # None: every device on the bus
    knobs: dict[str, object]
    where: str  # "FILE: fault[i]" for error messages


def load_faults(path: str | Path) -> list[FaultEntry]:
    """Read a faults file; raise :class:`ConfigError` naming the file and the entry.

    Format (TOML)::

        [[fault]]
        bus = "rs485"        # required
        unit = 3             # optional: without it, every device on the bus
        no_answer = 0.25     # any knobs (see the module docstring)
        delay_s = 0.05

    Knob values are checked against the device when the fleet applies them.
    """
    path = Path(path)
    try:
        with path.open("rb") as stream:
            document = tomllib.load(stream)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read faults file: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    unknown = sorted(set(document) - {"fault"})
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {', '.join(unknown)}; use [[fault]]")
    tables = document.get("fault", [])
    if not isinstance(tables, list):
        raise ConfigError(f"{path}: fault: must be an array of tables ([[fault]])")
    entries: list[FaultEntry] = []
    for index, table in enumerate(tables):
        where = f"{path}: fault[{index}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: must be a table")
        knobs = dict(table)
        bus = knobs.pop("bus", None)
        if not isinstance(bus, str) or not bus:
            raise ConfigError(f"{where}.bus: must be a bus name, got {bus!r}")
        unit = knobs.pop("unit", None)
        if unit is not None and (isinstance(unit, bool) or not isinstance(unit, int)):
            raise ConfigError(f"{where}.unit: must be an integer, got {unit!r}")
        for name in knobs:
            if name not in KNOBS:
                raise ConfigError(
                    f"{where}.{name}: unknown fault knob (known: {', '.join(sorted(KNOBS))})"
                )
        entries.append(FaultEntry(bus, unit, knobs, where))
    return entries
