"""The audio sink: a stand-in for a loudspeaker amplifier that records what it was asked to play.

Line protocol (UTF-8, one request at a time per connection, many connections allowed)::

    client → sink   PLAY <zone> <clip_id> <path>\\n
    sink → client   DONE\\n            after the clip's duration has passed on the simulated clock
                    ERR <reason>\\n    the request is malformed or <path> is not a readable WAV;
                                      nothing is recorded

``<path>`` is the rest of the line (it may contain spaces); a relative path is resolved against
the folder of the configuration file, like the ``clips`` entries of the configuration.

What it got is recorded (journal and log): zone, clip, duration and the SHA-256 of the PCM
frames it would have sounded, so that a test can tell which recording the public heard.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import wave
from pathlib import Path

from simulators.clock import SimClock
from simulators.config import PlayerSpec
from simulators.errors import SimulatorError
from simulators.journal import Journal

log = logging.getLogger(__name__)

#: Longest request line accepted; a longer one is answered with ERR and the connection closed.
MAX_LINE = 4096


def clip_duration(path: Path) -> float:
    """Duration in seconds of the WAV file at ``path``; raise ``ValueError`` if unplayable."""
    return read_clip(path)[0]


def read_clip(path: Path) -> tuple[float, str]:
    """Duration in seconds and SHA-256 of the PCM frames of the WAV file at ``path`` (what a
    loudspeaker would have sounded); raise ``ValueError`` if unplayable."""
    try:
        with wave.open(str(path), "rb") as clip:
            frames, rate = clip.getnframes(), clip.getframerate()
            pcm = clip.readframes(frames)
    except (OSError, EOFError, wave.Error) as exc:
        raise ValueError(f"cannot read {path} as WAV: {exc}") from exc
    if rate <= 0:
        raise ValueError(f"{path}: WAV header has frame rate {rate}")
    return frames / rate, hashlib.sha256(pcm).hexdigest()


class AudioSink:
    """One sink player: a TCP server speaking the line protocol above.

    Connections are served by tasks created in the owner's ``TaskGroup`` (named
    ``simulators[player:<name>].client-<n>``); :meth:`close` stops listening and cancels them.
    """

    def __init__(
        self,
        player: PlayerSpec,
        base_dir: Path,
        clock: SimClock,
        journal: Journal,
        task_group: asyncio.TaskGroup,
    ) -> None:
        self.player = player
        self._base_dir = base_dir
        self._clock = clock
        self._journal = journal
        self._task_group = task_group
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self._connections = 0

    async def start(self) -> None:
        """Bind the listening socket (raise :class:`SimulatorError` if the port is taken)."""
        try:
            self._server = await asyncio.start_server(
                self._on_connect, self.player.host, self.player.port, limit=MAX_LINE
            )
        except OSError as exc:
            raise SimulatorError(
                f"players.{self.player.name}: cannot listen on "
                f"{self.player.host}:{self.player.port}: {exc}"
            ) from exc

    async def close(self) -> None:
        """Stop listening and end every connection (a clip being played is cut short)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._clients):
            task.cancel()

    def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain callback, so that the connection task is created in our TaskGroup with a name
        # instead of anonymously by asyncio.start_server.
        self._connections += 1
        task = self._task_group.create_task(
            self._serve(reader, writer),
            name=f"simulators[player:{self.player.name}].client-{self._connections}",
        )
        self._clients.add(task)
        task.add_done_callback(self._clients.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        log.debug("player %s: connection from %s", self.player.name, peer)
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:  # longer than MAX_LINE: we lost the framing
                    writer.write(b"ERR request line too long\n")
                    await writer.drain()
                    return
                if not line.endswith(b"\n"):
                    return  # end of stream (a partial last line is not a request)
                reply = await self._handle(line)
                writer.write(reply.encode("utf-8") + b"\n")
                await writer.drain()
        except ConnectionError as exc:
            log.debug("player %s: connection from %s lost: %s", self.player.name, peer, exc)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _handle(self, line: bytes) -> str:
        try:
            text = line.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            return "ERR request is not UTF-8"
        parts = text.split(" ", 3)
        if len(parts) != 4 or parts[0] != "PLAY" or not all(parts[1:]):
            return "ERR malformed request: expected PLAY <zone> <clip_id> <path>"
        _verb, zone, clip, raw_path = parts
        path = Path(raw_path)
        if not path.is_absolute():
            path = self._base_dir / path
        try:
            duration, digest = read_clip(path)
        except ValueError as exc:
            log.warning("player %s: zone %s clip %s refused: %s", self.player.name, zone, clip, exc)
            return "ERR " + " ".join(str(exc).split())  # one line, whatever the OS said
        if self.player.zones and zone not in self.player.zones:
            # Still played: the sink is a recorder, and the test reading the record decides.
            log.warning("player %s: zone %s is not one of its zones", self.player.name, zone)
        now = self._clock.now()
        self._journal.append(
            {
                "t_sim": now.isoformat(),
                "t_real": time.monotonic(),
                "zone": zone,
                "clip": clip,
                "duration_s": duration,
                "player": self.player.name,
                "path": str(path),
                "pcm_sha256": digest,
            }
        )
        log.info(
            "player %s: zone %s plays clip %s (%.2f s, pcm sha256 %s) at %s",
            self.player.name,
            zone,
            clip,
            duration,
            digest,
            now.isoformat(timespec="seconds"),
        )
        await self._clock.sleep(duration)
        return "DONE"
