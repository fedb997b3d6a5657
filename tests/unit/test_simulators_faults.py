"""Fault knobs: checking, drawing, counting, and the faults file."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulators.errors import ConfigError, FaultError
from simulators.faults import DeviceFaults, load_faults, normalize


@pytest.mark.parametrize(
    ("name", "value", "transport", "stored"),
    [
        ("no_answer", True, "rtu", 1.0),
        ("no_answer", False, "tcp", 0.0),
        ("junk", 0.25, "line", 0.25),
        ("delay_s", 1, "tcp", 1.0),
        ("exception", 11, "rtu", 11),
        ("status", 0xFFFF, "tcp", 0xFFFF),
        ("status", 0xFF, "line", 0xFF),
        ("spike", -2.5, "line", -2.5),
        ("busy_count", 3, "tcp", 3),
        ("disconnect", True, "line", True),
        ("bad_crc", None, "rtu", None),
    ],
)
def test_knob_values_are_normalized(
    name: str, value: object, transport: str, stored: object
) -> None:
    assert normalize(name, value, transport) == stored  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "value", "transport", "message"),
    [
        ("wobble", 1, "tcp", "unknown fault knob 'wobble'"),
        ("no_answer", 1.5, "tcp", "a probability is true, false or 0..1"),
        ("no_answer", "yes", "tcp", "a probability"),
        ("delay_s", -1, "rtu", "seconds ≥ 0"),
        ("delay_s", float("inf"), "rtu", "seconds ≥ 0"),
        ("exception", 0, "rtu", r"integer in 1\.\.255"),
        ("exception", True, "rtu", r"integer in 1\.\.255"),
        ("status", 256, "line", r"integer in 0\.\.255"),
        ("disconnect", 1, "tcp", "true or false"),
        ("spike", float("nan"), "tcp", "finite number"),
        ("bad_crc", 1, "tcp", "no meaning on a Modbus TCP device"),
        ("bad_checksum", 1, "rtu", "no meaning on a Modbus RTU device"),
        ("exception", 4, "line", "no meaning on a serial_line device"),
        ("busy_count", 2, "line", "no meaning on a serial_line device"),
    ],
)
def test_bad_knobs_are_refused(name: str, value: object, transport: str, message: str) -> None:
    with pytest.raises(FaultError, match=message):
        normalize(name, value, transport)  # type: ignore[arg-type]


def _values() -> dict[str, float]:
    return {"g": 1.0}


def test_update_is_all_or_nothing_and_off_values_remove_knobs() -> None:
    faults = DeviceFaults("b", 1, "rtu", seed=0)
    faults.update({"no_answer": 0.5, "delay_s": 0.1}, _values)
    with pytest.raises(FaultError):
        faults.update({"junk": 1.0, "exception": 999}, _values)
    assert faults.knobs == {"no_answer": 0.5, "delay_s": 0.1}
    faults.update({"no_answer": False, "delay_s": 0, "spike": None, "stuck": True}, _values)
    assert faults.knobs == {"stuck": True}
    assert faults.frozen == {"g": 1.0}
    faults.update({"stuck": False}, _values)
    assert faults.frozen == {}
    faults.update({"exception": 4, "exception_rate": 0}, _values)  # a rate of 0 stays
    assert faults.knobs == {"exception": 4, "exception_rate": 0.0}
    assert faults.plan().exception is None


def test_plans_follow_the_knobs_and_count_them() -> None:
    faults = DeviceFaults("b", 1, "rtu", seed=0)
    assert faults.plan().answer
    faults.update({"busy_count": 2, "exception": 4}, _values)
    assert [faults.plan().exception for _ in range(3)] == [6, 6, 4]
    assert "busy_count" not in faults.knobs
    faults.update({"disconnect": True}, _values)
    plan = faults.plan()
    assert (plan.answer, plan.disconnect) == (False, True)
    faults.clear()
    faults.update({"junk": 1, "bad_crc": 1, "split": 1, "delay_s": 0.2, "late_s": 1}, _values)
    plan = faults.plan()
    assert (plan.junk, plan.corrupt, plan.split, plan.delay_s, plan.late_s) == (
        True, False, True, 0.2, 1.0  # junk replaces the reply: no CRC to corrupt
    )
    assert dict(faults.counts) == {
        "busy_count": 2, "exception": 1, "disconnect": 1, "junk": 1, "split": 1,
        "delay_s": 1, "late_s": 1,
    }
    assert faults.requests == 6


def test_tcp_disconnect_is_counted_per_connection_not_per_request() -> None:
    faults = DeviceFaults("b", 1, "tcp", seed=0)
    faults.update({"disconnect": True}, _values)
    assert faults.plan().disconnect
    assert faults.counts == {}


def test_draws_repeat_with_the_seed_and_differ_between_devices() -> None:
    def draws(seed: int, unit: int) -> list[bool]:
        faults = DeviceFaults("b", unit, "rtu", seed)
        faults.update({"no_answer": 0.5}, _values)
        return [faults.plan().answer for _ in range(64)]

    assert draws(1, 1) == draws(1, 1)
    assert draws(1, 1) != draws(2, 1)
    assert draws(1, 1) != draws(1, 2)
    assert 16 < draws(1, 1).count(False) < 48


def test_rates_thin_out_exceptions_and_spikes() -> None:
    faults = DeviceFaults("b", 1, "tcp", seed=3)
    faults.update({"exception": 4, "exception_rate": 0.1, "spike": 2.0, "spike_rate": 0.1}, _values)
    plans = [faults.plan() for _ in range(1000)]
    exceptions = sum(plan.exception == 4 for plan in plans)
    spikes = sum(plan.spike == 2.0 for plan in plans)
    assert 50 < exceptions < 150
    assert 50 < spikes < 150
    assert faults.counts["exception"] == exceptions


def test_faults_file(tmp_path: Path) -> None:
    path = tmp_path / "faults.toml"
    path.write_text(
        '[[fault]]\nbus = "rs485"\nunit = 3\nno_answer = true\n'
        '[[fault]]\nbus = "line"\nbad_checksum = 0.1\n',
        encoding="utf-8",
    )
    first, second = load_faults(path)
    assert (first.bus, first.unit, first.knobs) == ("rs485", 3, {"no_answer": True})
    assert (second.bus, second.unit, second.knobs) == ("line", None, {"bad_checksum": 0.1})
    assert first.where == f"{path}: fault[0]"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[fault]\n", "not valid TOML"),
        ('[[fault]]\nunit = 3\n', r"fault\[0\]\.bus: must be a bus name"),
        ('[[fault]]\nbus = "b"\nunit = "3"\n', r"fault\[0\]\.unit: must be an integer"),
        ('[[fault]]\nbus = "b"\nslow = 1\n', r"fault\[0\]\.slow: unknown fault knob"),
        ('fault = 3\n', "must be an array of tables"),
        ('[device]\nbus = "b"\n', "unknown top-level key"),
    ],
)
def test_faults_file_errors_name_the_file_and_the_entry(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "faults.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as caught:
        load_faults(path)
    assert str(caught.value).startswith(f"{path}")
    with pytest.raises(ConfigError, match="cannot read faults file"):
        load_faults(tmp_path / "missing.toml")
