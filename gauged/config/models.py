"""The configuration's sections: one pydantic model per TOML table (gateway, stations, zones …).

Static rules live on the models (ranges, patterns, ordered thresholds); rules that span
sections live in `gauged/config/checks.py`; the root model that reads the file is
`gauged/config/settings.py`. `config/minato-furukawa.toml` is the reference documentation of
every field.
"""

from __future__ import annotations

import itertools
import math
import re
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from drivers.configs import LineSpec, RegisterSpec, RelayConfig, StatusSpec


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
    """Operator commands over MQTT and HTTP (gauged/ops/commands.py)."""

    enabled: bool = False
    secret: SecretStr = SecretStr("")  # the HMAC-SHA256 key shared with the senders
    max_bytes: int = Field(default=4096, ge=256, le=65536)
    max_ttl_s: float = Field(default=3600.0, gt=0, le=86400)
    clock_skew_s: float = Field(default=30.0, ge=0)  # `issued` may be this far ahead
    rate_per_min: float = Field(default=6.0, gt=0)  # commands executed, on average
    burst: int = Field(default=5, ge=1)  # … and at once


class BrokerConfig(_Model):
    """One MQTT broker of `[mqtt] brokers`: `{host = "…", port = 1883}` or "host:port"."""

    host: str = Field(min_length=1)
    port: int = Field(default=1883, ge=1, le=65535)

    @model_validator(mode="before")
    @classmethod
    def _host_port(cls, value: object) -> object:
        if isinstance(value, str):
            host, sep, port = value.rpartition(":")
            return {"host": host, "port": port} if sep and host else {"host": value}
        return value

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class InfluxConfig(_Model):
    enabled: bool = False
    url: str = "http://127.0.0.1:8086"
    org: str = "gauged"
    bucket: str = "gauged"
    token: SecretStr = SecretStr("")
    timeout_s: float = Field(default=5.0, gt=0)
    # Put before every measurement name (`level` → `<prefix>level`), so that a city-wide
    # database tells gauged's series from others; "" keeps the names of README "Schema"
    measurement_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9_]*$", max_length=32)
    # The spool (gauged/uplinks/spool.py): unset puts it next to the state file ([state] path), as
    # spool.sqlite3. Over spool_max_bytes (line-protocol bytes held), the oldest routine
    # telemetry is dropped (counted); events, alarms and broadcasts never are.
    spool_path: Path | None = None
    spool_max_bytes: int = Field(default=128 * 1024 * 1024, ge=4096)
    batch_points: int = Field(default=5000, ge=1, le=100_000)
    backoff_min_s: float = Field(default=0.5, gt=0)  # the first wait after a failure,
    backoff_max_s: float = Field(default=60.0, gt=0)  # doubling up to this (with jitter)
    # `Authorization: <auth_scheme> <token>` (no header when the token is empty): "Token" for
    # InfluxDB 2.x/3.x and 1.8 (token "user:password"), "Bearer" for 3.x and some proxies.
    auth_scheme: Literal["Token", "Bearer"] = "Token"
    gzip_level: int = Field(default=0, ge=0, le=9)  # request bodies gzip'd at this level; 0 off
    ca_file: Path | None = None  # the CA of an https url (the system's when None)


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
    # Fleet (DESIGN §7): several brokers, primary first. The uplink connects to the first
    # that answers and, when the connection drops, to the next one at once; empty: `host`
    # and `port` above are the only broker. Credentials and TLS are the same on every one.
    brokers: list[BrokerConfig] = Field(default_factory=list)
    keepalive_s: int = Field(default=30, ge=1, le=3600)  # a dead link is seen in 1.5 × this
    # On a backup, try the primary this often and go back to it when it answers (0: stay
    # on the backup until it fails)
    failback_s: float = Field(default=300.0, ge=0)
    # Home Assistant MQTT discovery documents (retained, under `discovery_prefix`)
    discovery: bool = False
    discovery_prefix: str = Field(default="homeassistant", min_length=1)

    def endpoints(self) -> list[BrokerConfig]:
        """The brokers in the order they are tried (the primary first)."""
        return list(self.brokers) or [BrokerConfig(host=self.host, port=self.port)]


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


class QualityRules(BaseModel):
    """The checks of one gauge (the `quality` table of a gauge in the config)."""

    model_config = ConfigDict(extra="forbid")

    # Largest plausible change per cycle: m for a level, mm of rain increment per cycle for a
    # counter. A level further than this from the last good value is a spike, unless the
    # next reading confirms it (a real step is seen twice in a row; a spike is not).
    max_step: float | None = Field(default=None, gt=0)
    # Identical values for this many cycles while other gauges of the same kind move …
    flatline_cycles: int | None = Field(default=None, ge=2)
    # … or for this many cycles whatever the others do.
    flatline_max_cycles: int | None = Field(default=None, ge=2)
    # No good reading for this many cycles: gauge_fault (stale).
    stale_cycles: int = Field(default=2, ge=1)
    # The fastest a level may fall (m/h). A fall faster than this from the last good reading
    # is a move toward safety that repetition does not confirm: the reading is suspect, and
    # two in a row are a gauge_fault (a gauge failing to a constant inside its range). None:
    # the default of the kind (DEFAULT_MAX_FALL_M_PER_H); 0 turns the check off.
    max_fall_m_per_h: float | None = Field(default=None, ge=0)
    # A related gauge (the station's `related`) that moves at least this much (m for a
    # level, mm of rain for a counter) while this one repeats one value for
    # `related_cycles` readings makes this one suspect, then gauge_fault (frozen).
    # None: the default of the kind (DEFAULT_RELATED_MOVE).
    related_move: float | None = Field(default=None, gt=0)
    related_cycles: int = Field(default=3, ge=2)


# The defaults of the checks that depend on the gauge's kind: a small, steep urban river can
# fall fast once the rain stops (the bundled design storm recedes at up to 3.4 m/h over one
# cycle), so 4 m/h leaves room while a gauge that drops from warning to 0.0 m in one cycle
# is still caught; neighbouring gauges on one river move together by centimetres, rain
# gauges of one ward within a few millimetres of a storm's rain.
DEFAULT_MAX_FALL_M_PER_H = 4.0
DEFAULT_RELATED_MOVE = {"level_m": 0.05, "rain_counter": 5.0}
# Two gauges of one station that differ by at most this much (m) agree (their mean is used).
DEFAULT_TOLERANCE_M = 0.10


class GaugeConfig(_Model):
    """One gauge: `register` (and optionally `status`) on a Modbus bus, `line` on a serial
    line; `range` is the physical range of the value; `quality` tunes the checks."""

    bus: str
    unit: int = Field(ge=0, le=247)
    quantity: Literal["level_m", "rain_counter"]
    # A channel of a multi-channel device (`[devices.NAME]`): bus and unit come from it.
    device: str | None = None
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
    # A level station may read a second gauge (radar and pressure, say): agreeing readings
    # (within `tolerance_m`) are averaged; when they disagree the higher level is taken, so
    # the more dangerous may raise a stage and both must agree to lower it; one gauge that is
    # not good leaves the other in charge (gauged/alarm/quality.py, `combine`).
    second_gauge: str | None = None
    tolerance_m: float | None = Field(default=None, ge=0)  # default DEFAULT_TOLERANCE_M
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
    # Stations whose gauges watch this one's (the same river, or the rain gauges of one
    # area; the relation is symmetric): a gauge that stays flat while a related one moves
    # is suspect within `related_cycles` (gauged/alarm/quality.py).
    related: list[str] = Field(default_factory=list)
    # While this station's gauge is in gauge_fault, its stage holds (the default) or, with
    # `follow = "<station>"`, follows that station's stage upward (never down).
    follow: str | None = None
    area: CapArea = CapArea()  # where its CAP alerts apply (gauged/alarm/cap.py)

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
    def gauges(self) -> tuple[str, ...]:
        """The gauges this station reads: its `gauge`, then its `second_gauge`."""
        return (self.gauge,) if self.second_gauge is None else (self.gauge, self.second_gauge)

    @property
    def tolerance(self) -> float:
        """How far (m) two gauges of the station may differ and still agree."""
        return DEFAULT_TOLERANCE_M if self.tolerance_m is None else self.tolerance_m

    @property
    def stage_quantity(self) -> str:
        """What this station's own stages compare."""
        return self.quantity or ("freeboard" if self.kind == "level" else "total")


class ZoneConfig(_Model):
    name: str = ""
    # Several stations reaching one stage within this many minutes are heard once on the
    # zone (a higher stage is always heard): DESIGN §1 "Zones hear an escalation once".
    min_gap_min: float = Field(default=30.0, ge=0)
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
    # a named siren signal (`suibo_1` … `suibo_4`, or one of `[signals]`): its steps and
    # repeats, in place of siren_s / siren_pattern (gauged/config/signals.py)
    siren_signal: str | None = None
    siren_repeats: int = Field(default=1, ge=1, le=20)  # times siren_pattern is played
    _signal_steps: list[float] | None = PrivateAttr(default=None)  # siren_signal, resolved

    def use_signal(self, steps: list[float]) -> None:
        """Set the steps of `siren_signal` (the root config resolves the name)."""
        self._signal_steps = list(steps)

    @property
    def siren_steps(self) -> list[float]:
        """On, off, on, … durations (s) of the siren."""
        if self._signal_steps is not None:
            return list(self._signal_steps)
        if self.siren_pattern:
            return repeat_steps(self.siren_pattern, self.siren_repeats)
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
    """The state that survives restarts (gauged/store/state.py): one SQLite file."""

    path: Path = Path("/var/lib/gauged/state.sqlite3")
    # stages saved longer ago than this are not restored: after a long outage the public
    # hears the current stage again, as on a first start
    max_age_s: float = Field(default=21600.0, gt=0)
    # a broadcast that a stop or a crash left unplayed or cut short is played again after
    # the restart when its stage still stands and it was decided at most this many minutes
    # before; otherwise it is reported (gauged/daemon/restore.py). 0: always reported
    replay_max_age_min: float = Field(default=15.0, ge=0)


class TestsConfig(_Model):
    """Scheduled siren tests (gauged/field/prooftests.py). Calendars are crontab lines (minute hour
    day month weekday, Sunday = 0 or 7) in the gateway's time zone; "" switches a test off."""

    silent: str = ""
    audible: str = ""
    audible_clip: str | None = None
    audible_zones: list[str] = Field(default_factory=list)  # empty: every zone
    # the audible test's siren, on, off, … seconds (empty: none); it must not resemble a
    # flood-fighting signal (gauged/config/signals.py), which check-config refuses
    siren_pattern: list[float] = Field(default_factory=list)
    hold_s: float = Field(default=1.0, gt=0, le=10)  # the silent test holds each relay ON
    silent_grace_s: float = Field(default=21600.0, ge=0)  # misfire_grace_time of each test
    audible_grace_s: float = Field(default=600.0, ge=0)


class TestHooksConfig(_Model):
    """Test-only fault injection; never set on a gateway (each logs a WARNING at start).
    `stall_in = "poll"` (before the
    gauges are read) or `"evaluate"` (after, before the stages) makes the cycle after
    `stall_after_cycles` cycles hang for good while the event loop lives on, as a deadlocked
    await would: the SYS-4 test shows the watchdog pings stop (gauged/ops/notify.py)."""

    stall_in: Literal["", "poll", "evaluate"] = ""
    stall_after_cycles: int = Field(default=0, ge=0)
    # The daemon's wall clock is the system clock plus the seconds written in this file,
    # re-read when the file is replaced (gauged/clock.py `OffsetWall`): the SCH-4 test boots
    # the daemon hours behind and steps it as NTP would, without root.
    wall_offset_file: Path | None = None
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
    """CAP 1.2 alert documents for the stages that broadcast (gauged/alarm/cap.py)."""

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



class AudioConfig(_Model):
    """What every clip file must be (gauged/config/audio.py), checked by `check-config` and
    at the daemon's start: a clip that breaks a rule is a configuration error."""

    clip_max_s: float = Field(default=60.0, gt=0)  # longer: a wrong file, or a hung player
    clip_min_s: float = Field(default=0.3, ge=0)  # shorter: a click, not an announcement
    rates_hz: list[int] = Field(default_factory=lambda: [8000, 11025, 16000, 22050, 24000,
                                                         32000, 44100, 48000])
    channels_max: int = Field(default=2, ge=1, le=8)
    # the loudest 50 ms of a clip quieter than this (AC RMS, dB of full scale): silent
    silence_dbfs: float = Field(default=-45.0, lt=0)


def repeat_steps(steps: list[float], repeats: int) -> list[float]:
    """On, off, … `steps` played `repeats` times; the off step after the last blast is not
    waited (the clips follow)."""
    out = list(steps) * repeats
    if len(out) % 2 == 0:
        out.pop()
    return out


class SirenSignal(_Model):
    """A siren signal as data: on, off, on, … seconds, played `repeats` times
    (gauged/config/signals.py holds the flood-fighting signals `suibo_1` … `suibo_4`)."""

    steps: list[float] = Field(min_length=1)
    repeats: int = Field(default=1, ge=1, le=20)
    label: str = ""

    @field_validator("steps")
    @classmethod
    def _positive(cls, steps: list[float]) -> list[float]:
        if any(not (math.isfinite(s) and s > 0) for s in steps):
            raise ValueError("every step lasts a positive, finite number of seconds")
        return steps

    @property
    def expanded(self) -> list[float]:
        """Every on, off, … step in order, repeats included."""
        return repeat_steps(self.steps, self.repeats)

    @property
    def on_s(self) -> float:
        """Total on-time."""
        return sum(self.expanded[0::2])
