"""The one relay drive (gauged/field/relays.py) and the child-task helpers (gauged/tasks.py).

Relays are real `CoilRelay`s on a fake hub: the fake is at the transport boundary (STYLE 13).
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from drivers.configs import RelayConfig
from drivers.errors import DriverError, RelayFault, TransportError
from drivers.relays import CoilRelay
from gauged.field.relays import RELAY_ATTEMPTS, drive, drive_off, report_fault
from gauged.tasks import cancel_and_wait, wait_child


class Board:
    """A relay board's coils behind a hub (the two calls a CoilRelay makes): `stuck` coils
    ignore writes, `down` fails every write."""

    name = "board"

    def __init__(self) -> None:
        self.coils: dict[int, bool] = {}
        self.stuck: set[int] = set()
        self.down = False
        self.writes: list[tuple[int, bool]] = []
        self.gate: asyncio.Event | None = None  # when set, a write waits for it

    async def write_coil(self, unit: int, address: int, value: bool) -> None:
        self.writes.append((address, value))
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise TransportError("bus board: not connected")
        if address not in self.stuck:
            self.coils[address] = value

    async def read_coils(self, unit: int, address: int, count: int = 1) -> list[bool]:
        return [self.coils.get(address, False)]


def relay(board: Board, coil: int) -> CoilRelay:
    return CoilRelay(f"r{coil}", board, RelayConfig(bus="board", coil=coil))  # type: ignore[arg-type]


# ---- drive ----------------------------------------------------------------------------

async def test_drive_writes_once_when_the_relay_follows() -> None:
    board = Board()
    assert await drive(relay(board, 0), True) is None
    assert board.writes == [(0, True)]
    assert board.coils[0] is True


async def test_drive_retries_then_hands_back_the_last_error() -> None:
    board = Board()
    board.stuck.add(0)
    error = await drive(relay(board, 0), True)
    assert isinstance(error, RelayFault)
    assert board.writes == [(0, True)] * RELAY_ATTEMPTS
    board.down = True
    assert isinstance(await drive(relay(board, 0), False, attempts=1), TransportError)
    assert board.writes[RELAY_ATTEMPTS:] == [(0, False)]


async def test_drive_wants_at_least_one_attempt() -> None:
    with pytest.raises(ValueError, match="attempts must be at least 1"):
        await drive(relay(Board(), 0), True, attempts=0)


async def test_drive_lets_a_cancellation_through() -> None:
    board = Board()
    board.gate = asyncio.Event()
    task = asyncio.create_task(drive(relay(board, 0), True))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert board.writes == [(0, True)]  # no retry after a cancel


def test_report_fault_keeps_each_callers_line(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("gauged.test.relays")
    faults: list[tuple[str, str, str]] = []
    error = RelayFault("reads False")
    with caplog.at_level(logging.ERROR, "gauged.test.relays"):
        report_fault(logger, "z.siren", True, error, zone="z",
                     on_fault=lambda *a: faults.append(a))
        report_fault(logger, "z.amp", False, error, during="scheduled test")
        report_fault(logger, "z.amp", False, error)
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("gauged.test.relays", logging.ERROR, "relay_fault zone=z relay=z.siren want=on: "
                                              "reads False"),
        ("gauged.test.relays", logging.ERROR, "relay_fault relay=z.amp want=off (scheduled "
                                              "test): reads False"),
        ("gauged.test.relays", logging.ERROR, "relay_fault relay=z.amp want=off: reads False")]
    assert faults == [("relay_fault", "z.siren", "reads False")]


# ---- drive_off --------------------------------------------------------------------------

async def test_drive_off_reports_a_stuck_relay_and_drives_the_others(
        caplog: pytest.LogCaptureFixture) -> None:
    board = Board()
    board.coils = {0: True, 1: True, 2: True}
    board.stuck.add(1)
    failed: list[tuple[str, DriverError]] = []
    with caplog.at_level(logging.ERROR, "gauged.field.relays"):
        await drive_off([relay(board, c) for c in (0, 1, 2)],
                        lambda r, exc: failed.append((r.name, exc)), attempts=1)
    assert board.coils == {0: False, 1: True, 2: False}
    assert [name for name, _ in failed] == ["r1"]
    assert [r.getMessage() for r in caplog.records] == [
        f"relay_fault relay=r1 want=off: {failed[0][1]}"]


async def test_drive_off_finishes_the_pass_when_its_caller_is_cancelled() -> None:
    board = Board()
    board.coils = {0: True, 1: True}
    board.gate = asyncio.Event()
    caller = asyncio.create_task(drive_off([relay(board, 0), relay(board, 1)],
                                           lambda r, exc: None))
    await asyncio.sleep(0)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller  # at once, not after the writes
    board.gate.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert board.coils == {0: False, 1: False}


# ---- child tasks ------------------------------------------------------------------------

async def test_cancel_and_wait_waits_for_the_cleanup_and_swallows_the_childs_cancel() -> None:
    cleaned = asyncio.Event()

    async def child() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)
            cleaned.set()

    task = asyncio.create_task(child())
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert task.cancelled()
    assert cleaned.is_set()


async def test_cancel_and_wait_lets_our_own_cancellation_win() -> None:
    release = asyncio.Event()

    async def slow_cleanup() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await release.wait()

    child = asyncio.create_task(slow_cleanup())
    await asyncio.sleep(0)
    parent = asyncio.create_task(cancel_and_wait(child))
    await asyncio.sleep(0)
    parent.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await parent
    assert child.cancelled()


async def test_cancel_and_wait_raises_the_childs_failure() -> None:
    async def failing_cleanup() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            raise RuntimeError("cleanup failed")

    task = asyncio.create_task(failing_cleanup())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError):
        await cancel_and_wait(task)


async def test_wait_child_returns_the_task_however_it_ended() -> None:
    async def fail() -> None:
        raise RuntimeError("no")

    async def block() -> None:
        await asyncio.Event().wait()

    ok = await wait_child(asyncio.create_task(asyncio.sleep(0, "x")))
    assert ok.result() == "x"
    failed = await wait_child(asyncio.create_task(fail()))
    assert isinstance(failed.exception(), RuntimeError)
    blocked = asyncio.create_task(block())
    asyncio.get_running_loop().call_soon(blocked.cancel)  # a pre-emption: not us
    assert (await wait_child(blocked)).cancelled()


@pytest.mark.parametrize("child_swallows_cancel", [False, True])
async def test_wait_child_cancelled_stops_the_child_first(child_swallows_cancel: bool) -> None:
    order: list[str] = []

    async def child() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(0)
            order.append("child cleaned up")
            if not child_swallows_cancel:
                raise

    task = asyncio.create_task(child())
    parent = asyncio.create_task(wait_child(task))
    await asyncio.sleep(0)
    parent.cancel()
    with pytest.raises(asyncio.CancelledError):
        await parent
    order.append("parent cancelled")
    assert order == ["child cleaned up", "parent cancelled"]
    assert task.done()
