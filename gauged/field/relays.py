"""Driving relays: the one retry, the one fault report.

The zones (zones.py) and the proof tests (prooftests.py) write relays only through `drive`:
`CoilRelay.set` writes the coil and reads it back (drivers/relays.py, STYLE 8); `drive` tries
that `attempts` times and hands back the last error instead of raising it, so that the
caller decides what a relay that will not follow means to it (a broadcast goes on, a proof
test records it, a start carries on) and reports it with `report_fault`, which keeps the one
log line `relay_fault …` and the one `on_fault("relay_fault", relay, detail)` call.
`drive_off` is the pass that drives a list of relays OFF, as at start and stop.

Cancellation is never swallowed (STYLE 3): `drive` lets a CancelledError through at once and
adds no wait of its own before the first write (a siren starts when it is asked to). A
caller that must drive OFF even when cancelled shields the call (`drive_off` does).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from drivers.errors import DriverError
from drivers.relays import CoilRelay

log = logging.getLogger(__name__)

RELAY_ATTEMPTS = 3  # writes (each read back) before a relay is a relay_fault


def state_name(on: bool) -> str:
    """`on` or `off`, as log lines and results spell a relay state."""
    return "on" if on else "off"


async def drive(relay: CoilRelay, on: bool, *,
                attempts: int = RELAY_ATTEMPTS) -> DriverError | None:
    """Drive `relay` to `on`, each write read back, up to `attempts` times.

    Returns None once the relay follows, else the last DriverError (RelayFault when it read
    back another state, TransportError/DeviceError when the bus failed); never raises one.
    A cancellation propagates as it comes (shield the call to finish an OFF regardless).
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, not {attempts}")
    error: DriverError | None = None
    for _ in range(attempts):
        try:
            await relay.set(on)
        except DriverError as exc:
            error = exc
        else:
            return None
    return error


def report_fault(logger: logging.Logger, relay: str, on: bool, error: Exception, *,
                 zone: str | None = None, during: str = "",
                 on_fault: Callable[[str, str, str], None] | None = None) -> None:
    """Report a relay that did not follow: one ERROR line on `logger` (the caller's, so that
    the line names the module that saw it), then `on_fault("relay_fault", relay, detail)`.

    The line reads `relay_fault [zone=Z ]relay=R want=on|off[ (during)]: error`.
    """
    fmt = "relay_fault " + ("zone=%s " if zone is not None else "") + "relay=%s want=%s" + \
        (" (%s)" if during else "") + ": %s"
    args = ((zone,) if zone is not None else ()) + (relay, state_name(on)) + \
        ((during,) if during else ()) + (error,)
    logger.error(fmt, *args)
    if on_fault is not None:
        on_fault("relay_fault", relay, str(error))


async def drive_off(relays: Iterable[CoilRelay],
                    on_fault: Callable[[CoilRelay, DriverError], None], *,
                    attempts: int = RELAY_ATTEMPTS, logger: logging.Logger = log) -> None:
    """Drive every relay OFF, one after another, each through `drive`; never raises a
    DriverError.

    A relay that will not turn OFF is handed to `on_fault(relay, error)` and logged
    (`relay_fault relay=R want=off: error` on `logger`); the others are still driven. The whole
    pass is shielded: when the caller is cancelled, its CancelledError propagates at once and
    the pass still drives every relay OFF (none is left ON because an earlier write was cut).
    """
    todo = list(relays)  # taken now: the pass may outlive the caller

    async def drive_all() -> None:
        for relay in todo:
            error = await drive(relay, False, attempts=attempts)
            if error is not None:
                on_fault(relay, error)
                report_fault(logger, relay.name, False, error)

    await asyncio.shield(drive_all())
