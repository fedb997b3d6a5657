"""The daemon hands back what start-up freed (gauged/daemon/memory.py, QUALITY PERF-5)."""

from __future__ import annotations

import platform
import re
from pathlib import Path

from gauged.daemon.memory import release_free_memory


def rss_kb() -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]


def test_perf_5_freed_heap_goes_back_to_the_system() -> None:
    assert platform.libc_ver()[0] == "glibc"  # Debian: malloc_trim is there
    garbage = [bytearray(1024) for _ in range(50_000)]  # ~55 MB of malloc blocks (> 512 B:
    # not pymalloc's arenas, which go back on their own)
    keep = bytearray(2048)  # (allocated last: the heap's top is not free, trimming must dig)
    before = rss_kb()
    del garbage
    assert release_free_memory() is True
    assert rss_kb() < before - 30_000
    assert keep == bytearray(2048)
