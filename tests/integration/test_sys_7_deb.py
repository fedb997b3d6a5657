"""SYS-7: the Debian package (`make deb`, packaging/build-deb.sh).

The package is built once per session (pip downloads the wheels into this session's temporary
folder: building may use the network, installing must not). Then it is checked as dpkg sees
it (control fields, maintainer scripts, no conffiles, the files and their owners, every
runtime dependency bundled, no development one) and installed with the real dpkg into a
scratch root, with no network (`unshare --net`):

- `dpkg --root=R --force-script-chrootless`: dpkg unpacks below R, records the package in
  R's own database and runs the real maintainer scripts on this machine with DPKG_ROOT=R,
  which they honour (paths below R, `systemd-sysusers --root`, `systemd-tmpfiles --root`, no
  systemctl). R's database lists as installed the three packages gauged depends on
  (python3.11, libc6, systemd), copied from this machine's own database: the bundled
  virtualenv runs on this machine's /usr/bin/python3.11, and dpkg still checks the
  dependencies instead of being told to ignore them.
- The bundled `gauged` runs at its installed path: in a private mount namespace R/opt is
  bound over /opt, so /opt/gauged/venv/bin/gauged is the packaged file with its packaged #!
  line, and imports come from the bundled site-packages (checked), not from this checkout.

The maintainer scripts' other branch, the one a gateway runs (no DPKG_ROOT), is exercised by
a plain `dpkg -i` on this machine's own root seen through throw-away overlays: /etc, /usr,
/var and /opt are overlay mounts in a private mount namespace, so dpkg, its database,
systemd-sysusers and the package write only to a temporary upper layer; /run/systemd is
hidden, so the scripts leave this machine's systemd alone.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path

import pytest
from hil import ROOT

from gauged import __version__

VENV = "/opt/gauged/venv"
DAY_S = 86400


@pytest.fixture(scope="session")
def namespaces() -> None:
    """Fail with the reason when this machine cannot make namespaces (the test needs root
    with CAP_SYS_ADMIN: a VM, or a privileged container)."""
    proc = run(["unshare", "--mount", "--net", "true"])
    assert proc.returncode == 0, ("SYS-7 installs with no network and runs the package at "
                                  "/opt in a private mount namespace: `unshare --mount --net` "
                                  f"must work here (as root): {proc.stderr}")


@pytest.fixture(scope="session")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package, built once per session (wheels cached in the session's own folder)."""
    work = tmp_path_factory.mktemp("deb")
    env = os.environ | {"PIP_CACHE_DIR": str(work / "pip-cache"), "PIP_NO_INPUT": "1",
                        "TMPDIR": str(work)}
    proc = subprocess.run(["bash", str(ROOT / "packaging" / "build-deb.sh"), str(work / "out")],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (package,) = (work / "out").glob("gauged_*.deb")
    return package


# What a unit or an operator's shell gives the installed commands: none of this test run's
# PYTHONPATH or virtualenv, and not this checkout as the working folder.
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def run(argv: Sequence[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                          env=CLEAN_ENV, cwd="/")


def ok(argv: Sequence[str], timeout: float = 120) -> str:
    proc = run(argv, timeout)
    assert proc.returncode == 0, f"{argv}: {proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    return proc.stdout


def field(package: Path, name: str) -> str:
    return ok(["dpkg-deb", "--field", str(package), name]).strip()


def depends(package: Path) -> list[str]:
    """The package names of Depends (version constraints dropped)."""
    return [re.split(r"[\s(]", d.strip(), maxsplit=1)[0]
            for d in field(package, "Depends").split(",")]


def packaged_file(package: Path, path: str, into: Path) -> str:
    """A file of the package, as packaged (`dpkg-deb -x` into `into` once)."""
    if not into.exists():
        ok(["dpkg-deb", "-x", str(package), str(into)], timeout=300)
    return (into / path.lstrip("/")).read_text(encoding="utf-8")


def scratch_root(root: Path, package: Path) -> None:
    """An empty root whose dpkg database knows the packages gauged depends on as installed
    (their status stanzas from this machine's database)."""
    admin = root / "var/lib/dpkg"
    for sub in ("info", "updates", "triggers"):
        (admin / sub).mkdir(parents=True)
    (admin / "available").touch()
    # /etc as base-passwd leaves it on any Debian system
    (root / "etc").mkdir()
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    names = depends(package)
    (admin / "status").write_text(ok(["dpkg-query", "-s", *names]), encoding="utf-8")
    for name in ok(["dpkg-query", "-W", "-f", "${binary:Package}\n", *names]).split():
        (admin / "info" / f"{name}.list").touch()


def dpkg(root: Path, *args: str) -> str:
    """The real dpkg on the scratch root, with no network."""
    return ok(["unshare", "--net", "dpkg", f"--root={root}", "--force-script-chrootless",
               *args], timeout=300)


def in_root(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """`argv` with R/opt bound over /opt (a private mount namespace) and no network."""
    return run(["unshare", "--mount", "--net", "sh", "-c",
                'mount --bind "$0/opt" /opt && exec "$@"', str(root), *argv], timeout=120)


def repack(package: Path, version: str, work: Path) -> Path:
    """The same package under another version: an upgrade."""
    tree = work / "tree"
    ok(["dpkg-deb", "-R", str(package), str(tree)], timeout=300)
    control = tree / "DEBIAN" / "control"
    text = control.read_text(encoding="utf-8")
    control.write_text(re.sub(r"(?m)^Version: .*$", f"Version: {version}", text),
                       encoding="utf-8")
    out = work / f"gauged_{version}.deb"
    ok(["dpkg-deb", "--root-owner-group", "-Znone", "--build", str(tree), str(out)],
       timeout=300)
    return out


def test_sys_7_package_metadata_and_contents(deb: Path, tmp_path: Path) -> None:
    assert field(deb, "Package") == "gauged"
    assert field(deb, "Version") == f"{__version__}-1"
    assert field(deb, "Architecture") == ok(["dpkg", "--print-architecture"]).strip()
    assert set(depends(deb)) == {"python3.11", "libc6", "systemd"}
    assert re.search(r"libc6 \(>= 2\.\d+\)", field(deb, "Depends"))

    control = ok(["dpkg-deb", "--info", str(deb)])
    for script in ("postinst", "prerm", "postrm"):
        assert re.search(rf"\*\s+{script}\s+#!/bin/sh", control), control
    # No conffiles: /etc/gauged is written by postinst where missing, so that an upgrade
    # never asks a question on an unattended gateway and never overwrites.
    assert "conffiles" not in control

    listing = ok(["dpkg-deb", "-c", str(deb)]).splitlines()
    paths = {line.split()[5].removeprefix(".").rstrip("/") for line in listing
             if line.split()[5] != "./"}
    assert all(line.split()[1] == "root/root" for line in listing)
    assert not any(p.startswith("/etc/") for p in paths), "nothing under /etc is packaged"
    for path in (f"{VENV}/bin/gauged", f"{VENV}/bin/python3.11", f"{VENV}/pyvenv.cfg",
                 "/usr/bin/gauged", "/usr/lib/systemd/system/gauged.service",
                 "/usr/lib/sysusers.d/gauged.conf", "/usr/lib/tmpfiles.d/gauged.conf",
                 "/opt/gauged/share/config/example-field-bus.toml",
                 "/opt/gauged/share/secrets.env"):
        assert path in paths, path
    assert any(f"{VENV}/bin/python3.11 -> /usr/bin/python3.11" in line for line in listing)

    # every runtime dependency of pyproject.toml is bundled; no development one
    site = next(p for p in paths if p.endswith("/site-packages"))
    bundled = {p.removeprefix(site + "/").split("-")[0].lower().replace("_", "-")
               for p in paths if p.startswith(site + "/") and p.endswith(".dist-info")}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for requirement in project["dependencies"]:
        name = re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0].lower()
        assert name.replace("_", "-") in bundled, requirement
    assert "gauged" in bundled
    assert not bundled & {"pytest", "mypy", "ruff", "selenium", "hypothesis"}

    tree = tmp_path / "tree"
    unit = packaged_file(deb, "/usr/lib/systemd/system/gauged.service", tree)
    assert f"ExecStart={VENV}/bin/gauged run --config /etc/gauged/gauged.toml" in unit
    assert re.search(r"(?m)^ExecReload=/bin/kill -HUP \$MAINPID$", unit)
    # secrets from a root-only file; never Environment= (any local user can read it)
    assert re.search(r"(?m)^EnvironmentFile=-/etc/gauged/secrets.env$", unit)
    assert not re.search(r"(?m)^\s*Environment\s*=", unit)
    tmpfiles = packaged_file(deb, "/usr/lib/tmpfiles.d/gauged.conf", tree)
    assert re.search(r"(?m)^z /etc/gauged/secrets.env 0600 root root -$", tmpfiles)
    assert re.search(r"(?m)^e /var/lib/gauged/cap - - - m:30d$", tmpfiles)
    assert re.search(r"(?m)^u gauged ",
                     packaged_file(deb, "/usr/lib/sysusers.d/gauged.conf", tree))
    # the virtualenv names its installed place only, never the folder it was built in
    for script in ("gauged", "pip"):
        first = (tree / VENV.lstrip("/") / "bin" / script).read_text().splitlines()[0]
        assert re.fullmatch(rf"#!{VENV}/bin/python[0-9.]*", first), first
    cfg = (tree / VENV.lstrip("/") / "pyvenv.cfg").read_text()
    assert "home = /usr/bin" in cfg
    assert "gauged-deb." not in cfg


@pytest.mark.usefixtures("namespaces")
def test_sys_7_installs_offline_into_a_scratch_root_and_runs(deb: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    scratch_root(root, deb)
    out = dpkg(root, "--install", str(deb))
    assert "gauged: wrote /etc/gauged/gauged.toml" in out
    assert re.search(r"(?m)^Status: install ok installed$",
                     dpkg(root, "--status", "gauged"))

    # postinst: the user and groups (systemd-sysusers), the configuration and the secrets
    group = {line.split(":")[0]: line.split(":") for line in
             (root / "etc/group").read_text().splitlines()}
    passwd = {line.split(":")[0]: line.split(":") for line in
              (root / "etc/passwd").read_text().splitlines()}
    assert passwd["gauged"][6] == "/usr/sbin/nologin"
    assert "gauged" in group["dialout"][3].split(",")
    assert "gauged" in group["audio"][3].split(",")
    config = root / "etc/gauged/gauged.toml"
    assert config.read_bytes() == (ROOT / "config/example-field-bus.toml").read_bytes()
    assert config.stat().st_mode & 0o777 == 0o640
    assert (config.stat().st_uid, config.stat().st_gid) == (0, int(group["gauged"][2]))
    secrets = root / "etc/gauged/secrets.env"
    assert (secrets.stat().st_mode & 0o777, secrets.stat().st_uid) == (0o600, 0)
    assert (root / "etc/gauged/clips/furukawa_warning_ja.wav").is_file()

    # the bundled gauged, at its installed path, from the bundled site-packages
    version = in_root(root, f"{VENV}/bin/gauged", "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"gauged {__version__}"
    where = in_root(root, f"{VENV}/bin/python", "-c",
                    "import gauged, pymodbus; print(gauged.__file__, pymodbus.__file__)")
    assert where.returncode == 0, where.stderr
    site = f"{VENV}/lib/python3.11/site-packages/"
    assert [p.startswith(site) for p in where.stdout.split()] == [True, True], where.stdout
    check = in_root(root, f"{VENV}/bin/gauged", "check-config", str(config))
    assert check.returncode == 0, check.stdout + check.stderr
    broken = root / "broken.toml"
    broken.write_text('[gateway]\nid = "x"\n', encoding="utf-8")
    refused = in_root(root, f"{VENV}/bin/gauged", "check-config", str(broken))
    assert refused.returncode == 2, refused.stdout + refused.stderr

    # running it wrote nothing dpkg does not know of (bytecode compiled at build time)
    listed = set(dpkg(root, "--listfiles", "gauged").splitlines())
    stray = [str(p) for p in (root / "opt/gauged").rglob("*")
             if "/" + str(p.relative_to(root)) not in listed]
    assert not stray, stray[:10]

    # the tmpfiles age rule prunes CAP documents older than 30 days, never active.json
    cap = root / "var/lib/gauged/cap"
    cap.mkdir(parents=True)
    old = time.time() - 31 * DAY_S
    for name in ("old.xml", "new.xml", "active.json"):
        (cap / name).write_text("x")
    for name in ("old.xml", "active.json"):
        os.utime(cap / name, (old, old))
    ok(["systemd-tmpfiles", f"--root={root}", "--clean", "gauged.conf"])
    assert sorted(p.name for p in cap.iterdir()) == ["active.json", "new.xml"]

    # the operator's configuration and secrets survive a reinstall and an upgrade; the
    # secrets' mode is put back to 0600 if it was loosened
    mine = '# the operator\'s own configuration\n[gateway]\nid = "mine"\n'
    config.write_text(mine, encoding="utf-8")
    secrets.write_text("GAUGED_MQTT__PASSWORD=s3cret\n", encoding="utf-8")
    secrets.chmod(0o644)
    dpkg(root, "--install", str(deb))
    upgrade = repack(deb, f"{__version__}-2", tmp_path)
    out = dpkg(root, "--install", str(upgrade))
    assert "gauged: wrote /etc/gauged/gauged.toml" not in out
    assert re.search(rf"(?m)^Version: {re.escape(__version__)}-2$",
                     dpkg(root, "--status", "gauged"))
    assert config.read_text(encoding="utf-8") == mine
    assert secrets.read_text(encoding="utf-8") == "GAUGED_MQTT__PASSWORD=s3cret\n"
    assert secrets.stat().st_mode & 0o777 == 0o600
    assert in_root(root, f"{VENV}/bin/gauged", "--version").returncode == 0

    # a purge takes everything away, the configuration too (the user stays)
    dpkg(root, "--purge", "gauged")
    assert not (root / "opt/gauged").exists()
    assert not (root / "etc/gauged").exists()
    assert not (root / "usr/lib/systemd/system/gauged.service").exists()
    assert "gauged" in (root / "etc/passwd").read_text()


SANDBOX = r"""set -eu
work=$1 deb=$2
mount -t tmpfs tmpfs "$work"
for d in etc usr var opt; do
    mkdir -p "$work/$d/upper" "$work/$d/work"
    mount -t overlay overlay -o "lowerdir=/$d,upperdir=$work/$d/upper,workdir=$work/$d/work" "/$d"
done
if [ -d /run/systemd ]; then mount -t tmpfs tmpfs /run/systemd; fi
cd /
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
dpkg -i "$deb" >&2
echo "== id"; id gauged
echo "== modes"; stat -c '%n %a %U %G' /etc/gauged/gauged.toml /etc/gauged/secrets.env
echo "== version"; gauged --version
echo "== check"; gauged check-config /etc/gauged/gauged.toml >/dev/null && echo valid
printf '# mine\n' >/etc/gauged/gauged.toml
dpkg -i "$deb" >&2
echo "== kept"; cat /etc/gauged/gauged.toml
dpkg --purge gauged >&2
echo "== purged"; ls -d /etc/gauged /opt/gauged /usr/bin/gauged 2>&1 || true
"""


@pytest.mark.usefixtures("namespaces")
def test_sys_7_installs_on_this_root_through_overlays(deb: Path, tmp_path: Path) -> None:
    """The maintainer scripts as a gateway runs them (no DPKG_ROOT), with this machine's root
    behind throw-away overlays (module docstring)."""
    work = tmp_path / "overlays"
    work.mkdir()
    passwd = Path("/etc/passwd").read_bytes()
    proc = run(["unshare", "--mount", "--net", "--propagation", "private", "sh", "-c",
                SANDBOX, "sandbox", str(work), str(deb)], timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    section = dict(re.findall(r"(?ms)^== (\w+)\n(.*?)(?=^== |\Z)", out))
    assert re.search(r"groups=.*\(dialout\).*\(audio\)", section["id"]), section["id"]
    assert section["modes"].split("\n")[:2] == [
        "/etc/gauged/gauged.toml 640 root gauged", "/etc/gauged/secrets.env 600 root root"]
    assert section["version"].strip() == f"gauged {__version__}"
    assert section["check"].strip() == "valid"
    assert section["kept"].startswith("# mine\n")
    assert section["purged"].count("No such file or directory") == 3, section["purged"]
    assert Path("/etc/passwd").read_bytes() == passwd  # nothing of it reached this machine
