"""The proof-test runner against the relay simulator: one test at a time, whoever asks, and
an abort that returns only once the test's relays are OFF (gauged/field/prooftests.py).

The daemon runs in the test's event loop (tests/fieldbus.py); commands and the alarm path
around these are in tests/integration/test_commands_mqtt.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fieldbus import field_rig, until
from services import PtyPairFactory

from gauged.field.prooftests import ProofTestNotStarted

SPEED = 5.0  # hold_s = 10 simulated seconds: 2 s a relay
TESTS = "\n[tests]\nhold_s = 10\n"


async def test_a_second_test_is_refused_before_it_touches_a_relay(
        tmp_path: Path, pty_pair: PtyPairFactory) -> None:
    async with field_rig(tmp_path, pty_pair, speed=SPEED,
                         edit=lambda text: text + TESTS) as rig:
        runner = rig.daemon.test_runner
        first = asyncio.create_task(runner.run("silent"))
        await until(lambda: rig.fleet.coils("relays", 1)[0], 10.0, "the first test's ON")
        writes = len(rig.fleet.relay_log)
        with pytest.raises(ProofTestNotStarted, match=r"a test is running \(silent\)"):
            await runner.run("silent")
        assert len(rig.fleet.relay_log) == writes  # the second wrote nothing
        await runner.abort()
        assert first.cancelled()
        assert rig.fleet.coils("relays", 1)[:2] == [False, False]
        assert runner.running is None


async def test_an_abort_waits_for_the_off_write_even_when_the_test_task_is_gone(
        tmp_path: Path, pty_pair: PtyPairFactory) -> None:
    """Cancelled twice (the daemon stopping while an alarm aborts it), the test's task ends
    while its shielded OFF write is still under way; `abort` must still wait for that write,
    or the alarm's siren ON could be followed by the test's late OFF."""
    async with field_rig(tmp_path, pty_pair, speed=SPEED,
                         edit=lambda text: text + TESTS) as rig:
        runner = rig.daemon.test_runner
        task = asyncio.create_task(runner.run("silent"))
        await until(lambda: rig.fleet.coils("relays", 1)[0], 10.0, "the test's siren ON")
        task.cancel()
        await asyncio.sleep(0)  # the test wakes with the first cancellation: OFF begins
        task.cancel()  # the second ends its task at once; the OFF write goes on
        await asyncio.wait({task})
        assert task.cancelled()
        assert runner.running == "releasing"  # the OFF write is still on its way
        with pytest.raises(ProofTestNotStarted, match="releasing"):  # no test on top of it
            await runner.run("silent")
        await runner.abort()
        assert rig.fleet.coils("relays", 1)[:2] == [False, False]  # at once: no waiting
        assert runner.running is None
