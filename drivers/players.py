"""Announcement players: how a clip reaches the loudspeakers of a zone.

Three backends, chosen by `kind` in `make_player`:
- `aplay`: ALSA's aplay as a subprocess with an argument list (never a shell string);
- `sink`: the bundled audio sink simulator over TCP, for the demo and tests. Line protocol:
  the player sends `PLAY <zone> <clip_id> <path>\\n`, the sink answers `DONE\\n` when the
  clip has finished or `ERR <reason>\\n`;
- `dfplayer`: a serial MP3 module playing numbered tracks from its card (drivers/dfplayer.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Protocol

from drivers.configs import AplayConfig, DfPlayerConfig, SinkConfig
from drivers.dfplayer import DfPlayer
from drivers.errors import AudioFault


class Player(Protocol):
    """Plays one clip at a time.

    Contract: `play` returns when the clip has finished and raises AudioFault when it could
    not be played. Callers do not overlap calls on one player. Cancelling `play` stops the
    clip. `close` releases the device; no call follows it.
    """

    async def play(self, zone: str, clip_id: str, path: Path) -> None: ...

    async def close(self) -> None: ...


class AplayPlayer:
    """`aplay -q -D <device> <file>` as a subprocess."""

    def __init__(self, config: AplayConfig) -> None:
        self.config = config

    async def play(self, zone: str, clip_id: str, path: Path) -> None:
        if not path.is_file():  # noqa: ASYNC240 - one stat, cheaper than a thread hop
            raise AudioFault(f"clip {clip_id}: no file {path}")
        try:
            proc = await asyncio.create_subprocess_exec(
                self.config.command, "-q", "-D", self.config.device, str(path),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise AudioFault(f"clip {clip_id}: cannot run {self.config.command}: {exc}") from exc
        try:
            async with asyncio.timeout(self.config.timeout_s):
                _, err = await proc.communicate()
        except (asyncio.CancelledError, TimeoutError) as exc:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            if isinstance(exc, TimeoutError):
                raise AudioFault(f"clip {clip_id}: {self.config.command} still playing after "
                                 f"{self.config.timeout_s:g} s: killed") from exc
            raise
        if proc.returncode != 0:
            # ALSA's lines, joined: a fault is one line in the log, on MQTT and on /status
            said = " | ".join(line.strip() for line in err.decode(errors="replace").splitlines()
                              if line.strip())
            raise AudioFault(f"clip {clip_id}: {self.config.command} exited "
                             f"{proc.returncode}: {said}")

    async def close(self) -> None:
        return None


class SinkPlayer:
    """Speaks the audio sink's line protocol; one connection, reopened when lost."""

    def __init__(self, config: SinkConfig) -> None:
        self.config = config
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def play(self, zone: str, clip_id: str, path: Path) -> None:
        try:
            if self._conn is None or self._conn[1].is_closing():
                async with asyncio.timeout(5.0):  # not wait_for: see gauged/uplinks/influx.py, run
                    self._conn = await asyncio.open_connection(self.config.host,
                                                               self.config.port)
            reader, writer = self._conn
            writer.write(f"PLAY {zone} {clip_id} {path}\n".encode())
            await writer.drain()
            async with asyncio.timeout(self.config.timeout_s):
                line = await reader.readline()
        except asyncio.CancelledError:
            await self.close()  # the sink would otherwise finish the clip: drop the line
            raise
        except (OSError, TimeoutError) as exc:
            await self.close()
            raise AudioFault(f"clip {clip_id}: sink {self.config.host}:{self.config.port}: "
                             f"{exc!r}") from exc
        answer = line.decode(errors="replace").strip()
        if answer != "DONE":
            if not answer:
                await self.close()
            raise AudioFault(f"clip {clip_id}: sink answered {answer or 'nothing'!r}")

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn[1].close()
            with contextlib.suppress(OSError):
                await conn[1].wait_closed()


def make_player(config: AplayConfig | SinkConfig | DfPlayerConfig) -> Player:
    """Build the player a config names: the one table of player backends (STYLE 4)."""
    if isinstance(config, AplayConfig):
        return AplayPlayer(config)
    if isinstance(config, DfPlayerConfig):
        return DfPlayer(config)
    return SinkPlayer(config)
