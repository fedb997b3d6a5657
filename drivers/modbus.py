"""Modbus gauges, and the Modbus TCP hub (one per gateway or TCP device).

A hub owns the connection to one TCP endpoint and serialises the requests of every unit id
behind it (STYLE 7): stations never touch the client. Transport failures (timeout, refused,
closed, gateway 0A/0B) raise TransportError (DeviceTimeout when the device stayed silent); a
Modbus exception answer raises DeviceError with its code. Only "busy" (06) is retried, twice
after a short pause; a silent device is retried `retries` times (default 0 on TCP).

The TCP hub uses pymodbus's client (pinned: see pyproject.toml) and does not trust it blindly:

- an answer must carry the transaction id, unit id and function code of its request
  (pymodbus 3.16.1 accepts an answer with transaction id 0, or with another function code,
  for any request); one that does not is refused and the connection is dropped;
- a timed-out or cancelled request drops the connection: its late answer could otherwise be
  half-read into the next exchange; the next request reconnects at once;
- cancellation propagates as CancelledError (pymodbus has been known to turn it into
  ModbusIOException, and Python 3.11's wait_for can swallow it: both are checked);
- a lost connection is reopened on demand with exponential backoff and jitter, capped at
  `reconnect_max_s`, one attempt at a time (MB-4); between attempts calls fail fast.

The RTU hub (drivers.rtu) offers the same operations; ModbusGauge works with either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from types import TracebackType
from typing import Any, Protocol, Self

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from drivers.backoff import Backoff
from drivers.base import Hub, RawReading
from drivers.configs import BIT_KINDS, ModbusTcpBusConfig, RegisterSpec, StatusSpec
from drivers.errors import DeviceError, DeviceTimeout, TransportError
from drivers.pdu import (
    BUSY,
    BUSY_PAUSE_S,
    BUSY_RETRIES,
    READ_FUNCTION,
    WRITE_COIL,
    exception_error,
)
from drivers.registers import decode_raw, decode_status, merged_read

log = logging.getLogger(__name__)

ILLEGAL_ADDRESS = 0x02


class ModbusHub(Hub, Protocol):
    """The operations every Modbus hub (TCP, RTU) offers; see drivers.base.Hub."""

    async def read_registers(self, unit: int, kind: str, address: int,
                             count: int) -> list[int]: ...

    async def read_bits(self, unit: int, kind: str, address: int, count: int) -> list[int]: ...

    async def read_coils(self, unit: int, address: int, count: int = 1) -> list[bool]: ...

    async def write_coil(self, unit: int, address: int, value: bool) -> None: ...


class ModbusTcpHub:
    """The single owner of one Modbus TCP connection.

    Contract (drivers.base.Hub): calls may overlap; they are queued on a lock and run one at
    a time. A call made while disconnected connects first, at most once per backoff interval
    (exponential with jitter, capped at `reconnect_max_s`); in between it fails fast with
    TransportError. The connection is made by the first request, not by `__aenter__`, so a
    gateway that is down at start does not delay the daemon. After `__aexit__` every call
    raises TransportError.

    `connect_attempts` counts the connections tried (for /status and tests).
    """

    def __init__(self, name: str, config: ModbusTcpBusConfig) -> None:
        self.name = name
        self.config = config
        self._client: AsyncModbusTcpClient | None = None
        self._lock = asyncio.Lock()
        self._backoff = Backoff(config.reconnect_max_s)
        self._entered = False
        self._closed = False
        self._down = False
        self._proven = False  # the current connection has carried an answer
        self._last_done = 0.0  # loop time of the end of the last exchange
        self.connect_attempts = 0
        # monotonic start times of the recent attempts (for /status and MB-4's test)
        self.attempt_times: deque[float] = deque(maxlen=64)

    @property
    def connected(self) -> bool:
        """Whether the connection is open."""
        return self._client is not None and bool(self._client.connected)

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError(f"hub {self.name} is already open")
        self._entered = True
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closed = True
        self._drop()

    def _drop(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):  # closing a broken pymodbus client may raise
                self._client.close()
        self._client = None

    def _went_down(self, why: str) -> None:
        if not self._down:
            self._down = True
            log.warning("bus=%s host=%s port=%d unreachable: %s", self.name,
                        self.config.host, self.config.port, why)

    async def _ensure_connected(self) -> AsyncModbusTcpClient:
        if self._closed or not self._entered:
            raise TransportError(f"bus {self.name} is closed")
        if self._client is not None:
            if self._client.connected:
                return self._client
            self._lost("connection closed by the other side")
        wait = self._backoff.remaining()
        if wait > 0:
            raise TransportError(f"bus {self.name}: disconnected, next attempt in {wait:.1f} s")
        client = AsyncModbusTcpClient(
            self.config.host, port=self.config.port, timeout=self.config.timeout_s,
            retries=0, reconnect_delay=0, reconnect_delay_max=0,
        )
        self.connect_attempts += 1
        self.attempt_times.append(time.monotonic())
        try:
            ok = await client.connect()
        except asyncio.CancelledError:
            client.close()
            raise
        except (OSError, ModbusException) as exc:
            ok = False
            log.debug("bus=%s connect error: %s", self.name, exc)
        if not ok:
            client.close()
            delay = self._backoff.failed()
            self._went_down("connection refused or timed out")
            raise TransportError(f"bus {self.name}: cannot connect to {self.config.host}:"
                                 f"{self.config.port} (next attempt in {delay:.1f} s)")
        # The backoff is reset by the first answer, not by the TCP handshake: a gateway whose
        # port accepts and then hangs up must not be hammered with connects.
        self._proven = False
        self._client = client
        return client

    def _answered(self) -> None:
        if not self._proven:
            self._proven = True
            self._backoff.succeeded()
            if self._down:
                self._down = False
                log.info("bus=%s connected again", self.name)

    def _lost(self, why: str) -> None:
        """The peer closed the connection; before any answer it counts as a failed attempt."""
        self._drop()
        if not self._proven:
            self._backoff.failed()
            self._went_down(why)

    async def _call(self, what: str, unit: int, function: int, method: str,
                    *args: Any, **kwargs: Any) -> Any:
        """One request with the bus's retry rules; returns pymodbus's (checked) response."""
        if not 0 <= unit <= 255:
            raise ValueError(f"unit id must be 0…255, not {unit}")
        where = f"bus {self.name} unit {unit} {what}"
        async with self._lock:
            timeouts_left = self.config.retries
            busy_left = BUSY_RETRIES
            while True:
                client = await self._ensure_connected()
                gap = self._last_done + self.config.inter_request_s \
                    - asyncio.get_running_loop().time()
                if gap > 0:
                    await asyncio.sleep(gap)
                try:
                    return await self._once(client, where, unit, function, method,
                                            *args, **kwargs)
                except DeviceTimeout:
                    if timeouts_left > 0:
                        timeouts_left -= 1
                        continue
                    raise
                except DeviceError as exc:
                    if exc.code == BUSY and busy_left > 0:
                        busy_left -= 1
                        await asyncio.sleep(BUSY_PAUSE_S)
                        continue
                    raise

    async def _once(self, client: AsyncModbusTcpClient, where: str, unit: int,
                    function: int, method: str, *args: Any, **kwargs: Any) -> Any:
        task = asyncio.current_task()
        cancels = task.cancelling() if task is not None else 0
        loop = asyncio.get_running_loop()
        try:
            # pymodbus times out first (timeout_s); this guard only bounds a stuck client.
            async with asyncio.timeout(self.config.timeout_s + 1.0):
                response = await getattr(client, method)(*args, device_id=unit, **kwargs)
        except asyncio.CancelledError:
            self._drop()  # the answer may still come: it must not meet the next request
            raise
        except (ModbusException, OSError, TimeoutError) as exc:
            alive = bool(client.connected)
            if alive:
                self._drop()  # in doubt: a late answer must not meet the next request
            else:
                self._lost(f"connection lost: {exc}")
            if task is not None and task.cancelling() > cancels:
                raise asyncio.CancelledError from exc  # pymodbus turned the cancel into this
            if not alive:
                raise TransportError(f"{where}: connection lost: {exc}") from exc
            if isinstance(exc, TimeoutError) or "No response" in str(exc):
                raise DeviceTimeout(f"{where}: no answer within "
                                    f"{self.config.timeout_s:g} s") from exc
            raise TransportError(f"{where}: {exc}") from exc
        finally:
            self._last_done = loop.time()
        if task is not None and task.cancelling() > cancels:
            self._drop()  # a cancel swallowed on the way (Python 3.11 wait_for)
            raise asyncio.CancelledError
        sent = client.ctx.request_transaction_id
        got_function = int(response.function_code) & 0x7F
        if response.transaction_id != sent or (unit and response.dev_id != unit) \
                or got_function != function:
            self._drop()
            raise TransportError(
                f"{where}: answer for another request (transaction {response.transaction_id} "
                f"for {sent}, unit {response.dev_id}, function {got_function:02X}); "
                f"connection dropped")
        self._answered()
        if response.isError():
            raise exception_error(int(getattr(response, "exception_code", 0)), where)
        return response

    async def read_registers(self, unit: int, kind: str, address: int, count: int) -> list[int]:
        """Read `count` holding or input registers starting at `address`."""
        if kind not in ("holding", "input"):
            raise ValueError(f"not a register kind: {kind}")
        method = "read_input_registers" if kind == "input" else "read_holding_registers"
        response = await self._call(f"read {kind} {address}+{count}", unit,
                                    READ_FUNCTION[kind], method, address, count=count)
        registers: list[int] = [int(r) for r in response.registers]
        if len(registers) != count:
            self._drop()
            raise TransportError(f"bus {self.name} unit {unit}: {len(registers)} registers "
                                 f"for {count} requested")
        return registers

    async def read_bits(self, unit: int, kind: str, address: int, count: int) -> list[int]:
        """Read `count` coils or discrete inputs starting at `address` (0 or 1 each)."""
        if kind not in ("coil", "discrete"):
            raise ValueError(f"not a bit kind: {kind}")
        method = "read_coils" if kind == "coil" else "read_discrete_inputs"
        response = await self._call(f"read {kind} {address}+{count}", unit,
                                    READ_FUNCTION[kind], method, address, count=count)
        bits = [1 if b else 0 for b in response.bits]
        if len(bits) < count:
            self._drop()
            raise TransportError(f"bus {self.name} unit {unit}: {len(bits)} bits "
                                 f"for {count} requested")
        return bits[:count]

    async def read_coils(self, unit: int, address: int, count: int = 1) -> list[bool]:
        """Read `count` coils starting at `address`."""
        return [bool(b) for b in await self.read_bits(unit, "coil", address, count)]

    async def write_coil(self, unit: int, address: int, value: bool) -> None:
        """Write one coil."""
        await self._call(f"write coil {address}={int(value)}", unit, WRITE_COIL,
                         "write_coil", address, value)


class ModbusGauge:
    """A gauge behind a Modbus hub (TCP or RTU): its value and, optionally, a status word.

    When value and status are registers of one kind close together (gap ≤ 8, span ≤ 125)
    they are read in one request; if the device refuses that request with exception 02
    (some maps have holes), merging is switched off for this device for good and the two are
    read separately. The caller applies scale, offset and the status fault mask.
    """

    def __init__(self, hub: ModbusHub, unit: int, spec: RegisterSpec,
                 status: StatusSpec | None = None) -> None:
        self.hub = hub
        self.unit = unit
        self.spec = spec
        self.status = status
        self.merge = status is not None and merged_read(spec, status) is not None

    async def read(self) -> RawReading:
        """Read and decode the raw value (and status word) of the gauge."""
        status = self.status
        if status is None:
            return RawReading(await self._read_value())
        plan = merged_read(self.spec, status) if self.merge else None
        if plan is not None:
            start, count = plan
            try:
                words = await self.hub.read_registers(self.unit, self.spec.kind, start, count)
            except DeviceError as exc:
                if exc.code != ILLEGAL_ADDRESS:
                    raise
                self.merge = False
                log.warning("bus=%s unit=%d: one read of %s %d+%d refused (exception 02); "
                            "reading value and status separately from now on",
                            self.hub.name, self.unit, self.spec.kind, start, count)
            else:
                v = self.spec.address - start
                s = status.address - start
                return RawReading(decode_raw(words[v:v + self.spec.count], self.spec),
                                  decode_status(words[s:s + status.count], status))
        value = await self._read_value()
        words = await self.hub.read_registers(self.unit, status.kind, status.address,
                                              status.count)
        return RawReading(value, decode_status(words, status))

    async def _read_value(self) -> int | float:
        spec = self.spec
        if spec.kind in BIT_KINDS:
            words = await self.hub.read_bits(self.unit, spec.kind, spec.address, spec.count)
        else:
            words = await self.hub.read_registers(self.unit, spec.kind, spec.address,
                                                  spec.count)
        return decode_raw(words, spec)
