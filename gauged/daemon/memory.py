"""Handing back to the system the memory start-up used and freed (QUALITY PERF-5: a gateway
has little of it).

Importing the daemon's libraries and building its config, stations and state leave freed
blocks in the C heap (pydantic's schema building, the byte code of 700 modules, temporary
lists). CPython's collector frees the objects, but glibc keeps the pages; `malloc_trim(0)`
gives back every whole free page (`madvise(MADV_DONTNEED)`), about 1.5 to 3 MB here, once,
at the end of start-up. On a C library without it (musl) nothing happens.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)


def release_free_memory() -> bool:
    """`malloc_trim(0)` where the C library has it (glibc); True if it released pages."""
    try:
        # the symbols already loaded into the process (not ctypes.util.find_library, which
        # runs `ldconfig -p`)
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    released = bool(trim(0))
    log.debug("malloc_trim: %s", "pages released" if released else "nothing to release")
    return released
