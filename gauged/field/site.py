"""The site's health readings: the cabinet inputs the poller read, and the gateway's own.

- cabinet inputs (`[site.inputs]`): the raw outcome of each channel (the poller reads them
  with their device, gauged/field/poll.py) as an engineering value (raw × scale + offset;
  a contact as 0 or 1, `invert` applied); a missing reading is None;
- the gateway: the hottest CPU thermal zone (`/sys/class/thermal/thermal_zone*/temp`,
  millidegrees), the free space of the state folder's file system, and whether the kernel
  clock is synchronised (adjtimex(2) through libc: what `timedatectl`'s NTPSynchronized
  reports, without a process per cycle; or `clock_sync_command`, a program that prints
  yes/no or 1/0, for systems where another tool knows better).

Reading them takes a few system calls; a source that cannot be read gives None (and the
alarm it feeds stays as it was). The alarms themselves are gauged/alarm/site.py.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from drivers.base import RawReading
from drivers.errors import DriverError
from gauged.alarm.site import GATEWAY
from gauged.config.site import CONTACT_ROLES, SiteConfig

log = logging.getLogger(__name__)

TIME_ERROR = 5  # adjtimex(2): the clock is not synchronised
COMMAND_TIMEOUT_S = 5.0


def input_values(site: SiteConfig, raw: Mapping[str, RawReading | DriverError | None],
                 ) -> dict[str, float | None]:
    """Each cabinet input's value from its raw outcome (None: no reading this cycle)."""
    out: dict[str, float | None] = {}
    for name, inp in site.inputs.items():
        r = raw.get(name)
        if not isinstance(r, RawReading):
            out[name] = None
            continue
        value = float(r.value) * inp.spec.scale + inp.spec.offset
        if inp.role in CONTACT_ROLES:
            value = float(value != 0) if not inp.invert else float(value == 0)
        out[name] = value
    return out


class GatewayHealth:
    """Reads the gateway's CPU temperature, free disk and clock synchronisation."""

    def __init__(self, disk_path: Path, *, thermal_dir: Path = Path("/sys/class/thermal"),
                 clock_command: Sequence[str] = ()) -> None:
        self.disk_path = disk_path
        self.thermal_dir = thermal_dir
        self.clock_command = list(clock_command)
        self._libc: ctypes.CDLL | None = None
        self._failed: set[str] = set()  # sources whose failure was logged (once each)

    async def read(self) -> dict[str, float | None]:
        """`gateway:cpu_temp_c`, `gateway:disk_free_mb`, `gateway:clock_synced` (1 or 0)."""
        return {f"{GATEWAY}:cpu_temp_c": self.cpu_temp_c(),
                f"{GATEWAY}:disk_free_mb": self.disk_free_mb(),
                f"{GATEWAY}:clock_synced": await self.clock_synced()}

    def _unreadable(self, what: str, exc: Exception) -> None:
        if what not in self._failed:
            self._failed.add(what)
            log.warning("site health: cannot read the gateway's %s: %s", what, exc)

    def cpu_temp_c(self) -> float | None:
        temps = []
        for zone in sorted(self.thermal_dir.glob("thermal_zone*/temp")):
            try:
                temps.append(int(zone.read_text().strip()) / 1000)
            except (OSError, ValueError) as exc:
                self._unreadable(str(zone), exc)
        return max(temps) if temps else None

    def disk_free_mb(self) -> float | None:
        path = self.disk_path
        while not path.exists() and path != path.parent:
            path = path.parent  # the state folder may not exist yet
        try:
            return shutil.disk_usage(path).free / 1e6
        except OSError as exc:
            self._unreadable(f"free disk at {path}", exc)
            return None

    async def clock_synced(self) -> float | None:
        if self.clock_command:
            return await self._clock_from_command()
        try:
            if self._libc is None:
                self._libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
            timex = ctypes.create_string_buffer(512)  # struct timex, modes = 0: read only
            state = self._libc.adjtimex(timex)
        except (OSError, AttributeError) as exc:
            self._unreadable("clock state (adjtimex)", exc)
            return None
        if state < 0:
            self._unreadable("clock state (adjtimex)", OSError(ctypes.get_errno(), "failed"))
            return None
        return 0.0 if state == TIME_ERROR else 1.0

    async def _clock_from_command(self) -> float | None:
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.clock_command, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL)
            try:
                async with asyncio.timeout(COMMAND_TIMEOUT_S):
                    out, _ = await proc.communicate()
            except TimeoutError:
                proc.kill()
                await proc.wait()
                raise
        except (OSError, TimeoutError) as exc:
            self._unreadable(f"clock state ({self.clock_command[0]})", exc)
            return None
        answer = out.decode(errors="replace").strip().lower()
        if answer in ("yes", "1", "true"):
            return 1.0
        if answer in ("no", "0", "false"):
            return 0.0
        self._unreadable(f"clock state ({self.clock_command[0]})",
                         ValueError(f"answer {answer!r} is not yes or no"))
        return None
