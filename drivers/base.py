"""The driver interface: a hub owns one physical bus, a gauge reads one value through it.

A *hub* is one serial port or one TCP endpoint with the devices behind it; it serialises
their requests, keeps the inter-frame silence, times out, retries where that makes sense and
reconnects. A *gauge* is one measured value on one device of a hub. Stations never touch a
hub's connection: they ask a gauge for a reading (STYLE 4, 7).

The table from a bus `kind` to its config model and hub class is `drivers.registry`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self

from drivers.errors import DriverError
from drivers.registers import Read


@dataclass(frozen=True, slots=True)
class RawReading:
    """What a gauge sent, before scale and offset.

    `value` is the raw number (a counter stays an integer so that its rollover can be
    unwrapped); `status` is the device's status word when the gauge has one (the caller
    applies the fault mask), else None.
    """

    value: int | float
    status: int | None = None


class Hub(Protocol):
    """The single owner of one physical bus (a serial port or a TCP endpoint).

    Contract:
    - it is an async context manager: `__aenter__` opens it (a bus that cannot be reached yet
      is not an error: the first requests fail with TransportError and the hub keeps trying,
      with exponential backoff and jitter, at most one attempt in flight); `__aexit__` closes
      it; entering a hub twice raises RuntimeError;
    - calls may overlap (any number of tasks may use one hub); they are queued and run one at
      a time on the wire, in arrival order;
    - a call raises TransportError (DeviceTimeout when the device stayed silent) or
      DeviceError, never a library's exception; cancelling a call raises CancelledError in
      the caller and leaves the hub ready for the next call;
    - after `__aexit__` every call raises TransportError.

    `connected` tells whether the port or connection is open right now (for /status).
    """

    name: str

    @property
    def connected(self) -> bool: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class Gauge(Protocol):
    """One measured value on one device behind a hub.

    Contract: `read` returns the raw reading or raises a DriverError (TransportError: the
    value is missing; DeviceError: the device refused). Calls may overlap; the hub
    serialises them. A gauge holds no connection of its own.
    """

    async def read(self) -> RawReading: ...


class Device(Protocol):
    """Every channel behind one unit id of a bus (drivers.device), read together.

    Contract: `read` returns one outcome per channel key (a RawReading, or the DriverError
    that left the channel without one) and raises nothing but CancelledError (and a bug's
    exception); calls must not overlap. `requests` counts the requests sent so far; `plan`
    is the list of reads one cycle makes (empty for a non-Modbus device).
    """

    name: str
    requests: int

    @property
    def channels(self) -> Mapping[str, object]:
        """The channel keys (and what each reads)."""
        ...

    @property
    def plan(self) -> Sequence[Read]: ...

    async def read(self) -> dict[str, RawReading | DriverError]: ...
