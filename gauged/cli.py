"""The `gauged` command (DESIGN §5). Exit codes: 0 ok, 2 bad configuration or arguments,
1 runtime failure."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from gauged import __version__
from gauged.config.checks import missing_clip_files
from gauged.config.load import load_config, summary
from gauged.config.settings import DEFAULT_CONFIG, Config
from gauged.errors import ConfigError, ScenarioError, StartupError

EXIT_OK, EXIT_RUNTIME, EXIT_CONFIG = 0, 1, 2

log = logging.getLogger("gauged")


def setup_logging(level: str = "INFO") -> None:
    """stderr; under systemd with journald priorities; repetitions held back (gauged/logs.py)."""
    from gauged.logs import setup

    setup(level)


def _load(path: Path, *, check_files: bool = False) -> Config | None:
    try:
        return load_config(path, check_files=check_files)
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return None


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args.path, check_files=True)  # every clip decoded (QUALITY AUD-1)
    if config is None:
        return EXIT_CONFIG
    for line in summary(config):
        print(line)
    for line in missing_clip_files(config):
        print(f"warning: {line} (the siren still sounds; the clip is reported as audio_fault)")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    config = _load(args.config, check_files=True)  # a bad clip refuses the start (AUD-1)
    if config is None:
        return EXIT_CONFIG
    from gauged.daemon.daemon import Daemon
    from gauged.daemon.signals import handled

    async def main() -> None:
        daemon = Daemon(config)
        # SIGTERM, SIGINT, SIGQUIT stop, SIGHUP reloads, others are ignored: none ends the
        # daemon without its relays OFF (gauged/daemon/signals.py)
        with handled(asyncio.get_running_loop(), stop=daemon.stop,
                     reload=daemon.request_reload):
            await daemon.run(once=args.once)

    try:
        asyncio.run(main())
    except StartupError as exc:
        # another daemon on the state folder, the status port taken, a state folder it
        # cannot use: one line (stderr, the journal under systemd), no traceback
        log.error("%s", exc)
        return EXIT_RUNTIME
    except Exception:
        log.exception("gauged stopped on an unexpected error")
        return EXIT_RUNTIME
    return EXIT_OK


def cmd_replay(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    from gauged.alarm.replay import describe, replay
    from gauged.alarm.scenario import DEFAULT_START, read_scenario

    start = args.start or DEFAULT_START
    try:
        rows = read_scenario(args.scenario, config, start)
    except ScenarioError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    if args.report:
        from gauged.alarm.report import render, summarise

        first = rows[0].time if len(rows) else start
        last = rows[-1].time if len(rows) else start
        report = summarise(replay(rows, config), config, first, last)
        print(json.dumps(report.as_dict(), ensure_ascii=False, indent=1) if args.json
              else render(report))
        return EXIT_OK
    for event in replay(rows, config):
        print(json.dumps(event, ensure_ascii=False) if args.json else describe(event))
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace, rest: list[str]) -> int:
    from simulators.cli import main as simulate

    return int(simulate(["--config", str(args.config), *rest]))


def cmd_demo(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    from gauged.demo import run_demo

    try:
        return asyncio.run(run_demo(config, args.scenario, args.speed, args.until_end))
    except StartupError as exc:  # the status port taken, say: one line
        log.error("%s", exc)
        return EXIT_RUNTIME
    except Exception:
        log.exception("demo stopped on an unexpected error")
        return EXIT_RUNTIME


def cmd_status(args: argparse.Namespace) -> int:
    url = args.url.rstrip("/") + "/status"
    # straight to the daemon: an operator's http_proxy must not carry a loopback request
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=args.timeout) as response:
            status = json.load(response)
    except urllib.error.HTTPError as exc:
        print(f"gauged status: {url} answered HTTP {exc.code} {exc.reason}: is that port "
              "a gauged daemon's status server?", file=sys.stderr)
        return EXIT_RUNTIME
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"gauged status: the daemon is not reachable at {url} ({reason}).\n"
              "Is it running (systemctl status gauged)? Does --url match [status] host and "
              "port in its configuration?", file=sys.stderr)
        return EXIT_RUNTIME
    except ValueError as exc:
        print(f"gauged status: {url} did not answer a status document ({exc})",
              file=sys.stderr)
        return EXIT_RUNTIME
    if args.json:
        print(json.dumps(status, ensure_ascii=False, indent=1))
        return EXIT_OK
    from gauged.ops.statusview import render

    print(render(status))
    return EXIT_OK


def cmd_command(args: argparse.Namespace) -> int:
    """Sign a command with the config's secret and send it to the local daemon's
    POST /command (with the status token); print the reply."""
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    secret = config.commands.secret.get_secret_value()
    token = config.status.token.get_secret_value()
    if not config.commands.enabled or not secret or (not token and not args.broker):
        print("gauged command: needs [commands] enabled with a secret and a [status] token "
              f"in {args.config}", file=sys.stderr)
        return EXIT_CONFIG
    import getpass
    import socket
    import uuid

    from gauged.ops.commands import command_body, sign

    # signed for this gateway only ([gateway] id, or --gateway): every other one refuses it
    body = command_body(
        args.gateway or config.gateway.id, id=str(uuid.uuid4()),
        issued=datetime.now().astimezone().isoformat(), ttl_s=args.ttl,
        sender=args.sender or f"{getpass.getuser()}@{socket.gethostname()}",
        action=args.action, zone=args.zone, clips=args.clip or None, scope=args.scope,
        target=args.target, minutes=args.minutes, reason=args.reason, job=args.job,
        station=args.station)
    if args.broker:  # through a central broker (gauged/fleet/commands.py)
        return _command_over_mqtt(args, config, body, secret)
    host = "127.0.0.1" if config.status.host in ("0.0.0.0", "::") else config.status.host
    url = args.url or f"http://{host}:{config.status.port}"
    request = urllib.request.Request(
        url.rstrip("/") + "/command", data=sign(body, secret), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            reply = json.load(response)
    except urllib.error.HTTPError as exc:
        reply = json.load(exc) if exc.headers.get_content_type() == "application/json" \
            else {"status": "failed", "reason": f"HTTP {exc.code}"}
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"gauged command: cannot reach {url}: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    print(json.dumps(reply, ensure_ascii=False, indent=1))
    return EXIT_OK if reply.get("status") == "done" else EXIT_RUNTIME


def _command_over_mqtt(args: argparse.Namespace, config: Config, body: str,
                       secret: str) -> int:
    import os

    from gauged.fleet.commands import send
    from gauged.fleet.view import BrokerAddress
    from gauged.ops.commands import sign

    try:
        broker = BrokerAddress.parse(args.broker, 0)
    except ValueError as exc:
        print(f"gauged command: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        reply = asyncio.run(send(
            broker, args.username, os.environ.get("GAUGED_OPERATOR_PASSWORD", ""),
            config.mqtt.topic_prefix, args.gateway or config.gateway.id, sign(body, secret),
            json.loads(body)["id"]))
    except Exception as exc:  # the broker unreachable or refusing the operator
        print(f"gauged command: broker {args.broker}: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    print(json.dumps(reply, ensure_ascii=False, indent=1))
    return EXIT_OK if reply.get("status") == "done" else EXIT_RUNTIME


def _iso(text: str) -> datetime:
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a UTC offset")
    return when


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gauged", description=(
        "Flood-warning daemon: reads river and rain gauges, evaluates stages, sounds sirens."))
    p.add_argument("--version", action="version", version=f"gauged {__version__}")
    p.add_argument("--log-level", default="INFO",
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    run.add_argument("--once", action="store_true", help="one full cycle, then exit")

    check = sub.add_parser("check-config", help="validate a configuration")
    check.add_argument("path", type=Path, nargs="?", default=DEFAULT_CONFIG)

    rep = sub.add_parser("replay", help="run a scenario through the engine offline")
    rep.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    rep.add_argument("scenario", type=Path)
    rep.add_argument("--json", action="store_true",
                     help="one JSON object per line (with --report: one JSON document)")
    rep.add_argument("--report", action="store_true",
                     help="a backtest report per station and zone instead of the timeline")
    rep.add_argument("--start", type=_iso, default=None,
                     help="time of a scenario's second 0 (ISO-8601 with offset)")

    sim = sub.add_parser("simulate", help="run the gauge, relay and audio simulators",
                         add_help=False)
    sim.add_argument("--config", type=Path, default=DEFAULT_CONFIG)

    demo = sub.add_parser("demo", help="simulators and daemon on the reference system")
    demo.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    demo.add_argument("--scenario", type=Path,
                      default=Path("simulators/scenarios/design_storm_50mm.csv"))
    demo.add_argument("--speed", type=float, default=90.0,
                      help="clock speed (90: a 3-minute cycle every 2 s)")
    demo.add_argument("--until-end", action="store_true",
                      help="stop by itself once the scenario has played")

    cmd = sub.add_parser("command", help="send a signed command to the local daemon",
                         description="Sign a command with [commands] secret and POST it to "
                         "the daemon's /command with [status] token.")
    cmd.add_argument("action", choices=["silence", "broadcast", "inhibit", "release", "test",
                                        "ack"])
    cmd.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    cmd.add_argument("--zone", help="silence, broadcast: the zone")
    cmd.add_argument("--clip", action="append", help="broadcast: a configured clip (repeat)")
    cmd.add_argument("--scope", choices=["station", "zone"], help="inhibit, release")
    cmd.add_argument("--target", help="inhibit, release: the station or zone id")
    cmd.add_argument("--minutes", type=float, help="inhibit: how long")
    cmd.add_argument("--reason", help="inhibit, ack: why, or a note (kept in the audit "
                     "record)")
    cmd.add_argument("--station", help="ack: the raised station acknowledged")
    cmd.add_argument("--job", choices=["silent", "audible"], help="test: which")
    cmd.add_argument("--ttl", type=float, default=60.0)
    cmd.add_argument("--sender", help="who sends it (default: user@host)")
    cmd.add_argument("--url", help="the status server (default: from the config)")
    cmd.add_argument("--gateway", help="the gateway the command is signed for (default: "
                     "[gateway] id of the config); any other gateway refuses it")
    cmd.add_argument("--broker", metavar="HOST:PORT", help="send through this central broker "
                     "(MQTT) instead of the local status server; the password is read from "
                     "GAUGED_OPERATOR_PASSWORD")
    cmd.add_argument("--username", default="operator", help="with --broker: the broker user")

    status = sub.add_parser("status", help="print the daemon's status (one screen)")
    status.add_argument("--url", default="http://127.0.0.1:8080",
                        help="the status server (default: %(default)s)")
    status.add_argument("--json", action="store_true", help="the raw /status document")
    status.add_argument("--timeout", type=float, default=5.0, help="seconds (default: 5)")
    fleet = sub.add_parser("fleet", help="the city view over the central brokers",
                           description="Read-only fleet page (and --json) built from the "
                           "central brokers' retained topics. The broker password is read "
                           "from GAUGED_FLEET_PASSWORD.")
    fleet.add_argument("--broker", action="append", default=None, metavar="HOST:PORT",
                       help="a central broker (repeat: primary first; default 127.0.0.1:1883)")
    fleet.add_argument("--username", default="fleet", help="broker user (default: fleet)")
    fleet.add_argument("--json", action="store_true", help="print one document and exit")
    fleet.add_argument("--host", default="127.0.0.1", help="page address")
    fleet.add_argument("--port", type=int, default=8090, help="page port (default: 8090)")
    fleet.add_argument("--cycle-s", type=float, default=180.0,
                       help="a gateway's cycle in real seconds (dark after two silent ones)")
    fleet.add_argument("--topic-prefix", default="gauged")

    fdemo = sub.add_parser("fleet-demo", help="central stack and gateways on loopback")
    fdemo.add_argument("--gateways", type=int, default=6)
    fdemo.add_argument("--speed", type=float, default=60.0,
                       help="clock speed (60: a 3-minute cycle every 3 s)")
    fdemo.add_argument("--scenario", type=Path,
                       default=Path("simulators/scenarios/design_storm_50mm.csv"))
    fdemo.add_argument("--lag-min", type=float, default=18.0,
                       help="simulated minutes between one gateway's storm and the next's "
                       "(rounded to whole cycles)")
    fdemo.add_argument("--port", type=int, default=8090, help="fleet page port")
    return p


def cmd_fleet(args: argparse.Namespace) -> int:
    from gauged.fleet.server import main as fleet

    return fleet(args.broker or ["127.0.0.1:1883"], username=args.username,
                 as_json=args.json, host=args.host, port=args.port, cycle_s=args.cycle_s,
                 prefix=args.topic_prefix)


def cmd_fleet_demo(args: argparse.Namespace) -> int:
    from gauged.fleet.demo import main as fleet_demo
    from gauged.fleet.procs import StackError

    try:
        return fleet_demo(args.gateways, args.speed, args.scenario, args.lag_min, args.port)
    except StackError as exc:
        log.error("%s", exc)
        return EXIT_RUNTIME


def main(argv: Sequence[str] | None = None) -> int:
    args, rest = parser().parse_known_args(argv)
    if args.command != "simulate" and rest:
        parser().error(f"unrecognized arguments: {' '.join(rest)}")
    setup_logging(args.log_level)
    commands = {
        "check-config": cmd_check_config, "run": cmd_run, "replay": cmd_replay,
        "demo": cmd_demo, "status": cmd_status, "command": cmd_command,
    }
    commands |= {"fleet": cmd_fleet, "fleet-demo": cmd_fleet_demo}
    if args.command == "simulate":
        return cmd_simulate(args, rest)
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
