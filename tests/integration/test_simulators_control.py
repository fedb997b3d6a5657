"""The control channel (JSON lines on 127.0.0.1) and the command line that serves it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import struct
import sys
from pathlib import Path
from typing import Any

import serial
from services import PtyPairFactory, free_port

from simulators.cli import main
from simulators.clock import SimClock
from simulators.fleet import Fleet

REPO = Path(__file__).resolve().parents[2]
DEADLINE_S = 5.0

CONFIG = """
[buses.gw]
kind = "modbus_tcp"
host = "127.0.0.1"
port = {tcp_port}

[buses.rs485]
kind = "modbus_rtu"
port = "/dev/serial/by-id/usb-FTDI-if00"
baudrate = 19200

[gauges.level]
bus = "gw"
unit = 1
quantity = "level_m"
register = {{ kind = "holding", address = 0, data_type = "uint16", scale = 0.001 }}

[gauges.rtu_level]
bus = "rs485"
unit = 3
quantity = "level_m"
register = {{ kind = "input", address = 0, data_type = "int16", scale = 0.01 }}
"""


def _free_port() -> int:
    return free_port()  # (tests/services.py: below the ephemeral range)


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "gauged.toml"
    path.write_text(CONFIG.format(tcp_port=_free_port()), encoding="utf-8")
    return path


class Control:
    """A control-channel client: one JSON request per line, one reply per line."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> Control:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def raw(self, line: bytes) -> dict[str, Any]:
        self.writer.write(line)
        reply: dict[str, Any] = json.loads(
            await asyncio.wait_for(self.reader.readline(), DEADLINE_S)
        )
        return reply

    async def __call__(self, **request: Any) -> dict[str, Any]:
        return await self.raw(json.dumps(request).encode() + b"\n")

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def test_control_channel_sets_reads_and_clears_faults(tmp_path: Path) -> None:
    port = _free_port()
    async with Fleet(_config(tmp_path), None, SimClock(), control_port=port) as fleet:
        control = await Control.connect(port)
        try:
            assert await control(op="ping") == {"ok": True}
            assert await control(op="set_fault", bus="gw", unit=1,
                                 knobs={"exception": 4, "delay_s": 0.01}) == {"ok": True}
            assert fleet.get_faults() == {("gw", 1): {"exception": 4, "delay_s": 0.01}}
            # Merging: one knob removed with null, another added.
            assert await control(op="set_fault", bus="gw", unit=1,
                                 knobs={"delay_s": None, "spike": 0.5}) == {"ok": True}
            assert await control(op="get_faults") == {
                "ok": True,
                "faults": [{"bus": "gw", "unit": 1, "knobs": {"exception": 4, "spike": 0.5}}],
            }

            gateway = fleet.config.buses["gw"]
            reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
            writer.write(struct.pack(">HHHBBHH", 1, 0, 6, 1, 3, 0, 1))
            assert await asyncio.wait_for(reader.readexactly(9), DEADLINE_S) == (
                struct.pack(">HHHBBB", 1, 0, 3, 1, 0x83, 4)
            )
            writer.close()
            await writer.wait_closed()

            stats = await control(op="stats")
            assert stats["ok"] is True
            assert stats["total_faults"] == 1
            (device,) = stats["devices"]
            assert device == {"bus": "gw", "unit": 1, "knobs": {"exception": 4, "spike": 0.5},
                              "requests": 1, "faults": {"exception": 1}}
            assert stats["buses"] == [{"bus": "gw", "kind": "modbus_tcp", "connections": 1,
                                       "dropped": 0, "frames": 1, "foreign_frames": 0}]

            assert await control(op="clear_faults") == {"ok": True}
            assert fleet.get_faults() == {}
            assert (await control(op="stats"))["total_faults"] == 1  # counts survive clearing

            errors = [
                await control.raw(b"{not json\n"),
                await control(op="dance"),
                await control(op="set_fault", bus="gw", unit=1, knobs={"wobble": 1}),
                await control(op="set_fault", bus="nowhere", knobs={"no_answer": True}),
                await control(op="set_fault", bus="gw", unit=7, knobs={"no_answer": True}),
                await control(op="set_fault", bus="gw", unit=1, knobs={"no_answer": 3}),
                await control(op="set_fault", bus="gw", unit="one", knobs={}),
                await control.raw(b"[1, 2]\n"),
            ]
            assert all(reply["ok"] is False and reply["error"] for reply in errors), errors
            assert "unknown op 'dance'" in errors[1]["error"]
            assert "unknown fault knob 'wobble'" in errors[2]["error"]
            assert fleet.get_faults() == {}
            assert await control(op="ping") == {"ok": True}  # the connection survived
        finally:
            await control.close()


def _env() -> dict[str, str]:
    return dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )


def _rtu_read(path: Path) -> bytes:
    frame = bytes([3, 4, 0, 0, 0, 1])
    crc = 0xFFFF
    for byte in frame:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    with serial.Serial(str(path), 19200, timeout=1.0) as port:
        port.write(frame + crc.to_bytes(2, "little"))
        data: bytes = port.read(7)
        return data


async def test_cli_serves_serial_faults_and_control(
    tmp_path: Path, pty_pair: PtyPairFactory
) -> None:
    config = _config(tmp_path)
    pair = pty_pair("rs485")
    faults = tmp_path / "faults.toml"
    faults.write_text('[[fault]]\nbus = "rs485"\nunit = 3\nstatus = 9\nspike = 1.0\n',
                      encoding="utf-8")
    control_port = _free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulators", "--config", str(config),
        "--serial", f"rs485={pair.device}", "--faults", str(faults),
        "--control", str(control_port), "--seed", "3",
        cwd=REPO, env=_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        assert process.stderr is not None
        line = await asyncio.wait_for(process.stdout.readline(), 15.0)
        assert line == b"simulators ready\n"
        control = await Control.connect(control_port)
        try:
            assert (await control(op="get_faults"))["faults"] == [
                {"bus": "rs485", "unit": 3, "knobs": {"status": 9, "spike": 1.0}}
            ]
            reply = await asyncio.to_thread(_rtu_read, pair.gateway)
            assert reply[:5] == bytes([3, 4, 2, 0, 100])  # 0.0 m + 1.0 m spike, in cm
            stats = await control(op="stats")
            assert {(d["bus"], d["unit"]): d["faults"] for d in stats["devices"]} == {
                ("gw", 1): {},
                ("rs485", 3): {"spike": 1},  # no status word in this map: nothing to carry it
            }
        finally:
            await control.close()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10.0) == 0
        stderr = (await process.stderr.read()).decode()
        assert "bus rs485: modbus_rtu on" in stderr
        assert "at 19200 baud (10 bits per character)" in stderr
        assert await process.stdout.read() == b""
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_cli_exits_2_on_bad_serial_faults_or_control(tmp_path: Path) -> None:
    config = _config(tmp_path)
    bad_faults = tmp_path / "faults.toml"
    bad_faults.write_text('[[fault]]\nbus = "gw"\nbad_checksum = 1\n', encoding="utf-8")
    assert main(["--config", str(config), "--serial", "rs485"]) == 2
    assert main(["--config", str(config), "--serial", "gw=/tmp/x"]) == 2
    assert main(["--config", str(config), "--serial", "nowhere=/tmp/x"]) == 2
    assert main(["--config", str(config), "--faults", str(bad_faults)]) == 2
    assert main(["--config", str(config), "--faults", str(tmp_path / "missing.toml")]) == 2
    assert main(["--config", str(config), "--control", "70000"]) == 2
    assert main(["--config", str(config), "--seed", "x"]) == 2


def test_cli_exits_1_when_a_pty_cannot_be_opened(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert main(["--config", str(config), "--serial", f"rs485={tmp_path / 'device'}"]) == 1
