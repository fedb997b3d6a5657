"""The device side of a serial line: a pty (one end of a socat pair), and line-time emulation.

A pty moves bytes at memory speed; a real RS-485 line at 9600 baud moves about 960 characters a
second. :class:`LineTiming` says when a byte would really have arrived, and the buses hold every
reply back until then, so that a client sees the timing of a real bus.

:class:`PtyPort` reads with timestamps taken when the bytes arrive (in the event loop's reader
callback, not when a coroutine gets round to them), so the timing stays right while a bus task
is busy waiting to send. When the pty vanishes (socat killed: the USB adapter pulled out) reads
raise :class:`PortGone`; :func:`open_port` polls the path with a backoff until it comes back.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import logging
import os
import time
import tty
from dataclasses import dataclass
from pathlib import Path

from simulators.config import SerialSpec

log = logging.getLogger(__name__)

#: Above 19200 baud the Modbus serial line guide fixes the 3.5-character silence at 1.75 ms.
FIXED_SILENCE_ABOVE_BAUD = 19200
FIXED_SILENCE_S = 0.00175


@dataclass(frozen=True, slots=True)
class LineTiming:
    """Character and silence times of a serial line.

    ``char_s = bits_per_char / baudrate`` with ``bits_per_char = 1 start + bytesize +
    (1 if parity) + stopbits`` (10 at 8N1, 11 at 8E1 or 8N2); ``silence_s`` (t3.5) is
    ``3.5 × char_s`` up to 19200 baud and 1.75 ms above.
    """

    baudrate: int
    bits_per_char: float

    @classmethod
    def of(cls, serial: SerialSpec) -> LineTiming:
        """The timing of a configured serial bus."""
        return cls(serial.baudrate, serial.bits_per_char)

    @property
    def char_s(self) -> float:
        """Seconds one character takes on the wire."""
        return self.bits_per_char / self.baudrate

    @property
    def silence_s(self) -> float:
        """The inter-frame silence t3.5."""
        if self.baudrate > FIXED_SILENCE_ABOVE_BAUD:
            return FIXED_SILENCE_S
        return 3.5 * self.char_s

    def wire_s(self, n_bytes: int) -> float:
        """Seconds ``n_bytes`` take on the wire."""
        return n_bytes * self.char_s

    def transaction_s(self, request_bytes: int, reply_bytes: int) -> float:
        """Wire time of one request/reply exchange, silences included.

        ``(request + reply) × char_s + 2 × silence_s``: the request, the silence that ends it,
        the reply, and the silence after the reply before the master may send again.
        """
        return self.wire_s(request_bytes + reply_bytes) + 2 * self.silence_s


class PortGone(Exception):
    """The pty vanished (its socat ended): close it and wait for the path to come back."""


class PtyPort:
    """One opened pty (raw mode, non-blocking) with timestamped reads.

    Use from the event loop's thread only. ``close()`` is idempotent.
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd
        self._chunks: collections.deque[tuple[bytes, float]] = collections.deque()
        self._gone = False
        self._ready = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(fd, self._on_readable)

    @classmethod
    def open(cls, path: Path) -> PtyPort:
        """Open ``path`` (raises ``OSError`` if it is not there, or is not a terminal)."""
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            tty.setraw(fd)  # no echo, no line editing, no CR/LF translation
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd)

    @property
    def closed(self) -> bool:
        """True once closed or gone."""
        return self._fd is None or self._gone

    def _on_readable(self) -> None:
        fd = self._fd
        if fd is None:
            return
        now = time.monotonic()
        try:
            while True:
                data = os.read(fd, 4096)
                if not data:  # the other end of the pty was closed for good
                    self._vanish()
                    break
                self._chunks.append((data, now))
        except BlockingIOError:
            pass
        except OSError as exc:
            if exc.errno not in (errno.EIO, errno.EBADF, errno.ENXIO):
                log.debug("%s: read failed: %s", self.path, exc)
            self._vanish()
        self._ready.set()

    def _vanish(self) -> None:
        self._gone = True
        if self._fd is not None:
            self._loop.remove_reader(self._fd)

    async def read(self, deadline: float | None = None) -> tuple[bytes, float] | None:
        """The next chunk of bytes and the monotonic time it arrived.

        ``None`` when ``deadline`` (monotonic seconds) passes first; :class:`PortGone` once
        the pty has vanished (after the bytes that arrived before).
        """
        while True:
            if self._chunks:
                return self._chunks.popleft()
            if self.closed:
                raise PortGone(str(self.path))
            self._ready.clear()
            if deadline is None:
                await self._ready.wait()
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                async with asyncio.timeout(remaining):
                    await self._ready.wait()
            except TimeoutError:
                if not self._chunks:
                    return None

    def pending(self) -> bool:
        """True when chunks are waiting to be read."""
        return bool(self._chunks)

    async def write(self, data: bytes) -> None:
        """Write all of ``data``; raise :class:`PortGone` if the pty has vanished."""
        view = memoryview(data)
        while view:
            fd = self._fd
            if fd is None or self._gone:
                raise PortGone(str(self.path))
            try:
                written = os.write(fd, view)
            except BlockingIOError:
                await self._writable(fd)
                continue
            except OSError as exc:
                self._vanish()
                raise PortGone(f"{self.path}: {exc}") from exc
            view = view[written:]

    async def _writable(self, fd: int) -> None:
        waiter: asyncio.Future[None] = self._loop.create_future()

        def ready() -> None:
            if not waiter.done():
                waiter.set_result(None)

        self._loop.add_writer(fd, ready)
        try:
            await waiter
        finally:
            self._loop.remove_writer(fd)

    def close(self) -> None:
        """Stop reading and close the file descriptor."""
        fd, self._fd = self._fd, None
        if fd is not None:
            if not self._gone:
                self._loop.remove_reader(fd)
            os.close(fd)
        self._gone = True
        self._ready.set()


#: Backoff while waiting for a vanished pty to come back: first and longest pause.
REOPEN_FIRST_S = 0.01
REOPEN_MAX_S = 0.2


async def open_port(path: Path) -> PtyPort:
    """Open ``path``, polling with a backoff (10 ms doubling to 200 ms) until it exists."""
    pause = REOPEN_FIRST_S
    while True:
        try:
            return PtyPort.open(path)
        except OSError as exc:
            log.debug("%s: not there yet: %s", path, exc)
        await asyncio.sleep(pause)
        pause = min(pause * 2, REOPEN_MAX_S)


async def sleep_until(moment: float) -> None:
    """Sleep until the monotonic clock reads ``moment`` (at once if it has passed)."""
    remaining = moment - time.monotonic()
    if remaining > 0:
        await asyncio.sleep(remaining)
