"""What the RTU bus and the line-gauge bus share: the pty's life, line time, reply delivery.

Line-time emulation (all times on the monotonic clock, ``char_s`` and ``silence_s`` from
:class:`~simulators.serialport.LineTiming`)::

    request_start = max(first byte seen, previous frame's end + silence_s)
    request_end   = max(request_start + len(request) × char_s, last byte seen)
    reply_start   = request_end + silence_s (+ delay_s, as long as the knob stays set)
    piece k is written to the pty when its last character would have left the wire:
        reply_start + len(piece 1..k) × char_s (+ the split gap between pieces)

so the client receives each frame (or split piece) whole at the moment a real line would have
delivered its last byte, and a bus of N exchanges takes N × (request + reply) × char_s plus
2 × silence_s per exchange, as on copper. ``late_s`` replies are written by a separate task and
do not hold the bus (they land during later exchanges, like a stale reply from a slow device).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Callable
from pathlib import Path

from simulators.config import BusSpec
from simulators.errors import SimulatorError
from simulators.faults import DeviceFaults, Plan
from simulators.serialport import LineTiming, PortGone, PtyPort, open_port, sleep_until

log = logging.getLogger(__name__)


class SerialBus:
    """A serial bus served on the device side of a pty pair; subclasses read the frames.

    :meth:`start` opens the pty (or raises :class:`SimulatorError`); :meth:`run` serves until
    cancelled, reopening the pty whenever it vanishes. Late replies run as named tasks in the
    owner's task group.
    """

    protocol = "serial"

    def __init__(self, spec: BusSpec, path: Path, group: asyncio.TaskGroup) -> None:
        if spec.serial is None:
            raise ValueError(f"bus {spec.name!r} is not a serial bus")
        self.spec = spec
        self.name = spec.name
        self.path = path
        self.timing = LineTiming.of(spec.serial)
        self._group = group
        self._port: PtyPort | None = None
        self._wire_free = -math.inf
        self._late = 0
        self._late_tasks: set[asyncio.Task[None]] = set()
        #: Frames received, frames discarded (bad CRC or malformed), frames for unknown units,
        #: and how often the pty came back after vanishing.
        self.stats = {"frames": 0, "bad_frames": 0, "foreign_frames": 0, "reopened": 0}

    def start(self) -> None:
        """Open the pty now (call from the event loop)."""
        try:
            self._port = PtyPort.open(self.path)
        except OSError as exc:
            raise SimulatorError(
                f"buses.{self.name}: cannot open the device side {self.path}: {exc}"
            ) from exc

    async def run(self) -> None:
        """Serve until cancelled; survive the pty vanishing and coming back."""
        while True:
            port = self._port
            if port is None:
                port = self._port = await open_port(self.path)
                self.stats["reopened"] += 1
                log.info("bus %s: %s is back; serving again", self.name, self.path)
            try:
                await self.serve(port)
            except PortGone:
                log.warning("bus %s: %s vanished; waiting for it to come back", self.name,
                            self.path)
            finally:
                port.close()
                self._port = None
                self._wire_free = -math.inf

    async def serve(self, port: PtyPort) -> None:
        """Read and answer frames until the port vanishes (raise :class:`PortGone`)."""
        raise NotImplementedError

    def close(self) -> None:
        """Close the pty and drop pending late replies (``run`` is cancelled by the owner)."""
        for task in list(self._late_tasks):
            task.cancel()
        if self._port is not None:
            self._port.close()

    # -- timing --------------------------------------------------------------------------------

    def request_end(self, t_first: float, t_last: float, n_bytes: int) -> float:
        """When a request of ``n_bytes`` first seen at ``t_first`` ends on the wire."""
        start = max(t_first, self._wire_free + self.timing.silence_s)
        end = max(start + self.timing.wire_s(n_bytes), t_last)
        self._wire_free = end  # the line carried the request, answered or not
        return end

    def split(self, frame: bytes, rng: random.Random) -> list[bytes]:
        """``frame`` cut in two at a random point (a frame of one byte stays whole)."""
        if len(frame) < 2:
            return [frame]
        cut = rng.randint(1, len(frame) - 1)
        return [frame[:cut], frame[cut:]]

    async def deliver(
        self, port: PtyPort, reply: bytes, plan: Plan, ready: float, faults: DeviceFaults
    ) -> None:
        """Send ``reply`` from ``ready`` on at line speed, honouring delay_s, split, late_s."""
        if plan.delay_s > 0:
            await faults.hold(ready)  # the device thinks; the bus waits
            ready = max(ready, time.monotonic())
        rng = faults.rng
        pieces = self.split(reply, rng) if plan.split else [reply]
        gap = plan.split_gap_s if plan.split_gap_s is not None else 2 * self.timing.silence_s
        if plan.late_s > 0:
            self._late += 1
            task = self._group.create_task(
                self._send_late(port, pieces, ready + plan.late_s, gap),
                name=f"simulators[bus:{self.name}].late-{self._late}",
            )
            self._late_tasks.add(task)
            task.add_done_callback(self._late_tasks.discard)
            return
        self._wire_free = await self._send(port, pieces, ready, gap)

    async def _send(self, port: PtyPort, pieces: list[bytes], start: float, gap: float) -> float:
        moment = start
        for index, piece in enumerate(pieces):
            if index:
                moment += gap
            moment += self.timing.wire_s(len(piece))
            await sleep_until(moment)
            await port.write(piece)
        return moment

    async def _send_late(
        self, port: PtyPort, pieces: list[bytes], start: float, gap: float
    ) -> None:
        with contextlib.suppress(PortGone):  # the pty went away meanwhile: the reply is lost
            await self._send(port, pieces, start, gap)

    @staticmethod
    def junk(length: int, rng: random.Random, valid: Callable[[bytes], bool]) -> bytes:
        """``length`` random bytes that ``valid`` does not accept as a frame."""
        data = bytearray(rng.randbytes(max(1, length)))
        while valid(bytes(data)):
            data[-1] ^= 0x5A
        return bytes(data)
