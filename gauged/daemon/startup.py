"""What must hold before the daemon touches a relay or its state: one daemon per state
folder, a state folder it can use, a status port it can have.

**One daemon per state folder.** Two daemons on one state file would restore the same stages,
drive the same relays and write the same spool (it lives beside the state file by default).
The first thing a daemon does (`Daemon.opened`, before the state is opened or a relay
driven) is take an exclusive `flock` on `gauged.lock` in the state folder, held for the
process's life; it writes its pid, config and start time into the file. A second daemon
finds the lock held, reads who holds it, and refuses to start with one line naming it. The
kernel releases the lock when the process ends, however it ends (`kill -9` included), so a
restart never finds a stale lock; the file stays (removing it would let two daemons lock
two different files of the same name).

**Start-up problems are one line.** A state folder that cannot be created, read or written,
a lock held by another daemon, a status port in use: each is a `StartupError` whose message
is the whole story. `gauged run` writes it as one line on stderr (the journal, under systemd)
and exits 1 (DESIGN §5), no traceback. The status port is checked once the lock is held and
before anything else (`check_status_port`: a bind on the same address, as the server will),
and the server's own start turns a port taken since into the same error (`listening`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

from gauged.errors import StartupError
from gauged.ops.status import StatusServer

LOCK_NAME = "gauged.lock"


@contextlib.contextmanager
def instance_lock(state_path: Path, config_source: Path) -> Iterator[Path]:
    """Hold the state folder's lock while the block runs; yields the lock file's path.

    Raises StartupError when the folder cannot be used or another daemon holds the lock."""
    folder = state_path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise StartupError(f"not starting: the state folder {folder} ([state] path in "
                           f"{config_source}) is a file, not a folder") from exc
    except OSError as exc:
        raise StartupError(f"not starting: cannot create the state folder {folder} "
                           f"([state] path in {config_source}): {_why(exc)}") from exc
    if not os.access(folder, os.R_OK | os.W_OK | os.X_OK):
        raise StartupError(f"not starting: the state folder {folder} is not readable and "
                           f"writable by this user (uid {os.geteuid()}): fix its owner or "
                           f"mode, or [state] path in {config_source}")
    path = folder / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StartupError(f"not starting: cannot open the lock file {path} in the state "
                           f"folder: {_why(exc)}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StartupError(
                f"not starting: another gauged ({_holder(fd)}) runs on the state folder "
                f"{folder}: it holds {path} (one daemon per state folder; stop it first, or "
                f"give this one its own [state] path)") from None
        except OSError as exc:
            raise StartupError(f"not starting: cannot lock {path}: {_why(exc)}") from exc
        started = datetime.now(UTC).isoformat(timespec="seconds")
        with contextlib.suppress(OSError):  # a full disk: the lock holds, its pid is unknown
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid={os.getpid()} config={config_source} started={started}\n"
                      .encode(), 0)
        try:
            yield path
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # whoever reads it next finds no pid of a process gone
    finally:
        os.close(fd)  # releases the lock


def _holder(fd: int) -> str:
    """Who holds the lock, as its file says (`pid 1234, config …, started …`)."""
    try:
        text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    fields = dict(re.findall(r"(\w+)=(\S+)", text))
    if "pid" not in fields:
        return "pid unknown: it is still starting"
    return ", ".join(f"{k} {fields[k]}" if k != "pid" else f"pid {fields[k]}"
                     for k in ("pid", "config", "started") if k in fields)


def check_status_port(host: str, port: int, config_source: Path) -> None:
    """Raise StartupError unless the status server can listen on `host`:`port` (port 0, any
    free port, always can). Binds as asyncio's server does (SO_REUSEADDR, IPv6 only on an
    IPv6 socket), then lets go."""
    if port == 0:
        return
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(f"not starting: the status host {host!r} ([status] host in "
                           f"{config_source}) does not resolve: {exc.strerror}") from exc
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise port_problem(host, port, exc, config_source) from exc


def port_problem(host: str, port: int, exc: OSError, config_source: Path) -> StartupError:
    if exc.errno == errno.EADDRINUSE:
        return StartupError(f"not starting: the status port {host}:{port} is in use (another "
                            f"gauged, or another program: `ss -ltnp 'sport = :{port}'` names "
                            f"it); [status] port in {config_source}")
    return StartupError(f"not starting: cannot listen on the status address {host}:{port}: "
                        f"{_why(exc)}; [status] host and port in {config_source}")


@contextlib.asynccontextmanager
async def listening(server: StatusServer, config_source: Path) -> AsyncIterator[StatusServer]:
    """`async with server`, a failure to listen turned into StartupError (the port taken
    between `check_status_port` and now)."""
    try:
        await server.__aenter__()
    except OSError as exc:
        raise port_problem(server.host, server.port, exc, config_source) from exc
    try:
        yield server
    finally:
        await server.__aexit__(None, None, None)


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)
