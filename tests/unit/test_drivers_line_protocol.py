"""The serial line text protocol: checksums, the default answer, foreign and bad lines."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from drivers.base import RawReading
from drivers.configs import DEFAULT_PATTERN, LineSpec
from drivers.line import line_checksum, parse_line, parse_number


def sum8_line(body: str) -> str:
    """An answer as the simulator writes it: body, then two upper-case hex digits of sum8."""
    return f"{body}{sum(body.encode()) % 256:02X}"


def parse(line: str, unit: int = 3, spec: LineSpec | None = None) -> RawReading | str:
    spec = spec or LineSpec()
    return parse_line(line, spec, re.compile(spec.pattern), unit)


def test_checksums() -> None:
    assert line_checksum("sum8", b"*03,+0001.234,00,") == 0x24
    assert line_checksum("sum8", b"\xff\x02") == 0x01
    assert line_checksum("xor8", b"\x01\x02\x04") == 0x07
    assert line_checksum("xor8", b"AA") == 0
    assert line_checksum("none", b"anything") == 0


def test_default_answer() -> None:
    assert parse("*03,+0001.234,00,24") == RawReading(1.234, 0)
    assert parse(sum8_line("*03,-0000.500,1F,")) == RawReading(-0.5, 0x1F)
    assert parse(sum8_line("*03,12,00,")) == RawReading(12, 0)  # a counter stays an integer
    assert isinstance(parse(sum8_line("*03,12,00,")), RawReading)


def test_default_command() -> None:
    assert LineSpec().command.format(unit=3) == "#03RD\r\n"


@pytest.mark.parametrize(("line", "why"), [
    ("*03,+0001.234,00,25", "bad checksum"),
    ("*03,+0001.234,00,24 ", "no match"),
    ("*03,+0001.235,00,24", "bad checksum"),      # one digit changed in transit
    (sum8_line("*04,+0001.234,00,"), "unit 04"),    # another gauge's answer
    ("#03RD", "no match"),                          # our own request echoed
    ("", "no match"),
    ("*03,+1.2.3,00,00", "no match"),
])
def test_bad_and_foreign_lines_are_not_readings(line: str, why: str) -> None:
    assert parse(line) == why


def test_lower_case_checksum_digits_are_read() -> None:
    spec = LineSpec(pattern=DEFAULT_PATTERN.replace("[0-9A-F]{2})$", "[0-9A-Fa-f]{2})$"))
    line = "*03,+0001.234,00,"
    lower = f"{line}{line_checksum('sum8', line.encode()):02x}"
    assert parse(lower, spec=spec) == RawReading(1.234, 0)


def test_custom_protocol_with_xor8_and_decimal_status() -> None:
    spec = LineSpec(command="R{unit}\r", pattern=r"(?P<unit>\d+) (?P<value>\S+) "
                    r"S(?P<status>\d+) \*(?P<checksum>[0-9A-F]{2})",
                    checksum="xor8", status_base=10)
    body = "12 -3.5 S17 *"
    line = f"{body}{line_checksum('xor8', body.encode()):02X}"
    assert parse(line, unit=12, spec=spec) == RawReading(-3.5, 17)
    assert parse(line, unit=11, spec=spec) == "unit 12"


def test_no_checksum_no_unit() -> None:
    spec = LineSpec(pattern=r"VAL=(?P<value>[-+]?\d+(?:\.\d+)?)", checksum="none")
    assert parse("VAL=+4.25", spec=spec) == RawReading(4.25, None)
    assert parse("VAL=x", spec=spec) == "no match"


@pytest.mark.parametrize(("fields", "message"), [
    ({"pattern": r"(?P<v>\d+)"}, "named group `value`"),
    ({"pattern": r"(?P<value>\d+)"}, "needs a named group `checksum`"),
    ({"pattern": r"(?P<value>\d+"}, "not a regular expression"),
    ({"command": "#{address}RD"}, "not a template"),
    ({"command": "#{unit}RD\u00e9"}, "not a template"),
    ({"checksum": "crc16"}, "checksum"),
    ({"status_base": 8}, "status_base"),
    ({"timeout_s": 1}, "timeout_s"),
])
def test_bad_line_specs_are_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        LineSpec.model_validate(fields)


def test_numbers() -> None:
    assert parse_number("+0001.234") == 1.234
    assert parse_number("-12") == -12
    assert isinstance(parse_number("0012"), int)
    with pytest.raises(ValueError, match="could not convert"):
        parse_number("1.2.3")
