"""A serial MP3 module (DFPlayer-style) on a pty: the device side of drivers/dfplayer.py.

It speaks the module's 10-byte frames (``7E FF 06 CMD FB P1 P2 CKH CKL EF``, checksum the two's
complement of the sum of version … P2): 0x12 play track (of the mp3 folder), 0x06 volume,
0x16 stop, 0x42 status (answered 0x42 with P1 = 2, the card, and P2 = 0 stopped / 1
playing); a frame with the feedback flag set is acknowledged (0x41); a track it does not have
is error 0x40 code 6, a frame with a bad checksum error code 4. A track plays for its length
on the simulated clock (``speed`` times faster than real time); when it ends the module says
so on its own (0x3D, the track). Every track started is journalled (track, clip, simulated
time, length).

Fault knobs, as a test sets them (``faults``): ``silent`` (answers nothing), ``wrong``
(answers with a bad checksum), ``junk`` (line noise before every answer), ``stuck`` (a track
never ends: the status stays "playing"), ``slow_start`` (the status says "stopped" for the
first ``SLOW_START_S`` of a track, as a module opening a file does), ``dead`` (acknowledges
play, never plays).

The module shares no code with gauged/ and drivers/ (DESIGN §3): the protocol is written out
again here, as the other side of a wire would be.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from simulators.clock import SimClock
from simulators.journal import Journal
from simulators.serialport import PortGone, PtyPort, open_port

log = logging.getLogger(__name__)

START, VERSION, LENGTH, END = 0x7E, 0xFF, 0x06, 0xEF
PLAY, VOLUME, STOP, STATUS = 0x12, 0x06, 0x16, 0x42
ACK, ERROR, FINISHED = 0x41, 0x40, 0x3D
ERR_CHECKSUM, ERR_NOT_FOUND = 4, 6
CARD = 2
SLOW_START_S = 0.05  # real seconds
JUNK = b"\x00\xff\x7e\x13junk\x7e\xff\x06"  # noise, and start bytes that lead nowhere


def frame(command: int, param: int = 0, *, feedback: bool = False,
          bad_checksum: bool = False) -> bytes:
    """One frame on the wire."""
    body = bytes([VERSION, LENGTH, command, int(feedback), param >> 8 & 0xFF, param & 0xFF])
    check = -sum(body) & 0xFFFF
    if bad_checksum:
        check ^= 0x0101
    return bytes([START]) + body + check.to_bytes(2, "big") + bytes([END])


@dataclass
class Track:
    clip: str
    seconds: float


@dataclass
class DfPlayerSim:
    """The module behind the pty at ``path``; ``tracks`` is its card."""

    path: Path
    tracks: dict[int, Track]
    clock: SimClock
    journal: Journal = field(default_factory=lambda: Journal(None))
    faults: set[str] = field(default_factory=set)
    volume: int = 30
    playing: int | None = None  # the track, while it plays
    _ends_at: float = 0.0  # monotonic
    _starts_at: float = 0.0  # monotonic: the status says "playing" from then on
    _last_track: int = 0  # the track that ended last
    frames_in: int = 0
    bad_frames: int = 0
    opened: asyncio.Event = field(default_factory=asyncio.Event)  # the pty is open

    async def serve(self) -> None:
        """Serve the pty until cancelled; reopen it when it comes back after vanishing."""
        while True:
            port = await open_port(self.path)
            self.opened.set()
            try:
                await self._serve(port)
            except PortGone:
                log.info("dfplayer %s: port gone", self.path)
            finally:
                port.close()

    async def _serve(self, port: PtyPort) -> None:
        buffer = bytearray()
        while True:
            ends = self.playing is not None and "stuck" not in self.faults
            deadline = self._ends_at if ends else None
            chunk = await port.read(deadline)
            self._tick()
            if self.playing is None and deadline is not None and "silent" not in self.faults:
                await self._send(port, frame(FINISHED, self._last_track))
            if chunk is None:
                continue
            buffer += chunk[0]
            for request in self._frames(buffer):
                await self._answer(port, *request)

    def _tick(self) -> None:
        """End the playing track when its time has come (not when stuck)."""
        if self.playing is not None and "stuck" not in self.faults and \
                time.monotonic() >= self._ends_at:
            self._last_track, self.playing = self.playing, None

    def _frames(self, buffer: bytearray) -> list[tuple[int, int, bool, bool]]:
        """(command, param, feedback, checksum ok) of each complete frame in ``buffer``."""
        out = []
        while buffer:
            if buffer[0] != START:
                del buffer[0]
                continue
            if len(buffer) < 10:
                break
            raw = bytes(buffer[:10])
            if raw[1] != VERSION or raw[2] != LENGTH or raw[9] != END:
                del buffer[0]
                continue
            del buffer[:10]
            self.frames_in += 1
            ok = int.from_bytes(raw[7:9], "big") == -sum(raw[1:7]) & 0xFFFF
            out.append((raw[3], int.from_bytes(raw[5:7], "big"), bool(raw[4]), ok))
        return out

    async def _answer(self, port: PtyPort, command: int, param: int, feedback: bool,
                      ok: bool) -> None:
        if not ok:
            self.bad_frames += 1
            await self._send(port, frame(ERROR, ERR_CHECKSUM))
            return
        if command == PLAY:
            track = self.tracks.get(param)
            if track is None:
                await self._send(port, frame(ERROR, ERR_NOT_FOUND))
                return
            if "dead" in self.faults:
                if feedback:
                    await self._send(port, frame(ACK))
                return
            self.playing = param
            now = time.monotonic()
            self._starts_at = now + (SLOW_START_S if "slow_start" in self.faults else 0.0)
            self._ends_at = self._starts_at + track.seconds / self.clock.speed
            self.journal.append({"t_sim": self.clock.now().isoformat(),
                                 "t_real": time.monotonic(), "track": param,
                                 "clip": track.clip, "duration_s": track.seconds,
                                 "volume": self.volume, "player": str(self.path)})
            log.info("dfplayer %s: plays track %d (%s, %.1f s)", self.path, param, track.clip,
                     track.seconds)
        elif command == VOLUME:
            self.volume = min(param, 30)
        elif command == STOP:
            self.playing = None
        if feedback:
            await self._send(port, frame(ACK))
        if command == STATUS:
            busy = self.playing is not None and time.monotonic() >= self._starts_at
            await self._send(port, frame(STATUS, CARD << 8 | int(busy)))

    async def _send(self, port: PtyPort, data: bytes) -> None:
        if "silent" in self.faults:
            return
        if "wrong" in self.faults:
            data = frame(data[3], int.from_bytes(data[5:7], "big"), bad_checksum=True)
        if "junk" in self.faults:
            data = JUNK + data
        with contextlib.suppress(PortGone):
            await port.write(data)

