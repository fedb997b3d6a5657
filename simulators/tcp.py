"""Modbus TCP gateways: one listener per bus, many unit ids behind it, with fault knobs.

MBAP framing (transaction id, protocol id 0, length, unit id, PDU). Like a TCP-to-RS-485
gateway, a bus answers one request at a time across all its connections (so ``delay_s`` adds up
into the gateway's serial time); a unit id nobody has gets exception 0B (gateway target failed
to respond). Fault knobs act on the bytes: ``junk`` and ``split`` are separate TCP writes,
``late_s`` answers from a separate task, and ``disconnect`` on any unit of the bus drops every
connection and closes the listener (new connections are refused) until it is cleared.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import struct
import time

from simulators.config import BusSpec
from simulators.devices import ModbusDevice
from simulators.errors import SimulatorError
from simulators.modbus import ExceptionCode, exception_pdu

log = logging.getLogger(__name__)

MBAP = struct.Struct(">HHHB")
#: Default gap between the two writes of a split reply.
SPLIT_GAP_S = 0.02
#: Pause before trying again to listen after the port could not be bound on recovery.
RELISTEN_S = 0.1


class TcpBus:
    """One Modbus TCP bus (gateway). :meth:`start` binds; :meth:`run` follows ``disconnect``."""

    protocol = "modbus_tcp"

    def __init__(
        self, spec: BusSpec, devices: dict[int, ModbusDevice], group: asyncio.TaskGroup
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.devices = devices
        self._group = group
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._late_tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._serial = 0
        #: Connections accepted, connections dropped by ``disconnect``, and requests received.
        self.stats = {"connections": 0, "dropped": 0, "frames": 0, "foreign_frames": 0}

    @property
    def listening(self) -> bool:
        """True while the gateway accepts connections."""
        return self._server is not None

    async def start(self) -> None:
        """Listen (raise :class:`SimulatorError` if the port is taken), unless disconnected."""
        if not self._down():
            await self._listen()

    async def _listen(self) -> None:
        try:
            self._server = await asyncio.start_server(
                self._on_connect, self.spec.host, self.spec.port
            )
        except OSError as exc:
            raise SimulatorError(
                f"buses.{self.name}: cannot listen on {self.spec.host}:{self.spec.port} "
                f"(port in use?): {exc}"
            ) from exc

    async def _stop_listening(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    def faults_changed(self) -> None:
        """Tell :meth:`run` that a knob changed (``disconnect`` may have come or gone)."""
        self._changed.set()

    def _down(self) -> list[ModbusDevice]:
        return [d for d in self.devices.values() if d.faults.knobs.get("disconnect")]

    async def run(self) -> None:
        """Follow the ``disconnect`` knob until cancelled: drop and refuse, then listen again."""
        while True:
            await self._changed.wait()
            self._changed.clear()
            down = self._down()
            if down and self._server is not None:
                await self._stop_listening()
                self._drop_all(down[0])
                log.info("bus %s: gateway disconnected (fault knob): refusing connections",
                         self.name)
            elif not down and self._server is None:
                try:
                    await self._listen()
                except SimulatorError as exc:
                    log.warning("%s; trying again", exc)
                    await asyncio.sleep(RELISTEN_S)
                    self._changed.set()
                    continue
                log.info("bus %s: gateway back: accepting connections", self.name)

    def _drop_all(self, device: ModbusDevice) -> None:
        for task in list(self._connections):
            task.cancel()
        device.faults.count("disconnect", len(self._connections))
        self.stats["dropped"] += len(self._connections)

    async def close(self) -> None:
        """Stop listening and end every connection."""
        await self._stop_listening()
        for task in list(self._connections | self._late_tasks):
            task.cancel()

    def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain callback, so the connection task is ours (named, in the owner's TaskGroup).
        self._serial += 1
        self.stats["connections"] += 1
        task = self._group.create_task(
            self._serve(reader, writer), name=f"simulators[bus:{self.name}].conn-{self._serial}"
        )
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)
        if self._server is None:  # accepted just as the listener closed
            task.cancel()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readexactly(MBAP.size)
                transaction, protocol, length, unit = MBAP.unpack(header)
                if protocol != 0 or not 2 <= length <= 254:
                    log.debug("bus %s: bad MBAP header %s: closing", self.name, header.hex())
                    return
                pdu = await reader.readexactly(length - 1)
                self.stats["frames"] += 1
                async with self._lock:
                    await self._answer(writer, transaction, unit, pdu)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(
        self, writer: asyncio.StreamWriter, transaction: int, unit: int, pdu: bytes
    ) -> None:
        """Answer one request (or not, as the device's knobs say)."""
        device = self.devices.get(unit)
        if device is None:
            self.stats["foreign_frames"] += 1
            function = pdu[0] if pdu else 0
            reply = exception_pdu(function, ExceptionCode.GATEWAY_NO_RESPONSE)
            writer.write(MBAP.pack(transaction, 0, len(reply) + 1, unit) + reply)
            await writer.drain()
            return
        faults = device.faults
        plan = faults.plan()
        if plan.disconnect:  # set a moment ago: run() drops this connection (and counts it)
            self.faults_changed()
            return
        if not plan.answer:
            return
        if plan.delay_s > 0:
            await faults.hold(time.monotonic())
        reply_pdu = device.respond(pdu, plan)
        faults.settle(plan)
        reply_unit = self._other_unit(unit, faults.rng) if plan.wrong_unit else unit
        adu = MBAP.pack(transaction, 0, len(reply_pdu) + 1, reply_unit) + reply_pdu
        if plan.junk:
            size = faults.rng.randint(max(1, len(adu) - 4), len(adu) + 4)
            data = bytearray(faults.rng.randbytes(size))
            if len(data) >= 4 and data[2:4] == b"\x00\x00":
                data[3] = 0xA5  # never protocol id 0: no client may take it for a reply
            adu = bytes(data)
        pieces = [adu]
        if plan.split and len(adu) > 1:
            cut = faults.rng.randint(1, len(adu) - 1)
            pieces = [adu[:cut], adu[cut:]]
        gap = plan.split_gap_s if plan.split_gap_s is not None else SPLIT_GAP_S
        if plan.late_s > 0:
            self._serial += 1
            task = self._group.create_task(
                self._send_late(writer, pieces, gap, plan.late_s),
                name=f"simulators[bus:{self.name}].late-{self._serial}",
            )
            self._late_tasks.add(task)
            task.add_done_callback(self._late_tasks.discard)
            return
        await self._send(writer, pieces, gap)

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, pieces: list[bytes], gap: float) -> None:
        for index, piece in enumerate(pieces):
            if index:
                await asyncio.sleep(gap)
            writer.write(piece)
            await writer.drain()

    async def _send_late(
        self, writer: asyncio.StreamWriter, pieces: list[bytes], gap: float, late_s: float
    ) -> None:
        await asyncio.sleep(late_s)
        if writer.is_closing():
            return
        with contextlib.suppress(ConnectionError):
            await self._send(writer, pieces, gap)

    def _other_unit(self, unit: int, rng: random.Random) -> int:
        others = sorted(u for u in self.devices if u != unit)
        return rng.choice(others) if others else unit % 247 + 1
