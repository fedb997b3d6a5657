#!/usr/bin/env bash
# Install gauged as a systemd service: `make install` runs this; so can you.
#
#   scripts/install.sh [ROOT]        ROOT (or $DESTDIR) prefixes every path: a staging tree
#
# What goes where (paths below ROOT):
#   /opt/gauged/venv                 a virtualenv with gauged and its dependencies
#   /opt/gauged/share/               README, example configurations, clips
#   /usr/lib/systemd/system/gauged.service        the unit (ExecStart → the virtualenv)
#   /usr/lib/sysusers.d/gauged.conf  the `gauged` user (systemd-sysusers creates it)
#   /usr/lib/tmpfiles.d/gauged.conf  owner and mode of the configuration (systemd-tmpfiles)
#   /etc/gauged/gauged.toml          the example configuration, never over an existing file
#   /etc/gauged/secrets.env          secrets for the unit's EnvironmentFile= (0600), if missing
#   /etc/gauged/clips/               announcement clips (placeholders), missing ones only
#   /var/lib/gauged                  state (the unit's StateDirectory= creates it)
#
# Without ROOT, as root, on a system run by systemd: the user is created (systemd-sysusers),
# ownership applied (systemd-tmpfiles) and systemd reloaded; nothing is enabled or started.
# With ROOT nothing outside ROOT is touched: no user is created on this machine. The
# virtualenv's scripts name their interpreter by its path below ROOT: build the tree at its
# final place (no ROOT) or copy it there whole and re-run this script on the target.
set -euo pipefail

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
root=${1:-${DESTDIR:-}}
root=${root%/}
prefix=${PREFIX:-/opt/gauged}
unitdir=${UNITDIR:-/usr/lib/systemd/system}
sysusersdir=${SYSUSERSDIR:-/usr/lib/sysusers.d}
tmpfilesdir=${TMPFILESDIR:-/usr/lib/tmpfiles.d}
confdir=/etc/gauged
python=${PYTHON:-python3}
example=${EXAMPLE:-example-field-bus.toml}

say() { printf 'install: %s\n' "$*"; }

install -d -m 0755 "$root$prefix" "$root$prefix/share" "$root$unitdir" "$root$sysusersdir" \
  "$root$tmpfilesdir" "$root$confdir" "$root$confdir/clips"

if [ ! -x "$root$prefix/venv/bin/python" ]; then
  say "creating the virtualenv $prefix/venv"
  "$python" -m venv "$root$prefix/venv"
fi
say "installing gauged into $prefix/venv (pip)"
"$root$prefix/venv/bin/python" -m pip install --quiet --upgrade "$src"

install -m 0644 "$src/README.md" "$root$prefix/share/README.md"
install -d -m 0755 "$root$prefix/share/config" "$root$prefix/share/config/clips"
install -m 0644 "$src"/config/*.toml "$root$prefix/share/config/"
install -m 0644 "$src"/config/clips/*.wav "$root$prefix/share/config/clips/"

sed -e "s|/opt/gauged|$prefix|g" "$src/systemd/gauged.service" >"$root$unitdir/gauged.service"
chmod 0644 "$root$unitdir/gauged.service"
install -m 0644 "$src/systemd/gauged.sysusers" "$root$sysusersdir/gauged.conf"
install -m 0644 "$src/systemd/gauged.tmpfiles" "$root$tmpfilesdir/gauged.conf"
say "unit $unitdir/gauged.service, user $sysusersdir/gauged.conf, modes $tmpfilesdir/gauged.conf"

for clip in "$src"/config/clips/*.wav; do
  [ -e "$root$confdir/clips/${clip##*/}" ] || install -m 0644 "$clip" "$root$confdir/clips/"
done
# The secrets the unit reads (EnvironmentFile=): root only, never over an existing file.
if [ ! -e "$root$confdir/secrets.env" ]; then
  install -m 0600 "$src/systemd/gauged.secrets.env" "$root$confdir/secrets.env"
  say "wrote $confdir/secrets.env (mode 0600: the InfluxDB token, the MQTT password)"
fi
config=$root$confdir/gauged.toml
if [ -e "$config" ]; then
  say "kept the existing $confdir/gauged.toml (the example is in $prefix/share/config/$example)"
else
  install -m 0640 "$src/config/$example" "$config"
  say "wrote the example configuration $confdir/gauged.toml (from config/$example)"
fi

if [ -z "$root" ] && [ "$(id -u)" -eq 0 ] && [ -d /run/systemd/system ]; then
  systemd-sysusers "$sysusersdir/gauged.conf"
  systemd-tmpfiles --create "$tmpfilesdir/gauged.conf"
  systemctl daemon-reload
  say "user gauged created; systemd reloaded"
elif [ -n "$root" ]; then
  say "staged below $root: on the target, systemd-sysusers and systemd-tmpfiles --create" \
    "create the user and set the modes (at boot, or run them once)"
fi

cat <<NEXT

Next:
  1. Edit $confdir/gauged.toml: gateway id and time zone, buses (serial ports by
     /dev/serial/by-id/...), gauges, stations with crest and thresholds, zones with their
     relays and player, clips; [influx] and [mqtt]. Secrets (GAUGED_INFLUX__TOKEN=,
     GAUGED_MQTT__PASSWORD=) go in $confdir/secrets.env (mode 0600, read by the unit's
     EnvironmentFile=), never in an Environment= line: any local user can read those.
  2. Check it:   $prefix/venv/bin/gauged check-config $confdir/gauged.toml
  3. Start it:   systemctl enable --now gauged
  4. Watch it:   journalctl -u gauged -f     and     $prefix/venv/bin/gauged status
NEXT
