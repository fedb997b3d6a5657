"""SYS-5: an unexpected exception in one station's path, every cycle, through the daemon
process against the simulators.

The fault is a real one, not a patch: the reference system gains a rain gauge on a serial text
line whose `pattern` lets `NaN` through (a configuration someone could write for a datalogger
that prints NaN when it has no value), and the simulated gauge sends `NaN` every cycle (the
`nan` fault knob). The driver parses it as a float, and decoding a rain counter from it raises
`ValueError: cannot convert float NaN to integer` in the daemon, every cycle. Before the
barrier that ended the process at each cycle (under systemd: a crash loop, every start driving
every relay OFF).

What must hold: the daemon keeps running; that station is in gauge_fault with the reason
`internal: ValueError: …`, logged once at ERROR with its traceback and counted in /metrics
(`gauged_internal_errors_total`); its stage does not move on the rain it cannot read; every
other station still escalates and broadcasts (Shin-Hiroo reaches warning and its zone hears
it). When the gauge sends numbers again, the fault clears (logged once at INFO) and the
station counts rain again.
"""

from __future__ import annotations

import json
import re
import socket
import urllib.request
from pathlib import Path
from typing import Any

from hil import Rig
from services import PtyPairFactory, free_port

# the default answer pattern, with `NaN` let through as a value
PATTERN = (r"^\*(?P<unit>\d{2}),(?P<value>[-+]?\d+(?:\.\d+)?|NaN),(?P<status>[0-9A-F]{2}),"
           r"(?P<checksum>[0-9A-F]{2})$")
STATION = "rain_line"
REASON = "internal: ValueError: cannot convert float NaN to integer"
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def line_station(port: Path) -> str:
    return f"""
[buses.ward_line]
kind = "serial_line"
port = "{port}"
baudrate = 9600
timeout_s = 0.5

[gauges.{STATION}]
bus = "ward_line"
unit = 1
quantity = "rain_counter"
line = {{ checksum = "sum8", scale = 0.5, pattern = '{PATTERN}' }}
quality = {{ max_step = 15.0 }}

[stations.{STATION}]
name = "雨量計（シリアル）"
kind = "rain"
gauge = "{STATION}"
zones = ["ward"]
stages = [
    {{ name = "watch", threshold = 25.0 }},
    {{ name = "notice", threshold = 30.0 }},
    {{ name = "warning", threshold = 50.0, sequence = "rain_warning" }},
]
"""


def control(port: int, request: dict[str, Any]) -> dict[str, Any]:
    """One request on the simulators' control channel (JSON lines over loopback TCP)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(json.dumps(request).encode() + b"\n")
        reply: dict[str, Any] = json.loads(sock.makefile("rb").readline())
    assert reply["ok"], reply
    return reply


def internal_errors(rig: Rig) -> dict[tuple[str, str], float]:
    """`gauged_internal_errors_total` by (station, where), from /metrics."""
    with _HTTP.open(f"http://127.0.0.1:{rig.ports['status']}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {(m[1], m[2]): float(m[3]) for m in re.finditer(
        r'^gauged_internal_errors_total\{station="([^"]*)",where="([^"]*)"\} (\S+)$', text,
        re.M)}


def test_sys_5_nan_through_a_custom_pattern_every_cycle_faults_one_station_and_the_rest_broadcast(
        rig: Rig, pty_pair: PtyPairFactory) -> None:
    line = pty_pair("ward_line")
    rig.edit_config(lambda text: text + line_station(line.gateway))
    scenario = rig.workdir / "scenario.csv"
    # Shin-Hiroo at warning (freeboard 0.9 m) from the start; 6 mm of rain per cycle on the
    # serial gauge: 54 mm in 9 cycles, a warning if the daemon could read it
    rows = ["time,station,quantity,value", "0,shin_hiroo,level_m,3.7"]
    rows += [f"{i * 180},{STATION},rain_mm,{6.0 if i else 0.0}" for i in range(40)]
    scenario.write_text("\n".join(rows) + "\n", encoding="utf-8")
    faults = rig.workdir / "faults.toml"
    faults.write_text('[[fault]]\nbus = "ward_line"\nunit = 1\nnan = true\n', encoding="utf-8")
    control_port = free_port()
    rig.start_simulators(scenario, faults=faults, serial={"ward_line": line.device},
                         control_port=control_port)
    daemon = rig.start_daemon()

    def heard_and_faulted(s: dict[str, Any]) -> bool:
        hiroo = s["zones"]["furukawa_hiroo"]["last"]
        return s["cycles"] >= 10 and s["stations"]["shin_hiroo"]["stage_name"] == "warning" \
            and hiroo is not None and hiroo["outcome"] == "done"

    status = rig.wait_for_status(heard_and_faulted, rig.lead_s + 40,
                                 "ten cycles and Shin-Hiroo's warning heard")
    faulty = status["stations"][STATION]
    assert faulty["gauge_fault"] == REASON, faulty
    assert faulty["quality"] == "missing"
    assert faulty["stage"] == 0  # 54 mm fell that it could not read: nothing moved on it
    assert faulty["gauge"]["error"] == REASON
    counted = internal_errors(rig)
    assert set(counted) == {(STATION, "decode")}, counted
    assert counted[(STATION, "decode")] >= 10  # one per cycle: every cycle read it
    assert daemon.poll() is None  # still running
    assert [a["clip"] for a in rig.audio_log()] == ["furukawa_warning_ja", "furukawa_warning_en"]

    log = rig.log("daemon")
    errors = [ln for ln in log.splitlines() if "internal error station=" in ln]
    assert len(errors) == 1, errors  # once for the episode, not once per cycle
    assert "ERROR" in errors[0]
    assert f"station={STATION} where=decode: {REASON}" in errors[0]
    after = log[log.index(errors[0]):]
    assert "Traceback (most recent call last)" in after
    assert "int(out.value)" in after  # the traceback names the line that raised
    assert log.count(f"gauge_fault station={STATION} reason={REASON}") == 1
    assert "gauged stopped on an unexpected error" not in log

    # the gauge sends numbers again: the fault clears, once, and rain counts again
    control(control_port, {"op": "clear_faults", "bus": "ward_line"})
    cleared = rig.wait_for_status(
        lambda s: s["stations"][STATION]["gauge_fault"] is None
        and (s["stations"][STATION].get("rain_60m_mm") or 0) > 0,
        20, "the serial rain gauge read again")
    assert cleared["stations"]["shin_hiroo"]["stage_name"] == "warning"
    assert rig.stop("daemon") == 0
    log = rig.log("daemon")
    assert log.count(f"internal error cleared station={STATION} where=decode") == 1
    assert len([ln for ln in log.splitlines() if "internal error station=" in ln]) == 1
