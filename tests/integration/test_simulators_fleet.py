"""The simulators over real TCP on 127.0.0.1, spoken to by a real pymodbus client.

Each test runs the fleet on a temporary copy of the reference config whose ports are replaced by
free ones (a socket bound to port 0), so tests never collide with each other or with a running
demo.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import struct
import sys
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient
from services import free_port

from simulators.cli import main
from simulators.clock import SimClock
from simulators.errors import SimulatorError
from simulators.fleet import Fleet
from simulators.sink import clip_duration

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "config" / "minato-furukawa.toml"
CLIPS = REPO / "config" / "clips"
START = datetime(2024, 6, 1, 9, 0, tzinfo=UTC)
DEADLINE_S = 5.0


def _free_port() -> int:
    return free_port()  # (tests/services.py: below the ephemeral range)


class Ports(dict[int, int]):
    """Original port in the reference config → free port in the temporary copy."""


@pytest.fixture
def config(tmp_path: Path) -> tuple[Path, Ports]:
    ports = Ports()

    def replace(match: re.Match[str]) -> str:
        original = int(match.group(2))
        ports.setdefault(original, _free_port())
        return f"{match.group(1)}{ports[original]}"

    text = re.sub(r"(?m)^(port\s*=\s*)(\d+)", replace, REFERENCE.read_text(encoding="utf-8"))
    path = tmp_path / "gauged.toml"
    path.write_text(text, encoding="utf-8")
    return path, ports


class Wall:
    """A wall clock the test moves by hand, so gauge values are read at chosen times."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def client_factory() -> AsyncIterator[list[AsyncModbusTcpClient]]:
    clients: list[AsyncModbusTcpClient] = []
    yield clients
    for client in clients:
        client.close()


async def _client(port: int, clients: list[AsyncModbusTcpClient]) -> AsyncModbusTcpClient:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
    clients.append(client)
    assert await client.connect()
    return client


def _registers_to_bytes(registers: Sequence[int]) -> bytes:
    return b"".join(register.to_bytes(2, "big") for register in registers)


SCENARIO = """time,station,quantity,value
0,shin_hiroo,level_m,1.5
0,shirokane,level_m,1.234
0,rain_ward_office,rain_mm,1.5
0,rain_placeholder_4,rain_mm,0.5
180,shin_hiroo,level_m,2.345
180,shirokane,level_m,4.41
180,rain_ward_office,rain_mm,2.0
180,rain_placeholder_4,rain_mm,3.5
"""


async def test_gauges_answer_the_scenario_value_at_the_simulated_time(
    config: tuple[Path, Ports], tmp_path: Path, client_factory: list[AsyncModbusTcpClient]
) -> None:
    path, ports = config
    scenario = tmp_path / "scenario.csv"
    scenario.write_text(SCENARIO, encoding="utf-8")
    wall = Wall(10_000.0)
    clock = SimClock(speed=1.0, start=START, anchor_unix=10_000.0, wall_time=wall)
    async with Fleet(path, scenario, clock):
        river = await _client(ports[15020], client_factory)
        rain = await _client(ports[15021], client_factory)

        async def read_all() -> tuple[float, int, int, int, int]:
            # shin_hiroo: input 0, float32, big word order.
            shin = await river.read_input_registers(0, count=2, device_id=1)
            # shirokane: holding 10, int32, little word order, scale 0.001.
            shiro = await river.read_holding_registers(10, count=2, device_id=2)
            # ward office: holding 0, uint16 tips of 0.5 mm.
            ward = await rain.read_holding_registers(0, count=1, device_id=11)
            # placeholder 4: input 4, uint32, big word order.
            p4 = await rain.read_input_registers(4, count=2, device_id=15)
            # placeholder 1 has no scenario rows: its counter stays at 0.
            p1 = await rain.read_holding_registers(0, count=1, device_id=12)
            for response in (shin, shiro, ward, p4, p1):
                assert not response.isError(), response
            (level,) = struct.unpack(">f", _registers_to_bytes(shin.registers))
            (milli,) = struct.unpack(">i", _registers_to_bytes(shiro.registers[::-1]))
            (tips_4,) = struct.unpack(">I", _registers_to_bytes(p4.registers))
            return level, milli, ward.registers[0], tips_4, p1.registers[0]

        level, milli, tips, tips_4, tips_1 = await read_all()
        assert level == pytest.approx(1.5)
        assert milli == 1234
        assert (tips, tips_4, tips_1) == (3, 1, 0)  # 1.5 mm and 0.5 mm in 0.5 mm tips

        wall.now = 10_000.0 + 179.0  # still the first row
        assert (await read_all())[1] == 1234

        wall.now = 10_000.0 + 200.0  # the second row applies from offset 180
        level, milli, tips, tips_4, tips_1 = await read_all()
        assert level == pytest.approx(2.345, abs=1e-6)  # float32 precision
        assert milli == 4410
        assert (tips, tips_4, tips_1) == (7, 8, 0)  # 3.5 mm and 4.0 mm cumulative


async def test_without_a_scenario_gauges_show_their_initial_values(
    config: tuple[Path, Ports], client_factory: list[AsyncModbusTcpClient]
) -> None:
    path, ports = config
    async with Fleet(path, None, SimClock()):
        river = await _client(ports[15020], client_factory)
        shin = await river.read_input_registers(0, count=2, device_id=1)
        assert shin.registers == [0, 0]  # float32 0.0
        rain = await _client(ports[15021], client_factory)
        ward = await rain.read_holding_registers(0, count=1, device_id=11)
        assert ward.registers == [0]


async def test_unknown_unit_and_bad_address_answer_modbus_exceptions(
    config: tuple[Path, Ports], client_factory: list[AsyncModbusTcpClient]
) -> None:
    path, ports = config
    async with Fleet(path, None, SimClock()):
        river = await _client(ports[15020], client_factory)
        unknown = await river.read_input_registers(0, count=2, device_id=9)
        assert unknown.isError()
        assert unknown.exception_code == 0x0B  # gateway target failed to respond
        beyond = await river.read_holding_registers(1000, count=1, device_id=1)
        assert beyond.isError()
        assert beyond.exception_code == 0x02  # illegal data address
        write = await river.write_register(10, 7, device_id=2)
        assert write.isError()
        assert write.exception_code == 0x01  # a gauge takes no writes


async def test_coil_writes_are_recorded_and_read_back(
    config: tuple[Path, Ports], tmp_path: Path, client_factory: list[AsyncModbusTcpClient]
) -> None:
    path, ports = config
    record = tmp_path / "record"
    clock = SimClock(speed=1.0, start=START)
    async with Fleet(path, None, clock, record) as fleet:
        board = await _client(ports[15030], client_factory)
        assert fleet.coils("relays", 1) == [False] * 64

        assert not (await board.write_coil(2, True, device_id=1)).isError()
        read = await board.read_coils(0, count=8, device_id=1)
        assert read.bits[:8] == [False, False, True, False, False, False, False, False]
        assert fleet.coils("relays", 1)[:8] == read.bits[:8]
        entry = fleet.relay_log[-1]
        assert {k: entry[k] for k in ("bus", "unit", "coil", "value", "previous")} == {
            "bus": "relays",
            "unit": 1,
            "coil": 2,
            "value": True,
            "previous": False,
        }
        assert abs(datetime.fromisoformat(entry["t_sim"]) - START).total_seconds() < 60

        assert not (await board.write_coils(0, [True, True, False], device_id=1)).isError()
        assert not (await board.write_coil(2, False, device_id=1)).isError()
        read = await board.read_coils(0, count=16, device_id=1)
        assert read.bits[:6] == [True, True, False, False, False, False]
        changes = [(e["coil"], e["value"], e["previous"]) for e in fleet.relay_log]
        assert changes == [
            (2, True, False),
            (0, True, False),
            (1, True, False),
            (2, False, True),  # the multi-coil write switched coil 2 off
            (2, False, False),  # a rewrite is recorded too, with its previous state
        ]
        assert [e["t_real"] for e in fleet.relay_log] == sorted(
            e["t_real"] for e in fleet.relay_log
        )

        beyond = await board.read_coils(64, count=1, device_id=1)
        assert beyond.isError()

    lines = (record / "relays.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == fleet.relay_log


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: str) -> str:
    writer.write(line.encode("utf-8"))
    await writer.drain()
    reply = await asyncio.wait_for(reader.readline(), DEADLINE_S)
    return reply.decode("utf-8")


async def test_audio_sink_plays_a_clip_on_the_simulated_clock(
    config: tuple[Path, Ports], tmp_path: Path
) -> None:
    path, ports = config
    record = tmp_path / "record"
    clock = SimClock(speed=40.0, start=START)  # a 7 s clip lasts 180 ms of wall time
    clip = CLIPS / "heavy_rain_ja.wav"
    ja_s, en_s = (clip_duration(CLIPS / f"heavy_rain_{lang}.wav") for lang in ("ja", "en"))
    assert ja_s > 5.0
    async with Fleet(path, None, clock, record) as fleet:
        reader, writer = await asyncio.open_connection("127.0.0.1", ports[15040])
        try:
            before = clock.elapsed()
            assert await _request(reader, writer, f"PLAY ward heavy_rain_ja {clip}\n") == "DONE\n"
            assert clock.elapsed() - before >= ja_s  # not before the clip's end
            # A second request on the same connection, with a relative path (config folder).
            (tmp_path / "clips").mkdir()
            (tmp_path / "clips" / "en.wav").write_bytes((CLIPS / "heavy_rain_en.wav").read_bytes())
            assert await _request(reader, writer, "PLAY ward heavy_rain_en clips/en.wav\n") == (
                "DONE\n"
            )
        finally:
            writer.close()
            await writer.wait_closed()

    assert [(e["zone"], e["clip"], e["duration_s"]) for e in fleet.audio_log] == [
        ("ward", "heavy_rain_ja", ja_s),
        ("ward", "heavy_rain_en", en_s),
    ]
    first, second = fleet.audio_log
    assert first["path"] == str(clip)
    # Recorded when the clip starts: the second starts at least one clip later (simulated).
    gap = datetime.fromisoformat(second["t_sim"]) - datetime.fromisoformat(first["t_sim"])
    assert gap.total_seconds() >= ja_s
    assert first["pcm_sha256"] != second["pcm_sha256"]
    assert second["t_real"] > first["t_real"]
    lines = (record / "audio.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == fleet.audio_log


async def test_audio_sink_refuses_what_it_cannot_play(
    config: tuple[Path, Ports], tmp_path: Path
) -> None:
    path, ports = config
    not_wav = tmp_path / "notes.txt"
    not_wav.write_text("not audio", encoding="utf-8")
    async with Fleet(path, None, SimClock(speed=40.0)) as fleet:
        reader, writer = await asyncio.open_connection("127.0.0.1", ports[15040])
        other_reader, other_writer = await asyncio.open_connection("127.0.0.1", ports[15040])
        try:
            missing = await _request(reader, writer, f"PLAY ward x {tmp_path / 'missing.wav'}\n")
            assert missing.startswith("ERR ")
            assert "missing.wav" in missing
            assert (await _request(reader, writer, f"PLAY ward x {not_wav}\n")).startswith("ERR ")
            assert (await _request(reader, writer, "PLAY ward\n")).startswith("ERR malformed")
            assert (await _request(reader, writer, "STOP ward\n")).startswith("ERR malformed")
            assert fleet.audio_log == []
            # The connection survives errors, and a second connection is served alongside.
            clip = CLIPS / "furukawa_rising_en.wav"
            ok_1, ok_2 = await asyncio.gather(
                _request(reader, writer, f"PLAY ward a {clip}\n"),
                _request(other_reader, other_writer, f"PLAY furukawa_hiroo b {clip}\n"),
            )
            assert (ok_1, ok_2) == ("DONE\n", "DONE\n")
            assert sorted(e["clip"] for e in fleet.audio_log) == ["a", "b"]
        finally:
            for stream in (writer, other_writer):
                stream.close()
                await stream.wait_closed()


async def test_fleet_is_single_use_and_reports_a_taken_port(config: tuple[Path, Ports]) -> None:
    path, _ports = config
    fleet = Fleet(path, None, SimClock())
    async with fleet:
        with pytest.raises(RuntimeError, match="single-use"):
            await fleet.__aenter__()
        with pytest.raises(SimulatorError, match=r"cannot listen on 127\.0\.0\.1:\d+"):
            async with Fleet(path, None, SimClock()):
                pass  # pragma: no cover - the ports are taken by the first fleet
    with pytest.raises(RuntimeError, match="single-use"):
        async with fleet:
            pass  # pragma: no cover


async def test_serve_forever_runs_until_cancelled(config: tuple[Path, Ports]) -> None:
    path, ports = config
    async with Fleet(path, None, SimClock()) as fleet, asyncio.TaskGroup() as group:
        serving = group.create_task(fleet.serve_forever(), name="test.serve")
        _reader, writer = await asyncio.open_connection("127.0.0.1", ports[15040])
        writer.close()
        await writer.wait_closed()
        assert not serving.done()
        serving.cancel()
    assert serving.cancelled()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", ports[15040])


async def test_cli_prints_ready_serves_and_exits_0_on_sigterm(
    config: tuple[Path, Ports], tmp_path: Path, client_factory: list[AsyncModbusTcpClient]
) -> None:
    path, ports = config
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simulators",
        "--config",
        str(path),
        "--scenario",
        "design_storm_50mm",
        "--speed",
        "60",
        "--record",
        str(tmp_path / "record"),
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        assert process.stderr is not None
        line = await asyncio.wait_for(process.stdout.readline(), 15.0)
        assert line == b"simulators ready\n"
        river = await _client(ports[15020], client_factory)
        shin = await river.read_input_registers(0, count=2, device_id=1)
        (level,) = struct.unpack(">f", _registers_to_bytes(shin.registers))
        assert level == pytest.approx(1.0)  # the calm start of the design storm
        board = await _client(ports[15030], client_factory)
        assert not (await board.write_coil(5, True, device_id=1)).isError()

        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10.0) == 0
        stderr = (await process.stderr.read()).decode("utf-8")
        assert "coil 5 (ward.amplifier_relay): OFF -> ON" in stderr
        assert "simulators stopped" in stderr
        assert await process.stdout.read() == b""  # nothing else on stdout
        record = json.loads((tmp_path / "record" / "relays.jsonl").read_text(encoding="utf-8"))
        assert (record["coil"], record["value"]) == (5, True)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_cli_exits_2_on_a_bad_config(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[buses\n", encoding="utf-8")
    assert main(["--config", str(broken)]) == 2
    assert main(["--config", str(REFERENCE), "--scenario", str(tmp_path / "none.csv")]) == 2
    assert main(["--config", str(REFERENCE), "--start", "2024-06-01T09:00"]) == 2
    assert main(["--bogus"]) == 2
