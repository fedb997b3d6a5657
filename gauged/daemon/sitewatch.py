"""The site's health each cycle: read the gateway's own state, judge every input, tell
operators (gauged/alarm/site.py holds the rules, gauged/field/site.py the readings).

It runs after the cycle's broadcasts are under way and the cycle is recorded: nothing here
can delay a siren, and nothing here can cause one. Its events go to the recorder (log,
/status, MQTT `event/fault` with kind `site` or `site_cleared`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from drivers.base import RawReading
from drivers.errors import DriverError
from gauged.alarm.site import GATEWAY, SiteEvent, SiteMonitor, describe_hours
from gauged.config.settings import Config
from gauged.field.site import GatewayHealth, input_values

log = logging.getLogger(__name__)


class SiteWatch:
    """One gateway's site health: the monitor and the gateway reader."""

    def __init__(self, config: Config) -> None:
        site = config.site
        self.config = site
        self.monitor = SiteMonitor(site)
        self.gateway = GatewayHealth(config.state.path.parent, thermal_dir=site.thermal_dir,
                                     clock_command=site.clock_sync_command) \
            if site.gateway_health else None
        self.events: list[SiteEvent] = []  # the latest, for /status (newest last)

    async def cycle(self, when: datetime,
                    raw: Mapping[str, RawReading | DriverError | None]) -> list[SiteEvent]:
        """Judge this cycle's readings; the alarms that entered or left."""
        values = input_values(self.config, raw)
        if self.gateway is not None:
            values |= await self.gateway.read()
        events = self.monitor.update(when.timestamp(), values)
        self.events = (self.events + events)[-20:]
        return events

    @property
    def mains_lost(self) -> bool:
        """Whether any mains input reads lost now."""
        return any(e.alarm == "mains_lost" for e in self.monitor.active.values())

    def snapshot(self) -> dict[str, Any]:
        """/status `site`: values, active alarms, battery estimates, recent events."""
        m = self.monitor
        return {
            "values": {k: (None if v is None else round(v, 3)) for k, v in m.values.items()},
            "alarms": [e.as_json() | {"since": datetime.fromtimestamp(e.time, UTC)
                                      .isoformat()} for e in m.active.values()],
            "battery_hours_left": {b: (None if h is None else round(h, 1))
                                   for b, h in m.hours_left.items()},
            "battery_estimate": {b: describe_hours(h) for b, h in m.hours_left.items()},
            "mains_lost": self.mains_lost,
            "gateway": {k.removeprefix(f"{GATEWAY}:"): v for k, v in m.values.items()
                        if k.startswith(f"{GATEWAY}:")},
            "events": [e.as_json() for e in self.events],
        }
