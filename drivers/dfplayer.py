"""A serial MP3 module (DFPlayer-style) as an announcement player.

Outdoor stations often drive the loudspeaker amplifier from a small MP3 module on a UART
(9600 Bd 8N1) instead of a sound card: it plays numbered tracks from its own card. Every frame,
both ways, is 10 bytes::

    7E FF 06 CMD FB P1 P2 CKH CKL EF

`FF` the version, `06` the length (version to P2), `FB` 1 to ask for an acknowledgement, P1 P2
the parameter (big-endian), CKH CKL the checksum: the two's complement of the 16-bit sum of the
six bytes from version to P2. Commands used here: 0x12 play track P of the card's `mp3`
folder (`/mp3/0005.mp3`, or `/mp3/0005_overflow_ja.mp3`: by its number, not by the order the
files were copied, which is what 0x03 would play), 0x06 volume P (0-30), 0x16 stop, 0x42
status query. The module answers 0x41 (acknowledged), 0x40 (error, P2 a code),
0x42 (status: P1 the medium, P2 0 stopped, 1 playing, 2 paused), and on its own 0x3D when a
track ends on the card (P the track), 0x3F after a reset.

`DfPlayer.play`: volume (first time only), play the clip's track, acknowledged; a status
query must say "playing" (the module's busy state), then status every `poll_s` until it says
stopped (or 0x3D names the track) within `play_timeout_s`. Every command waits at most
`timeout_s` for its answer. A module that is silent, answers an error or something else, or
stays busy too long is an `AudioFault` with a name (a command without an answer is sent
again `retries` times first) (the zone goes on: the siren sounds
anyway); bytes that are not a valid frame (bad checksum, line noise) are skipped and counted.
The port is the serial hubs' (`SerialPort`: non-blocking, reopened after a failure).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import serial

from drivers.configs import DfPlayerConfig
from drivers.errors import AudioFault, TransportError
from drivers.serialport import SerialPort

log = logging.getLogger(__name__)

START, VERSION, LENGTH, END = 0x7E, 0xFF, 0x06, 0xEF
FRAME_BYTES = 10
PLAY, VOLUME, STOP, STATUS = 0x12, 0x06, 0x16, 0x42
ACK, ERROR, FINISHED_SD, FINISHED_USB, RESET = 0x41, 0x40, 0x3D, 0x3C, 0x3F
STOPPED, PLAYING, PAUSED = 0, 1, 2
ERRORS = {1: "busy (the card is initialising)", 2: "sleeping", 3: "serial frame incomplete",
          4: "checksum error", 5: "track out of range", 6: "track not found",
          7: "insertion error", 8: "card read failure", 10: "entered sleep"}


@dataclass(frozen=True)
class Frame:
    """One frame of the module's protocol."""

    command: int
    param: int = 0
    feedback: bool = False

    def encode(self) -> bytes:
        """The 10 bytes on the wire."""
        body = bytes([VERSION, LENGTH, self.command, int(self.feedback),
                      self.param >> 8 & 0xFF, self.param & 0xFF])
        return bytes([START]) + body + checksum(body).to_bytes(2, "big") + bytes([END])


def checksum(body: bytes) -> int:
    """Two's complement of the 16-bit sum of version … P2."""
    return -sum(body) & 0xFFFF


def decode(buffer: bytearray) -> tuple[list[Frame], int]:
    """Take every complete valid frame out of `buffer`: (frames, junk bytes skipped).

    Bytes before a start byte, and a start byte whose frame is malformed or fails its
    checksum, are junk: skipped one at a time, so that a frame behind line noise is found.
    An incomplete frame at the end stays in `buffer` for the next read.
    """
    frames: list[Frame] = []
    junk = 0
    while buffer:
        if buffer[0] != START:
            del buffer[0]
            junk += 1
            continue
        if len(buffer) < FRAME_BYTES:
            break
        raw = bytes(buffer[:FRAME_BYTES])
        body = raw[1:7]
        if raw[1] != VERSION or raw[2] != LENGTH or raw[9] != END or \
                int.from_bytes(raw[7:9], "big") != checksum(body):
            del buffer[0]
            junk += 1
            continue
        del buffer[:FRAME_BYTES]
        frames.append(Frame(raw[3], int.from_bytes(raw[5:7], "big"), bool(raw[4])))
    return frames, junk


class DfPlayer:
    """The module on one UART. Calls do not overlap (one zone, one clip at a time).

    Contract as `Player`: `play` returns when the track has ended, raises AudioFault when it
    could not be played; cancelling `play` sends stop; `close` closes the port.
    """

    def __init__(self, config: DfPlayerConfig) -> None:
        self.config = config
        self._port: SerialPort | None = None
        self._volume_set = False
        self.junk_bytes = 0  # bytes skipped that were not a valid frame (status, tests)
        self._finished: set[int] = set()  # tracks the module said it finished (0x3D)

    async def play(self, zone: str, clip_id: str, path: Path) -> None:
        track = self.config.tracks.get(clip_id)
        if track is None:
            raise AudioFault(f"clip {clip_id}: no track number for it on module "
                             f"{self.config.port} (players.*.tracks)")
        try:
            await self._play(clip_id, track)
        except asyncio.CancelledError:
            await asyncio.shield(self._stop_quietly())
            raise
        except TransportError as exc:
            self._drop()
            raise AudioFault(f"clip {clip_id}: module {self.config.port}: {exc}") from exc

    async def _play(self, clip_id: str, track: int) -> None:
        port = self._open()
        port.flush_input()
        if not self._volume_set:
            await self._ask(clip_id, Frame(VOLUME, self.config.volume, True), ACK)
            self._volume_set = True
        self._finished.clear()  # an old 0x3D must not end this track, nor spin the wait
        await self._ask(clip_id, Frame(PLAY, track, True), ACK)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.play_timeout_s
        await self._started(clip_id, track)
        while track not in self._finished:
            if loop.time() >= deadline:
                await self._stop_quietly()
                raise AudioFault(f"clip {clip_id}: module {self.config.port} still busy with "
                                 f"track {track} after {self.config.play_timeout_s:g} s: "
                                 f"stopped")
            await self._collect(min(loop.time() + self.config.poll_s, deadline))
            if track in self._finished:
                break
            answer = await self._ask(clip_id, Frame(STATUS), STATUS)
            if answer.param & 0xFF == STOPPED:
                break

    async def _started(self, clip_id: str, track: int) -> None:
        """The module reports itself busy with the track within `timeout_s` of its
        acknowledgement (a module takes some milliseconds to open the file)."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.config.timeout_s
        while True:
            answer = await self._ask(clip_id, Frame(STATUS), STATUS)
            if answer.param & 0xFF == PLAYING or track in self._finished:
                return
            if loop.time() >= give_up:
                raise AudioFault(f"clip {clip_id}: module {self.config.port} acknowledged "
                                 f"track {track} but is not playing (status "
                                 f"{answer.param:#06x})")
            await self._collect(min(loop.time() + self.config.poll_s / 4, give_up))

    def _open(self) -> SerialPort:
        if self._port is not None and self._port.lost is None:
            return self._port
        self._drop()
        port = SerialPort(self.config)
        try:
            port.open()
        except (OSError, serial.SerialException) as exc:
            raise AudioFault(f"module {self.config.port}: cannot open: {exc}") from exc
        self._port = port
        self._volume_set = False  # a replugged module has forgotten it
        return port

    def _drop(self) -> None:
        if self._port is not None:
            self._port.close()
            self._port = None

    async def _ask(self, clip_id: str, frame: Frame, want: int) -> Frame:
        """Send `frame`; the first answer with command `want` within `timeout_s`, the frame
        sent again `retries` times when none comes (a module may miss a frame)."""
        for attempt in range(self.config.retries + 1):
            answer = await self._exchange(clip_id, frame, want, last=attempt ==
                                          self.config.retries)
            if answer is not None:
                return answer
        raise AssertionError("unreachable: the last attempt raises")  # pragma: no cover

    async def _exchange(self, clip_id: str, frame: Frame, want: int, *,
                        last: bool) -> Frame | None:
        port = self._open()
        await port.write(frame.encode())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.timeout_s + FRAME_BYTES * 2 * self.config.char_s
        others: list[str] = []
        while True:
            for got in self._take(port):
                if got.command == want:
                    return got
                if got.command == ERROR:
                    why = ERRORS.get(got.param & 0xFF, f"code {got.param:#x}")
                    raise AudioFault(f"clip {clip_id}: module {self.config.port} answered "
                                     f"{frame.command:#04x} with error: {why}")
                others.append(f"{got.command:#04x}")
            if not await port.wait_data(deadline):
                if not last:
                    return None
                said = f" (only {', '.join(others)})" if others else ""
                junk = f", {self.junk_bytes} junk bytes so far" if self.junk_bytes else ""
                tries = self.config.retries + 1
                raise AudioFault(f"clip {clip_id}: module {self.config.port} gave no answer "
                                 f"to {frame.command:#04x} within {self.config.timeout_s:g} s"
                                 f"{f' ({tries} attempts)' if tries > 1 else ''}{said}{junk}")

    def _take(self, port: SerialPort) -> list[Frame]:
        """Decode what has arrived; note finished tracks; return the frames for a caller."""
        frames, junk = decode(port.buffer)
        if junk:
            self.junk_bytes += junk
            log.debug("module %s: %d junk bytes skipped", self.config.port, junk)
        out = []
        for frame in frames:
            if frame.command in (FINISHED_SD, FINISHED_USB):
                self._finished.add(frame.param)
            elif frame.command == RESET:
                self._volume_set = False
            else:
                out.append(frame)
        return out

    async def _collect(self, until: float) -> None:
        """Read what comes until `until` (loop time): a 0x3D may end the wait early."""
        port = self._open()
        while await port.wait_data(until):
            self._take(port)
            if self._finished:
                return

    async def _stop_quietly(self) -> None:
        """Stop the module; best effort (a cancel or a fault is already on its way)."""
        port = self._port
        if port is None or port.lost is not None:
            return
        with contextlib.suppress(TransportError, AudioFault, TimeoutError):
            async with asyncio.timeout(self.config.timeout_s):
                await port.write(Frame(STOP, 0, True).encode())

    async def close(self) -> None:
        self._drop()
