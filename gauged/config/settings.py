"""The root of the configuration: a TOML file plus `GAUGED_…` environment overrides.

`gauged/config/load.py` reads a file into a `Config` and cross-checks it; the sections are in
`gauged/config/models.py`.
"""

from __future__ import annotations

import contextvars
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from drivers.configs import BusConfig, DeviceConfig, PlayerConfig
from gauged.config.models import (
    AudioConfig,
    CapConfig,
    ClipConfig,
    ClockConfig,
    CommandsConfig,
    Defaults,
    GatewayConfig,
    GaugeConfig,
    InfluxConfig,
    MqttConfig,
    SequenceConfig,
    SirenSignal,
    StateConfig,
    StationConfig,
    StatusConfig,
    TestHooksConfig,
    TestsConfig,
    ZoneConfig,
)
from gauged.config.signals import resolve
from gauged.config.site import SiteConfig, resolve_devices

DEFAULT_CONFIG = Path("config/minato-furukawa.toml")

# Which TOML file `Config` reads: set by load_config for the duration of one load.
toml_path: contextvars.ContextVar[Path] = contextvars.ContextVar("gaugedtoml_path")


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
    audio: AudioConfig = AudioConfig()  # what a clip file must be (gauged/config/audio.py)
    # siren signals by name: the flood-fighting signals overridden, or a ward's own
    # (gauged/config/signals.py)
    signals: dict[str, SirenSignal] = Field(default_factory=dict)
    devices: dict[str, DeviceConfig] = Field(default_factory=dict)
    site: SiteConfig = SiteConfig()

    # Where the file was read from; clip paths are relative to its folder.
    source: Path = Path("<none>")

    @model_validator(mode="before")
    @classmethod
    def _channels_take_their_device(cls, data: Any) -> Any:
        return resolve_devices(data)

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
                TomlConfigSettingsSource(settings_cls, toml_file=toml_path.get()))

    @model_validator(mode="after")
    def _resolve_signals(self) -> Config:
        """Sequences that name a siren signal get its steps."""
        resolve(self.sequences, self.signals)
        return self

    def clip_path(self, clip_id: str) -> Path:
        """The file of a clip, resolved against the config file's folder."""
        file = self.clips[clip_id].file
        return file if file.is_absolute() else self.source.resolve().parent / file

    def station_margin(self, station: StationConfig) -> float:
        if station.margin is not None:
            return station.margin
        return self.defaults.level_margin_m if station.kind == "level" else \
            self.defaults.rain_margin_mm

    def channels(self) -> dict[str, tuple[str, str]]:
        """Every gauge a station reads, as (station, gauge) under its channel id, in config
        order: a station's first gauge is the station's own id, a second gauge
        `station:gauge`. Quality history, polling and scenario rows are per channel."""
        out = {}
        for sid, st in self.stations.items():
            out[sid] = (sid, st.gauge)
            if st.second_gauge is not None:
                out[f"{sid}:{st.second_gauge}"] = (sid, st.second_gauge)
        return out

    @property
    def cap_dir(self) -> Path:
        """Where CAP documents are written: `[cap] dir`, or `cap` beside the state file."""
        return self.cap.dir if self.cap.dir is not None else self.state.path.parent / "cap"

