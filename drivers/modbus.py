"""Modbus TCP: one hub per gateway, and the gauges that sit behind it.

A hub owns the connection to one TCP endpoint and serialises the requests of every unit id
behind it (STYLE 7): stations never touch the client. Transport failures (timeout, refused,
closed) raise TransportError; a Modbus exception answer raises DeviceError with its code.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from types import TracebackType
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from drivers.errors import DeviceError, TransportError
from drivers.registers import RegisterSpec, decode_raw

log = logging.getLogger(__name__)


class ModbusTcpBusConfig(BaseModel):
    """A Modbus TCP endpoint (a gauge gateway or a relay board)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["modbus_tcp"] = "modbus_tcp"
    host: str
    port: int = Field(default=502, ge=1, le=65535)
    timeout_s: float = Field(default=1.0, gt=0)
    reconnect_max_s: float = Field(default=60.0, gt=0)


class ModbusTcpHub:
    """The single owner of one Modbus TCP connection.

    Contract: calls may overlap; they are queued on a lock and run one at a time. A call
    made while disconnected tries to connect first, at most once per backoff interval
    (exponential with jitter, capped at `reconnect_max_s`); in between it fails fast with
    TransportError. After `__aexit__` every call raises TransportError.
    """

    def __init__(self, name: str, config: ModbusTcpBusConfig) -> None:
        self.name = name
        self.config = config
        self._client: AsyncModbusTcpClient | None = None
        self._lock = asyncio.Lock()
        self._entered = False
        self._closed = False
        self._backoff_s = 0.0
        self._next_attempt = 0.0  # monotonic time before which no reconnect is tried
        self.connected = False

    async def __aenter__(self) -> ModbusTcpHub:
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
            self._client.close()
        self._client = None
        self.connected = False

    async def _ensure_connected(self) -> AsyncModbusTcpClient:
        if self._closed:
            raise TransportError(f"bus {self.name} is closed")
        if self._client is not None and self._client.connected:
            return self._client
        now = time.monotonic()
        if now < self._next_attempt:
            raise TransportError(f"bus {self.name}: disconnected, next attempt in "
                                 f"{self._next_attempt - now:.1f} s")
        self._drop()
        client = AsyncModbusTcpClient(
            self.config.host, port=self.config.port, timeout=self.config.timeout_s,
            retries=0, reconnect_delay=0, reconnect_delay_max=0,
        )
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
            self._backoff_s = min(self.config.reconnect_max_s,
                                  max(0.5, self._backoff_s * 2))
            self._next_attempt = time.monotonic() + self._backoff_s * random.uniform(0.5, 1.0)
            if self.connected or self._backoff_s <= 0.5:
                log.warning("bus=%s host=%s port=%d unreachable", self.name,
                            self.config.host, self.config.port)
            self.connected = False
            raise TransportError(f"bus {self.name}: cannot connect to "
                                 f"{self.config.host}:{self.config.port}")
        if self._backoff_s > 0:
            log.info("bus=%s connected again", self.name)
        self._backoff_s = 0.0
        self._client = client
        self.connected = True
        return client

    async def _call(self, what: str, unit: int, method: str, *args: Any, **kwargs: Any) -> Any:
        async with self._lock:
            client = await self._ensure_connected()
            try:
                response = await asyncio.wait_for(
                    getattr(client, method)(*args, device_id=unit, **kwargs),
                    timeout=self.config.timeout_s * 1.5,
                )
            except asyncio.CancelledError:
                raise
            except (ModbusException, OSError, TimeoutError) as exc:
                # pymodbus turns a cancellation into ModbusIOException (DESIGN §4):
                # give the cancellation back to its owner.
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError from exc
                if not client.connected:
                    self._drop()
                raise TransportError(f"bus {self.name} unit {unit} {what}: {exc}") from exc
            if response.isError():
                code = int(getattr(response, "exception_code", 0))
                raise DeviceError(f"bus {self.name} unit {unit} {what}: "
                                  f"exception {code:02X}", code)
            return response

    async def read_registers(self, unit: int, kind: str, address: int, count: int) -> list[int]:
        """Read `count` holding or input registers starting at `address`."""
        method = "read_input_registers" if kind == "input" else "read_holding_registers"
        response = await self._call(f"read {kind} {address}+{count}", unit, method,
                                    address, count=count)
        registers: list[int] = list(response.registers)
        if len(registers) != count:
            raise TransportError(f"bus {self.name} unit {unit}: {len(registers)} registers "
                                 f"for {count} requested")
        return registers

    async def read_coils(self, unit: int, address: int, count: int = 1) -> list[bool]:
        """Read `count` coils starting at `address`."""
        response = await self._call(f"read coils {address}+{count}", unit, "read_coils",
                                    address, count=count)
        return [bool(b) for b in response.bits[:count]]

    async def write_coil(self, unit: int, address: int, value: bool) -> None:
        """Write one coil."""
        await self._call(f"write coil {address}={int(value)}", unit, "write_coil",
                         address, value)


class ModbusGauge:
    """A gauge behind a hub: reads its register map and returns the raw number.

    The caller applies scale and offset (a counter needs the raw integer to unwrap).
    """

    def __init__(self, hub: ModbusTcpHub, unit: int, spec: RegisterSpec) -> None:
        self.hub = hub
        self.unit = unit
        self.spec = spec

    async def read_raw(self) -> int | float:
        """Read and decode the raw value (before scale and offset)."""
        registers = await self.hub.read_registers(self.unit, self.spec.kind,
                                                  self.spec.address, self.spec.count)
        return decode_raw(registers, self.spec)
