"""Scenario CSVs (DESIGN §5: `time,station,quantity,value`), read into columns.

`gauged replay` runs a scenario through the engine's rules (`gauged/alarm/replay.py`);
`gauged demo` plays one to the simulated gauges.

Quantities: `level_m` (water level above the gauge datum, m), `rain_mm` (rain since the
station's previous row) and `rain_counter` (the raw tip counter as the gauge reports it). An
empty value is a missing reading. Times are seconds from a start, or ISO-8601 with a UTC
offset.

A station with two gauges (`second_gauge`): `station` rows are the readings of its first gauge,
`station:gauge` rows those of the gauge named (`station:<first gauge>` is the same as
`station`). The rows are kept per channel (`Config.channels`); `gauged/alarm/replay.py` says
how a gauge without rows is read.

Two parsers give the same `Scenario`: a fast one over the bytes with numpy, and a careful one,
row by row, which names the line of the first problem. The fast one leaves anything irregular
to the careful one.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import overload

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from gauged.config.settings import Config
from gauged.errors import ScenarioError

QUANTITIES = {"level_m": "level", "rain_mm": "rain", "rain_counter": "rain"}
Q_NAMES = ("level_m", "rain_mm", "rain_counter")
Q_CODES = {name: i for i, name in enumerate(Q_NAMES)}
DEFAULT_START = datetime(2000, 1, 1, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
HEADER = ["time", "station", "quantity", "value"]

FloatArray = npt.NDArray[np.float64]
Int64Array = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Row:
    time: datetime
    station: str
    quantity: str
    value: float | None


def _us(when: datetime) -> int:
    return (when - EPOCH) // timedelta(microseconds=1)


def _time(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


class Scenario(Sequence[Row]):
    """A parsed scenario, held as columns (one entry per row, in time order)."""

    def __init__(self, stations: tuple[str, ...], time_us: Int64Array,
                 station: npt.NDArray[np.int32], quantity: npt.NDArray[np.int8],
                 value: FloatArray) -> None:
        self.stations = stations  # the config's channel ids (`Config.channels`), indexed by
        # `station`: a station's id for its first gauge, `station:gauge` for a second
        self.time_us = time_us  # UTC, microseconds since the Unix epoch
        self.station = station
        self.quantity = quantity  # index into Q_NAMES
        self.value = value  # NaN: empty

    def __len__(self) -> int:
        return int(self.time_us.size)

    @overload
    def __getitem__(self, i: int) -> Row: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[Row]: ...

    def __getitem__(self, i: int | slice) -> Row | Sequence[Row]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        v = float(self.value[i])
        return Row(_time(int(self.time_us[i])), self.stations[int(self.station[i])],
                   Q_NAMES[int(self.quantity[i])], v if math.isfinite(v) else None)


class _Irregular(Exception):
    """The fast parser met something it leaves to the careful one (which names the line)."""


def read_scenario(path: Path, config: Config, start: datetime = DEFAULT_START) -> Scenario:
    """Parse and check a scenario; times in seconds are offsets from `start`."""
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            data = bytearray(size + _PAD)  # the fast parser's padding, without a copy
            view = memoryview(data)
            got = f.readinto(view[:size])
            view.release()
            if got < size or f.read(1):
                raise ScenarioError(f"{path}: changed while it was read")
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        return _parse_fast(data, size, config, start)
    except _Irregular:
        pass
    try:
        text = data[:size].decode("utf-8")
    except UnicodeDecodeError:
        raise ScenarioError(f"{path}: cannot read: not UTF-8 text") from None
    return _parse_careful(text, path, config, start)


# The fast parser works on the bytes with numpy: it finds the separators, checks that every
# line has exactly four fields, recognises `station,quantity` by a hash checked byte by byte,
# and reads decimal numbers digit by digit (mantissa / 10**k, which is what float() gives:
# both are the correctly rounded quotient). Anything else is left to the careful parser.

_POW10 = np.array([10.0 ** k for k in range(23)])
_CLASS = np.zeros(256, dtype=np.uint8)  # character classes: 1 digit, 2 dot, 3 minus, 4 plus
_CLASS[48:58], _CLASS[46], _CLASS[45], _CLASS[43] = 1, 2, 3, 4
_HASH = np.uint64(1099511628211)
_ROWS = 1 << 16  # rows parsed at a time
_PAD = 64  # spare bytes after the file: a newline for its last line, then room for _words
_MASKS = np.array([(1 << (8 * k)) - 1 for k in range(8)] + [(1 << 64) - 1], dtype=np.uint64)


def _parse_fast(data: bytearray, size: int, config: Config, start: datetime) -> Scenario:
    """`data`: the file's `size` bytes followed by `_PAD` zero bytes (see `padded`)."""
    if not data.isascii() or data.find(b'"', 0, size) >= 0 or data.find(b"\r", 0, size) >= 0:
        raise _Irregular
    newline = data.find(b"\n", 0, size)
    if newline < 0 or data[:newline] != b"time,station,quantity,value":
        raise _Irregular
    buf = np.frombuffer(data, dtype=np.uint8)[newline + 1:]
    end = size - newline - 1
    if end == 0:
        raise _Irregular
    if buf[end - 1] != 10:
        buf[end] = 10  # the last line's newline
        end += 1
    found = _separators(buf[:end])
    if found.size % 4:
        raise _Irregular
    seps = found.reshape(-1, 4)
    rows = len(seps)
    ids = tuple(config.channels())
    fits = _fits(ids, config)
    station = np.empty(rows, dtype=np.int32)
    quantity = np.empty(rows, dtype=np.int8)
    time_us = np.empty(rows, dtype=np.int64)
    value = np.empty(rows)
    for lo in range(0, rows, _ROWS):  # a block at a time: temporaries stay small and warm
        part = seps[lo:lo + _ROWS]
        if not (np.all(buf[part[:, :3]] == 44) and np.all(buf[part[:, 3]] == 10)):
            raise _Irregular  # a line without exactly four fields (or a blank line)
        line = np.empty(len(part), dtype=np.int64)
        line[0] = seps[lo - 1, 3] + 1 if lo else 0
        line[1:] = part[:-1, 3] + 1
        block = slice(lo, lo + len(part))
        station[block], quantity[block] = _names(buf, part[:, 0] + 1, part[:, 2], fits)
        time_us[block] = _times(buf, line, part[:, 0], start)
        value[block] = _values(buf, part[:, 2] + 1, part[:, 3])
    n = len(ids)
    if np.any(np.diff(time_us) < 0):
        raise _Irregular
    key = time_us * n + station
    if np.any(np.diff(key) <= 0) and np.any(np.diff(np.sort(key)) == 0):
        raise _Irregular  # two rows of a station at one time
    counters = np.bincount(station[quantity == Q_CODES["rain_counter"]], minlength=n)
    if np.any((counters > 0) & (np.bincount(station[quantity == Q_CODES["rain_mm"]],
                                            minlength=n) > 0)):
        raise _Irregular  # a rain station with both rain_mm and rain_counter rows
    return Scenario(ids, time_us, station, quantity, value)


def _words(buf: npt.NDArray[np.uint8], a: Int64Array) -> npt.NDArray[np.uint64]:
    """The 8 bytes from each offset in `a` as one little-endian integer (`buf` ends with at
    least 32 spare bytes)."""
    view = np.ndarray((buf.size - 7,), dtype="<u8", buffer=buf, offset=0, strides=(1,))
    words: npt.NDArray[np.uint64] = view[a]
    return words


def _masked(words: npt.NDArray[np.uint64], width: int) -> npt.NDArray[np.uint64]:
    """`words` keeping their first `width` (≤ 8) bytes."""
    return words & np.uint64((1 << (8 * width)) - 1) if width < 8 else words


def padded(text: bytes) -> bytearray:
    """`text` as `_parse_fast` takes it."""
    return bytearray(text) + bytes(_PAD)


def _separators(buf: npt.NDArray[np.uint8]) -> Int64Array:
    """The offsets of every comma and newline, found 4 MiB at a time (three passes over the
    whole file would allocate and fault in 3 bytes per byte of it)."""
    step = 1 << 22
    parts = []
    for lo in range(0, buf.size, step):
        chunk = buf[lo:lo + step]
        parts.append(np.flatnonzero((chunk == 10) | (chunk == 44)) + lo)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _tokens(buf: npt.NDArray[np.uint8], a: Int64Array, width: int) -> npt.NDArray[np.uint8]:
    """The `width` bytes from each offset in `a`, one row per offset (`buf` ends with at
    least 32 spare bytes)."""
    rows: npt.NDArray[np.uint8] = sliding_window_view(buf, width)[a]
    return rows


def _fits(ids: tuple[str, ...], config: Config) -> list[tuple[tuple[int, int], bytes]]:
    """Every `station,quantity` text a row may hold, with its (station index, quantity
    code)."""
    channels = config.channels()
    return [((i, Q_CODES[q]), f"{name},{q}".encode())
            for name, i in channel_names(config).items() for q in Q_NAMES
            if QUANTITIES[q] == config.stations[channels[ids[i]][0]].kind]


def _names(buf: npt.NDArray[np.uint8], a: Int64Array, b: Int64Array,
           fits: list[tuple[tuple[int, int], bytes]]
           ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int8]]:
    """Each row's `station,quantity` as (station index, quantity code) from `_fits`; a name
    that does not fit its station is _Irregular."""
    station = np.empty(a.size, dtype=np.int32)
    quantity = np.empty(a.size, dtype=np.int8)
    length = b - a
    counts = np.bincount(length)
    for width in np.flatnonzero(counts).tolist():
        known = [(k, name) for k, name in fits if len(name) == width]
        if not known or width > 200:
            raise _Irregular
        words = -(-width // 8)
        rows = np.flatnonzero(length == width)
        got = _tokens(buf, a[rows], 8 * words).view(np.uint64).copy()
        got[:, -1] = _masked(got[:, -1], width - 8 * (words - 1))  # the name's last bytes
        names = np.frombuffer(b"".join(name.ljust(8 * words, b"\0") for _, name in known),
                              dtype=np.uint64).reshape(len(known), words)
        h = got[:, 0].copy()
        name_h = names[:, 0].copy()
        for k in range(1, words):
            h = h * _HASH + got[:, k]  # wraps modulo 2**64
            name_h = name_h * _HASH + names[:, k]
        order = np.argsort(name_h)
        pick = order[np.minimum(np.searchsorted(name_h[order], h), len(known) - 1)]
        if not np.array_equal(names[pick], got):
            raise _Irregular
        codes = np.array([k for k, _ in known], dtype=np.int64)
        station[rows] = codes[pick, 0]
        quantity[rows] = codes[pick, 1]
    return station, quantity


def _decimals(buf: npt.NDArray[np.uint8], a: Int64Array,
              b: Int64Array) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """Plain decimals ([+-]digits[.digits], at most 15 digits) as float() reads them, and
    which rows were such decimals (the others are NaN).

    Tokens of one width are classified by the pattern of their characters (digit, dot,
    sign, other), coded as one integer; each pattern that is a plain decimal is read with
    one weight vector."""
    out = np.full(a.size, np.nan)
    done = np.zeros(a.size, dtype=bool)
    length = b - a
    for width in np.flatnonzero(np.bincount(length)).tolist():
        if width == 0 or width > 17:
            continue
        rows = np.flatnonzero(length == width)
        if width <= 8:  # one integer per token: its bytes, and its classes, in one view
            mat = _masked(_words(buf, a[rows]), width).view(np.uint8).reshape(-1, 8)
            cls = _CLASS[mat]
            code = cls.view("<u8").reshape(-1)
        else:
            mat = _tokens(buf, a[rows], width)
            cls = _CLASS[mat]
            code = np.zeros(rows.size, dtype=np.int64)
            for k in range(width):
                code = code * 5 + cls[:, k]
        left = np.ones(rows.size, dtype=bool)
        while left.any():
            first = int(np.argmax(left))
            sub = np.flatnonzero(left & (code == code[first]))
            left[sub] = False
            pattern = cls[first, :width].tolist()
            weights = _weights(pattern)
            if weights is None:
                continue
            picked = mat[sub]
            mantissa = np.zeros(sub.size, dtype=np.int64)
            for k, w in enumerate(weights):
                if w:
                    mantissa += (picked[:, k].astype(np.int64) - 48) * w
            after = len(pattern) - 1 - pattern.index(2) if 2 in pattern else 0
            number = mantissa / _POW10[after]
            out[rows[sub]] = -number if pattern[0] == 3 else number
            done[rows[sub]] = True
    return out, done


def _weights(pattern: list[int]) -> list[int] | None:
    """The weight of each character of a plain decimal's pattern (1 digit, 2 dot, 3 minus,
    4 plus), or None when the pattern is not a plain decimal."""
    body = pattern[1:] if pattern[0] in (3, 4) else pattern
    if any(c not in (1, 2) for c in body) or body.count(2) > 1 or not 0 < body.count(1) <= 15:
        return None
    weights = []
    power = 1
    for c in reversed(pattern):
        weights.append(power if c == 1 else 0)
        power *= 10 if c == 1 else 1
    return weights[::-1]


def _text(buf: npt.NDArray[np.uint8], a: int, b: int) -> str:
    return bytes(buf[a:b]).decode("ascii")


def _times(buf: npt.NDArray[np.uint8], a: Int64Array, b: Int64Array,
           start: datetime) -> Int64Array:
    # the rows of one cycle share their time: read only a row whose time text (of at most
    # 8 bytes) differs from the previous row's, and give the others the previous row's time
    width = b - a
    key = np.where(width <= 8, _words(buf, a) & _MASKS[np.minimum(width, 8)], 0)
    new = np.ones(a.size, dtype=bool)
    new[1:] = (key[1:] != key[:-1]) | (width[1:] != width[:-1]) | (width[1:] > 8)
    if np.count_nonzero(new) < a.size:
        firsts = np.flatnonzero(new)
        shared: Int64Array = _times(buf, a[firsts], b[firsts], start)[np.cumsum(new) - 1]
        return shared
    seconds, plain = _decimals(buf, a, b)
    whole = plain & (seconds == np.floor(seconds)) & (np.abs(seconds) < 1e12)
    time_us = _us(start) + np.where(whole, seconds, 0).astype(np.int64) * 1_000_000
    other = np.flatnonzero(~whole)
    if other.size:  # ISO-8601 or fractional seconds: once per distinct text, as the
        cache: dict[str, int] = {}  # careful parser does it
        for i in other.tolist():
            text = _text(buf, int(a[i]), int(b[i]))
            if text not in cache:
                when = _parse_time(text, start)
                if when is None:
                    raise _Irregular
                cache[text] = _us(when)
            time_us[i] = cache[text]
    return time_us


def _values(buf: npt.NDArray[np.uint8], a: Int64Array, b: Int64Array) -> FloatArray:
    value, plain = _decimals(buf, a, b)
    for i in np.flatnonzero(~plain & (b > a)).tolist():  # "nan", "1e3" …
        try:
            value[i] = float(_text(buf, int(a[i]), int(b[i])))
        except ValueError:
            raise _Irregular from None
    return value


def _parse_time(text: str, start: datetime) -> datetime | None:
    """A scenario time (seconds from `start`, or ISO-8601 with an offset) in UTC; None if
    it is neither."""
    try:
        return (start + timedelta(seconds=float(text))).astimezone(UTC)
    except (ValueError, OverflowError):
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when.astimezone(UTC) if when.tzinfo is not None else None


def channel_names(config: Config) -> dict[str, int]:
    """What a scenario's `station` column may say, and the index of the channel it names:
    a station (its first gauge), or `station:gauge` for either gauge of a station with two."""
    out = {}
    for i, (c, (sid, gauge)) in enumerate(config.channels().items()):
        out[c] = i
        if config.stations[sid].second_gauge is not None:
            out[f"{sid}:{gauge}"] = i
    return out


def _parse_careful(text: str, path: Path, config: Config, start: datetime) -> Scenario:
    """Row by row, naming the line of the first problem."""
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None or [h.strip() for h in header] != HEADER:
        raise ScenarioError(f"{path}:1: header must be time,station,quantity,value")
    channels = config.channels()
    ids = tuple(channels)
    index = channel_names(config)
    times: list[int] = []
    stations: list[int] = []
    qs: list[int] = []
    values: list[float] = []
    at_time: set[int] = set()
    rain_form: dict[str, str] = {}
    for fields in reader:
        where = f"{path}:{reader.line_num}"
        if not fields or not "".join(fields).strip():
            continue
        if len(fields) != 4:
            raise ScenarioError(f"{where}: expected 4 fields, got {len(fields)}")
        t_text, station, quantity, v_text = (f.strip() for f in fields)
        when = _parse_time(t_text, start)
        if when is None:
            try:
                naive = datetime.fromisoformat(t_text).tzinfo is None
            except ValueError:
                naive = False
            if naive:
                raise ScenarioError(f"{where}: time {t_text!r} has no UTC offset")
            raise ScenarioError(f"{where}: time {t_text!r} is neither seconds nor ISO-8601")
        if station not in index:
            raise ScenarioError(f"{where}: unknown station {station!r}")
        station_id = channels[ids[index[station]]][0]
        st = config.stations[station_id]
        if QUANTITIES.get(quantity) != st.kind:
            raise ScenarioError(f"{where}: quantity {quantity!r} does not fit {st.kind} "
                                f"station {station}")
        if st.kind == "rain" and rain_form.setdefault(station_id, quantity) != quantity:
            raise ScenarioError(f"{where}: station {station} mixes rain_mm and rain_counter "
                                f"rows")
        try:
            value = float(v_text) if v_text else math.nan
        except ValueError:
            raise ScenarioError(f"{where}: value {v_text!r} is not a number") from None
        us = _us(when)
        if times and us < times[-1]:
            raise ScenarioError(f"{where}: time goes backwards")
        if not times or us != times[-1]:
            at_time.clear()
        if index[station] in at_time:
            raise ScenarioError(f"{where}: a second row for station {station} at this time")
        at_time.add(index[station])
        times.append(us)
        stations.append(index[station])
        qs.append(Q_CODES[quantity])
        values.append(value)
    return Scenario(ids, np.array(times, dtype=np.int64), np.array(stations, dtype=np.int32),
                    np.array(qs, dtype=np.int8), np.array(values, dtype=np.float64))
