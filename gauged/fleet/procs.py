"""Child processes of the fleet demo: started on a loopback port, checked ready, stopped.

Only the standard library: the launcher is used by `gauged fleet-demo`, `make fleet-demo`,
the fleet tests and the PERF-7 bench alike. Readiness is polled with a deadline; a child
that exits during start raises with the tail of its log.
"""

from __future__ import annotations

import fcntl
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

LOOPBACK = "127.0.0.1"
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
_SETPRIV = shutil.which("setpriv")


class StackError(RuntimeError):
    """A part of the stack did not start or is missing."""


# Ports for the stack's services are taken below the kernel's ephemeral range (32768 and up
# on Linux), in blocks handed out through a counter file under a lock: a port the kernel
# gives to an outgoing connection (a scrape, a write, an MQTT client: a fleet makes many)
# or to another fleet starting at the same time (two test workers) is never chosen.
PORTS_FIRST, PORTS_END, BLOCK = 20000, 32768, 64
_BLOCK_FILE = Path(tempfile.gettempdir()) / "gauged-fleet-ports"
_ports: list[int] = []
_ports_lock = threading.Lock()


def _claim_block() -> list[int]:
    with _BLOCK_FILE.open("a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        text = f.read().strip()
        index = int(text) if text.isdigit() else random.randrange(1000)
        f.seek(0)
        f.truncate()
        f.write(str(index + 1))
    blocks = (PORTS_END - PORTS_FIRST) // BLOCK
    first = PORTS_FIRST + (index % blocks) * BLOCK
    return list(range(first, first + BLOCK))


def free_port() -> int:
    """A loopback TCP port, free now and not handed to anyone else by this scheme."""
    with _ports_lock:
        while True:
            if not _ports:
                _ports.extend(_claim_block())
            port = _ports.pop(0)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind((LOOPBACK, port))
                except OSError:
                    continue
            return port


def port_accepts(port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with HTTP.open(url, timeout=timeout) as response:
            return 200 <= int(response.status) < 300
    except (OSError, urllib.error.URLError):
        return False


def need(binary: str, package: str) -> str:
    """The path of `binary`, or a StackError naming the Debian package to install."""
    path = shutil.which(binary) or next(
        (p for p in (f"/usr/bin/{binary}", f"/usr/sbin/{binary}") if os.access(p, os.X_OK)),
        None)
    if path is None:
        raise StackError(f"{binary} is missing: install the Debian package {package!r} "
                         f"(`make deps` as root, or `sudo apt-get install {package}`)")
    return path


def wait_for(condition: Callable[[], bool], timeout: float, what: str,
             interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


class Proc:
    """One child process with its log file in `workdir`; `ready()` says it serves."""

    def __init__(self, name: str, argv: Sequence[str], workdir: Path, *,
                 ready: Callable[[], bool], env: Mapping[str, str] | None = None,
                 start_timeout: float = 30.0) -> None:
        self.name = name
        self.argv = list(argv)
        self.workdir = workdir
        self.ready = ready
        self.env = dict(env or {})
        self.start_timeout = start_timeout
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.running and self.proc is not None else None

    def start(self, *, wait: bool = True) -> None:
        if self.running:
            raise StackError(f"{self.name} is already running")
        argv = self.argv
        if _SETPRIV is not None and threading.current_thread() is threading.main_thread():
            # the kernel kills the child if the launcher dies: no stray broker or database
            argv = [_SETPRIV, "--pdeathsig", "KILL", "--", *argv]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(argv, cwd=self.workdir, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         env=os.environ | self.env)
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        proc = self.proc
        assert proc is not None
        deadline = time.monotonic() + self.start_timeout
        while not self.ready():
            if proc.poll() is not None:
                raise StackError(f"{self.name} exited with {proc.returncode} at start:\n"
                                 f"{self.log_tail()}")
            if time.monotonic() >= deadline:
                raise StackError(f"{self.name} not ready after {self.start_timeout:g} s:\n"
                                 f"{self.log_tail()}")
            time.sleep(0.05)

    def stop(self, *, kill: bool = False, timeout: float = 20.0) -> int | None:
        """SIGTERM (a clean stop) or SIGKILL (a crash, a power cut); returns the exit code."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        return proc.returncode

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])
