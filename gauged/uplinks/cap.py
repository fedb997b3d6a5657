"""The CAP uplink: writes the alert documents (gauged/alarm/cap.py) to a folder and hands
them to MQTT.

**Never in the way of a siren.** Documents are made after the broadcasts have been handed to
their zones; making one never raises into the cycle (a failure is logged and counted); the
folder is written by its own task in a worker thread (write a temporary file, fsync, rename,
fsync the folder), so a slow or full disk delays only CAP, never a cycle; a failed write is
retried with backoff (one ERROR when writing starts to fail, one INFO when it works again).
MQTT gets the document at once, on `<prefix>/<gateway>/cap`, QoS 1, **not retained**: CAP is
a stream of messages that reference each other, and one retained message per topic would show
a late subscriber only the last station's latest message (or an Alert after its Cancel had
been superseded); the folder is the durable record to catch up from.

**Restarts.** The open incident of each station (its stage, its first identifier and the
references) is kept in `<dir>/active.json`, written atomically after the document it
follows. It lives beside the documents it names rather than in the state database: it means
nothing without them, and it leaves the state schema alone. At start, a station whose
restored stage no longer matches its open incident gets its Update or Cancel then (the
stages were not restored after a long outage, or a crash fell between the state commit and
the CAP write); a station with no open incident gets no new Alert at start (a restart never
announces anew; its next upward transition does).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drivers.backoff import Backoff
from gauged.alarm.cap import ACTIVE_FILE, CapTracker, Document, Incident
from gauged.alarm.types import Transition
from gauged.config.settings import Config
from gauged.health import CapHealth
from gauged.store.state import JobRun
from gauged.uplinks.base import CycleReport, Uplink

log = logging.getLogger(__name__)

MAX_QUEUE = 1000


def write_atomic(folder: Path, name: str, data: bytes) -> None:
    """Write `folder/name` so that it is either absent or whole, and durable: a temporary
    file, fsync, rename over, fsync the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.tmp"
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / name)
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_open(folder: Path) -> dict[str, Incident]:
    """The open incidents kept in `folder/active.json` ({} when absent or unreadable)."""
    path = folder / ACTIVE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {sid: Incident.from_json(inc) for sid, inc in data["open"].items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.error("cap: cannot read %s: %s; open alerts are forgotten (their Update or Cancel "
                  "will not reference them)", path, exc)
        return {}


class CapSink(Uplink):
    """Makes the documents of a daemon and sends them to the folder and MQTT.

    Call `open` once before the first cycle; `run` (a task of the daemon's TaskGroup) writes
    the folder; `transitions` and `test_played` never raise and never block.
    """

    name = "cap"

    def __init__(self, config: Config,
                 publish: Callable[[str, str], None] | None = None) -> None:
        self.config = config
        self.folder = config.cap_dir
        self.topic = config.cap.topic
        self._publish = publish
        self.tracker = CapTracker(config)
        self._health = CapHealth()
        self._queue: deque[tuple[Document, bytes | None]] = deque()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._failing = False

    def open(self, stages: Mapping[str, int], now: datetime) -> None:
        """Load the open incidents, and Update or Cancel those the restored stages no
        longer match (a restart never raises a new Alert)."""
        self.tracker = CapTracker(self.config, load_open(self.folder))
        for sid in list(self.tracker.open):
            self._guarded(sid, self.tracker.follow, sid, stages.get(sid, 0), now)
        if self.tracker.open:
            log.info("cap: open alerts: %s", ", ".join(
                f"{sid}={inc.stage_name}" for sid, inc in self.tracker.open.items()))

    def cycle(self, report: CycleReport) -> None:
        """The documents of the cycle's transitions (stations under an inhibit: none)."""
        self.transitions(t for t in report.result.transitions
                         if t.station not in report.inhibited)

    def proof_test(self, when: datetime, run: JobRun) -> None:
        """People heard an audible test: its Exercise."""
        if run.job == "audible":
            played = [z["zone"] for z in run.result.get("zones", []) if z.get("played")]
            self.test_played(played, datetime.fromtimestamp(run.fire_time, UTC), when)

    def transitions(self, transitions: Iterable[Transition]) -> None:
        """The documents of a cycle's stage transitions."""
        for t in transitions:
            self._guarded(t.station, self.tracker.follow, t.station, t.to_stage, t.time,
                          t.value)

    def test_played(self, zones: Sequence[str], fire_time: datetime, now: datetime) -> None:
        """An audible scheduled test played on `zones`: its Exercise Alert."""
        if self.config.cap.exercise and zones:
            self._guarded("test", self.tracker.exercise, zones, fire_time, now, track=False)

    def _guarded(self, what: str, make: Callable[..., Document | None], *args: Any,
                 track: bool = True) -> None:
        try:
            doc = make(*args)
        except Exception as exc:  # a CAP bug must never reach the cycle
            self._health.failures += 1
            self._health.last_error = f"{what}: {exc!r}"
            log.exception("cap: cannot make the document for %s", what)
            return
        if doc is None:
            return
        self._health.documents += 1
        self._health.last_identifier = doc.identifier
        log.info("cap %s %s identifier=%s status=%s", doc.msg_type, doc.station or "test",
                 doc.identifier, doc.status)
        if self._publish is not None:
            self._publish(self.topic, doc.xml.decode("utf-8"))
            self._health.published += 1
        active = json.dumps(self.tracker.as_json(), ensure_ascii=False, indent=1,
                            sort_keys=True).encode() if track else None
        if len(self._queue) >= MAX_QUEUE:
            dropped, _ = self._queue.popleft()
            self._health.dropped += 1
            log.error("cap: write queue full: document %s dropped", dropped.identifier)
        self._queue.append((doc, active))
        self._health.queued = len(self._queue)
        self._idle.clear()
        self._wakeup.set()

    async def run(self) -> None:
        """Write queued documents (then the open incidents) until cancelled; retry with
        backoff while the folder cannot be written."""
        backoff = Backoff(30.0, first_s=0.5)
        while True:
            if not self._queue:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            doc, active = self._queue[0]
            try:
                await asyncio.to_thread(self._write, doc, active)
            except OSError as exc:
                self._health.failures += 1
                self._health.last_error = f"{doc.identifier}: {exc}"
                if not self._failing:
                    log.error("cap: cannot write %s to %s: %s (retrying; sirens and the "
                              "cycle are not affected)", doc.identifier, self.folder, exc)
                self._failing = True
                await asyncio.sleep(backoff.failed())
                continue
            if self._failing:
                log.info("cap: writing to %s again", self.folder)
            self._failing = False
            backoff.succeeded()
            self._queue.popleft()
            self._health.written += 1
            self._health.queued = len(self._queue)

    def _write(self, doc: Document, active: bytes | None) -> None:
        write_atomic(self.folder, f"{doc.identifier}.xml", doc.xml)
        if active is not None:
            write_atomic(self.folder, ACTIVE_FILE, active)

    async def flush(self, timeout_s: float) -> bool:
        """Wait until the queue is written (True), at most `timeout_s` (False)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        return not self._queue

    def health(self) -> CapHealth:
        return replace(self._health, failing=self._failing, dir=str(self.folder),
                       open={sid: inc.stage_name for sid, inc in self.tracker.open.items()})
