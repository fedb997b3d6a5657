"""Shared fixtures: real mosquitto and VictoriaMetrics instances on free loopback ports, and
socat pty pairs for serial lines.

Every instance lives in its own temporary directory, belongs to one test and is killed at that
test's teardown, pass or fail. Helpers (free_port, wait_until, the service classes and the
factory types) live in tests/services.py; pytest puts tests/ on sys.path (there is no
tests/__init__.py), so test modules `import services`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from hil import Rig
from services import (
    Mosquitto,
    MosquittoFactory,
    PtyPair,
    PtyPairFactory,
    VictoriaFactory,
    VictoriaMetrics,
    start_on_free_port,
)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """The reference system's daemon and simulators at 180 × (one 3-minute cycle per real
    second; tests/hil.py). A module that needs another rig defines its own `rig`."""
    rig = Rig(tmp_path, speed=180.0)
    try:
        yield rig
    finally:
        rig.close()


@pytest.fixture(autouse=True)
def _state_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A daemon a test starts keeps its state (gauged/store/state.py) in the test's own folder:
    never in /var/lib/gauged, never shared with another test."""
    monkeypatch.setenv("GAUGED_STATE__PATH", str(tmp_path / "state" / "state.sqlite3"))


@pytest.fixture
def mosquitto_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoFactory]:
    """Start brokers on demand: `mosquitto_factory(users={"gauged": "pw"}, acl="...")`.

    With `users`, anonymous clients are refused and the password file is written with
    `mosquitto_passwd -b`; `acl` is the text of an acl_file (`user gauged` then
    `topic readwrite gauged/#`); `extra_config` is appended to mosquitto.conf. Every broker
    started through it is killed at teardown.
    """
    started: list[Mosquitto] = []

    def start(
        *,
        users: Mapping[str, str] | None = None,
        acl: str | None = None,
        extra_config: str = "",
    ) -> Mosquitto:
        def build(port: int) -> Mosquitto:
            workdir = tmp_path_factory.mktemp("mosquitto")
            broker = Mosquitto(port, workdir, users=users, acl=acl, extra_config=extra_config)
            started.append(broker)
            return broker

        return start_on_free_port(build)

    try:
        yield start
    finally:
        for broker in started:
            broker.close()


@pytest.fixture
def mosquitto(mosquitto_factory: MosquittoFactory) -> Mosquitto:
    """An anonymous broker: `.host`, `.port`, `.stop(kill=False)`, `.start()`, `.restart()`."""
    return mosquitto_factory()


@pytest.fixture
def victoria_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaFactory]:
    """Start VictoriaMetrics instances on demand; `dedup=False` keeps duplicate samples."""
    started: list[VictoriaMetrics] = []

    def start(*, dedup: bool = True) -> VictoriaMetrics:
        def build(port: int) -> VictoriaMetrics:
            tsdb = VictoriaMetrics(port, tmp_path_factory.mktemp("victoria"), dedup=dedup)
            started.append(tsdb)
            return tsdb

        return start_on_free_port(build)

    try:
        yield start
    finally:
        for tsdb in started:
            tsdb.close()


@pytest.fixture
def victoria(victoria_factory: VictoriaFactory) -> VictoriaMetrics:
    """A fresh, empty VictoriaMetrics, one per test (it starts in about 0.1 s).

    `.url` (for InfluxDBClient), `.write_url`, `.export(match)`, `.wait_for(match, predicate,
    timeout)`, `await .wait_for_async(...)`, `.flush()`, `.stop(kill=False)`, `.start()`.
    """
    return victoria_factory()


@pytest.fixture
def pty_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PtyPairFactory]:
    """Start socat pty pairs on demand: `pair = pty_pair("rs485")`.

    `pair.gateway` is the daemon's end, `pair.device` the simulator's end (stable symlink paths
    in a fresh temporary folder); `pair.stop()` removes both (the adapter pulled out),
    `pair.start()` / `pair.restart()` bring them back on the same paths. Every pair started
    through it is killed at teardown.
    """
    started: list[PtyPair] = []
    workdir = tmp_path_factory.mktemp("pty")

    def start(name: str = "line") -> PtyPair:
        pair = PtyPair(workdir, name)
        started.append(pair)
        pair.start()
        return pair

    try:
        yield start
    finally:
        for pair in started:
            pair.close()
