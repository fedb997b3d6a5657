"""The site's own health in the configuration: `[site]` and `[site.inputs.NAME]`.

Inputs that are not river or rain: the cabinet's battery voltage, a mains-present contact, a
charger fault, the cabinet door, the cabinet temperature, a UPS "on battery" contact, each a
channel of a device (`[devices.NAME]`, drivers/configs.py). The gateway's own CPU
temperature, free disk and clock synchronisation come from the OS. Thresholds raise operator
alarms (gauged/alarm/site.py), never a siren.

Defaults for a 12 V lead-acid system (`system_v = 12`): low battery below 11.8 V (about a
fifth of the charge left under a light load), cleared at 12.4 V, empty at 10.8 V (1.8 V per
cell, where a deep-discharge cut-off opens); a 24 V system doubles them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from drivers.configs import RegisterSpec

SiteRole = Literal["battery_v", "mains", "charger_fault", "door", "cabinet_temp_c",
                   "ups_on_battery"]
CONTACT_ROLES = frozenset({"mains", "charger_fault", "door", "ups_on_battery"})
# The value a contact reads when it means trouble (before `invert`).
ALARM_WHEN = {"mains": 0, "charger_fault": 1, "door": 1, "ups_on_battery": 1}

# (low, clear, empty) volts of a lead-acid battery bank
BATTERY_VOLTS = {12: (11.8, 12.4, 10.8), 24: (23.6, 24.8, 21.6)}


class SiteInputConfig(BaseModel):
    """One health input: a channel of a device, what it is, and how its value reads."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    role: SiteRole
    device: str
    # `register` in the file (BaseModel already has a `register`)
    spec: RegisterSpec = Field(alias="register")
    invert: bool = Field(default=False, description="a contact wired the other way round")


class SiteConfig(BaseModel):
    """`[site]`: thresholds of the site's health alarms and its inputs."""

    model_config = ConfigDict(extra="forbid")

    system_v: Literal[12, 24] = 12
    battery_low_v: float | None = Field(default=None, gt=0)
    battery_clear_v: float | None = Field(default=None, gt=0)
    battery_empty_v: float | None = Field(default=None, gt=0)
    # the battery estimate fits the voltage of this many minutes (at least three readings)
    battery_trend_min: float = Field(default=60.0, gt=0)
    cabinet_temp_high_c: float = 50.0
    cabinet_temp_clear_c: float = 45.0
    # the gateway itself (read from the OS)
    gateway_health: bool = True
    cpu_temp_high_c: float = 80.0
    cpu_temp_clear_c: float = 75.0
    disk_free_low_mb: float = Field(default=200.0, ge=0)
    disk_free_clear_mb: float = Field(default=300.0, ge=0)
    clock_sync: bool = Field(default=True, description="alarm when the OS clock is not "
                                                        "synchronised (NTP)")
    # while mains is lost: keep the status page (true) or show a short notice instead, to
    # save the CPU of drawing its charts (false); alarms are never affected
    on_battery_page: bool = True
    # while mains is lost: post routine telemetry to InfluxDB at most every this many seconds
    # (0: every cycle, as on mains), to wake the radio less; stage changes, broadcasts, site
    # alarms and commands are still posted at once, MQTT is unchanged
    on_battery_uplink_every_s: float = Field(default=0.0, ge=0, le=86_400)
    # where the gateway's readings come from (the defaults suit a Linux gateway)
    thermal_dir: Path = Path("/sys/class/thermal")
    clock_sync_command: list[str] = Field(
        default_factory=list, description="a program printing yes/no (default: adjtimex)")
    inputs: dict[str, SiteInputConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _clear_beyond_alarm(self) -> SiteConfig:
        low, clear, empty = self.battery_volts
        if not empty < low < clear:
            raise ValueError(f"battery volts must read empty < low < clear, not {empty} / "
                             f"{low} / {clear}")
        if not self.cabinet_temp_clear_c < self.cabinet_temp_high_c:
            raise ValueError("cabinet_temp_clear_c must be below cabinet_temp_high_c")
        if not self.cpu_temp_clear_c < self.cpu_temp_high_c:
            raise ValueError("cpu_temp_clear_c must be below cpu_temp_high_c")
        if not self.disk_free_low_mb < self.disk_free_clear_mb:
            raise ValueError("disk_free_clear_mb must be above disk_free_low_mb")
        return self

    @property
    def battery_volts(self) -> tuple[float, float, float]:
        """(low, clear, empty) volts, the system's defaults where not given."""
        low, clear, empty = BATTERY_VOLTS[self.system_v]
        return (self.battery_low_v or low, self.battery_clear_v or clear,
                self.battery_empty_v or empty)


def resolve_devices(data: Any) -> Any:
    """A gauge or a zone's relay naming `device` takes the device's bus and unit (raw
    config, before validation). One that also gives a bus or unit keeps them: the
    configuration check compares them with its device's. An unknown device leaves an empty
    bus, which the check names."""
    if not isinstance(data, dict):
        return data
    devices = data.get("devices")
    devices = devices if isinstance(devices, dict) else {}

    def fill(entry: Any) -> Any:
        if not isinstance(entry, dict) or not isinstance(entry.get("device"), str):
            return entry
        d = devices.get(entry["device"])
        where = {"bus": d.get("bus"), "unit": d.get("unit")} if isinstance(d, dict) \
            else {"bus": "", "unit": 0}
        return where | entry

    out = dict(data)
    if isinstance(data.get("gauges"), dict):
        out["gauges"] = {name: fill(g) for name, g in data["gauges"].items()}
    if isinstance(data.get("zones"), dict):
        out["zones"] = {name: {k: fill(v) if k in ("siren_relay", "amplifier_relay") else v
                               for k, v in z.items()} if isinstance(z, dict) else z
                        for name, z in data["zones"].items()}
    return out
