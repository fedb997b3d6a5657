"""The central stack of a fleet on loopback (DESIGN §7), from the files in contrib/.

Two independent mosquitto brokers (per-gateway users, ACL `pattern readwrite gauged/%u/#`,
the `fleet` and `operator` users), two VictoriaMetrics nodes, vmagent (every write and every
scrape replicated to both nodes, each with its own on-disk queue), vmauth in front of the
nodes for reads (through haproxy: node A while it answers, else B), vmalert with
contrib/vmalert/rules.yml, prometheus-alertmanager with
contrib/alertmanager/alertmanager.yml.tmpl, and loopback webhook and SMTP sinks.

Each part is a child process on a free loopback port in its own folder under `workdir`.
"""

from __future__ import annotations

import os
import pwd
import secrets
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template

from gauged.fleet.procs import (
    HTTP,
    LOOPBACK,
    Proc,
    StackError,
    free_port,
    http_ok,
    need,
    port_accepts,
)
from gauged.fleet.sink import SmtpSink, WebhookSink

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"
READER = "fleet"  # the vmauth user (reads) and the broker user of the fleet view
OPERATOR = "operator"  # the broker user that may send commands


def contrib(path: str) -> Path:
    found = CONTRIB / path
    if not found.exists():
        raise StackError(f"{found} is missing (the fleet stack's configuration ships in "
                         "contrib/ of the source tree)")
    return found


def render(path: str, **values: object) -> str:
    return Template(contrib(path).read_text(encoding="utf-8")).substitute(
        {k: str(v) for k, v in values.items()})


@dataclass(frozen=True)
class Timing:
    """How fast the centre notices: production values, or a demo's compressed ones."""

    scrape_s: float = 15.0
    eval_s: float = 15.0
    group_wait_s: float = 10.0
    group_interval_s: float = 60.0

    @classmethod
    def demo(cls) -> Timing:
        return cls(scrape_s=1.0, eval_s=1.0, group_wait_s=1.0, group_interval_s=2.0)


def password_file(path: Path, users: Mapping[str, str]) -> Path:
    """A mosquitto password file (hashed by mosquitto_passwd), one user a line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    plain = "".join(f"{user}:{password}\n" for user, password in users.items())
    path.write_text(plain)
    path.chmod(0o600)
    # -U hashes every password of the file in place: one process for all users
    subprocess.run([need("mosquitto_passwd", "mosquitto"), "-U", str(path)], check=True,
                   capture_output=True, stdin=subprocess.DEVNULL)
    return path


class Broker:
    def __init__(self, name: str, workdir: Path, passwd: Path) -> None:
        """`passwd`: a mosquitto password file (`password_file`)."""
        self.name = name
        self.workdir = workdir
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        conf = workdir / "mosquitto.conf"
        conf.write_text(render(
            "mosquitto/mosquitto.conf.tmpl", port=self.port, host=LOOPBACK,
            password_file=passwd, acl_file=contrib("mosquitto/acl"),
            log_file=workdir / "mosquitto.log",
            # as root mosquitto would switch to the user `mosquitto`, who cannot read here
            extra=f"user {pwd.getpwuid(os.geteuid()).pw_name}"))
        self.log_path = workdir / "mosquitto.log"
        self.proc = Proc(name, [need("mosquitto", "mosquitto"), "-c", str(conf)], workdir,
                         ready=self._ready)
        self._offset = 0

    def _ready(self) -> bool:
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._offset)
                text = log.read().decode(errors="replace")
        except FileNotFoundError:
            return False
        return " running" in text and port_accepts(self.port)

    def start(self) -> None:
        self._offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.proc.start()


class Victoria:
    """One VictoriaMetrics node (single-node binary)."""

    def __init__(self, name: str, workdir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.proc = Proc(name, [
            need("victoria-metrics", "victoria-metrics"), f"-httpListenAddr={LOOPBACK}:{self.port}",
            f"-storageDataPath={workdir / 'data'}", "-retentionPeriod=100y",
            "-search.latencyOffset=0s", "-search.disableCache",
            "-http.maxGracefulShutdownDuration=1s",
            # a batch re-sent after an outage is the same point, not a second one
            "-dedup.minScrapeInterval=1ms"], workdir, ready=lambda: http_ok(f"{self.url}/health"))

    def flush(self) -> None:
        with HTTP.open(f"{self.url}/internal/force_flush", timeout=10):
            pass


class Central:
    """The whole centre; `start()` brings it up in dependency order, `close()` kills it."""

    def __init__(self, workdir: Path, gateways: Mapping[str, int], *,
                 timing: Timing | None = None, users: Sequence[str] = ()) -> None:
        """`gateways`: gateway id → its status port (scraped for /metrics); `users`: more
        gateway ids with a broker user and nothing to scrape (emulated gateways)."""
        self.workdir = workdir
        self.timing = timing or Timing()
        self.gateway_ports = dict(gateways)
        self.passwords = {gw: secrets.token_urlsafe(12) for gw in [*gateways, *users]} | {
            READER: secrets.token_urlsafe(12), OPERATOR: secrets.token_urlsafe(12)}
        passwd = password_file(workdir / "passwd", self.passwords)
        self.brokers = [Broker(name, workdir / name, passwd)
                        for name in ("broker-primary", "broker-backup")]
        self.nodes = [Victoria(name, workdir / name) for name in ("vm-a", "vm-b")]
        self.webhook = WebhookSink()
        self.smtp = SmtpSink()
        self.agent_port, self.auth_port, self.lb_port = free_port(), free_port(), free_port()
        self.alert_port, self.am_port = free_port(), free_port()
        self.agent_url = f"http://{LOOPBACK}:{self.agent_port}"
        self.auth_url = f"http://{LOOPBACK}:{self.auth_port}"
        self.am_url = f"http://{LOOPBACK}:{self.am_port}"
        self.vmalert_url = f"http://{LOOPBACK}:{self.alert_port}"
        self.agent = self._vmagent()
        self.balancer = self._haproxy()
        self.auth = self._vmauth()
        self.alertmanager = self._alertmanager()
        self.vmalert = self._vmalert()

    # ---- the parts ---------------------------------------------------------------------

    def _vmagent(self) -> Proc:
        folder = self.workdir / "vmagent"
        folder.mkdir(parents=True, exist_ok=True)
        t = self.timing
        targets = "\n".join(
            f'      - targets: ["{LOOPBACK}:{port}"]\n        labels: {{gateway: "{gw}"}}'
            for gw, port in self.gateway_ports.items())
        scrape = folder / "scrape.yml"
        scrape.write_text(render("victoriametrics/scrape.yml.tmpl", targets=targets,
                                 scrape_interval=f"{t.scrape_s:g}s",
                                 scrape_timeout=f"{min(t.scrape_s, 10):g}s"))
        return Proc("vmagent", [
            need("vmagent", "victoria-metrics"), f"-httpListenAddr={LOOPBACK}:{self.agent_port}",
            *(f"-remoteWrite.url={n.url}/api/v1/write" for n in self.nodes),
            f"-remoteWrite.tmpDataPath={folder / 'queue'}", "-remoteWrite.flushInterval=200ms",
            f"-promscrape.config={scrape}", "-http.maxGracefulShutdownDuration=1s",
            # a gateway that goes dark keeps its last values (its stage stays raised in the
            # alerts, `up` says it is dark): no stale markers end its series
            "-promscrape.noStaleMarkers"],
            folder, ready=lambda: http_ok(f"{self.agent_url}/health"))

    def _haproxy(self) -> Proc:
        folder = self.workdir / "haproxy"
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "haproxy.cfg"
        config.write_text(render("haproxy/haproxy.cfg.tmpl", host=LOOPBACK, port=self.lb_port,
                                 node_a=f"{LOOPBACK}:{self.nodes[0].port}",
                                 node_b=f"{LOOPBACK}:{self.nodes[1].port}"))
        return Proc("haproxy", [need("haproxy", "haproxy"), "-db", "-f", str(config)], folder,
                    ready=lambda: port_accepts(self.lb_port))

    def _vmauth(self) -> Proc:
        folder = self.workdir / "vmauth"
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "auth.yml"
        config.write_text(render("victoriametrics/vmauth.yml.tmpl", username=READER,
                                 password=self.passwords[READER],
                                 reads_url=f"http://{LOOPBACK}:{self.lb_port}/"))
        return Proc("vmauth", [need("vmauth", "victoria-metrics"),
                               f"-httpListenAddr={LOOPBACK}:{self.auth_port}",
                               f"-auth.config={config}"],
                    folder, ready=lambda: http_ok(f"{self.auth_url}/health"))

    def _alertmanager(self) -> Proc:
        folder = self.workdir / "alertmanager"
        folder.mkdir(parents=True, exist_ok=True)
        t = self.timing
        config = folder / "alertmanager.yml"
        config.write_text(render(
            "alertmanager/alertmanager.yml.tmpl", smtp_smarthost=f"{LOOPBACK}:{self.smtp.port}",
            smtp_from="gauged-alerts@localhost", email_to="duty@localhost",
            group_wait=f"{t.group_wait_s:g}s", group_interval=f"{t.group_interval_s:g}s",
            chat_url=f"{self.webhook.url}/chat", webhook_url=f"{self.webhook.url}/alertmanager"))
        return Proc("alertmanager", [
            need("prometheus-alertmanager", "prometheus-alertmanager"),
            f"--config.file={config}", f"--storage.path={folder / 'data'}",
            f"--web.listen-address={LOOPBACK}:{self.am_port}", "--cluster.listen-address="],
            folder, ready=lambda: http_ok(f"{self.am_url}/-/ready"))

    def _vmalert(self) -> Proc:
        folder = self.workdir / "vmalert"
        return Proc("vmalert", [
            need("vmalert", "victoria-metrics"), f"-rule={contrib('vmalert/rules.yml')}",
            f"-datasource.url={self.auth_url}", f"-datasource.basicAuth.username={READER}",
            f"-datasource.basicAuth.password={self.passwords[READER]}",
            f"-notifier.url={self.am_url}", f"-httpListenAddr={LOOPBACK}:{self.alert_port}",
            f"-evaluationInterval={self.timing.eval_s:g}s",
            "-http.maxGracefulShutdownDuration=1s"],
            folder, ready=lambda: http_ok(f"{self.vmalert_url}/health"))

    # ---- lifecycle ---------------------------------------------------------------------

    @property
    def procs(self) -> list[Proc]:
        return [*(b.proc for b in self.brokers), *(n.proc for n in self.nodes), self.agent,
                self.balancer, self.auth, self.alertmanager, self.vmalert]

    def start(self) -> None:
        for proc in self.procs:
            proc.start(wait=False)
        for proc in self.procs:
            proc.wait_ready()

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop(kill=True)
        self.webhook.close()
        self.smtp.close()

    def flush(self) -> None:
        """Every sample vmagent holds reaches both nodes' search (for counting)."""
        for node in self.nodes:
            node.flush()
