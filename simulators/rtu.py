"""Modbus RTU slaves on the device side of a pty: many unit ids on one simulated RS-485 line.

Framing: a request ends when its length (known for functions 1-6, 15, 16) is complete with a
good CRC, or at the 3.5-character silence. A frame with a bad CRC is ignored, as a real device
does; a request for a unit id nobody has is met with silence; unit id 0 broadcasts writes, which
every device applies without answering. Replies are timed as on a real line (see
:mod:`simulators.serialbus`).
"""

from __future__ import annotations

import asyncio
import logging
import random
from pathlib import Path

from simulators.config import BusSpec
from simulators.devices import ModbusDevice
from simulators.faults import Plan
from simulators.modbus import WRITE_FUNCTIONS, crc_ok, rtu_request_length, with_crc
from simulators.serialbus import SerialBus
from simulators.serialport import PtyPort

log = logging.getLogger(__name__)


class RtuBus(SerialBus):
    """Every Modbus device of one ``modbus_rtu`` bus, answering on one pty."""

    protocol = "modbus_rtu"

    def __init__(
        self,
        spec: BusSpec,
        path: Path,
        devices: dict[int, ModbusDevice],
        group: asyncio.TaskGroup,
    ) -> None:
        super().__init__(spec, path, group)
        self.devices = devices

    async def serve(self, port: PtyPort) -> None:
        silence = self.timing.silence_s
        buffer = bytearray()
        t_first = t_last = 0.0
        while True:
            got = await port.read(t_last + silence if buffer else None)
            if got is None:  # the silence ended whatever was buffered
                await self._frame(port, bytes(buffer), t_first, t_last)
                buffer.clear()
                continue
            data, moment = got
            if buffer and moment - t_last > silence:
                await self._frame(port, bytes(buffer), t_first, t_last)
                buffer.clear()
            if not buffer:
                t_first = moment
            buffer += data
            t_last = moment
            while True:  # complete requests of known length, without waiting for the silence
                length = rtu_request_length(buffer)
                if length is None or len(buffer) < length or not crc_ok(buffer[:length]):
                    break
                frame = bytes(buffer[:length])
                del buffer[:length]
                await self._frame(port, frame, t_first, t_last)
                t_first = t_last

    async def _frame(self, port: PtyPort, frame: bytes, t_first: float, t_last: float) -> None:
        self.stats["frames"] += 1
        if len(frame) < 4 or not crc_ok(frame):
            self.stats["bad_frames"] += 1
            log.debug("bus %s: frame %s ignored (bad CRC or too short)", self.name, frame.hex())
            return
        unit, pdu = frame[0], frame[1:-2]
        end = self.request_end(t_first, t_last, len(frame))
        if unit == 0:
            if pdu[0] in WRITE_FUNCTIONS:
                for listener in self.devices.values():
                    listener.respond(pdu, Plan())
            return
        device = self.devices.get(unit)
        if device is None:
            self.stats["foreign_frames"] += 1
            return  # RS-485: nobody answers
        faults = device.faults
        plan = faults.plan()
        if not plan.answer:
            return
        reply_pdu = device.respond(pdu, plan)
        faults.settle(plan)
        reply_unit = self._other_unit(unit, faults.rng) if plan.wrong_unit else unit
        reply = with_crc(bytes([reply_unit]) + reply_pdu)
        if plan.junk:
            reply = self.junk(faults.rng.randint(max(1, len(reply) - 4), len(reply) + 4),
                              faults.rng, crc_ok)
        elif plan.corrupt:
            reply = reply[:-2] + bytes([reply[-2] ^ 0xFF, reply[-1]])
        await self.deliver(port, reply, plan, end + self.timing.silence_s, faults)

    def _other_unit(self, unit: int, rng: random.Random) -> int:
        others = sorted(u for u in self.devices if u != unit)
        return rng.choice(others) if others else unit % 247 + 1
