"""Real services for the tests: mosquitto and VictoriaMetrics on free loopback ports, and
socat pty pairs standing in for serial adapters.

Each service runs as a child process in its own temporary directory, listens on 127.0.0.1 only
and logs to a file in that directory (its tail is quoted in every start error). Waiting is always
polling with a deadline, never a fixed sleep. A service can be stopped and started again on the
same port and data (outage tests); `close()` kills it for good. When the tests run from the main
thread, children also get SIGKILL from the kernel if pytest itself dies (`setpriv --pdeathsig`),
so no broker or database outlives a crashed run.

Only the standard library is used here, so the helpers import even when the project does not.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self, TypeVar

from gauged.fleet.procs import free_port as fleet_free_port

LOOPBACK = "127.0.0.1"

MOSQUITTO_BIN = Path("/usr/sbin/mosquitto")
MOSQUITTO_PASSWD_BIN = Path("/usr/bin/mosquitto_passwd")
VICTORIA_BIN = Path("/usr/bin/victoria-metrics")
SOCAT_BIN = Path("/usr/bin/socat")

_SETPRIV = shutil.which("setpriv")

# Loopback only: never route a test's HTTP request through a proxy from the environment.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))

S = TypeVar("S", bound="Service")

Series = dict[str, Any]
"""One line of VictoriaMetrics' /api/v1/export: {"metric": {...}, "values": [...],
"timestamps": [ms, ...]}."""


class ServiceError(RuntimeError):
    """A service did not start, did not become ready, or did not stop."""


class PortInUseError(ServiceError):
    """The service exited at start because its port was taken (free_port() is racy)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1, free now, below the kernel's ephemeral range and handed to no
    other test by the fleet's scheme (gauged/fleet/procs.py: blocks under a file lock). A port
    picked by binding port 0 is in the ephemeral range, where any outgoing connection (a
    fleet makes many) can take it before the service binds it: a daemon then refused to start
    ("the status port … is in use") in one CI run in three."""
    return fleet_free_port()


def start_on_free_port(build: Callable[[int], S], attempts: int = 5) -> S:
    """Build a service on a free port and start it, on another port if that one was taken."""
    for _ in range(attempts - 1):
        service = build(free_port())
        try:
            service.start()
        except PortInUseError:
            service.close()
            continue
        return service
    service = build(free_port())
    service.start()
    return service


def port_accepts(host: str, port: int, timeout: float = 0.2) -> bool:
    """True when a TCP connection to host:port succeeds right now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    interval: float = 0.02,
) -> None:
    """Poll `condition` until it is true; raise TimeoutError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def require_binary(path: Path, package: str) -> None:
    """Fail with the fix spelled out when a service binary is missing (never skip)."""
    if not os.access(path, os.X_OK):
        raise ServiceError(
            f"{path} is missing: install the Debian package {package!r} "
            f"(`make test` does it as root, or `sudo apt-get install {package}`)"
        )


class Service:
    """A server process on a fixed loopback port with a working directory and a log file.

    Subclasses give the command line and the readiness check. `start()` returns once the
    service answers; `stop()` ends it (SIGTERM, or SIGKILL with `kill=True`) and keeps port,
    configuration and data so that `start()` brings the same service back.
    """

    name: ClassVar[str] = "service"
    start_timeout: ClassVar[float] = 15.0

    def __init__(self, port: int, workdir: Path) -> None:
        self.host = LOOPBACK
        self.port = port
        self.workdir = workdir
        self.log_path = workdir / f"{self.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        workdir.mkdir(parents=True, exist_ok=True)

    # -- to be provided by subclasses ------------------------------------------------------

    def command(self) -> list[str]:
        raise NotImplementedError

    def is_ready(self) -> bool:
        raise NotImplementedError

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the process and wait until it is ready; raise ServiceError if it is not."""
        if self.running:
            raise ServiceError(f"{self.name} on port {self.port} is already running")
        argv = self.command()
        if _SETPRIV is not None and threading.current_thread() is threading.main_thread():
            # The kernel kills the child when the thread that started it dies: only safe from
            # the main thread (an executor thread may end while the service should live on).
            argv = [_SETPRIV, "--pdeathsig", "KILL", "--", *argv]
        with self.log_path.open("ab") as log:
            log.write(f"--- gauged tests: starting {' '.join(argv)}\n".encode())
            log.flush()
            self._log_offset = log.tell()
            self._proc = subprocess.Popen(
                argv,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        proc = self._proc
        deadline = time.monotonic() + self.start_timeout
        # Readiness alone could be another process answering on the port: the child must live.
        while not self.is_ready() or proc.poll() is not None:
            code = proc.poll()
            if code is not None:
                tail = self.log_tail()
                error = PortInUseError if "address already in use" in tail.lower() else ServiceError
                raise error(f"{self.name} exited with code {code} at start:\n{tail}")
            if time.monotonic() >= deadline:
                self.close()
                raise ServiceError(
                    f"{self.name} on port {self.port} not ready after {self.start_timeout:g} s:"
                    f"\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def stop(self, *, kill: bool = False, timeout: float = 10.0) -> None:
        """Stop the process: SIGTERM (clean shutdown) or SIGKILL (a crash); no-op if stopped.

        Returns once the process is gone and its port is closed.
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
        wait_until(
            lambda: not port_accepts(self.host, self.port),
            timeout,
            f"{self.name} port {self.port} to close",
        )

    def restart(self, *, kill: bool = False) -> None:
        """stop() then start() on the same port and data."""
        self.stop(kill=kill)
        self.start()

    def close(self) -> None:
        """Kill the process for good (teardown); never raises for an already dead process."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    def log_since_start(self) -> str:
        """What the service logged since the last start()."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the service's log file (for error messages)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{type(self).__name__} {self.host}:{self.port} {state} in {self.workdir}>"


class Mosquitto(Service):
    """A mosquitto broker: anonymous by default, or with users (password file) and an ACL.

    Persistence is off, so retained messages do not survive stop()/start(), as after a
    broker crash without a persistence file.
    """

    name = "mosquitto"

    def __init__(
        self,
        port: int,
        workdir: Path,
        *,
        users: Mapping[str, str] | None = None,
        acl: str | None = None,
        extra_config: str = "",
    ) -> None:
        require_binary(MOSQUITTO_BIN, "mosquitto")
        super().__init__(port, workdir)
        self.users = dict(users or {})
        self.conf_path = workdir / "mosquitto.conf"
        self.password_path = workdir / "passwd" if self.users else None
        self.acl_path = workdir / "acl" if acl is not None else None
        if self.password_path is not None:
            self._write_password_file(self.password_path)
        if self.acl_path is not None and acl is not None:
            self.acl_path.write_text(acl)
        self.conf_path.write_text(self._config(extra_config))

    def _write_password_file(self, path: Path) -> None:
        require_binary(MOSQUITTO_PASSWD_BIN, "mosquitto")
        for index, (user, password) in enumerate(self.users.items()):
            create = ["-c"] if index == 0 else []
            subprocess.run(
                [str(MOSQUITTO_PASSWD_BIN), *create, "-b", str(path), user, password],
                check=True,
                stdin=subprocess.DEVNULL,
                capture_output=True,
            )

    def _config(self, extra: str) -> str:
        lines = [
            f"listener {self.port} {self.host}",
            # As root, mosquitto drops to the user 'mosquitto', which cannot read the temp dir;
            # naming the current user keeps it as it is (ignored when not root).
            f"user {pwd.getpwuid(os.geteuid()).pw_name}",
            "persistence false",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        if self.password_path is not None:
            lines += ["allow_anonymous false", f"password_file {self.password_path}"]
        else:
            lines.append("allow_anonymous true")
        if self.acl_path is not None:
            lines.append(f"acl_file {self.acl_path}")
        return "\n".join(lines) + "\n" + extra

    def command(self) -> list[str]:
        return [str(MOSQUITTO_BIN), "-c", str(self.conf_path)]

    def is_ready(self) -> bool:
        # mosquitto logs "running" once every listener is bound; the port alone could be
        # answered by whoever won a free_port() race.
        return " running" in self.log_since_start() and port_accepts(self.host, self.port)


class VictoriaMetrics(Service):
    """A single-node VictoriaMetrics that accepts InfluxDB v2 writes and exports raw samples.

    `url` is the base URL for `influxdb_client.InfluxDBClient(url=...)` (any org, bucket and
    token); `write_url` is the raw line-protocol endpoint (`?precision=ns|us|ms|s`). A field
    becomes the series `<measurement>_<field>`, tags become labels, the bucket is dropped.

    Outages: `stop()` (SIGTERM, ~20 ms) keeps every accepted point. `stop(kill=True)` is a TSDB
    crash: VictoriaMetrics 1.79 then loses the points it accepted in the last ~5-10 s, even
    after flush(), so do not use it where accepted data must survive.
    """

    name = "victoria-metrics"

    def __init__(self, port: int, workdir: Path, *, dedup: bool = True) -> None:
        require_binary(VICTORIA_BIN, "victoria-metrics")
        super().__init__(port, workdir)
        self.data_path = workdir / "data"
        self.dedup = dedup
        self.url = f"http://{self.host}:{port}"
        self.write_url = f"{self.url}/api/v2/write"

    def command(self) -> list[str]:
        argv = [
            str(VICTORIA_BIN),
            f"-httpListenAddr={self.host}:{self.port}",
            f"-storageDataPath={self.data_path}",
            # Backfilled points (hours or days old) are accepted and never expire in a test.
            "-retentionPeriod=100y",
            # query/query_range show a point at once instead of hiding the last 30 s ...
            "-search.latencyOffset=0s",
            # ... and no response cache can hide points backfilled into the past.
            "-search.disableCache",
            # stop() must not hang on a client's open connection (default 7 s).
            "-http.maxGracefulShutdownDuration=1s",
        ]
        if self.dedup:
            # Like InfluxDB: the same series and timestamp written twice is one point (the last
            # write wins), so re-sent batches do not show up as duplicates in export().
            argv.append("-dedup.minScrapeInterval=1ms")
        return argv

    def _get(self, path: str, params: Mapping[str, str] | None = None) -> bytes:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with _HTTP.open(f"{self.url}{path}{query}", timeout=10) as response:
            body: bytes = response.read()
            return body

    def is_ready(self) -> bool:
        try:
            return self._get("/health").strip() == b"OK"
        except (OSError, urllib.error.URLError):
            return False

    def flush(self) -> None:
        """Make every accepted point searchable now (otherwise it takes about a second)."""
        self._get("/internal/force_flush")

    def export(self, match: str, *, flush: bool = True) -> list[Series]:
        """Raw samples of every series matching the selector, e.g. `{run="abc"}`.

        Each item: {"metric": {"__name__": ..., label: value}, "values": [...],
        "timestamps": [ms since the epoch, ...]}, sorted by metric name and labels.
        """
        if flush:
            self.flush()
        # The whole time axis: accelerated-clock tests write up to hours into the future,
        # which the default range (up to now) would hide. VictoriaMetrics itself refuses
        # samples more than two days ahead.
        body = self._get("/api/v1/export", {"match[]": match, "start": "0",
                                            "end": str(int(time.time()) + 3 * 86400)})
        series = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        return sorted(series, key=lambda s: sorted(s["metric"].items()))

    def wait_for(
        self,
        match: str,
        predicate: Callable[[list[Series]], bool],
        timeout: float = 10.0,
        interval: float = 0.05,
    ) -> list[Series]:
        """Poll export(match) until predicate(series) holds; return that export.

        Blocking: from an async test use `await wait_for_async(...)`, which leaves the event
        loop free to run the code under test.
        """
        deadline = time.monotonic() + timeout
        while True:
            series = self.export(match)
            if predicate(series):
                return series
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"timed out after {timeout:g} s waiting on {match}; last export: {series}"
                )
            time.sleep(interval)

    async def wait_for_async(
        self,
        match: str,
        predicate: Callable[[list[Series]], bool],
        timeout: float = 10.0,  # noqa: ASYNC109 - same call as wait_for(); errors show the data
        interval: float = 0.05,
    ) -> list[Series]:
        """wait_for() for async tests: the HTTP calls run in a thread, the pauses are awaited."""
        deadline = time.monotonic() + timeout
        while True:
            series = await asyncio.to_thread(self.export, match)
            if predicate(series):
                return series
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"timed out after {timeout:g} s waiting on {match}; last export: {series}"
                )
            await asyncio.sleep(interval)


class PtyPair:
    """A serial line in a test: two ptys joined by socat, reached through stable symlinks.

    `gateway` is the daemon's end (what a `/dev/serial/by-id/...` path would be), `device` the
    simulator's end; both are `socat ... link=` symlinks in `workdir/name/`. `stop()` is pulling
    the USB adapter out: socat ends, both ptys close and both paths vanish. `start()` (or
    `restart()`) plugs it back in: new ptys behind the same paths. socat logs to
    `workdir/name/socat.log`.
    """

    start_timeout: ClassVar[float] = 10.0

    def __init__(self, workdir: Path, name: str = "line") -> None:
        require_binary(SOCAT_BIN, "socat")
        self.name = name
        self.folder = workdir / name
        self.folder.mkdir(parents=True, exist_ok=True)
        self.gateway = self.folder / "gateway"
        self.device = self.folder / "device"
        self.log_path = self.folder / "socat.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        # rawer: no echo, no line editing, no CR/LF translation on either pty.
        return [
            str(SOCAT_BIN),
            "-d",
            "-d",
            f"pty,rawer,link={self.gateway}",
            f"pty,rawer,link={self.device}",
        ]

    def start(self) -> None:
        """Start socat and return once both paths lead to a pty."""
        if self.running:
            raise ServiceError(f"pty pair {self.name} is already running")
        self._remove_links()
        argv = self.command()
        if _SETPRIV is not None and threading.current_thread() is threading.main_thread():
            argv = [_SETPRIV, "--pdeathsig", "KILL", "--", *argv]
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        proc = self._proc
        deadline = time.monotonic() + self.start_timeout
        while not (self.gateway.exists() and self.device.exists()):
            if proc.poll() is not None:
                self._proc = None
                raise ServiceError(
                    f"socat for pty pair {self.name} exited with {proc.returncode}:\n"
                    f"{self.log_path.read_text(errors='replace')[-2000:]}"
                )
            if time.monotonic() >= deadline:
                self.close()
                raise ServiceError(f"pty pair {self.name}: links not there after "
                                   f"{self.start_timeout:g} s")
            time.sleep(0.005)

    def stop(self, timeout: float = 10.0) -> None:
        """End socat (SIGTERM: it closes both ptys); return once both paths are gone."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
        # socat unlinks on SIGTERM; after a SIGKILL the links would dangle, and a dangling
        # /dev/pts/N link may later lead to somebody else's pty.
        self._remove_links()

    def restart(self) -> None:
        """stop() then start(): the same paths, new ptys behind them."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Kill socat for good (teardown); never raises."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        self._remove_links()

    def _remove_links(self) -> None:
        for link in (self.gateway, self.device):
            if link.is_symlink():
                link.unlink()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<PtyPair {self.name} {state}: {self.gateway} <-> {self.device}>"


class PtyPairFactory(Protocol):
    """Type of the `pty_pair` fixture: `pty_pair("rs485")` returns a started pair."""

    def __call__(self, name: str = "line") -> PtyPair: ...


class MosquittoFactory(Protocol):
    """Type of the `mosquitto_factory` fixture."""

    def __call__(
        self,
        *,
        users: Mapping[str, str] | None = None,
        acl: str | None = None,
        extra_config: str = "",
    ) -> Mosquitto: ...


class VictoriaFactory(Protocol):
    """Type of the `victoria_factory` fixture."""

    def __call__(self, *, dedup: bool = True) -> VictoriaMetrics: ...


def fleet_broker_auth(
    gateways: Mapping[str, str],
    operators: Mapping[str, str] | None = None,
    readers: Mapping[str, str] | None = None,
    *,
    prefix: str = "gauged",
    discovery_prefix: str = "homeassistant",
) -> tuple[dict[str, str], str]:
    """Users and ACL text of a central broker of a fleet (DESIGN §7), for `Mosquitto(users=…,
    acl=…)` or `mosquitto_factory(users=…, acl=…)`.

    `gateways`: gateway id → password; each gateway's user name is its id, and the ACL line
    `pattern readwrite <prefix>/%u/#` confines it to its own topics (it can neither read nor
    command another gateway), plus `pattern write <discovery_prefix>/+/%u/#` for its Home
    Assistant discovery documents. `operators` may send commands to every gateway and read
    everything (a command still names its one gateway in its signed body); `readers` (the
    centre: the fleet view, a dashboard bridge) read everything and write nothing.
    """
    operators, readers = dict(operators or {}), dict(readers or {})
    clash = set(gateways) & (set(operators) | set(readers))
    if clash:
        raise ValueError(f"user names used twice: {sorted(clash)}")
    lines = [f"pattern readwrite {prefix}/%u/#", f"pattern write {discovery_prefix}/+/%u/#", ""]
    for user in operators:
        lines += [f"user {user}", f"topic write {prefix}/+/command", f"topic read {prefix}/#",
                  f"topic read {discovery_prefix}/#", ""]
    for user in readers:
        lines += [f"user {user}", f"topic read {prefix}/#", f"topic read {discovery_prefix}/#",
                  ""]
    return {**gateways, **operators, **readers}, "\n".join(lines)
