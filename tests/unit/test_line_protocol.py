"""gauged's hand-written line protocol (gauged/uplinks/line_protocol.py) against influxdb-client's
`Point` (a dev dependency kept as the oracle), text for text, and where they differ on purpose
(backslashes, newlines in strings, rounding) against the protocol's own reading. The same
points written both ways to VictoriaMetrics: tests/integration/test_influx_writer.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from influxdb_client.client.write.point import Point as ClientPoint

from gauged.uplinks.line_protocol import FieldValue, Precision, encode, timestamp
from gauged.uplinks.records import Record

T0 = datetime(2026, 12, 7, 23, 59, 58, 123456, tzinfo=UTC)
AWKWARD = [
    "plain", "two words", "a,b", "k=v", 'say "hi"', "'single'", "護岸 上流", "古川,港区=東京",
    "tab\there", "new\nline", "cr\rhere", " leading", "trailing ", "=", ",", " ",
]


def client_line(measurement: str, tags: dict[str, str], fields: dict[str, Any],
                when: datetime | int, precision: Precision) -> str:
    point = ClientPoint(measurement)
    for k, v in tags.items():
        point.tag(k, v)
    for k, v in fields.items():
        point.field(k, v)
    point.time(when, precision)
    text: str = point.to_line_protocol()
    return text


def ours(measurement: str, tags: dict[str, str], fields: dict[str, Any],
         when: datetime | int, precision: Precision) -> str:
    # Point sorts the fields; ours keeps their order: give them sorted
    return encode(measurement, tags, dict(sorted(fields.items())), when, precision)


@pytest.mark.parametrize("text", AWKWARD)
def test_names_keys_and_tag_values_escape_as_influxdb_client_does(text: str) -> None:
    when = datetime(2026, 12, 7, 23, 59, 58, 123000, tzinfo=UTC)
    args: tuple[str, dict[str, str], dict[str, Any]] = (
        f"m {text}", {f"k{text}": f"v{text}", "station": text}, {f"f{text}": 1.5, "n": 3})
    assert ours(*args, when, "ms") == client_line(*args, when, "ms")


@pytest.mark.parametrize("value", [
    0.0, -0.0, 1.0, 1.5, -2.25, 1e-9, 123456789.125, 1.7976931348623157e308, 5e-324, 1e16,
    0, 1, -1, 2**62, True, False, "", "plain", 'say "hi"', "a,b=c d", "護岸", "tab\tx",
])
def test_field_values_of_every_type_as_influxdb_client(value: FieldValue) -> None:
    args: tuple[str, dict[str, str], dict[str, Any]] = ("m", {"station": "s1"}, {"v": value})
    assert ours(*args, T0, "ns") == client_line(*args, T0, "ns")


@pytest.mark.parametrize("precision", ["s", "ms", "us", "ns"])
def test_timestamps_at_each_precision_as_influxdb_client(precision: Precision) -> None:
    # a datetime on a whole unit (Point truncates through a float; see the next test), and
    # an int taken as already in the unit
    unit = {"s": timedelta(seconds=1), "ms": timedelta(milliseconds=1),
            "us": timedelta(microseconds=1), "ns": timedelta(microseconds=1)}[precision]
    when = datetime(1970, 1, 1, tzinfo=UTC) + (T0 - datetime(1970, 1, 1, tzinfo=UTC)) // unit \
        * unit
    for t in (when, 1_765_151_998_123, 0):
        assert ours("m", {}, {"v": 1.0}, t, precision) == \
            client_line("m", {}, {"v": 1.0}, t, precision)


def test_timestamps_round_to_the_nearest_unit_exactly() -> None:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    t = epoch + timedelta(seconds=1_765_151_998, microseconds=123_500)
    assert timestamp(t, "ms") == 1_765_151_998_124  # Point: 1_765_151_998_123 (truncated)
    assert timestamp(t - timedelta(microseconds=1), "ms") == 1_765_151_998_123
    assert timestamp(t, "s") == 1_765_151_998
    assert timestamp(t, "us") == 1_765_151_998_123_500
    assert timestamp(t, "ns") == 1_765_151_998_123_500_000
    assert timestamp(epoch - timedelta(microseconds=400), "ms") == 0
    # a whole millisecond stays itself; Point, dividing by a float, truncates it to the one
    # before (found by the oracle test in tests/integration/test_influx_writer.py)
    whole = epoch + timedelta(milliseconds=1_796_684_704_138)
    assert timestamp(whole, "ms") == 1_796_684_704_138
    assert client_line("m", {}, {"v": 1}, whole, "ms") == "m v=1i 1796684704137"
    with pytest.raises(ValueError, match="naive"):
        timestamp(datetime(2026, 1, 1), "ms")


def test_backslashes_are_escaped_where_point_leaves_them_ambiguous() -> None:
    # `a\,b` must stay one tag value: Point writes `a\\,b`, which InfluxDB and VictoriaMetrics
    # read as `a\` and a broken tag; a trailing backslash would escape the separator after it
    line = encode("m\\x", {"path": "a\\,b", "end": "ends\\"}, {"v": 1.0}, 0)
    assert line == "m\\\\x,end=ends\\\\,path=a\\\\\\,b v=1 0"
    assert client_line("m", {"path": "a\\,b"}, {"v": 1.0}, 0, "ms") == "m,path=a\\\\,b v=1 0"
    assert encode("m", {}, {"s": 'C:\\temp "x"'}, 0) == 'm s="C:\\\\temp \\"x\\"" 0'


def test_a_newline_never_splits_a_line() -> None:
    line = encode("m\nn", {"k\n": "v\nw"}, {"f\n": 1, "s": "two\nlines"}, 0)
    assert "\n" not in line
    assert line == 'm\\nn,k\\n=v\\nw f\\n=1i,s="two\\nlines" 0'


def test_values_that_are_no_value_are_left_out_and_a_point_without_one_is_empty() -> None:
    fields: dict[str, Any] = {"a": None, "b": float("nan"), "c": float("inf"), "d": 2.0}
    assert encode("m", {"empty": "", "": "x", "k": "v"}, fields, 0) == "m,k=v d=2 0"
    assert client_line("m", {"empty": "", "k": "v"}, fields, 0, "ms") == "m,k=v d=2 0"
    assert encode("m", {"k": "v"}, {"a": None, "b": float("nan")}, 0) == ""
    with pytest.raises(TypeError, match="field value"):
        encode("m", {}, {"a": [1]}, 0)  # type: ignore[dict-item]


def test_record_line_is_the_encoding_in_milliseconds() -> None:
    r = Record("level", {"gateway": "gw 1", "station": "古川"},
               {"level_m": 1.0, "quality": 0, "fault": None}, T0)
    assert r.line() == "level,gateway=gw\\ 1,station=古川 level_m=1,quality=0i 1796687998123"


# Point agrees with us on any text without a backslash (Point does not escape it).
_text = st.text(st.characters(blacklist_characters="\\", blacklist_categories=("Cs",)),
                min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(measurement=_text, tags=st.dictionaries(_text, _text, max_size=4),
       fields=st.dictionaries(_text, st.one_of(
           st.floats(allow_nan=False, allow_infinity=False), st.integers(-2**63, 2**63 - 1),
           st.booleans(), _text.filter(lambda s: "\n" not in s)), min_size=1, max_size=4),
       ms=st.integers(0, 2**42))
def test_any_text_without_backslashes_encodes_as_influxdb_client(
        measurement: str, tags: dict[str, str], fields: dict[str, Any], ms: int) -> None:
    if measurement.startswith("#"):  # a comment line: Point warns; we never write one
        measurement = "m" + measurement
    assert ours(measurement, tags, fields, ms, "ms") == \
        client_line(measurement, tags, fields, ms, "ms")
