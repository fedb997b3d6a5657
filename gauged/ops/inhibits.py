"""Maintenance inhibits: a station or a zone taken out of the broadcasts for a while.

An inhibit is for work on a gauge (whose readings may then be anything) or on a loudspeaker
(where nobody should be standing next to a siren that starts). What it does:

- A **station** inhibit: the station is still read, judged, staged, stored and published
  (operators must see the river), but the broadcasts its stages request are withheld, and
  so are its CAP documents (the readings may come from the work on the gauge).
- A **zone** inhibit: no broadcast plays on the zone, whichever station requests it, and the
  scheduled tests leave its relays alone; CAP documents still go out (the river is real).

Every inhibit expires: it is given a duration (`defaults.inhibit_default_min` when none is
asked for) of at most `defaults.inhibit_max_h`, so a forgotten inhibit cannot silence a
zone for good. Inhibits live in the state store, survive restarts, and are shown in
/status; adding, releasing and expiring one is logged at WARNING.

A withheld broadcast is logged and published (outcome `inhibited`) and is **not** played
when the inhibit ends: sounding a stage long after it was reached would confuse more than
it warns, and the work that caused the inhibit may have produced the reading. Instead the
release says, at WARNING, which stations stand at a stage whose broadcast was withheld, so
the operator who ends the work decides (a manual broadcast); the station's next upward
transition, or its next repeat (`repeat_min`), sounds as usual.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from gauged.alarm.types import BroadcastRequest
from gauged.config.settings import Config
from gauged.errors import GaugedError
from gauged.store.state import Inhibit, StateStore

log = logging.getLogger(__name__)

SCOPES = ("station", "zone")


class InhibitError(GaugedError, ValueError):
    """An inhibit that cannot be added or released (the message says why)."""


@dataclass
class Withheld:
    """A broadcast an inhibit withheld."""

    request: BroadcastRequest
    inhibit: Inhibit


class Inhibits:
    """The inhibits in force, backed by the state store."""

    def __init__(self, config: Config, store: StateStore, now: Callable[[], float]) -> None:
        self.config = config
        self.store = store
        self.now = now
        self.active: list[Inhibit] = store.inhibits(now())
        self.withheld: dict[int, list[Withheld]] = {}  # by inhibit id
        for i in self.active:
            log.warning("inhibit in force scope=%s target=%s until=%s reason=%s by=%s",
                        i.scope, i.target, _iso(i.expires), i.reason, i.by)

    def add(self, scope: str, target: str, *, minutes: float | None = None, reason: str = "",
            by: str = "") -> Inhibit:
        """Inhibit a station or zone for `minutes`; raises InhibitError when not possible."""
        if scope not in SCOPES:
            raise InhibitError(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
        known = self.config.stations if scope == "station" else self.config.zones
        if target not in known:
            raise InhibitError(f"unknown {scope} {target!r}")
        d = self.config.defaults
        minutes = d.inhibit_default_min if minutes is None else minutes
        if not 0 < minutes <= d.inhibit_max_h * 60:
            raise InhibitError(f"minutes must be above 0 and at most {d.inhibit_max_h * 60:g} "
                               f"(defaults.inhibit_max_h), not {minutes:g}")
        now = self.now()
        expires = now + minutes * 60
        for old in self._matching(scope, target):  # a new inhibit replaces the old one
            self.store.clear_inhibit(old.id, now)
            self.active.remove(old)
        new_id = self.store.add_inhibit(scope, target, reason, now, expires, by)
        inhibit = Inhibit(new_id if new_id is not None else -len(self.active) - 1, scope,
                          target, reason, now, expires, None, by)
        self.active.append(inhibit)
        log.warning("inhibit added scope=%s target=%s until=%s reason=%s by=%s", scope,
                    target, _iso(expires), reason or "-", by or "-")
        return inhibit

    def release(self, scope: str, target: str, by: str = "") -> list[Inhibit]:
        """End the inhibits of a station or zone; raises InhibitError when there is none."""
        found = self._matching(scope, target)
        if not found:
            raise InhibitError(f"no inhibit in force on {scope} {target!r}")
        now = self.now()
        for i in found:
            self.store.clear_inhibit(i.id, now)
            self._ended(i, f"released by={by or '-'}")
        return found

    def expire(self) -> list[Inhibit]:
        """End the inhibits whose time is up (the daemon calls this every cycle)."""
        now = self.now()
        ended = [i for i in self.active if i.expires is not None and i.expires <= now]
        for i in ended:
            self._ended(i, "expired")
        return ended

    def blocking(self, request: BroadcastRequest) -> Inhibit | None:
        """The inhibit that withholds `request`, if any (zone inhibits first)."""
        for i in self.active:
            if (i.scope == "zone" and i.target == request.zone) or \
                    (i.scope == "station" and i.target == request.station):
                return i
        return None

    def withhold(self, request: BroadcastRequest, inhibit: Inhibit) -> None:
        self.withheld.setdefault(inhibit.id, []).append(Withheld(request, inhibit))
        log.warning("broadcast inhibited zone=%s station=%s stage=%s sequence=%s kind=%s "
                    "inhibit=%s:%s until=%s", request.zone, request.station,
                    request.stage_name, request.sequence, request.kind, inhibit.scope,
                    inhibit.target, _iso(inhibit.expires))

    def shift(self, seconds: float) -> None:
        """Re-date the inhibits in force by `seconds`: the wall clock was stepped
        (gauged/daemon/timeline.py), and an inhibit still lasts as long as it was given. The
        state store keeps the times it was given (after a restart they count again)."""
        self.active = [replace(i, created=i.created + seconds, expires=None if i.expires is None
                               else i.expires + seconds) for i in self.active]
        for i in self.active:
            log.warning("inhibit re-dated by the clock step scope=%s target=%s until=%s",
                        i.scope, i.target, _iso(i.expires))

    def zone_inhibited(self, zone: str) -> bool:
        return any(i.scope == "zone" and i.target == zone for i in self.active)

    def station_inhibit(self, station: str) -> Inhibit | None:
        return next((i for i in self.active if i.scope == "station" and i.target == station),
                    None)

    def snapshot(self) -> list[dict[str, Any]]:
        return [inhibit_json(i) | {"withheld": len(self.withheld.get(i.id, []))}
                for i in self.active]

    def _matching(self, scope: str, target: str) -> list[Inhibit]:
        return [i for i in self.active if i.scope == scope and i.target == target]

    def _ended(self, inhibit: Inhibit, how: str) -> None:
        self.active.remove(inhibit)
        withheld = self.withheld.pop(inhibit.id, [])
        log.warning("inhibit ended scope=%s target=%s %s withheld=%d", inhibit.scope,
                    inhibit.target, how, len(withheld))
        stations = sorted({w.request.station for w in withheld if w.request.kind != "all_clear"})
        if stations:
            log.warning("inhibit ended with withheld broadcasts scope=%s target=%s "
                        "stations=%s: not played now; check these stations and broadcast "
                        "by hand if their stage still calls for it", inhibit.scope,
                        inhibit.target, ",".join(stations))


def inhibit_json(i: Inhibit) -> dict[str, Any]:
    return {"id": i.id, "target": f"{i.scope}:{i.target}", "scope": i.scope,
            "reason": i.reason, "by": i.by, "since": _iso(i.created), "until": _iso(i.expires)}


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()
