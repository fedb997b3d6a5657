"""`make install DESTDIR=…` into a temporary root (issue 6 part 2; the unit: QUALITY SYS-1).

The install is real: a virtualenv is created below the root and gauged installed into it with
pip (about half a minute), and the installed `gauged` runs. Nothing outside the root is
touched: no user is created on this machine (the sysusers.d file does that on the target).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from hil import ROOT

from gauged import __version__


def install(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "--no-print-directory", "install", f"DESTDIR={root}",
                           f"PYTHON={sys.executable}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=280,
                          env=os.environ | {"PIP_NO_INPUT": "1"})


def test_make_install_into_a_root_keeps_an_existing_config_and_runs(tmp_path: Path) -> None:
    root = tmp_path / "root"
    mine = "# the operator's own configuration\n"
    (root / "etc" / "gauged").mkdir(parents=True)
    (root / "etc" / "gauged" / "gauged.toml").write_text(mine, encoding="utf-8")

    proc = install(root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (root / "etc" / "gauged" / "gauged.toml").read_text(encoding="utf-8") == mine
    assert "kept the existing /etc/gauged/gauged.toml" in proc.stdout
    assert "Next:" in proc.stdout
    assert "Edit /etc/gauged/gauged.toml" in proc.stdout

    # the files
    unit = (root / "usr/lib/systemd/system/gauged.service").read_text(encoding="utf-8")
    assert "ExecStart=/opt/gauged/venv/bin/gauged run --config /etc/gauged/gauged.toml" in unit
    assert unit == (ROOT / "systemd" / "gauged.service").read_text(encoding="utf-8")
    sysusers = (root / "usr/lib/sysusers.d/gauged.conf").read_text(encoding="utf-8")
    assert re.search(r"(?m)^u gauged ", sysusers)
    assert re.search(r"(?m)^m gauged dialout$", sysusers)
    tmpfiles = (root / "usr/lib/tmpfiles.d/gauged.conf").read_text(encoding="utf-8")
    assert "z /etc/gauged/gauged.toml 0640 root gauged" in tmpfiles
    assert (root / "opt/gauged/share/config/example-field-bus.toml").is_file()
    assert (root / "etc/gauged/clips/furukawa_warning_ja.wav").is_file()
    secrets = root / "etc/gauged/secrets.env"  # the unit's EnvironmentFile=, root only
    assert secrets.stat().st_mode & 0o777 == 0o600
    assert "EnvironmentFile=-/etc/gauged/secrets.env" in unit
    assert not re.search(r"(?m)^\s*Environment\s*=", unit)

    # the installed command
    gauged = root / "opt/gauged/venv/bin/gauged"
    version = subprocess.run([str(gauged), "--version"], capture_output=True, text=True,
                             timeout=60, cwd=tmp_path)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"gauged {__version__}"

    # the unit as installed passes the SYS-1 bar too
    analyze = subprocess.run(["/usr/bin/systemd-analyze", "security", "--offline=yes",
                              f"--root={root}", "--no-pager", "gauged.service"],
                             capture_output=True, text=True, timeout=60)
    found = re.search(r"Overall exposure level for gauged\.service: (\d+\.\d+)",
                      analyze.stdout + analyze.stderr)
    assert found, analyze.stdout + analyze.stderr
    assert float(found.group(1)) <= 2.5

    # a fresh root gets the example configuration, and it is valid
    (root / "etc/gauged/gauged.toml").unlink()
    proc = install(root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "wrote the example configuration /etc/gauged/gauged.toml" in proc.stdout
    config = root / "etc/gauged/gauged.toml"
    assert config.read_text(encoding="utf-8") == \
        (ROOT / "config/example-field-bus.toml").read_text(encoding="utf-8")
    assert config.stat().st_mode & 0o777 == 0o640
    check = subprocess.run([str(gauged), "check-config", str(config)], capture_output=True,
                           text=True, timeout=60, cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr


def test_gauged_version() -> None:
    proc = subprocess.run([sys.executable, "-m", "gauged", "--version"], capture_output=True,
                          text=True, timeout=30, cwd=ROOT)
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"gauged {__version__}"
    import tomllib

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["version"] == __version__  # one version, everywhere
