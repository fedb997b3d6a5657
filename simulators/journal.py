"""Records of what the simulated devices were told to do, in memory and as JSON lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

Record = dict[str, Any]


class Journal:
    """An append-only list of records, mirrored to a JSON-lines file when a path is given.

    Each line is flushed as it is written so that another process (a HIL test, an operator with
    ``tail -f``) sees it at once; the file is opened in append mode so that a restarted
    simulator never erases evidence.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: list[Record] = []
        self._stream: IO[str] | None = None

    def open(self) -> None:
        """Open the file (creating its folder); a journal without a path stays in memory."""
        if self.path is not None and self._stream is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._stream = self.path.open("a", encoding="utf-8")

    def append(self, record: Record) -> None:
        """Keep ``record`` and write it as one flushed JSON line."""
        self.entries.append(record)
        if self._stream is not None:
            self._stream.write(json.dumps(record, ensure_ascii=False) + "\n")
            self._stream.flush()

    def close(self) -> None:
        """Close the file; the in-memory entries stay readable."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None
