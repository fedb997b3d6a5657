#!/usr/bin/env bash
# Build the Debian package of gauged: `make deb` runs this.
#
#   packaging/build-deb.sh [OUTDIR]      writes OUTDIR/gauged_<version>-1_<arch>.deb (default dist/)
#
# The package bundles a virtualenv with gauged and every runtime dependency (wheels from PyPI,
# downloaded now, at build time): installing it needs no network. It is built the way
# dh-virtualenv builds one, without debhelper: a virtualenv made by Debian's python3.11 in a
# staging tree, its scripts then pointed at /opt/gauged/venv, where dpkg puts it. (Not
# dh-virtualenv itself: it wants a dpkg-buildpackage source tree, writes its results into the
# parent of the checkout and pulls in the debhelper tool chain, for what is here a few lines
# of shell; dpkg-deb is part of dpkg, on every Debian machine.)
#
# What goes where:
#   /opt/gauged/venv                      the virtualenv (interpreter: /usr/bin/python3.11)
#   /opt/gauged/share/                    README, example configurations, clips, secrets.env
#   /usr/bin/gauged                       → /opt/gauged/venv/bin/gauged
#   /usr/lib/systemd/system/gauged.service, /usr/lib/sysusers.d/gauged.conf,
#   /usr/lib/tmpfiles.d/gauged.conf       as `make install` (scripts/install.sh)
#   /etc/gauged/{gauged.toml,secrets.env,clips/}   written by postinst only where missing
#                                         (no conffiles: an upgrade never asks, never overwrites)
#
# Environment: DEB_PYTHON (default /usr/bin/python3.11), PIP_CACHE_DIR (pip's wheel cache),
# DEB_COMPRESS (dpkg-deb -Z: gzip, the default, or xz, zstd, none), DEB_MAINTAINER (the
# control file's Maintainer; the default is a placeholder).
set -euo pipefail

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$(mkdir -p "${1:-$src/dist}" && cd "${1:-$src/dist}" && pwd)
python=${DEB_PYTHON:-/usr/bin/python3.11}
compress=${DEB_COMPRESS:-gzip}
# Set DEB_MAINTAINER to whoever answers for the builds you ship.
maintainer=${DEB_MAINTAINER:-gauged maintainers <gauged@localhost>}
prefix=/opt/gauged

say() { printf 'deb: %s\n' "$*"; }

version=$("$python" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' \
  "$src/pyproject.toml")-1
arch=$(dpkg --print-architecture)

work=$(mktemp -d "${TMPDIR:-/tmp}/gauged-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
stage=$work/root
umask 022

# The sources pip builds from: a copy, so that the build leaves nothing in the checkout.
mkdir -p "$work/src"
cp -r "$src/pyproject.toml" "$src/README.md" "$src/gauged" "$src/drivers" "$src/simulators" \
  "$work/src/"
find "$work/src" -name __pycache__ -type d -prune -exec rm -rf {} +

say "virtualenv $prefix/venv (staged in $stage), gauged $version and its dependencies (pip)"
"$python" -m venv "$stage$prefix/venv"
"$stage$prefix/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  --no-compile "$work/src"

# Point the virtualenv at its installed place: the scripts' #! lines, activate, pyvenv.cfg
# (text files only), then the bytecode, compiled with the installed paths (unchecked-hash:
# never rewritten at run time, so nothing appears in /opt that dpkg does not know).
{ grep -rlIZ -- "$stage" "$stage$prefix/venv" || true; } | xargs -0 -r sed -i -e "s|$stage||g"
find "$stage$prefix/venv" -name __pycache__ -type d -prune -exec rm -rf {} +
"$python" -m compileall -q -f -j 0 -s "$stage" --invalidation-mode unchecked-hash \
  "$stage$prefix/venv/lib" >/dev/null
if grep -rla -- "$stage" "$stage$prefix/venv" >&2; then
  say "the files above still name the staging folder: the virtualenv would not run" >&2
  exit 1
fi

install -d "$stage$prefix/share/config/clips" "$stage/usr/bin" "$stage/usr/lib/systemd/system" \
  "$stage/usr/lib/sysusers.d" "$stage/usr/lib/tmpfiles.d" "$stage/usr/share/doc/gauged"
install -m 0644 "$src/README.md" "$stage$prefix/share/README.md"
install -m 0644 "$src"/config/*.toml "$stage$prefix/share/config/"
install -m 0644 "$src"/config/clips/*.wav "$stage$prefix/share/config/clips/"
install -m 0644 "$src/systemd/gauged.secrets.env" "$stage$prefix/share/secrets.env"
ln -s "$prefix/venv/bin/gauged" "$stage/usr/bin/gauged"
install -m 0644 "$src/systemd/gauged.service" "$stage/usr/lib/systemd/system/gauged.service"
install -m 0644 "$src/systemd/gauged.sysusers" "$stage/usr/lib/sysusers.d/gauged.conf"
install -m 0644 "$src/systemd/gauged.tmpfiles" "$stage/usr/lib/tmpfiles.d/gauged.conf"
cat >"$stage/usr/share/doc/gauged/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: gauged

Files: *
Copyright: the gauged authors
License: Apache-2.0
 On Debian systems the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.

Files: opt/gauged/venv/lib/*
Copyright: their authors
License: various
 The bundled Python packages keep their own licences: see the licence files in
 their *.dist-info folders.
COPYRIGHT
printf 'gauged (%s) unstable; urgency=medium\n\n  * Built from the gauged sources by packaging/build-deb.sh.\n\n -- %s  %s\n' \
  "$version" "$maintainer" "$(date -R -d "@${SOURCE_DATE_EPOCH:-$(date +%s)}")" |
  gzip -9n >"$stage/usr/share/doc/gauged/changelog.Debian.gz"

# The newest glibc a bundled wheel asks for (manylinux_2_NN tags): the libc6 dependency.
glibc=$(grep -rhoE '^Tag: .*manylinux_2_[0-9]+' "$stage$prefix"/venv/lib/python3*/site-packages/*.dist-info/WHEEL |
  sed -E 's/.*manylinux_2_([0-9]+).*/\1/' | sort -n | tail -n 1)
glibc=2.${glibc:-17}

install -d "$stage/DEBIAN"
sed -e "s|@VERSION@|$version|" -e "s|@ARCH@|$arch|" -e "s|@GLIBC@|$glibc|" \
  -e "s|@MAINTAINER@|$maintainer|" \
  -e "s|@SIZE@|$(du -sk --exclude=DEBIAN "$stage" | cut -f1)|" \
  "$src/packaging/deb/control.in" >"$stage/DEBIAN/control"
install -m 0755 "$src/packaging/deb/postinst" "$src/packaging/deb/prerm" \
  "$src/packaging/deb/postrm" "$stage/DEBIAN/"

deb=$out/gauged_${version}_${arch}.deb
dpkg-deb --root-owner-group -Z"$compress" --build "$stage" "$deb" >/dev/null
say "built $deb ($(du -h "$deb" | cut -f1)): install with apt install $deb (no network needed)"
