"""InfluxDB line protocol, written by hand.

influxdb-client would do it, but it is the dependency gauged dropped (DESIGN §4: 13.7 MB of
RSS for one POST per batch); the encoding is a page of code, held to influxdb-client's `Point`
by tests/unit/test_line_protocol.py and to a real VictoriaMetrics by
tests/integration/test_influx_writer.py.

Where it differs from `Point`, on purpose:
- a backslash is escaped (`\\\\`) in names, keys and tag values. Both InfluxDB and
  VictoriaMetrics read `\\\\` as one backslash; `Point` leaves it alone, which is fine before
  a letter (`C:\\temp`) but turns `a\\,b` into `a\\` and a new tag, and a tag value ending in
  a backslash into one ending in a space;
- a newline inside a string field is written as the two characters `\\n`: the spool keeps
  one point per line and splits on newlines (gauged/uplinks/spool_file.py);
- a timestamp from a `datetime` is rounded to the nearest unit of the precision, exactly
  (integer arithmetic), where `Point` divides nanoseconds by a float and truncates, which
  loses a unit now and then even on a whole one (1796684704138 ms became …137);
- fields keep the order given (`Point` sorts them); tags are sorted by key, as InfluxDB
  recommends and `Point` does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Literal

Precision = Literal["s", "ms", "us", "ns"]
FieldValue = float | int | bool | str | None

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US_PER = {"s": 1_000_000, "ms": 1_000, "us": 1}

# Tabs, carriage returns and newlines cannot stand in a line: written as `\t`, `\r`, `\n`
# (two characters each), as `Point` writes them.
_CONTROL = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
_MEASUREMENT = str.maketrans({"\\": "\\\\", ",": "\\,", " ": "\\ ", **_CONTROL})
_KEY = str.maketrans({"\\": "\\\\", ",": "\\,", "=": "\\=", " ": "\\ ", **_CONTROL})
_STRING = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n"})


def escape_measurement(name: str) -> str:
    return name.translate(_MEASUREMENT)


def escape_key(text: str) -> str:
    """A tag key, tag value or field key."""
    return text.translate(_KEY)


def field_value(value: float | int | bool | str) -> str | None:
    """A field's value as line protocol; None for a float that is not finite (InfluxDB
    refuses NaN and infinity; VictoriaMetrics drops NaN and stores infinity, which its JSON
    export prints as `+Inf`, not JSON)."""
    if isinstance(value, bool):  # (before int: a bool is an int)
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text  # `1`, not `1.0`: a float still
    if isinstance(value, str):
        return '"' + value.translate(_STRING) + '"'
    raise TypeError(f"a field value is a float, an int, a bool or a str, not {type(value)}")


def timestamp(when: datetime | int, precision: Precision = "ms") -> int:
    """`when` in units of `precision` since the epoch, rounded to the nearest (an int is
    taken as already in that unit)."""
    if isinstance(when, int):
        return when
    if when.tzinfo is None:
        raise ValueError(f"a naive datetime has no place on the time axis: {when}")
    us = (when - _EPOCH) // timedelta(microseconds=1)
    if precision == "ns":
        return us * 1000
    unit = _US_PER[precision]
    return (us + unit // 2) // unit


def encode(measurement: str, tags: Mapping[str, str], fields: Mapping[str, FieldValue],
           when: datetime | int, precision: Precision = "ms") -> str:
    """One point as one line (no newline at its end); "" when no field has a value (a point
    without a field is no point). Tags with an empty key or value are left out."""
    values = []
    for key, value in fields.items():
        if value is not None and (text := field_value(value)) is not None:
            values.append(f"{escape_key(key)}={text}")
    if not values:
        return ""
    tag_text = "".join(f",{escape_key(k)}={escape_key(v)}"
                       for k, v in sorted(tags.items()) if k and v)
    return (f"{escape_measurement(measurement)}{tag_text} {','.join(values)} "
            f"{timestamp(when, precision)}")
