"""DUR-3: `kill -9` at random moments, 50 times, while a process polls and flushes.

The process (tests/spool_crash_writer.py) spools points every 5 ms through gauged's
InfluxSink and its writer sends them to a real VictoriaMetrics (deduplication off, so that
every re-sent sample shows). After each SIGKILL the spool must open again; at the end a
last run drains it. Then every point the spool accepted is in the TSDB, and a point appears
more than once only if it was in a batch that was sent but not acknowledged when the process
died (at most once more per such death).
"""

from __future__ import annotations

import collections
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from services import VictoriaFactory

ROOT = Path(__file__).resolve().parents[2]
WRITER = ROOT / "tests" / "spool_crash_writer.py"
KILLS = 50
BASE_MS = 1_700_000_000_000


def spawn(spool: Path, url: str, run: str, log: Path, first: int,
          *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(WRITER), str(spool), url, run, str(log), str(first), *extra],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_ready(log: Path, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not (log.exists() and "ready" in log.read_text(encoding="utf-8")):
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "the writer process did not start"
        time.sleep(0.01)


def test_dur_3_kill_9_fifty_times_loses_nothing_duplicates_only_unacked(
        tmp_path: Path, victoria_factory: VictoriaFactory) -> None:
    tsdb = victoria_factory(dedup=False)
    run = uuid.uuid4().hex[:8]
    spool = tmp_path / "spool.sqlite3"
    rng = random.Random(3)
    accepted: set[int] = set()
    unacked: list[set[int]] = []  # per death: the batch sent and not acknowledged
    for k in range(KILLS):
        log = tmp_path / f"run-{k}.log"
        proc = spawn(spool, tsdb.url, run, log, k * 1_000_000)
        wait_ready(log, proc)
        time.sleep(rng.uniform(0.0, 0.25))  # a random moment: polling, sending or removing
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
        lines = log.read_text(encoding="utf-8").split("\n")[:-1]  # the last may be cut
        last_batch: set[int] = set()
        for line in lines:
            if line.startswith("A "):
                first, last = map(int, line.split()[1:])
                accepted.update(range(first, last + 1))
            elif line.startswith("T "):
                last_batch = {int(s) for s in line.split()[1:]}
            elif line == "R":
                last_batch = set()
        unacked.append(last_batch)
    log = tmp_path / "drain.log"
    proc = spawn(spool, tsdb.url, run, log, 0, "--drain")
    assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else ""
    assert len(accepted) > KILLS * 20  # the runs did spool points before dying

    def count(series: list[dict[str, Any]]) -> collections.Counter[int]:
        return collections.Counter(int(ts) - BASE_MS for s in series for ts in s["timestamps"])

    series = tsdb.wait_for(f'{{run="{run}"}}', lambda got: accepted <= set(count(got)),
                           timeout=30)
    seen = count(series)
    assert not accepted - set(seen)  # 0 accepted points lost
    for seq, n in seen.items():
        if n > 1:  # a duplicate: only of a batch a death left unacknowledged
            allowed = 1 + sum(1 for batch in unacked if seq in batch)
            assert n <= allowed, (seq, n, allowed)
    values = {int(ts) - BASE_MS: v for s in series
              for ts, v in zip(s["timestamps"], s["values"], strict=True)}
    assert all(values[seq] == seq for seq in seen)  # a duplicate is the same sample
    dups = sum(n - 1 for n in seen.values())
    print(f"DUR-3: {len(accepted)} points accepted over {KILLS} deaths, all in the TSDB; "
          f"{dups} duplicate samples, {sum(1 for b in unacked if b)} deaths with a batch "
          f"in flight")
