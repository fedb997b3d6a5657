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

Served by the fleet (:mod:`simulators.fleet`) for each ``dfplayer`` player whose device-side
path is given, the knobs are set like any device's (``Fleet.set_fault(player)``, the control
channel, the faults file): the names above, or the fleet's own where they mean the same
(``no_answer`` = ``silent``, ``bad_checksum`` = ``wrong``, ``junk``, ``stuck``); each is on or off.
The faults file knows only the fleet's names.

The module shares no code with gauged/ and drivers/ (DESIGN §3): the protocol is written out
again here, as the other side of a wire would be.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from simulators.clock import SimClock
from simulators.config import FleetConfig
from simulators.errors import FaultError, SimulatorError
from simulators.journal import Journal
from simulators.serialport import PortGone, PtyPort, open_port
from simulators.sink import clip_duration

log = logging.getLogger(__name__)

START, VERSION, LENGTH, END = 0x7E, 0xFF, 0x06, 0xEF
PLAY, VOLUME, STOP, STATUS = 0x12, 0x06, 0x16, 0x42
ACK, ERROR, FINISHED = 0x41, 0x40, 0x3D
ERR_CHECKSUM, ERR_NOT_FOUND = 4, 6
CARD = 2
SLOW_START_S = 0.05  # real seconds
#: The module's fault knobs, and the fleet's names for some of them.
KNOBS = frozenset({"silent", "wrong", "junk", "stuck", "slow_start", "dead"})
ALIASES = {"no_answer": "silent", "bad_checksum": "wrong"}
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
    name: str = ""  # the player's name in the config (journalled; the path without one)
    zone: str = ""  # the zone it plays for (journalled)
    counts: Counter[str] = field(default_factory=Counter)  # faults injected, per knob
    _port: PtyPort | None = None  # opened by start(), served first by serve()

    def start(self) -> None:
        """Open the pty now, or raise :class:`SimulatorError` (a fleet starting up)."""
        try:
            self._port = PtyPort.open(self.path)
        except OSError as exc:
            raise SimulatorError(
                f"players.{self.name}: cannot open the device side {self.path}: {exc}"
            ) from exc
        self.opened.set()

    def close(self) -> None:
        """Close a pty opened by :meth:`start` that :meth:`serve` never took."""
        port, self._port = self._port, None
        if port is not None:
            port.close()

    def set_knobs(self, knobs: Mapping[str, object]) -> None:
        """Turn knobs on (``True``, 1) or off (``False``, 0, ``None``); all are checked first.

        Raises :class:`FaultError` naming the knob for an unknown one or another value.
        """
        changes: dict[str, bool] = {}
        for given, value in knobs.items():
            knob = ALIASES.get(given, given)
            if knob not in KNOBS:
                known = ", ".join(sorted(KNOBS | ALIASES.keys()))
                raise FaultError(f"players.{self.name}: unknown knob {given!r} of a dfplayer "
                                 f"module (known: {known})")
            if value is None or (not isinstance(value, str) and value in (0, 1)):
                changes[knob] = bool(value)
            else:
                raise FaultError(f"players.{self.name}: knob {given!r} of a dfplayer module is "
                                 f"on or off (true, false, 1, 0), got {value!r}")
        for knob, on in changes.items():
            if on:
                self.faults.add(knob)
            else:
                self.faults.discard(knob)

    def snapshot(self) -> dict[str, object]:
        """Knobs, frames received and faults injected, JSON-ready (the fleet's ``stats``)."""
        return {"bus": self.name, "unit": 0, "knobs": dict.fromkeys(sorted(self.faults), True),
                "requests": self.frames_in, "faults": dict(sorted(self.counts.items()))}

    async def serve(self) -> None:
        """Serve the pty until cancelled; reopen it when it comes back after vanishing."""
        while True:
            port, self._port = self._port, None
            if port is None:
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
                self.counts["dead"] += 1
                if feedback:
                    await self._send(port, frame(ACK))
                return
            self.playing = param
            self.counts.update(k for k in ("stuck", "slow_start") if k in self.faults)
            now = time.monotonic()
            self._starts_at = now + (SLOW_START_S if "slow_start" in self.faults else 0.0)
            self._ends_at = self._starts_at + track.seconds / self.clock.speed
            self.journal.append({"t_sim": self.clock.now().isoformat(),
                                 "t_real": time.monotonic(), "zone": self.zone,
                                 "track": param, "clip": track.clip,
                                 "duration_s": track.seconds, "volume": self.volume,
                                 "player": self.name or str(self.path),
                                 "path": str(self.path)})
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
            self.counts["silent"] += 1
            return
        if "wrong" in self.faults:
            self.counts["wrong"] += 1
            data = frame(data[3], int.from_bytes(data[5:7], "big"), bad_checksum=True)
        if "junk" in self.faults:
            self.counts["junk"] += 1
            data = JUNK + data
        with contextlib.suppress(PortGone):
            await port.write(data)



def build_modules(config: FleetConfig, paths: Mapping[str, Path], clock: SimClock,
                  journal: Journal, notes: list[str]) -> dict[str, DfPlayerSim]:
    """A module for each ``dfplayer`` player of ``config`` with a device-side path in
    ``paths``, its card holding the clips its ``tracks`` name; what is left out goes to
    ``notes``."""
    modules: dict[str, DfPlayerSim] = {}
    for name, spec in sorted(config.modules.items()):
        path = paths.get(name)
        if path is None:
            notes.append(f"players.{name}: no device-side path given (--serial {name}=PATH)")
            continue
        card: dict[int, Track] = {}
        for number, clip in sorted(spec.tracks.items()):
            file = spec.clip_files.get(clip)
            try:
                if file is None:
                    raise ValueError(f"no clips.{clip}.file")
                card[number] = Track(clip, clip_duration(file))
            except ValueError as exc:  # the card lacks it: the module answers "not found"
                notes.append(f"players.{name}.tracks.{clip}: not on the simulated card: {exc}")
        modules[name] = DfPlayerSim(path, card, clock, journal, name=name,
                                    zone=",".join(spec.zones))
    return modules
