"""A WAN link a test can cut: a TCP relay on a loopback port in front of a service.

`cut()` closes every connection through it, and while cut every new connection is closed
at once (the gateway sees its broker or vmagent go away, the broker sees the gateway drop
and publishes its last will); `restore()` lets connections through again.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from services import LOOPBACK


class Wan:
    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.server = socket.create_server((LOOPBACK, 0))
        self.port: int = self.server.getsockname()[1]
        self.up = True
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True, name=f"wan:{self.port}").start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            try:
                upstream = socket.create_connection((LOOPBACK, self.target), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def cut(self) -> None:
        self.up = False
        with self._lock:
            sockets, self._open = self._open, []
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.cut()
        self.server.close()
