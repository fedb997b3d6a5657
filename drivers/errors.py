"""Errors raised by drivers. Transport failure is not device failure (STYLE 6)."""

from __future__ import annotations


class DriverError(Exception):
    """Root of driver errors."""


class TransportError(DriverError):
    """The bus or connection failed: timeout, refused, closed. The device may be fine."""


class DeviceError(DriverError):
    """The device answered with a Modbus exception; `code` is the exception code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class RelayFault(DriverError):
    """A relay did not take the state written to it (read-back mismatch)."""


class AudioFault(DriverError):
    """A clip could not be played: missing file, no device, player error."""
