"""Loopback receivers for Alertmanager: a webhook sink (Slack/LINE-style and Alertmanager
JSON) and a minimal SMTP sink, both in threads, both keeping what they received.

The fleet demo prints what arrives (so the people on duty's view is visible in a terminal);
the tests read `received` and `mails`. Only the standard library: smtpd left Python in 3.12
and aiosmtpd would be a dependency for a sink that needs six SMTP verbs.
"""

from __future__ import annotations

import json
import logging
import socketserver
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from gauged.fleet.procs import LOOPBACK

log = logging.getLogger(__name__)


class WebhookSink:
    """POSTed JSON bodies, with their path and arrival time (`time.time()`)."""

    def __init__(self, port: int = 0) -> None:
        self.received: list[tuple[float, str, Any]] = []
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body: Any = json.loads(raw)
                except ValueError:
                    body = raw.decode(errors="replace")
                with sink.lock:
                    sink.received.append((time.time(), self.path, body))
                if isinstance(body, dict):  # Slack-style: the text is in the attachments
                    for part in body.get("attachments", []):
                        log.info("alert to the people on duty: %s | %s", part.get("title"),
                                 str(part.get("text", "")).strip().replace("\n", " | "))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((LOOPBACK, port), Handler)
        self.port: int = self.server.server_address[1]
        self.url = f"http://{LOOPBACK}:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                        name="fleet-webhook-sink")
        self._thread.start()

    def bodies(self, path: str) -> list[Any]:
        with self.lock:
            return [body for _, p, body in self.received if p == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SmtpSink:
    """Accepts every mail (no TLS, no auth) and keeps its text."""

    def __init__(self, port: int = 0) -> None:
        self.mails: list[str] = []
        keep: Callable[[str], None] = self.mails.append

        class Handler(socketserver.StreamRequestHandler):
            def reply(self, line: str) -> None:
                self.wfile.write(f"{line}\r\n".encode())

            def handle(self) -> None:
                self.reply("220 gauged-sink ESMTP")
                while raw := self.rfile.readline():
                    verb = raw.decode(errors="replace").strip().split(" ")[0].upper()
                    if verb in ("EHLO", "HELO"):
                        self.reply("250 gauged-sink")
                    elif verb == "DATA":
                        self.reply("354 end with .")
                        lines = []
                        while (line := self.rfile.readline()) not in (b".\r\n", b".\n", b""):
                            lines.append(line.decode(errors="replace"))
                        keep("".join(lines))
                        self.reply("250 queued")
                    elif verb == "QUIT":
                        self.reply("221 bye")
                        return
                    else:  # MAIL, RCPT, RSET, NOOP
                        self.reply("250 ok")

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server((LOOPBACK, port), Handler)
        self.port: int = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                        name="fleet-smtp-sink")
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
