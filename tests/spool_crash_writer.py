"""A process that polls and flushes like the daemon, for the `kill -9` test (DUR-3).

`python spool_crash_writer.py SPOOL URL RUN LOG FIRST [--drain]`

It opens the spool through gauged's InfluxSink and runs the real writer; every 5 ms it
spools 20 points (sequence numbers from FIRST on, one series per station, timestamp and
value from the sequence number) and, once `write` has returned (the points are committed),
appends `A first last` to LOG. Around the writer's sends it appends `T seq …` (a batch,
right before its request) and `R` (the batch removed after the TSDB accepted it), so the
test knows which batch was unacknowledged when the process died. `ready` is logged once the
writer runs. With `--drain` it spools nothing, waits until the spool is empty and exits 0.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from gauged.config.models import InfluxConfig
from gauged.uplinks.influx import InfluxSink
from gauged.uplinks.influx_http import WriteClient
from gauged.uplinks.records import Record
from gauged.uplinks.spool import Batch

BASE_MS = 1_700_000_000_000  # timestamps: BASE_MS + sequence number (ms)
SEQ = re.compile(r" seq=(\d+)i ")


class TracedSink(InfluxSink):
    """The real sink; it logs each batch right before its request goes out (`T seq …`) and
    after the spool removed it (`R`)."""

    log: IO[str]

    async def _send(self, client: WriteClient, data: bytes) -> None:
        body = data.decode()  # (gzip is off)
        self.log.write("T " + " ".join(m.group(1) for m in SEQ.finditer(body)) + "\n")
        self.log.flush()
        await super()._send(client, data)

    def traced(self, log: IO[str]) -> None:
        self.log = log
        assert self.spool is not None
        remove = self.spool.remove

        def remove_logged(batch: Batch, quarantine: Sequence[tuple[str, str]] = ()) -> None:
            remove(batch, quarantine)
            log.write("R\n")
            log.flush()

        self.spool.remove = remove_logged  # type: ignore[method-assign]


async def main(spool_path: Path, url: str, run: str, log_path: Path, first: int,
               drain: bool) -> int:
    sink = TracedSink(InfluxConfig(enabled=True, url=url, batch_points=500,
                                   backoff_min_s=0.05, backoff_max_s=0.2), spool_path)
    with log_path.open("a", encoding="utf-8") as log, sink.opened():
        sink.traced(log)
        async with asyncio.TaskGroup() as tg:
            writer = tg.create_task(sink.run(), name="crash-writer[influx].write")
            log.write("ready\n")
            log.flush()
            if drain:
                ok = await sink.flush(60.0)
                writer.cancel()
                return 0 if ok else 1
            seq = first
            while True:
                records = [Record("crash", {"run": run, "station": f"s{n % 10}"},
                                  {"seq": n},
                                  datetime.fromtimestamp((BASE_MS + n) / 1000, UTC))
                           for n in range(seq, seq + 20)]
                sink.write(records)
                log.write(f"A {seq} {seq + 19}\n")
                log.flush()
                seq += 20
                await asyncio.sleep(0.005)
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(asyncio.run(main(Path(args[0]), args[1], args[2], Path(args[3]), int(args[4]),
                              "--drain" in args)))
