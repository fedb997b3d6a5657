"""The control channel: set fault knobs and read counts from another process.

JSON lines over TCP on 127.0.0.1 (one request per line, one reply line each, in order; many
connections allowed)::

    {"op": "set_fault", "bus": "rs485", "unit": 3, "knobs": {"no_answer": 0.5}}  → {"ok": true}
    {"op": "set_fault", "bus": "rs485", "knobs": {"delay_s": 0.05}}  (no unit: every device)
    {"op": "clear_faults"}  or  {"op": "clear_faults", "bus": "rs485"[, "unit": 3]}
                                                                              → {"ok": true}
    {"op": "get_faults"}  → {"ok": true, "faults": [{"bus", "unit", "knobs": {...}}, ...]}
                            (devices with at least one knob set)
    {"op": "stats"}       → {"ok": true, "total_faults": N, "devices": [{"bus", "unit",
                            "knobs", "requests", "faults": {knob: count}}], "buses": [{"bus",
                            "kind", counts}]}

Bus counts: ``frames`` received and ``foreign_frames`` (for a unit nobody has) everywhere;
``connections`` accepted and ``dropped`` (by ``disconnect``) on TCP; ``bad_frames`` (bad CRC,
not a request) and ``reopened`` (the pty came back after vanishing) on serial buses.
    {"op": "ping"}        → {"ok": true}

Anything wrong (bad JSON, unknown op, unknown device or knob, bad value) gets
``{"ok": false, "error": "<reason>"}`` and the connection stays open. ``set_fault`` merges: the
knobs given change, the others stay; a knob set to ``null``, ``false`` or 0 is removed (a
``*_rate`` only by ``null``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any, Protocol

from simulators.errors import FaultError, SimulatorError

log = logging.getLogger(__name__)

MAX_LINE = 65536


class Controlled(Protocol):
    """What the control channel drives (a :class:`~simulators.fleet.Fleet`)."""

    def set_fault(self, bus: str, unit: int | None = None, **knobs: object) -> None: ...

    def clear_faults(self, bus: str | None = None, unit: int | None = None) -> None: ...

    def stats(self) -> dict[str, Any]: ...

    def get_faults(self) -> dict[tuple[str, int], dict[str, object]]: ...


def _unit(request: dict[str, Any]) -> int | None:
    unit = request.get("unit")
    if unit is not None and (isinstance(unit, bool) or not isinstance(unit, int)):
        raise FaultError(f"unit must be an integer, got {unit!r}")
    return unit


def _bus(request: dict[str, Any], required: bool) -> str | None:
    bus = request.get("bus")
    if bus is None and not required:
        return None
    if not isinstance(bus, str):
        raise FaultError(f"bus must be a bus name, got {bus!r}")
    return bus


def handle(target: Controlled, request: object) -> dict[str, Any]:
    """The reply to one decoded request."""
    if not isinstance(request, dict):
        return {"ok": False, "error": "a request is a JSON object with an 'op'"}
    op = request.get("op")
    try:
        if op == "ping":
            return {"ok": True}
        if op == "set_fault":
            knobs = request.get("knobs", {})
            if not isinstance(knobs, dict):
                raise FaultError(f"knobs must be an object, got {knobs!r}")
            bus = _bus(request, required=True)
            assert bus is not None
            target.set_fault(bus, _unit(request), **knobs)
            return {"ok": True}
        if op == "clear_faults":
            target.clear_faults(_bus(request, required=False), _unit(request))
            return {"ok": True}
        if op == "get_faults":
            faults = [
                {"bus": bus, "unit": unit, "knobs": knobs}
                for (bus, unit), knobs in sorted(target.get_faults().items())
            ]
            return {"ok": True, "faults": faults}
        if op == "stats":
            return {"ok": True, **target.stats()}
    except (FaultError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        return {"ok": False, "error": str(message)}
    return {"ok": False, "error": f"unknown op {op!r} (set_fault, clear_faults, get_faults, "
            "stats, ping)"}


class ControlServer:
    """The JSON-lines control server; connection tasks live in the owner's task group."""

    def __init__(
        self, target: Controlled, host: str, port: int, group: asyncio.TaskGroup
    ) -> None:
        self.target = target
        self.host = host
        self.port = port
        self._group = group
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self._serial = 0

    async def start(self) -> None:
        """Listen (raise :class:`SimulatorError` if the port is taken)."""
        try:
            self._server = await asyncio.start_server(
                self._on_connect, self.host, self.port, limit=MAX_LINE
            )
        except OSError as exc:
            raise SimulatorError(
                f"control: cannot listen on {self.host}:{self.port}: {exc}"
            ) from exc

    async def close(self) -> None:
        """Stop listening and end every connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._clients):
            task.cancel()

    def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._serial += 1
        task = self._group.create_task(
            self._serve(reader, writer), name=f"simulators[control].client-{self._serial}"
        )
        self._clients.add(task)
        task.add_done_callback(self._clients.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:  # longer than MAX_LINE: the framing is lost
                    return
                if not line.endswith(b"\n"):
                    return
                if not line.strip():
                    continue
                try:
                    request = json.loads(line)
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    reply: dict[str, Any] = {"ok": False, "error": f"bad JSON: {exc}"}
                else:
                    reply = handle(self.target, request)
                    log.debug("control: %s → %s", request, reply)
                writer.write(json.dumps(reply).encode("utf-8") + b"\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
