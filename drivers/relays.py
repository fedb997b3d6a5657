"""Relay outputs on Modbus coils: write, then verify by reading back (STYLE 8)."""

from __future__ import annotations

from drivers.configs import RelayConfig
from drivers.errors import RelayFault
from drivers.modbus import ModbusHub


class CoilRelay:
    """A relay driven by one Modbus coil.

    Contract: `set` writes the coil and reads it back; it raises RelayFault when the board
    reports another state, and TransportError/DeviceError when the bus fails. Calls may
    overlap (the hub serialises them).
    """

    def __init__(self, name: str, hub: ModbusHub, config: RelayConfig) -> None:
        self.name = name
        self.hub = hub
        self.config = config

    async def set(self, on: bool) -> None:
        """Drive the relay to `on` and verify it."""
        await self.hub.write_coil(self.config.unit, self.config.coil, on)
        await self.verify(on)

    async def verify(self, on: bool) -> None:
        """Read the coil back; RelayFault when it is not `on`."""
        state = (await self.hub.read_coils(self.config.unit, self.config.coil, 1))[0]
        if state != on:
            raise RelayFault(f"relay {self.name} (bus {self.hub.name} unit {self.config.unit} "
                             f"coil {self.config.coil}) reads {state} after writing {on}")
