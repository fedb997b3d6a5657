"""Start-up refusals through the real `gauged run` process (issue 13, item 8).

- One daemon per state folder: a second `gauged run` on the same state refuses to start before
  it opens the state or touches a relay, with one line naming the running one (its pid, from
  the lock file), and exits 1. The lock goes with the process: after a stop or a `kill -9`
  the next daemon starts at once.
- A status port in use, a state folder that cannot be created, read or written: exit 1 with
  one line on stderr (the journal under systemd: with `$JOURNAL_STREAM` naming stderr, the
  line carries syslog priority 3), no traceback, no relay touched, no state written.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import pytest
from hil import REFERENCE, ROOT, Rig
from services import free_port


def run_cli(config: Path, state: Path, *, stderr_path: Path, prefix: list[str] | None = None,
            env: Mapping[str, str] | None = None) -> int:
    """`gauged run` to its end (it must end by itself: a refusal); stderr into a file."""
    with stderr_path.open("w", encoding="utf-8") as err:
        proc = subprocess.run(
            [*(prefix or []), sys.executable, "-m", "gauged", "run", "--config", str(config)],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            timeout=60, env=os.environ | {"PYTHONPATH": str(ROOT),
                                          "GAUGED_STATE__PATH": str(state)} | dict(env or {}))
    return proc.returncode


def lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def test_second_instance_refused_with_one_line_naming_the_running_one(rig: Rig) -> None:
    rig.start_simulators(rig.steady_level(1.0))
    first = rig.start_daemon()
    rig.wait_for_status(lambda s: s["cycles"] >= 1, rig.lead_s + 20, "the first daemon")
    relays = len(rig.relay_log())

    second = rig.start_daemon(name="second")
    assert second.wait(30) == 1
    [line] = lines(rig.log("second"))  # one line, no traceback
    folder = rig.state_path.parent
    assert "ERROR" in line
    assert f"not starting: another gauged (pid {first.pid}, config {rig.config}, started " \
        in line
    assert f"runs on the state folder {folder}: it holds {folder / 'gauged.lock'}" in line
    assert len(rig.relay_log()) == relays  # the second one touched no relay
    status = rig.wait_for_status(lambda s: s["cycles"] >= 3, 20, "the first one goes on")
    assert status["stations"]["shin_hiroo"]["stage_name"] == "normal"
    assert first.poll() is None
    assert "ERROR" not in rig.log("daemon")

    # the lock goes with its process, however it ends: after kill -9 the next one starts
    assert rig.kill("daemon") == -9
    third = rig.start_daemon()
    rig.wait_for_status(lambda s: s["cycles"] >= 1, 20, "the daemon started after kill -9")
    assert (folder / "gauged.lock").read_text().startswith(f"pid={third.pid} ")
    assert rig.stop("daemon") == 0
    assert (folder / "gauged.lock").read_text() == ""  # no pid of a process gone


def test_port_in_use_exits_1_with_one_line_before_any_relay_or_state(rig: Rig) -> None:
    rig.start_simulators(rig.steady_level(1.0))
    with socket.socket() as taken:  # another program on the status port
        taken.bind(("127.0.0.1", rig.ports["status"]))
        taken.listen()
        stderr = rig.workdir / "stderr.log"
        # journald's view: $JOURNAL_STREAM names our stderr, lines carry their priority
        with stderr.open("w") as f:
            st = os.fstat(f.fileno())
        code = run_cli(rig.config, rig.state_path, stderr_path=stderr,
                       env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    assert code == 1
    port = rig.ports["status"]
    assert lines(stderr.read_text()) == [
        f"<3>ERROR gauged: not starting: the status port 127.0.0.1:{port} is in use (another "
        f"gauged, or another program: `ss -ltnp 'sport = :{port}'` names it); [status] port "
        f"in {rig.config}"]
    assert rig.relay_log() == []  # not even OFF: the relays may be another daemon's
    assert not rig.state_path.exists()  # nothing restored, nothing written


def test_unwritable_state_folder_exits_1_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "gauged.toml"
    config.write_text(REFERENCE.read_text(encoding="utf-8").replace(
        "port = 8080\n", f"port = {free_port()}\n"), encoding="utf-8")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the state folder should be\n")
    stderr = tmp_path / "stderr.log"
    assert run_cli(config, blocker / "state.sqlite3", stderr_path=stderr) == 1
    [line] = lines(stderr.read_text())
    assert "ERROR" in line
    assert line.endswith(f"gauged: not starting: the state folder {blocker} ([state] path in "
                         f"{config}) is a file, not a folder")
    # and one more level down: the folder cannot be created
    assert run_cli(config, blocker / "state" / "state.sqlite3", stderr_path=stderr) == 1
    [line] = lines(stderr.read_text())
    assert line.endswith(f"gauged: not starting: cannot create the state folder "
                         f"{blocker / 'state'} ([state] path in {config}): Not a directory")


@pytest.mark.parametrize("mode", [0o555, 0o000], ids=["read-only", "unreadable"])
def test_unwritable_state_folder_by_permissions_exits_1_with_one_line(mode: int) -> None:
    """A folder the daemon's user may not write (or read). Root passes any permission check,
    so as root the daemon runs without the capabilities that let it (setpriv drops
    CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH): the folder's owner bits then apply to it, as
    to any user. (Running it as nobody instead would fail wherever the checkout itself is
    private to root, as a CI's clone may be.)"""
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv is not None, "setpriv (util-linux) is needed to drop root's powers"
        prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"]
    top = Path(tempfile.mkdtemp(prefix="gauged-startup-"))
    try:
        top.chmod(0o755)
        config = top / "gauged.toml"
        config.write_text(REFERENCE.read_text(encoding="utf-8").replace(
            "port = 8080\n", f"port = {free_port()}\n"), encoding="utf-8")
        config.chmod(0o644)
        folder = top / "state"
        folder.mkdir()
        folder.chmod(mode)
        stderr = top / "stderr.log"
        assert run_cli(config, folder / "state.sqlite3", stderr_path=stderr,
                       prefix=prefix) == 1
        [line] = lines(stderr.read_text())
        assert "ERROR" in line
        assert f"gauged: not starting: the state folder {folder} is not readable and " \
            f"writable by this user (uid {os.geteuid()}): fix its owner " \
            f"or mode, or [state] path in {config}" in line, line
        folder.chmod(0o755)
        assert list(folder.iterdir()) == []
    finally:
        (top / "state").chmod(0o755)
        shutil.rmtree(top)
