"""The configuration models of every driver: pydantic and the standard library only.

The daemon's configuration validates against these without importing a driver (no pymodbus,
no pyserial, no event loop); the modules that use them import them from here.

- buses: `SerialBusConfig` (what serial buses share), `SerialLineBusConfig` and `LineSpec`
  (drivers.line), `ModbusTcpBusConfig` (drivers.modbus), `ModbusRtuBusConfig` (drivers.rtu),
  and `BusConfig`, a bus section validated by the model its `kind` names (drivers.registry);
- registers: `RegisterSpec` and `StatusSpec`, with the data types' register counts
  (decoding: drivers.registers);
- devices: `DeviceConfig`, one unit id on a bus holding many channels (drivers.device);
- outputs: `RelayConfig` (drivers.relays), `AplayConfig`, `SinkConfig`, `DfPlayerConfig` and
  `PlayerConfig`
  (drivers.players, drivers.dfplayer).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class SerialBusConfig(BaseModel):
    """Settings shared by every serial bus."""

    model_config = ConfigDict(extra="forbid")

    port: str = Field(min_length=1, description="device path, e.g. /dev/serial/by-id/usb-…")
    baudrate: int = Field(default=9600, gt=0)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    timeout_s: float = Field(default=0.5, gt=0, description="device think time per request")
    retries: int = Field(default=1, ge=0, le=5, description="repeats after a timeout")
    inter_frame_s: float | None = Field(
        default=None, ge=0, le=1.0,
        description="silence between frames; default 3.5 characters (1.75 ms above 19200 Bd)")
    reconnect_max_s: float = Field(default=60.0, gt=0)

    @property
    def char_s(self) -> float:
        """Wire time of one character: start bit, data bits, parity bit, stop bits."""
        bits = 1 + self.bytesize + (self.parity != "N") + self.stopbits
        return bits / self.baudrate

    @property
    def silence_s(self) -> float:
        """The inter-frame silence actually kept."""
        if self.inter_frame_s is not None:
            return self.inter_frame_s
        # Modbus over serial line, 2.3.1.4: above 19200 Bd a fixed 1.75 ms.
        return 0.00175 if self.baudrate > 19200 else 3.5 * self.char_s


DEFAULT_COMMAND = "#{unit:02d}RD\r\n"
DEFAULT_PATTERN = (r"^\*(?P<unit>\d{2}),(?P<value>[-+]?\d+(?:\.\d+)?),"
                   r"(?P<status>[0-9A-F]{2}),(?P<checksum>[0-9A-F]{2})$")

ChecksumKind = Literal["none", "sum8", "xor8"]


class SerialLineBusConfig(SerialBusConfig):
    """A serial line shared by text-protocol gauges: `kind = "serial_line"`.

    `timeout_s` runs from the end of the request to the end of the answer line.
    """

    kind: Literal["serial_line"] = "serial_line"


class LineSpec(BaseModel):
    """How one gauge on a serial line is asked and how its answer reads."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: str = Field(default=DEFAULT_COMMAND, min_length=1)
    pattern: str = DEFAULT_PATTERN
    checksum: ChecksumKind = "sum8"
    status_base: Literal[16, 10] = 16
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    # Bits of the status field that mean "this value is not valid" (the daemon applies it).
    status_fault_mask: int = Field(default=0xFF, ge=0)
    bits: int = Field(default=32, ge=1, le=64,
                      description="width at which a counter read over this line wraps")

    @model_validator(mode="after")
    def _check(self) -> LineSpec:
        try:
            self.command.format(unit=1).encode("ascii")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"command {self.command!r} is not a template of `unit` "
                             f"in ASCII: {exc}") from exc
        try:
            groups = re.compile(self.pattern).groupindex
        except re.error as exc:
            raise ValueError(f"pattern is not a regular expression: {exc}") from exc
        if "value" not in groups:
            raise ValueError("pattern needs a named group `value`: (?P<value>...)")
        if self.checksum != "none" and "checksum" not in groups:
            raise ValueError(f"checksum {self.checksum} needs a named group `checksum` "
                             f"in pattern")
        return self


class ModbusTcpBusConfig(BaseModel):
    """A Modbus TCP endpoint (a gauge gateway or a relay board)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["modbus_tcp"] = "modbus_tcp"
    host: str
    port: int = Field(default=502, ge=1, le=65535)
    timeout_s: float = Field(default=1.0, gt=0, description="per request and per connect")
    retries: int = Field(default=0, ge=0, le=5, description="repeats after a timeout")
    inter_request_s: float = Field(default=0.0, ge=0, le=5.0,
                                   description="pause between an answer and the next request")
    reconnect_max_s: float = Field(default=60.0, gt=0)


class ModbusRtuBusConfig(SerialBusConfig):
    """A Modbus RTU bus on a serial port: `kind = "modbus_rtu"`, `port = "/dev/serial/by-id/…"`.

    RTU frames are 8 data bits; parity N, E or O; 1 or 2 stop bits.
    """

    kind: Literal["modbus_rtu"] = "modbus_rtu"
    bytesize: Literal[8] = 8


BusConfig = Annotated[ModbusTcpBusConfig | ModbusRtuBusConfig | SerialLineBusConfig,
                      Field(discriminator="kind")]
"""A bus section of the configuration, validated by the model its `kind` names."""


# Register maps (decoding: drivers.registers)

RegisterKind = Literal["holding", "input", "coil", "discrete"]
WordKind = Literal["holding", "input"]
DataType = Literal["int16", "uint16", "int32", "uint32", "float32", "float64", "bool"]
Order = Literal["big", "little"]

BIT_KINDS = frozenset({"coil", "discrete"})

# struct format (big endian) and register count of each data type; bool is one bit
FORMATS: dict[str, tuple[str, int]] = {
    "int16": (">h", 1),
    "uint16": (">H", 1),
    "int32": (">i", 2),
    "uint32": (">I", 2),
    "float32": (">f", 2),
    "float64": (">d", 4),
    "bool": ("", 1),
}


class RegisterSpec(BaseModel):
    """One value on a device: its address, register kind, data type, orders, scale and unit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: RegisterKind = "holding"
    address: int = Field(ge=0, le=65535)
    data_type: DataType = "uint16"
    byte_order: Order = "big"
    word_order: Order = "big"
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""

    @model_validator(mode="before")
    @classmethod
    def _bits_default_to_bool(cls, data: Any) -> Any:
        # A coil or discrete input holds one bit: `data_type` may be left out.
        if isinstance(data, dict) and data.get("kind") in BIT_KINDS and "data_type" not in data:
            return {**data, "data_type": "bool"}
        return data

    @model_validator(mode="after")
    def _kind_matches_type(self) -> RegisterSpec:
        if (self.kind in BIT_KINDS) != (self.data_type == "bool"):
            raise ValueError(f"data_type {self.data_type} does not fit kind {self.kind}: "
                             f"coils and discrete inputs are bool, registers are not")
        if self.address + self.count > 65536:
            raise ValueError(f"{self.data_type} at {self.address} runs past address 65535")
        return self

    @property
    def count(self) -> int:
        """Number of registers (or bits) the value spans."""
        return register_count(self.data_type)

    @property
    def bits(self) -> int:
        """Width of the raw value in bits (a counter wraps at 2**bits)."""
        return 1 if self.data_type == "bool" else 16 * self.count


class StatusSpec(BaseModel):
    """A device's status word beside its value: `status = { address = 20, fault_mask = 0x0F }`.

    The gauge returns the raw word; the daemon flags the reading when `word & fault_mask` is
    not zero (by default every bit is a fault bit).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: WordKind = "holding"
    address: int = Field(ge=0, le=65535)
    data_type: Literal["uint16", "uint32"] = "uint16"
    word_order: Order = "big"
    fault_mask: int = Field(default=0xFFFFFFFF, ge=0, le=0xFFFFFFFF)

    @property
    def count(self) -> int:
        """Number of registers the status word spans."""
        return register_count(self.data_type)


def register_count(data_type: str) -> int:
    """Registers (or bits, for bool) taken by `data_type`."""
    return FORMATS[data_type][1]


# Devices (drivers.device)

class DeviceConfig(BaseModel):
    """One device on a bus holding many channels: a datalogger or a Modbus I/O gateway that
    presents level, rain counter, battery voltage and contacts behind one unit id.

    Gauges and site inputs name it (`device = "cabinet"`) instead of a bus and unit of their
    own. Its channels are read in as few requests as `max_gap` and `max_registers` allow,
    planned once at start (drivers.registers.plan_reads).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    bus: str
    unit: int = Field(ge=0, le=247)
    model: str = Field(default="", description="make and model, for operators")
    max_gap: int = Field(default=8, ge=0, le=123,
                         description="unused registers (or bits) read to save a request")
    max_registers: int = Field(default=125, ge=1, le=125,
                               description="most registers in one request (some loggers "
                                           "take fewer than Modbus's 125)")


# Outputs (drivers.relays, drivers.players)

class RelayConfig(BaseModel):
    """One coil on a relay board."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bus: str
    unit: int = Field(default=1, ge=0, le=247)
    coil: int = Field(ge=0, le=65535)
    # the coil of a device with channels (`[devices.NAME]`): bus and unit come from it
    device: str | None = None


class AplayConfig(BaseModel):
    """Play clips on an ALSA device of the gateway."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["aplay"]
    device: str = "default"
    command: str = "aplay"
    # A clip longer than this is a hung player (a wedged ALSA device): killed, an audio fault.
    timeout_s: float = Field(default=120.0, gt=0)


class SinkConfig(BaseModel):
    """Play clips on the audio sink simulator."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["sink"]
    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    timeout_s: float = Field(default=120.0, gt=0)


class DfPlayerConfig(SerialBusConfig):
    """A serial MP3 module (DFPlayer-style, drivers/dfplayer.py) on its own UART: it plays
    numbered tracks from its own card, so every clip it plays needs a track number. One
    module is one loudspeaker output: a dfplayer player serves one zone."""

    kind: Literal["dfplayer"]
    # the module thinks for up to ~100 ms; an answer later than this is a silent module
    timeout_s: float = Field(default=0.5, gt=0, description="answer timeout per command")
    tracks: dict[str, int] = Field(default_factory=dict,
                                   description="clip id -> track number on the card (1-2999)")
    volume: int = Field(default=25, ge=0, le=30)  # set before the first track
    poll_s: float = Field(default=0.25, gt=0, le=5.0)  # status query while a track plays
    # a track still playing after this is a hung module: stopped, an audio fault
    play_timeout_s: float = Field(default=120.0, gt=0)
    # a copy of the card's `mp3` folder (relative: to the config file's folder); when given,
    # check-config checks each track's file (NNNN*.mp3) like a clip
    card_dir: str | None = None

    @field_validator("tracks")
    @classmethod
    def _track_numbers(cls, tracks: dict[str, int]) -> dict[str, int]:
        for clip, number in tracks.items():
            if not 1 <= number <= 2999:
                raise ValueError(f"clip {clip}: track {number} is not between 1 and 2999")
        return tracks


PlayerConfig = Annotated[AplayConfig | SinkConfig | DfPlayerConfig,
                         Field(discriminator="kind")]
