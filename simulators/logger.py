"""The cabinet behind a multi-channel datalogger: battery, mains, charger, door, temperature.

A field logger presents the river level and the rain counter (scenario-driven, like any gauge)
and the health of its own cabinet at the same unit id. This module models the cabinet, read
whenever a request asks for one of its channels (``[site.inputs.NAME]`` of the config, each
with a ``role``). Its state is driven at run time by the device's fault knobs (control
channel or faults file):

==================  ========  =================================================================
knob                value     effect
==================  ========  =================================================================
``mains_off``       flag      mains lost: the charger stops, the battery drops to its resting
                              voltage and drains at ``drain_v_per_h``
``drain_v_per_h``   number    how fast the battery falls without mains (default 0.3 V/h for a
                              12 V bank, twice that for 24 V), in simulated hours
``battery_v``       number    the battery's voltage now (the model goes on from there)
``door_open``       flag      the cabinet door switch is open
``charger_fault``   flag      the charger reports a fault
``ups_on_battery``  flag      the UPS runs on its battery (also true while ``mains_off``)
``cabinet_temp_c``  number    the cabinet temperature (default 25 °C)
==================  ========  =================================================================

With mains present the battery recovers toward its float voltage (13.6 V per 12 V) at 2 V per
simulated hour per 12 V; without, it rests at 12.7 V per 12 V at once and falls linearly down
to 10.5 V per 12 V (a deep-discharge cut-off).
"""

from __future__ import annotations

from collections.abc import Mapping

FLOAT_V = 13.6
REST_V = 12.7
CUTOFF_V = 10.5
RECHARGE_V_PER_H = 2.0
DRAIN_V_PER_H = 0.3
TEMP_C = 25.0


class Cabinet:
    """One cabinet's state, advanced in simulated time by each read."""

    def __init__(self, system_v: int = 12) -> None:
        self.k = system_v / 12
        self.volts = FLOAT_V * self.k
        self._t: float | None = None  # simulated UNIX time of the last update
        self._set_v: object = None  # the last `battery_v` knob applied

    def battery_v(self, now: float, knobs: Mapping[str, object]) -> float:
        """The battery voltage at simulated time ``now`` (seconds)."""
        hours = 0.0 if self._t is None else max(0.0, now - self._t) / 3600
        self._t = now
        set_v = knobs.get("battery_v")
        if set_v is not None and set_v != self._set_v:
            self.volts = float(set_v)  # type: ignore[arg-type]
        self._set_v = set_v
        if knobs.get("mains_off"):
            drain = float(knobs.get("drain_v_per_h", DRAIN_V_PER_H * self.k))  # type: ignore[arg-type]
            self.volts = min(self.volts, REST_V * self.k) - drain * hours
            self.volts = max(CUTOFF_V * self.k, self.volts)
        else:
            self.volts = min(FLOAT_V * self.k, self.volts + RECHARGE_V_PER_H * self.k * hours)
        return self.volts

    def value(self, role: str, now: float, knobs: Mapping[str, object]) -> float:
        """The engineering value of the channel of ``role`` now (contacts: 0 or 1)."""
        if role == "battery_v":
            return self.battery_v(now, knobs)
        if role == "mains":
            return 0.0 if knobs.get("mains_off") else 1.0
        if role == "ups_on_battery":
            return 1.0 if knobs.get("mains_off") or knobs.get("ups_on_battery") else 0.0
        if role in ("door", "charger_fault"):
            return 1.0 if knobs.get(f"{role}_open" if role == "door" else role) else 0.0
        if role == "cabinet_temp_c":
            return float(knobs.get("cabinet_temp_c", TEMP_C))  # type: ignore[arg-type]
        raise ValueError(f"no cabinet channel {role!r}")
