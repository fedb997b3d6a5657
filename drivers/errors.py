"""Errors raised by drivers. Transport failure is not device failure (STYLE 6).

    GaugedError           the root of the project's errors (gauged/errors.py adds the rest)

    DriverError
    ├── TransportError    the bus or the connection failed; the device may be fine
    │   └── DeviceTimeout the device did not answer within its budget (also gateway 0B)
    ├── DeviceError       the device answered with a Modbus exception (`code`)
    ├── RelayFault        a relay did not take the state written to it
    └── AudioFault        a clip could not be played
"""

from __future__ import annotations


class GaugedError(Exception):
    """Root of every error gauged raises on purpose (drivers included); defined here because
    drivers import nothing from gauged, and re-exported by gauged/errors.py."""


class DriverError(GaugedError):
    """Root of driver errors."""


class TransportError(DriverError):
    """The bus or connection failed: no connection, closed, garbled replies, gateway 0A.

    The device may be fine; the reading is missing, not wrong.
    """


class DeviceTimeout(TransportError):
    """No answer from the device within its budget (timeout and retries), or gateway 0B.

    Distinct from other transport errors so that a caller can probe a silent device less often.
    """


class DeviceError(DriverError):
    """The device answered with a Modbus exception; `code` is the exception code.

    02 (illegal data address) means the configuration does not match the device; 04 (device
    failure) is a station fault. 06 (busy) has already been retried by the hub.
    """

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class RelayFault(DriverError):
    """A relay did not take the state written to it (read-back mismatch)."""


class AudioFault(DriverError):
    """A clip could not be played: missing file, no device, player error."""
