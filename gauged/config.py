"""Configuration: a TOML file plus `GAUGED_…` environment overrides, validated at start.

`load_config(path)` returns a `Config` or raises ConfigError with one line per problem, each
naming the file, the section entry (station, gauge, zone …) and the field. Static rules live
on the models; rules that span sections (a station's gauge exists, thresholds are ordered,
units are unique on a bus …) live in `cross_check`. `config/minato-furukawa.toml` is the
reference documentation of every field.
"""

from __future__ import annotations

import contextvars
import itertools
import math
import re
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from drivers.line import LineSpec, SerialLineBusConfig
from drivers.players import AplayConfig, SinkConfig
from drivers.registers import RegisterSpec, StatusSpec
from drivers.registry import BusConfig
from drivers.relays import RelayConfig
from gauged.errors import ConfigError
from gauged.quality import QualityRules

DEFAULT_CONFIG = Path("config/minato-furukawa.toml")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GatewayConfig(_Model):
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    timezone: str = "UTC"
    poll_interval_s: float = Field(default=180.0, gt=0)


class StatusConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # Bearer token for the control endpoints (POST /command); "" leaves them switched off.
    token: SecretStr = SecretStr("")


class CommandsConfig(_Model):
    """Operator commands over MQTT and HTTP (gauged/commands.py)."""

    enabled: bool = False
    secret: SecretStr = SecretStr("")  # the HMAC-SHA256 key shared with the senders
    max_bytes: int = Field(default=4096, ge=256, le=65536)
    max_ttl_s: float = Field(default=3600.0, gt=0, le=86400)
    clock_skew_s: float = Field(default=30.0, ge=0)  # `issued` may be this far ahead
    rate_per_min: float = Field(default=6.0, gt=0)  # commands executed, on average
    burst: int = Field(default=5, ge=1)  # … and at once


class InfluxConfig(_Model):
    enabled: bool = False
    url: str = "http://127.0.0.1:8086"
    org: str = "gauged"
    bucket: str = "gauged"
    token: SecretStr = SecretStr("")
    timeout_s: float = Field(default=5.0, gt=0)
    # The spool (gauged/spool.py): unset puts it next to the state file ([state] path), as
    # spool.sqlite3. Over spool_max_bytes (line-protocol bytes held), the oldest routine
    # telemetry is dropped (counted); events, alarms and broadcasts never are.
    spool_path: Path | None = None
    spool_max_bytes: int = Field(default=128 * 1024 * 1024, ge=4096)
    batch_points: int = Field(default=5000, ge=1, le=100_000)
    backoff_min_s: float = Field(default=0.5, gt=0)  # the first wait after a failure,
    backoff_max_s: float = Field(default=60.0, gt=0)  # doubling up to this (with jitter)


class MqttConfig(_Model):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str = ""
    password: SecretStr = SecretStr("")
    topic_prefix: str = "gauged"
    tls: bool = False
    ca_file: Path | None = None  # the broker's CA (the system's when None)
    cert_file: Path | None = None  # a client certificate, when the broker asks for one
    key_file: Path | None = None


class Defaults(_Model):
    level_margin_m: float = Field(default=0.10, ge=0)
    rain_margin_mm: float = Field(default=5.0, ge=0)
    clear_samples: int = Field(default=2, ge=1)
    confirm_samples: int = Field(default=1, ge=1)
    # Minimum time in a stage before it may be left (escalation never waits).
    dwell_min: float = Field(default=0.0, ge=0)
    rain_window_min: float = Field(default=60.0, gt=0)
    # `rolling`: the stage total is the rain of the last rain_window_min minutes;
    # `clock_hour`: of the current period of the local clock (the clock hour for 60).
    rain_window_mode: Literal["rolling", "clock_hour"] = "rolling"
    rain_event_dry_h: float = Field(default=6.0, gt=0)  # a storm event ends after this dry
    rain_half_life_short_h: float = Field(default=1.5, gt=0)  # effective rainfall
    rain_half_life_long_h: float = Field(default=72.0, gt=0)
    rise_readings: int = Field(default=5, ge=2)  # rate of rise: a fit over the last N good
    rise_window_min: float = Field(default=15.0, gt=0)  # readings within this many minutes
    siren_max_s: float = Field(default=60.0, gt=0)
    inhibit_default_min: float = Field(default=60.0, gt=0)  # an inhibit asked without a time
    inhibit_max_h: float = Field(default=24.0, gt=0)  # the longest inhibit (all expire)

    @field_validator("rain_window_mode")
    @classmethod
    def _clock_periods_tile_a_day(cls, mode: str, info: ValidationInfo) -> str:
        window_s = info.data.get("rain_window_min", 60.0) * 60.0
        if mode == "clock_hour" and (window_s != int(window_s) or 86400 % int(window_s)):
            raise ValueError(f"clock_hour needs a rain_window_min that divides a day "
                             f"(60 for the clock hour), not {window_s / 60:g}")
        return mode


class GaugeConfig(_Model):
    """One gauge: `register` (and optionally `status`) on a Modbus bus, `line` on a serial
    line; `range` is the physical range of the value; `quality` tunes the checks."""

    bus: str
    unit: int = Field(ge=0, le=247)
    quantity: Literal["level_m", "rain_counter"]
    # `register` in the file; renamed here because BaseModel already has a `register`.
    spec: RegisterSpec | None = Field(default=None, alias="register")
    status: StatusSpec | None = None
    line: LineSpec | None = None
    range: tuple[float, float] | None = None
    quality: QualityRules = QualityRules()

    @property
    def scale(self) -> float:
        spec = self.spec or self.line
        return spec.scale if spec is not None else 1.0

    @property
    def offset(self) -> float:
        spec = self.spec or self.line
        return spec.offset if spec is not None else 0.0

    @property
    def status_fault_mask(self) -> int:
        """Which bits of the device's status word mean the value is not valid."""
        if self.status is not None:
            return self.status.fault_mask
        return self.line.status_fault_mask if self.line is not None else 0

    @property
    def counter_bits(self) -> int:
        if self.spec is not None:
            return self.spec.bits
        return self.line.bits if self.line is not None else 32


class StageConfig(_Model):
    name: str = Field(min_length=1)
    threshold: float
    sequence: str | None = None
    # Level stations: the stage is also reached when the river rises at least this fast.
    rise_m_per_h: float | None = Field(default=None, gt=0)
    # While the station stays at this stage, its sequence is broadcast again every this many
    # minutes (counted from the last time the station sounded); None: once per transition.
    repeat_min: float | None = Field(default=None, gt=0)


# What a stage compares: `freeboard` (level stations); for rain stations `total` (the stage
# window of the defaults), rolling `10m`, `60m`, `24h`, the clock `hour`, the storm `event`,
# or the effective rainfall with the short or the long half-life.
StageQuantity = Literal["freeboard", "total", "10m", "60m", "hour", "24h", "event",
                        "effective_short", "effective_long"]


class StationInput(_Model):
    """A further quantity a station's stage depends on, with thresholds for stages 1, 2 …"""

    station: str = ""  # the station whose quantity this is; "" for this station
    quantity: StageQuantity
    thresholds: list[float] = Field(min_length=1)
    margin: float | None = Field(default=None, ge=0)

    @field_validator("thresholds")
    @classmethod
    def _ordered(cls, thresholds: list[float], info: ValidationInfo) -> list[float]:
        falling = info.data.get("quantity") == "freeboard"
        if not all(math.isfinite(t) for t in thresholds) or any(
                b >= a if falling else b <= a for a, b in itertools.pairwise(thresholds)):
            raise ValueError("thresholds must be finite and " + (
                "decreasing (freeboard)" if falling else "increasing"))
        return thresholds


CapUrgency = Literal["Immediate", "Expected", "Future", "Past", "Unknown"]
CapSeverity = Literal["Extreme", "Severe", "Moderate", "Minor", "Unknown"]
CapCertainty = Literal["Observed", "Likely", "Possible", "Unlikely", "Unknown"]
CapResponse = Literal["Shelter", "Evacuate", "Prepare", "Execute", "Avoid", "Monitor", "Assess",
                      "AllClear", "None"]
CapCategory = Literal["Geo", "Met", "Safety", "Security", "Rescue", "Fire", "Health", "Env",
                      "Transport", "Infra", "CBRNE", "Other"]
# CAP 1.2 §3.3.2 (polygon, circle): WGS 84 "lat,lon" pairs; a circle adds a radius in km.
_POINT = r"-?\d{1,2}(\.\d+)?,-?\d{1,3}(\.\d+)?"


class CapTexts(_Model):
    """A text in the two languages of the announcements."""

    ja: str = Field(min_length=1)
    en: str = Field(min_length=1)


class CapArea(_Model):
    """Where a station's alerts apply (CAP `<area>`); every field is optional."""

    desc: str = ""  # areaDesc in Japanese; default: the names of the station's zones
    desc_en: str = ""  # areaDesc in English; default: `desc`
    polygon: list[str] = Field(default_factory=list)  # "lat,lon lat,lon …", first = last
    circle: list[str] = Field(default_factory=list)  # "lat,lon radius_km"
    geocode: dict[str, str] = Field(default_factory=dict)  # valueName = value

    @field_validator("polygon")
    @classmethod
    def _closed_polygons(cls, polygons: list[str]) -> list[str]:
        for i, polygon in enumerate(polygons):
            points = polygon.split()
            if len(points) < 4 or points[0] != points[-1] or not all(
                    re.fullmatch(_POINT, p) for p in points):
                raise ValueError(f"[{i}]: a polygon is at least 4 \"lat,lon\" points separated "
                                 f"by spaces, the first equal to the last")
        return polygons

    @field_validator("circle")
    @classmethod
    def _circles(cls, circles: list[str]) -> list[str]:
        for i, circle in enumerate(circles):
            if not re.fullmatch(_POINT + r" \d+(\.\d+)?", circle):
                raise ValueError(f"[{i}]: a circle is \"lat,lon radius_km\"")
        return circles


class StationConfig(_Model):
    name: str = ""
    kind: Literal["level", "rain"]
    gauge: str
    crest_m: float | None = None
    zones: list[str] = Field(default_factory=list)
    stages: list[StageConfig] = Field(min_length=1)
    margin: float | None = Field(default=None, ge=0)
    clear_samples: int | None = Field(default=None, ge=1)
    confirm_samples: int | None = Field(default=None, ge=1)
    dwell_min: float | None = Field(default=None, ge=0)
    quantity: StageQuantity | None = None  # default: freeboard (level) or total (rain)
    # The station's stage from its quantities' stages: `max` (the highest) or `min`.
    combine: Literal["max", "min"] = "max"
    inputs: list[StationInput] = Field(default_factory=list)
    # Played on the station's zones when it returns to normal after a stage that broadcast.
    all_clear: str | None = None
    area: CapArea = CapArea()  # where its CAP alerts apply (gauged/cap.py)

    @field_validator("stages")
    @classmethod
    def _rise_on_level_only(cls, stages: list[StageConfig],
                            info: ValidationInfo) -> list[StageConfig]:
        if info.data.get("kind") == "rain" and any(s.rise_m_per_h for s in stages):
            raise ValueError("rise_m_per_h is for level stations")
        return stages

    @field_validator("quantity")
    @classmethod
    def _quantity_fits_kind(cls, quantity: str | None, info: ValidationInfo) -> str | None:
        if quantity is not None and (quantity == "freeboard") != (info.data.get("kind")
                                                                   == "level"):
            raise ValueError(f"{quantity!r} is not a quantity of a {info.data.get('kind')} "
                             f"station")
        return quantity

    @field_validator("inputs")
    @classmethod
    def _inputs_fit_stages(cls, inputs: list[StationInput],
                           info: ValidationInfo) -> list[StationInput]:
        stages = info.data.get("stages") or []
        for i, inp in enumerate(inputs):
            if len(inp.thresholds) > len(stages):
                raise ValueError(f"[{i}]: {len(inp.thresholds)} thresholds for "
                                 f"{len(stages)} stages")
        return inputs

    @property
    def stage_quantity(self) -> str:
        """What this station's own stages compare."""
        return self.quantity or ("freeboard" if self.kind == "level" else "total")


class ZoneConfig(_Model):
    name: str = ""
    siren_relay: RelayConfig | None = None
    amplifier_relay: RelayConfig | None = None
    player: str


class SequenceConfig(_Model):
    """A broadcast as data: amplifier on, pre-roll, siren pattern, clips × repeats, amplifier
    off. `siren_s = 10` is short for `siren_pattern = [10]`; a pattern is on, off, on, …
    seconds. The total siren on-time is capped at `defaults.siren_max_s` whatever this says."""

    siren_s: float = Field(default=0.0, ge=0)
    siren_pattern: list[float] = Field(default_factory=list)
    pre_roll_s: float = Field(default=0.0, ge=0, le=30)
    clips: list[str] = Field(default_factory=list)
    repeats: int = Field(default=1, ge=1, le=10)
    gap_s: float = Field(default=1.0, ge=0, le=60)

    @property
    def siren_steps(self) -> list[float]:
        """On, off, on, … durations (s) of the siren."""
        if self.siren_pattern:
            return list(self.siren_pattern)
        return [self.siren_s] if self.siren_s > 0 else []

    @property
    def siren_on_s(self) -> float:
        """Total siren on-time the sequence asks for."""
        return sum(self.siren_steps[0::2])


class ClipConfig(_Model):
    file: Path
    language: str = "ja"
    text: str = ""


class ClockConfig(_Model):
    """An accelerated clock for demos and tests: sim = start + (wall − anchor) × speed."""

    speed: float = Field(default=1.0, gt=0)
    start: datetime | None = None
    anchor_unix: float | None = None


class StateConfig(_Model):
    """The state that survives restarts (gauged/state.py): one SQLite file."""

    path: Path = Path("/var/lib/gauged/state.sqlite3")
    # stages saved longer ago than this are not restored: after a long outage the public
    # hears the current stage again, as on a first start
    max_age_s: float = Field(default=21600.0, gt=0)


class TestsConfig(_Model):
    """Scheduled siren tests (gauged/schedule.py). Calendars are crontab lines (minute hour
    day month weekday, Sunday = 0 or 7) in the gateway's time zone; "" switches a test off."""

    silent: str = ""
    audible: str = ""
    audible_clip: str | None = None
    audible_zones: list[str] = Field(default_factory=list)  # empty: every zone
    hold_s: float = Field(default=1.0, gt=0, le=10)  # the silent test holds each relay ON
    silent_grace_s: float = Field(default=21600.0, ge=0)  # misfire_grace_time of each test
    audible_grace_s: float = Field(default=600.0, ge=0)


class TestHooksConfig(_Model):
    """Test-only fault injection; never set on a gateway. `stall_in = "poll"` (before the
    gauges are read) or `"evaluate"` (after, before the stages) makes the cycle after
    `stall_after_cycles` cycles hang for good while the event loop lives on, as a deadlocked
    await would: the SYS-4 test shows the watchdog pings stop (gauged/notify.py)."""

    stall_in: Literal["", "poll", "evaluate"] = ""
    stall_after_cycles: int = Field(default=0, ge=0)
class CapStage(_Model):
    """How a stage reads in a CAP alert."""

    urgency: CapUrgency
    severity: CapSeverity
    certainty: CapCertainty
    response: CapResponse | None = None  # CAP responseType
    instruction: CapTexts | None = None  # what to do; none: the announcement says it
    label: CapTexts | None = None  # the stage's name in headlines; none: its config name


# Defaults for the reference stages (DESIGN §1): the level and the rain are measured, so the
# stage is `Observed` from warning on; what it means for buildings is `Likely`.
CAP_STAGE_DEFAULTS: dict[str, dict[str, CapStage]] = {
    "level": {
        "notice": CapStage(urgency="Expected", severity="Moderate", certainty="Likely",
                           response="Monitor", label=CapTexts(ja="注意", en="notice"),
                           instruction=CapTexts(
                               ja="今後の気象情報に注意してください。",
                               en="Watch the weather information.")),
        "warning": CapStage(urgency="Immediate", severity="Severe", certainty="Likely",
                            response="Prepare", label=CapTexts(ja="警戒", en="warning"),
                            instruction=CapTexts(
                                ja="建物や地下室の浸水に注意してください。",
                                en="Beware of flooding of buildings and basements.")),
        "overflow": CapStage(urgency="Immediate", severity="Extreme", certainty="Observed",
                             response="Prepare", label=CapTexts(ja="氾濫危険", en="overflow"),
                             instruction=CapTexts(
                                 ja="避難の準備をしてください。", en="Prepare to evacuate.")),
    },
    "rain": {
        "notice": CapStage(urgency="Expected", severity="Moderate", certainty="Observed",
                           response="Monitor", label=CapTexts(ja="注意", en="notice")),
        "warning": CapStage(urgency="Immediate", severity="Severe", certainty="Observed",
                            response="Prepare", label=CapTexts(ja="警戒", en="warning"),
                            instruction=CapTexts(
                                ja="建物や地下室の浸水に厳重に注意してください。",
                                en="Take strict care against flooding of buildings and "
                                   "basements.")),
    },
}


class CapConfig(_Model):
    """CAP 1.2 alert documents for the stages that broadcast (gauged/cap.py)."""

    enabled: bool = False
    # CAP `sender`: globally unique, no spaces, commas, "<" or "&" (an e-mail-like address)
    sender: str = Field(default="", pattern=r"^[^\s,<&]*$")
    sender_name: CapTexts = CapTexts(ja="gauged", en="gauged")
    dir: Path | None = None  # default: the folder `cap` beside the state file
    topic: str = Field(default="cap", pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
    category: CapCategory = "Met"
    event_level: CapTexts = CapTexts(ja="河川の増水", en="River flood")
    event_rain: CapTexts = CapTexts(ja="大雨", en="Heavy rain")
    expires_h: float | None = Field(default=None, gt=0)  # none: until Updated or Cancelled
    exercise: bool = True  # an audible scheduled test sends an `Exercise` alert
    # urgency, severity, certainty … per stage name, for level and rain stations; merged
    # over CAP_STAGE_DEFAULTS
    level: dict[str, CapStage] = Field(default_factory=dict)
    rain: dict[str, CapStage] = Field(default_factory=dict)

    def stage(self, kind: str, name: str) -> CapStage | None:
        """The CAP reading of stage `name` of a `kind` station, or None."""
        given = self.level if kind == "level" else self.rain
        return given.get(name) or CAP_STAGE_DEFAULTS.get(kind, {}).get(name)

    def event(self, kind: str) -> CapTexts:
        return self.event_level if kind == "level" else self.event_rain


PlayerConfig = Annotated[AplayConfig | SinkConfig, Field(discriminator="kind")]

# Which TOML file `Config` reads: set by load_config for the duration of one load.
_toml_path: contextvars.ContextVar[Path] = contextvars.ContextVar("gauged_toml_path")


class Config(BaseSettings):
    """The whole configuration of one gateway."""

    model_config = SettingsConfigDict(
        env_prefix="GAUGED_", env_nested_delimiter="__", extra="forbid",
        nested_model_default_partial_update=True,
    )

    gateway: GatewayConfig
    status: StatusConfig = StatusConfig()
    influx: InfluxConfig = InfluxConfig()
    mqtt: MqttConfig = MqttConfig()
    commands: CommandsConfig = CommandsConfig()
    defaults: Defaults = Defaults()
    clock: ClockConfig = ClockConfig()
    state: StateConfig = StateConfig()
    tests: TestsConfig = TestsConfig()
    test_hooks: TestHooksConfig = TestHooksConfig()
    cap: CapConfig = CapConfig()
    buses: dict[str, BusConfig] = Field(default_factory=dict)
    gauges: dict[str, GaugeConfig] = Field(default_factory=dict)
    stations: dict[str, StationConfig] = Field(min_length=1)
    zones: dict[str, ZoneConfig] = Field(default_factory=dict)
    players: dict[str, PlayerConfig] = Field(default_factory=dict)
    sequences: dict[str, SequenceConfig] = Field(default_factory=dict)
    clips: dict[str, ClipConfig] = Field(default_factory=dict)

    # Where the file was read from; clip paths are relative to its folder.
    source: Path = Path("<none>")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file; the file overrides the defaults.
        return (init_settings, env_settings,
                TomlConfigSettingsSource(settings_cls, toml_file=_toml_path.get()))

    def clip_path(self, clip_id: str) -> Path:
        """The file of a clip, resolved against the config file's folder."""
        file = self.clips[clip_id].file
        return file if file.is_absolute() else self.source.resolve().parent / file

    def station_margin(self, station: StationConfig) -> float:
        if station.margin is not None:
            return station.margin
        return self.defaults.level_margin_m if station.kind == "level" else \
            self.defaults.rain_margin_mm

    @property
    def cap_dir(self) -> Path:
        """Where CAP documents are written: `[cap] dir`, or `cap` beside the state file."""
        return self.cap.dir if self.cap.dir is not None else self.state.path.parent / "cap"


_SINGULAR = {
    "buses": "bus", "gauges": "gauge", "stations": "station", "zones": "zone",
    "players": "player", "sequences": "sequence", "clips": "clip",
}


def _where(loc: tuple[int | str, ...]) -> tuple[str, str]:
    """Split a pydantic error location into (entry, field): ('station shin_hiroo', 'crest_m')."""
    parts = [str(p) for p in loc]
    if len(parts) >= 2 and parts[0] in _SINGULAR:
        entry = f"{_SINGULAR[parts[0]]} {parts[1]}"
        rest = loc[2:]
        if parts[0] in ("buses", "players") and len(rest) > 1:
            rest = rest[1:]  # the `kind` that chose the model adds nothing for a reader
    else:
        entry = parts[0] if parts else "(top)"
        rest = loc[1:]
    field = ""
    for p in rest:
        if isinstance(p, int):
            field += f"[{p}]"
        else:
            field += f".{p}" if field else str(p)
    return entry, field or "(entry)"


def load_config(path: Path | str, *, check_files: bool = False) -> Config:
    """Read, validate and cross-check the configuration at `path`.

    Raises ConfigError with one line per problem: `file: entry: field: message`.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"{path}: (file): cannot read: no such file"])
    try:
        tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: (file): TOML syntax: {exc}"]) from None
    token = _toml_path.set(path)
    try:
        config = Config(source=path)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            entry, field = _where(err["loc"])
            lines.append(f"{path}: {entry}: {field}: {err['msg']}")
        raise ConfigError(lines) from None
    finally:
        _toml_path.reset(token)
    problems = [f"{path}: {p}" for p in cross_check(config)]
    if problems:
        raise ConfigError(problems)
    return config


def cross_check(config: Config) -> list[str]:
    """Rules that span sections; each problem as `entry: field: message`."""
    problems: list[str] = []
    add = problems.append
    interval = config.gateway.poll_interval_s

    if config.commands.enabled and len(config.commands.secret.get_secret_value()) < 16:
        add("commands: secret: commands need a shared secret of at least 16 characters")

    for name, bus in config.buses.items():
        attempts = 1 + getattr(bus, "retries", 0)
        if bus.timeout_s * attempts >= interval:
            budget = f"{bus.timeout_s} s" + (f" × {attempts} attempts" if attempts > 1 else "")
            add(f"bus {name}: timeout_s: {budget} is not shorter than the poll interval "
                f"({interval} s)")

    units: dict[tuple[str, int], str] = {}
    for name, g in config.gauges.items():
        bus_cfg = config.buses.get(g.bus)
        if bus_cfg is None:
            add(f"gauge {name}: bus: unknown bus {g.bus!r}")
        elif isinstance(bus_cfg, SerialLineBusConfig):
            if g.line is None:
                add(f"gauge {name}: line: a gauge on serial_line bus {g.bus} needs a `line` "
                    f"table (command, pattern, checksum)")
            if g.spec is not None or g.status is not None:
                add(f"gauge {name}: register: a gauge on serial_line bus {g.bus} has no "
                    f"Modbus register or status")
        else:
            if g.spec is None:
                add(f"gauge {name}: register: a gauge on {bus_cfg.kind} bus {g.bus} needs a "
                    f"`register`")
            if g.line is not None:
                add(f"gauge {name}: line: `line` is for serial_line buses; {g.bus} is "
                    f"{bus_cfg.kind}")
        key = (g.bus, g.unit)
        if key in units:
            add(f"gauge {name}: unit: unit id {g.unit} on bus {g.bus} is already "
                f"used by gauge {units[key]}")
        else:
            units[key] = name
        if g.range is not None and not g.range[0] < g.range[1]:
            add(f"gauge {name}: range: minimum {g.range[0]} is not below maximum "
                f"{g.range[1]}")
        if g.quantity == "rain_counter" and g.spec is not None and g.spec.data_type not in (
                "uint16", "uint32"):
            add(f"gauge {name}: register.data_type: a rain counter must be uint16 or uint32, "
                f"not {g.spec.data_type}")
        if g.spec is not None and g.spec.data_type == "bool":
            add(f"gauge {name}: register.kind: a gauge value needs registers, not "
                f"{g.spec.kind} bits")

    used_gauges: dict[str, str] = {}
    for name, st in config.stations.items():
        gauge = config.gauges.get(st.gauge)
        if gauge is None:
            add(f"station {name}: gauge: unknown gauge {st.gauge!r}")
        else:
            want = "level_m" if st.kind == "level" else "rain_counter"
            if gauge.quantity != want:
                add(f"station {name}: gauge: a {st.kind} station needs a {want} gauge; "
                    f"{st.gauge} measures {gauge.quantity}")
            if st.gauge in used_gauges:
                add(f"station {name}: gauge: gauge {st.gauge} already feeds station "
                    f"{used_gauges[st.gauge]}")
            used_gauges.setdefault(st.gauge, name)
        if st.kind == "level" and st.crest_m is None:
            add(f"station {name}: crest_m: a level station needs the crest height "
                f"(freeboard = crest_m − level)")
        if st.kind == "rain" and st.crest_m is not None:
            add(f"station {name}: crest_m: only level stations have a crest")
        if not st.zones and (any(s.sequence for s in st.stages) or st.all_clear):
            add(f"station {name}: zones: stages broadcast but no zone is named")
        if st.all_clear is not None and st.all_clear not in config.sequences:
            add(f"station {name}: all_clear: unknown sequence {st.all_clear!r}")
        for zone in st.zones:
            if zone not in config.zones:
                add(f"station {name}: zones: unknown zone {zone!r}")
        seen_names: set[str] = set()
        for i, stage in enumerate(st.stages):
            where = f"station {name}: stages[{i}]"
            if not math.isfinite(stage.threshold):
                add(f"{where}.threshold: must be a finite number")
            if stage.name in seen_names or stage.name == "normal":
                add(f"{where}.name: stage name {stage.name!r} is used twice")
            seen_names.add(stage.name)
            if i > 0:
                prev = st.stages[i - 1].threshold
                if st.kind == "level" and not stage.threshold < prev:
                    add(f"{where}.threshold: {stage.threshold} m must be below the previous "
                        f"stage's {prev} m (freeboard shrinks as the river rises)")
                if st.kind == "rain" and not stage.threshold > prev:
                    add(f"{where}.threshold: {stage.threshold} mm must be above the previous "
                        f"stage's {prev} mm")
            if stage.repeat_min is not None and stage.sequence is None:
                add(f"{where}.repeat_min: the stage has no sequence to repeat")
            if stage.repeat_min is not None and stage.repeat_min * 60 < interval:
                add(f"{where}.repeat_min: {stage.repeat_min:g} min is shorter than the poll "
                    f"interval ({interval} s)")
            if stage.sequence is not None:
                seq = config.sequences.get(stage.sequence)
                if seq is None:
                    add(f"{where}.sequence: unknown sequence {stage.sequence!r}")
                elif seq.siren_on_s > 0:
                    for zone in st.zones:
                        z = config.zones.get(zone)
                        if z is not None and z.siren_relay is None:
                            add(f"{where}.sequence: {stage.sequence} sounds a siren but zone "
                                f"{zone} has no siren_relay")

    relays: dict[tuple[str, int, int], str] = {}
    for name, zc in config.zones.items():
        if zc.player not in config.players:
            add(f"zone {name}: player: unknown player {zc.player!r}")
        for field in ("siren_relay", "amplifier_relay"):
            relay: RelayConfig | None = getattr(zc, field)
            if relay is None:
                continue
            relay_bus = config.buses.get(relay.bus)
            if relay_bus is None:
                add(f"zone {name}: {field}.bus: unknown bus {relay.bus!r}")
            elif isinstance(relay_bus, SerialLineBusConfig):
                add(f"zone {name}: {field}.bus: relays need a Modbus bus; {relay.bus} is a "
                    f"serial_line")
            rkey = (relay.bus, relay.unit, relay.coil)
            if rkey in relays:
                add(f"zone {name}: {field}.coil: coil {relay.coil} of unit {relay.unit} on "
                    f"bus {relay.bus} is already {relays[rkey]}")
            else:
                relays[rkey] = f"{name}.{field}"
            if (relay.bus, relay.unit) in units:
                add(f"zone {name}: {field}.unit: unit {relay.unit} on bus {relay.bus} is "
                    f"gauge {units[(relay.bus, relay.unit)]}")

    for name, seq in config.sequences.items():
        if seq.siren_s and seq.siren_pattern:
            add(f"sequence {name}: siren_pattern: give siren_s or siren_pattern, not both")
        if any(step < 0 for step in seq.siren_pattern):
            add(f"sequence {name}: siren_pattern: durations cannot be negative")
        if seq.siren_on_s > config.defaults.siren_max_s:
            add(f"sequence {name}: siren_s: {seq.siren_on_s:g} s of siren exceeds the maximum "
                f"siren on-time "
                f"defaults.siren_max_s = {config.defaults.siren_max_s} s")
        if not seq.clips and seq.siren_on_s == 0:
            add(f"sequence {name}: clips: a sequence needs a siren or at least one clip")
        for i, clip in enumerate(seq.clips):
            if clip not in config.clips:
                add(f"sequence {name}: clips[{i}]: unknown clip {clip!r}")
    problems += _check_tests(config)
    problems += _check_cap(config)
    # the rules of combined stations live with the engine that runs them
    from gauged.engine import combine_problems

    problems += combine_problems(config)
    return problems


def _check_tests(config: Config) -> list[str]:
    from gauged.schedule import cron_trigger  # APScheduler is imported only when needed

    t, problems = config.tests, []
    for name in ("silent", "audible"):
        expr = getattr(t, name)
        if expr:
            try:
                cron_trigger(expr, config.gateway.timezone)
            except ValueError as exc:
                problems.append(f"tests: {name}: {exc}")
    if t.audible and t.audible_clip is None:
        problems.append("tests: audible_clip: the audible test needs a clip")
    if t.audible_clip is not None and t.audible_clip not in config.clips:
        problems.append(f"tests: audible_clip: unknown clip {t.audible_clip!r}")
    problems += [f"tests: audible_zones: unknown zone {z!r}" for z in t.audible_zones
                 if z not in config.zones]
    return problems


def _check_cap(config: Config) -> list[str]:
    """With CAP on: a sender, and a CAP reading for every stage that broadcasts."""
    cap, problems = config.cap, list[str]()
    if not cap.enabled:
        return problems
    if not cap.sender:
        problems.append("cap: sender: CAP alerts need a sender (e.g. an e-mail address)")
    for sid, st in config.stations.items():
        for i, stage in enumerate(st.stages):
            if stage.sequence is not None and cap.stage(st.kind, stage.name) is None:
                problems.append(f"station {sid}: stages[{i}].name: no CAP urgency, severity "
                                f"and certainty for {st.kind} stage {stage.name!r}: add "
                                f"[cap.{st.kind}.{stage.name}]")
    return problems


def missing_clip_files(config: Config) -> list[str]:
    """Clips whose file is missing: a warning, not an error (the siren still sounds)."""
    return [f"{config.source}: clip {cid}: file: {config.clip_path(cid)} not found"
            for cid in config.clips if not config.clip_path(cid).is_file()]


def summary(config: Config) -> list[str]:
    """A one-screen description of a valid configuration."""
    kinds: dict[str, int] = {}
    for st in config.stations.values():
        kinds[st.kind] = kinds.get(st.kind, 0) + 1
    lines = [
        f"{config.source}: OK",
        f"gateway {config.gateway.id}: one cycle every {config.gateway.poll_interval_s:g} s, "
        f"time zone {config.gateway.timezone}",
        f"{len(config.buses)} buses, {len(config.gauges)} gauges, "
        f"{kinds.get('level', 0)} level and {kinds.get('rain', 0)} rain stations, "
        f"{len(config.zones)} zones, {len(config.sequences)} sequences, "
        f"{len(config.clips)} clips",
    ]
    for sid, st in config.stations.items():
        unit = "m freeboard" if st.kind == "level" else "mm/60 min"
        stages = ", ".join(
            f"{s.name} {'≤' if st.kind == 'level' else '≥'}{s.threshold:g}"
            + (f" → {s.sequence}" if s.sequence else "") for s in st.stages)
        lines.append(f"  {sid:<20} {st.kind:<5} [{unit}] {stages}; zones {', '.join(st.zones)}")
    sinks = [n for n, on in (("influx", config.influx.enabled), ("mqtt", config.mqtt.enabled),
                             ("cap", config.cap.enabled)) if on]
    lines.append(f"status http://{config.status.host}:{config.status.port}/; "
                 f"uplinks: {', '.join(sinks) or 'none'}")
    return lines


def as_public_dict(config: Config) -> dict[str, Any]:
    """The configuration without secrets (SecretStr stays masked)."""
    return config.model_dump(mode="json", exclude={"source"})
