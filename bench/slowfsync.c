/* A slow disk for benchmarks: every fsync(2) and fdatasync(2) of the process sleeps
 * SLOW_FSYNC_MS milliseconds (default 100) in the calling thread, then does the real call.
 *
 * Loaded with LD_PRELOAD, it sits in front of libc for every caller in the process: SQLite's
 * WAL syncs and checkpoints (libsqlite3 calls fdatasync), Python's os.fsync (the spool, the
 * CAP writer, the state store's syncer) alike, as an SD card's flush would. Built by
 * bench/perf_3_alarm_latency.py with the system C compiler:
 *     cc -shared -fPIC -O2 -o slowfsync.so slowfsync.c -ldl
 * slowfsync_calls() says how many calls it has slowed (read with ctypes).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

static long calls;

long slowfsync_calls(void) { return __atomic_load_n(&calls, __ATOMIC_SEQ_CST); }

static void nap(void) {
    const char *ms = getenv("SLOW_FSYNC_MS");
    long ns = (ms ? atol(ms) : 100) * 1000000L;
    struct timespec t = {ns / 1000000000L, ns % 1000000000L};
    __atomic_add_fetch(&calls, 1, __ATOMIC_SEQ_CST);
    while (nanosleep(&t, &t) != 0) {
    }
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    nap();
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    nap();
    return real(fd);
}
