"""Serial buses: the hub machinery every serial hub shares (its settings: drivers.configs).

`SerialHub` owns one serial port (a USB RS-485 adapter, a UART, a pty in tests) and runs the
request/answer exchanges of every device on it, one at a time:

- before each request the line must have been silent for `inter_frame_s` (3.5 character
  times by default); whatever arrived in between is stale and is discarded;
- each exchange has a deadline: the wire time of the request and of the expected answer at
  the configured baud rate, plus `timeout_s` for the device to think;
- after a timeout, a garbled answer or a cancelled request, the input is flushed and the next
  request waits until the line is quiet again (after a cancellation: until the cancelled
  request's deadline has passed, so its late answer cannot be taken for the next one);
- a silent device is retried `retries` times; a busy device (Modbus exception 06) twice
  after a short pause; nothing else is retried;
- when the port fails (a read or write error: the adapter was pulled, the pty closed) or its
  path vanishes, the hub closes it and reopens the same path on a later request, with
  exponential backoff and jitter capped at `reconnect_max_s`. `/dev/serial/by-id/…` paths
  are opened as given, so the adapter is found again whatever ttyUSB number it gets.

The port is driven from the event loop (non-blocking file descriptor, `add_reader`); pyserial
only opens and configures it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self, TypeVar

import serial

from drivers.backoff import Backoff
from drivers.configs import SerialBusConfig
from drivers.errors import DeviceError, TransportError
from drivers.pdu import BUSY, BUSY_PAUSE_S, BUSY_RETRIES

log = logging.getLogger(__name__)

MAX_BUFFER = 65536  # bytes kept from the line; an answer is at most 256

T = TypeVar("T")


class PortLost(TransportError):
    """The open port failed (read or write error, end of file, path gone)."""


class SerialPort:
    """One open serial device: bytes in arrive in `buffer`, stamped with `last_rx`.

    Times are the event loop's clock (monotonic).
    """

    def __init__(self, config: SerialBusConfig) -> None:
        self.config = config
        self.path = config.port
        self.buffer = bytearray()
        self.last_rx = 0.0
        self.tx_end = 0.0  # when the last request has left the wire (estimated)
        self.quiet_from = 0.0  # silence is counted from here at the earliest
        self.lost: BaseException | None = None
        self._serial: serial.Serial | None = None
        self._fd = -1
        self._loop = asyncio.get_running_loop()
        self._waiter: asyncio.Future[None] | None = None

    def open(self) -> None:
        """Open and configure the port; raises OSError or serial.SerialException."""
        port = serial.Serial()
        port.port = self.path
        port.baudrate = self.config.baudrate
        port.bytesize = self.config.bytesize
        port.parity = self.config.parity
        port.stopbits = self.config.stopbits
        port.timeout = 0
        port.write_timeout = 0
        port.exclusive = True  # one gateway process per adapter
        port.open()
        self._serial = port
        self._fd = port.fileno()
        os.set_blocking(self._fd, False)
        self._loop.add_reader(self._fd, self._on_readable)

    def close(self) -> None:
        """Close the port (idempotent)."""
        if self._serial is None:
            return
        with contextlib.suppress(OSError, ValueError):
            self._loop.remove_reader(self._fd)
        with contextlib.suppress(OSError, ValueError):
            self._loop.remove_writer(self._fd)
        with contextlib.suppress(OSError, serial.SerialException):
            self._serial.close()
        self._serial = None
        if self.lost is None:
            self.lost = PortLost(f"port {self.path} closed")
        self._wake()

    def _lose(self, exc: BaseException) -> None:
        if self.lost is None:
            self.lost = exc
        with contextlib.suppress(OSError, ValueError):
            self._loop.remove_reader(self._fd)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # EIO: the pty's other side or the USB adapter is gone
            self._lose(exc)
            return
        if not data:
            self._lose(EOFError("end of file"))
            return
        self.buffer += data
        if len(self.buffer) > MAX_BUFFER:  # a chattering line while no one listens
            del self.buffer[:-MAX_BUFFER // 2]
        self.last_rx = self._loop.time()
        self._wake()

    def check(self) -> None:
        """Raise PortLost when the port has failed or its path has vanished."""
        if self.lost is None and not os.path.exists(self.path):
            self._lose(FileNotFoundError(f"{self.path} vanished"))
        if self.lost is not None:
            raise PortLost(f"port {self.path} lost: {self.lost}")

    async def wait_data(self, deadline: float) -> bool:
        """Wait for more bytes until `deadline` (loop time): False when none came in time."""
        self.check()
        if self._loop.time() >= deadline:
            return False
        self._waiter = self._loop.create_future()
        try:
            async with asyncio.timeout_at(deadline):
                await self._waiter
        except TimeoutError:
            return False
        finally:
            self._waiter = None
        self.check()
        return True

    async def write(self, data: bytes) -> None:
        """Write all of `data`; raises PortLost on failure, TransportError when stalled."""
        self.check()
        view = memoryview(data)
        try:
            async with asyncio.timeout(self.config.timeout_s + len(data) * self.config.char_s):
                while view:
                    try:
                        n = os.write(self._fd, view)
                    except (BlockingIOError, InterruptedError):
                        await self._writable()
                        continue
                    view = view[n:]
        except TimeoutError as exc:  # before OSError, of which it is a subclass
            raise TransportError(f"port {self.path}: write stalled") from exc
        except OSError as exc:
            self._lose(exc)
            raise PortLost(f"port {self.path}: write failed: {exc}") from exc
        self.tx_end = self._loop.time() + len(data) * self.config.char_s

    async def _writable(self) -> None:
        ready: asyncio.Future[None] = self._loop.create_future()

        def on_ready() -> None:
            if not ready.done():
                ready.set_result(None)

        self._loop.add_writer(self._fd, on_ready)
        try:
            await ready
        finally:
            self._loop.remove_writer(self._fd)

    def flush_input(self) -> None:
        """Drop everything received so far, in our buffer and in the driver's."""
        self.buffer.clear()
        if self._serial is not None:
            with contextlib.suppress(OSError, serial.SerialException):
                self._serial.reset_input_buffer()

    async def wait_quiet(self, silence_s: float, limit_s: float) -> None:
        """Wait until nothing has arrived for `silence_s`, discarding what does arrive.

        Raises TransportError when the line chatters for longer than `limit_s`.
        """
        give_up = self._loop.time() + limit_s
        while True:
            self.check()
            self.buffer.clear()
            quiet_at = max(self.last_rx + silence_s, self.tx_end + silence_s, self.quiet_from)
            now = self._loop.time()
            if now >= quiet_at:
                return
            if now >= give_up:
                raise TransportError(f"port {self.path}: the line is never quiet")
            await asyncio.sleep(min(quiet_at, give_up) - now)


class SerialHub:
    """The owner of one serial port: serialises exchanges, keeps the silence, reopens.

    Subclasses implement the protocol (`_exchange` functions passed to `_transact`). See the
    module docstring for the rules; the contract is drivers.base.Hub's.
    """

    def __init__(self, name: str, config: SerialBusConfig) -> None:
        self.name = name
        self.config = config
        self._port: SerialPort | None = None
        self._lock = asyncio.Lock()
        self._backoff = Backoff(config.reconnect_max_s)
        self._entered = False
        self._closed = False
        self._down = False  # the port is known to be unavailable (logged once)

    @property
    def connected(self) -> bool:
        """Whether the port is open and working."""
        return self._port is not None and self._port.lost is None

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError(f"bus {self.name} is already open")
        self._entered = True
        with contextlib.suppress(TransportError):
            self._open_port()  # an adapter missing at start is retried on demand
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closed = True
        self._drop()

    def _drop(self) -> None:
        if self._port is not None:
            self._port.close()
        self._port = None

    def _open_port(self) -> SerialPort:
        if self._closed or not self._entered:
            raise TransportError(f"bus {self.name} is closed")
        port = self._port
        if port is not None:
            try:
                port.check()
                return port
            except PortLost as exc:
                self._drop()
                self._went_down(str(exc))
        wait = self._backoff.remaining()
        if wait > 0:
            raise TransportError(f"bus {self.name}: port {self.config.port} unavailable, "
                                 f"next attempt in {wait:.1f} s")
        port = SerialPort(self.config)
        try:
            port.open()
        except (OSError, serial.SerialException) as exc:
            port.close()
            delay = self._backoff.failed()
            self._went_down(f"cannot open {self.config.port}: {exc}")
            raise TransportError(f"bus {self.name}: cannot open {self.config.port} "
                                 f"(next attempt in {delay:.1f} s): {exc}") from exc
        self._backoff.succeeded()
        if self._down:
            self._down = False
            log.info("bus=%s port=%s open again", self.name, self.config.port)
        self._port = port
        return port

    def _went_down(self, why: str) -> None:
        if not self._down:
            self._down = True
            log.warning("bus=%s port unavailable: %s", self.name, why)
        else:
            log.debug("bus=%s still unavailable: %s", self.name, why)

    async def _transact(self, what: str,
                        exchange: Callable[[SerialPort], Awaitable[T]]) -> T:
        """Run `exchange` on the port under the lock, with the retry rules of the bus."""
        async with self._lock:
            port = self._open_port()
            timeouts_left = self.config.retries
            busy_left = BUSY_RETRIES
            while True:
                try:
                    await port.wait_quiet(self.config.silence_s, self.config.timeout_s)
                    return await exchange(port)
                except PortLost as exc:
                    self._drop()
                    self._went_down(str(exc))
                    raise TransportError(f"bus {self.name} {what}: {exc}") from exc
                except TransportError as exc:  # timeout or garbled: the line is suspect
                    port.flush_input()
                    port.quiet_from = asyncio.get_running_loop().time() + self.config.silence_s
                    if timeouts_left > 0:
                        timeouts_left -= 1
                        log.debug("bus=%s %s: %s; retrying", self.name, what, exc)
                        continue
                    raise
                except DeviceError as exc:
                    if exc.code == BUSY and busy_left > 0:
                        busy_left -= 1
                        await asyncio.sleep(BUSY_PAUSE_S)
                        continue
                    raise

    def _after_cancel(self, port: SerialPort, deadline: float) -> None:
        """A cancelled exchange: its answer may still come until `deadline`; keep it off."""
        port.flush_input()
        port.quiet_from = max(port.quiet_from, deadline + self.config.silence_s)
