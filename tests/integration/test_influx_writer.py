"""The InfluxDB writer on aiohttp (gauged/uplinks/influx_http.py, InfluxSink.run) over real HTTP:
against a small loopback server that answers as a TSDB would and records what it got (auth
headers, gzip, the URL's path prefix, error bodies, Retry-After, TLS with a private CA,
connection reuse), and against two real VictoriaMetrics, one written by gauged and one by
influxdb-client, whose exports must be identical (the oracle)."""

from __future__ import annotations

import contextlib
import gzip
import ssl
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from fieldbus import background, until
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write.point import Point as ClientPoint
from influxdb_client.client.write_api import SYNCHRONOUS
from pydantic import SecretStr
from services import VictoriaFactory
from test_mqtt_tls import make_ca

from gauged.config.models import InfluxConfig
from gauged.uplinks.influx import InfluxSink
from gauged.uplinks.influx_http import WriteClient, WriteError, retry_after
from gauged.uplinks.line_protocol import encode, timestamp
from gauged.uplinks.records import Record
from gauged.uplinks.spool import Point, Spool


@dataclass
class Got:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    raw: bytes
    lines: list[str]
    peer: Any
    at: float


@dataclass
class FakeTsdb:
    """Answers POSTs to any path with 204, or with the (status, headers, body) queued in
    `answers`; records every request (its body un-gzip'd)."""

    answers: deque[tuple[int, dict[str, str], str]] = field(default_factory=deque)
    got: list[Got] = field(default_factory=list)
    port: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        body = gzip.decompress(raw) if request.headers.get("Content-Encoding") == "gzip" \
            else raw
        self.got.append(Got(request.path, dict(request.query), dict(request.headers), raw,
                            body.decode().split("\n"),
                            request.transport.get_extra_info("peername")
                            if request.transport else None, time.monotonic()))
        if self.answers:
            status, headers, text = self.answers.popleft()
            return web.Response(status=status, headers=headers, text=text)
        return web.Response(status=204)


@contextlib.asynccontextmanager
async def fake_tsdb(tls: ssl.SSLContext | None = None) -> AsyncIterator[FakeTsdb]:
    tsdb = FakeTsdb()
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/{tail:.*}", tsdb.handle)
    runner = web.AppRunner(app, auto_decompress=False)  # (`raw` as it came)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    assert site._server is not None
    tsdb.port = site._server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    try:
        yield tsdb
    finally:
        await runner.cleanup()


def config(url: str, **kw: Any) -> InfluxConfig:
    return InfluxConfig(enabled=True, url=url, backoff_min_s=kw.pop("backoff_min_s", 0.05),
                        backoff_max_s=kw.pop("backoff_max_s", 0.2), **kw)


T0 = datetime(2026, 12, 7, 12, tzinfo=UTC)


def records(n: int, run: str = "r", when: datetime = T0) -> list[Record]:
    t0 = when
    return [Record("level", {"run": run, "station": f"s{i:03d}"}, {"level_m": i / 100},
                   t0 + timedelta(milliseconds=i)) for i in range(n)]


@contextlib.asynccontextmanager
async def running(sink: InfluxSink) -> AsyncIterator[InfluxSink]:
    with sink.opened():
        async with background(sink.run(), name="influx"):
            yield sink


# ---- the request ------------------------------------------------------------------------


@pytest.mark.parametrize(("scheme", "token", "header"), [
    ("Token", "influx2-token", "Token influx2-token"),
    ("Bearer", "influx3-token", "Bearer influx3-token"),
    ("Token", "gauged:s3cret", "Token gauged:s3cret"),  # InfluxDB 1.8: user:password
    ("Token", "", None),  # VictoriaMetrics: no Authorization header at all
])
async def test_auth_header_org_bucket_precision_and_path(
        scheme: str, token: str, header: str | None) -> None:
    async with fake_tsdb() as tsdb:
        c = config(f"http://127.0.0.1:{tsdb.port}", token=SecretStr(token), auth_scheme=scheme,
                   org="minato", bucket="gauged/autogen")
        async with WriteClient(c) as client:
            await client.write(client.encode("m v=1 1"))
    (got,) = tsdb.got
    assert got.headers.get("Authorization") == header
    assert got.path == "/api/v2/write"
    assert got.query == {"org": "minato", "bucket": "gauged/autogen", "precision": "ms"}
    assert got.headers["Content-Type"].startswith("text/plain")
    assert "Content-Encoding" not in got.headers  # gzip is off by default
    assert got.lines == ["m v=1 1"]


async def test_url_path_prefix_is_kept_as_vminsert_needs() -> None:
    async with fake_tsdb() as tsdb:
        for url in (f"http://127.0.0.1:{tsdb.port}/insert/0/influx",
                    f"http://127.0.0.1:{tsdb.port}/insert/0/influx/"):
            async with WriteClient(config(url)) as client:
                await client.write(client.encode("m v=1 1"))
    assert [g.path for g in tsdb.got] == ["/insert/0/influx/api/v2/write"] * 2


async def test_gzip_at_the_level_configured_and_the_lines_intact(tmp_path: Path) -> None:
    lines = [r.line() for r in records(2000)]
    async with fake_tsdb() as tsdb:
        for level in (1, 9):
            sink = InfluxSink(config(f"http://127.0.0.1:{tsdb.port}", gzip_level=level),
                              tmp_path / f"spool-{level}.sqlite3")
            sink.write(records(2000))
            async with running(sink):
                assert await sink.flush(10.0)
    fast, best = tsdb.got
    for got in (fast, best):
        assert got.headers["Content-Encoding"] == "gzip"
        assert got.lines == lines
        assert len(got.raw) < len("\n".join(lines)) / 3
    # the gzip header's XFL byte says how hard the compressor tried: 4 fastest, 2 best
    assert (fast.raw[8], best.raw[8]) == (4, 2)
    assert len(best.raw) < len(fast.raw)


async def test_one_keep_alive_connection_for_many_batches(tmp_path: Path) -> None:
    async with fake_tsdb() as tsdb:
        sink = InfluxSink(config(f"http://127.0.0.1:{tsdb.port}", batch_points=100),
                          tmp_path / "spool.sqlite3")
        async with running(sink):
            for k in range(5):
                sink.write(records(200, when=datetime(2026, 12, 7, k, tzinfo=UTC)))
                assert await sink.flush(10.0)
    assert len(tsdb.got) == 5
    assert len({g.peer for g in tsdb.got}) == 1


# ---- errors -----------------------------------------------------------------------------


async def test_a_refusal_keeps_the_batch_and_names_the_databases_reason_never_the_token(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", "gauged.uplinks.influx")
    reason = '{"code":"unauthorized","message":"unauthorized access"}'
    async with fake_tsdb() as tsdb:
        tsdb.answers.extend([(401, {}, reason)] * 3)
        sink = InfluxSink(config(f"http://127.0.0.1:{tsdb.port}",
                                 token=SecretStr("very-secret-token")),
                          tmp_path / "spool.sqlite3")
        sink.write(records(10))
        async with running(sink):
            await until(lambda: sink.health().errors >= 1, 10.0, "a failed write")
            h = sink.health()
            assert (h.connected, h.queued, h.written) == (False, 10, 0)  # the batch stays
            assert h.last_error == f"HTTP 401: {reason}"
            assert await sink.flush(10.0)  # the fourth attempt is accepted
        assert sink.health().written == 10
    assert [g.lines for g in tsdb.got] == [[r.line() for r in records(10)]] * 4
    warning = [r.getMessage() for r in caplog.records if "uplink influx down" in r.getMessage()]
    assert len(warning) == 1  # once, at the transition
    assert "unauthorized access" in warning[0]
    assert "very-secret-token" not in caplog.text + h.last_error


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 12, 8, 0, 0, 0, tzinfo=UTC).timestamp()
    assert retry_after("120", lambda: now) == 120.0
    assert retry_after(" 0 ", lambda: now) == 0.0
    assert retry_after("Tue, 08 Dec 2026 00:01:30 GMT", lambda: now) == 90.0
    assert retry_after("Mon, 07 Dec 2026 23:00:00 GMT", lambda: now) == 0.0  # past: now
    for unreadable in (None, "", "soon", "-5", "1.5", "Tue, 08 Dec 2026 00:01:30 -0000"):
        assert retry_after(unreadable, lambda: now) is None


async def test_retry_after_as_an_http_date_is_honoured(tmp_path: Path) -> None:
    async with fake_tsdb() as tsdb:
        # two seconds ahead, to the second: a wait of more than one second
        later = format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True)
        tsdb.answers.append((503, {"Retry-After": later}, "overloaded"))
        async with WriteClient(config(f"http://127.0.0.1:{tsdb.port}")) as client:
            with pytest.raises(WriteError) as refused:
                await client.write(client.encode("m v=1 1"))
        assert refused.value.status == 503
        assert refused.value.retry_after is not None
        assert 1.0 <= refused.value.retry_after <= 2.0
        assert str(refused.value) == "HTTP 503: overloaded"
        later = format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True)
        tsdb.answers.append((503, {"Retry-After": later}, "overloaded"))
        sink = InfluxSink(config(f"http://127.0.0.1:{tsdb.port}", backoff_min_s=0.01,
                                 backoff_max_s=0.02), tmp_path / "spool.sqlite3")
        sink.write(records(3))
        async with running(sink):
            assert await sink.flush(10.0)
    first, second = tsdb.got[1:]
    assert second.at - first.at >= 0.9  # the backoff alone would be ≤ 0.02 s


async def test_https_with_a_private_ca_file(tmp_path: Path) -> None:
    ca, cert, key = make_ca(tmp_path, "tsdb")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    async with fake_tsdb(tls) as tsdb:
        url = f"https://127.0.0.1:{tsdb.port}"
        untrusting = InfluxSink(config(url), tmp_path / "a.sqlite3")
        untrusting.write(records(5))
        async with running(untrusting):
            await until(lambda: untrusting.health().errors >= 1, 10.0, "a refused handshake")
            assert "certificate verify failed" in untrusting.health().last_error
            assert untrusting.health().queued == 5
        missing = InfluxSink(config(url, ca_file=tmp_path / "no-such-ca.pem"),
                             tmp_path / "b.sqlite3")
        missing.write(records(5))
        async with running(missing):  # a CA file that cannot be read: a failed write
            await until(lambda: missing.health().errors >= 1, 10.0, "a failed write")
            assert missing.health().queued == 5
        trusting = InfluxSink(config(url, ca_file=ca), tmp_path / "c.sqlite3")
        trusting.write(records(5))
        async with running(trusting):
            assert await trusting.flush(10.0)
    assert len(tsdb.got) == 1
    assert tsdb.got[0].lines == [r.line() for r in records(5)]


# ---- the oracle -------------------------------------------------------------------------

AWKWARD = ["plain", "two words", "a,b", "k=v", 'say "hi"', "C:\\temp", "古川 上流",
           "護岸,港区=東京", "tab\there"]
# Point does not escape a backslash: before a separator or at the end of a tag value its
# line does not read back (tests/unit/test_line_protocol.py). Written by gauged only.
BACKSLASHED = ["a\\,b", "ends\\", "a\\ b=c"]


def awkward_points(run: str, names: list[str]) -> list[tuple[str, dict[str, str],
                                                           dict[str, Any], datetime]]:
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    return [(f"water {i % 3}", {"run": run, "station": text, "tag key": f"{i}"},
             {"level_m": i / 7, "count": i, "ok": i % 2 == 0, "note": text},
             t0 + timedelta(seconds=i, milliseconds=i)) for i, text in enumerate(names * 30)]


async def test_the_same_batch_written_by_gauged_and_by_influxdb_client_exports_identically(
        tmp_path: Path, victoria_factory: VictoriaFactory) -> None:
    ours_db, theirs_db = victoria_factory(), victoria_factory()
    run, edge = uuid.uuid4().hex[:8], uuid.uuid4().hex[:8]
    points = awkward_points(run, AWKWARD)
    edges = awkward_points(edge, BACKSLASHED)
    with Spool.open(tmp_path / "spool.sqlite3", 1 << 30) as spool:  # the lines, spooled
        spool.put([Point(encode(m, tags, fields, when), True, when.timestamp())
                   for m, tags, fields, when in points + edges])
    sink = InfluxSink(config(ours_db.url, batch_points=64), tmp_path / "spool.sqlite3")
    async with running(sink):
        assert sink.health().queued == len(points + edges)
        assert await sink.flush(30.0)
    assert sink.health().written == len(points + edges)
    with InfluxDBClient(url=theirs_db.url, token="-", org="gauged") as client:
        client.write_api(write_options=SYNCHRONOUS).write(
            bucket="gauged", write_precision="ms",
            record=[client_point(*p) for p in points])
    match = f'{{run="{run}"}}'
    # four series per point (VictoriaMetrics 1.79 stores a string field as 0)
    ours = await ours_db.wait_for_async(match, lambda s: count(s) >= 4 * len(points))
    theirs = await theirs_db.wait_for_async(match, lambda s: count(s) >= 4 * len(points))
    assert count(ours) == 4 * len(points)
    assert ours == theirs
    # (a tab is written as `\t`, two characters, by both: no line holds a tab)
    assert {s["metric"]["station"] for s in ours} == {a.replace("\t", "\\t") for a in AWKWARD}
    assert {s["metric"]["__name__"] for s in ours} == {
        f"water {k}_{f}" for k in range(3) for f in ("level_m", "count", "ok", "note")}
    # the backslashes gauged escapes read back as they were meant
    got = await ours_db.wait_for_async(f'{{run="{edge}"}}',
                                       lambda s: count(s) >= 4 * len(edges))
    assert {s["metric"]["station"] for s in got} == set(BACKSLASHED)
    assert count(got) == 4 * len(edges)


def client_point(measurement: str, tags: dict[str, str], fields: dict[str, Any],
                 when: datetime) -> ClientPoint:
    # the timestamp as an int: from a datetime, Point divides nanoseconds by 1e6 as a float and
    # truncates, which loses a millisecond even on a whole one (1796684704138 → …137)
    point = ClientPoint(measurement).time(timestamp(when, "ms"), "ms")
    for k, v in tags.items():
        point.tag(k, v)
    for k, v in fields.items():
        point.field(k, v)
    return point


def count(series: list[dict[str, Any]]) -> int:
    return sum(len(s["timestamps"]) for s in series)


# ---- pacing on battery ([site] on_battery_uplink_every_s) -------------------------------


def kept(when: datetime) -> Record:
    """A point that must never be dropped (a stage change): posted at once, paced or not."""
    return Record("stage", {"station": "s000"}, {"stage": 2}, when)


async def test_paced_routine_points_wait_their_turn_in_one_post(tmp_path: Path) -> None:
    async with fake_tsdb() as tsdb:
        sink = InfluxSink(config(f"http://127.0.0.1:{tsdb.port}"), tmp_path / "spool.sqlite3")
        async with running(sink):
            sink.pace(2.0)
            paced_at = time.monotonic()
            for k in range(3):  # three cycles' routine telemetry, one after another
                sink.write(records(10, run=f"c{k}"))
                assert await sink.spooled(5.0)
            await until(lambda: len(tsdb.got) >= 1, 10.0, "the paced post")
            # held back the pace, then the three cycles in one request
            assert tsdb.got[0].at - paced_at >= 1.9
            assert len(tsdb.got) == 1
            assert len(tsdb.got[0].lines) == 30
            sink.pace(0.0)  # mains back: every cycle at once
            back_at = time.monotonic()
            sink.write(records(10, run="back"))
            await until(lambda: len(tsdb.got) >= 2, 10.0, "the post after mains returned")
            assert tsdb.got[1].at - back_at < 1.9


async def test_paced_a_stage_change_goes_at_once_with_what_was_spooled_before(
        tmp_path: Path) -> None:
    async with fake_tsdb() as tsdb:
        sink = InfluxSink(config(f"http://127.0.0.1:{tsdb.port}"), tmp_path / "spool.sqlite3")
        async with running(sink):
            sink.pace(3600.0)
            sink.write(records(5, run="before"))
            assert await sink.spooled(5.0)
            sink.write([kept(T0 + timedelta(seconds=1))])
            await until(lambda: sum(len(g.lines) for g in tsdb.got) >= 6, 10.0,
                        "the stage change and the routine points before it")
            sent = [line for g in tsdb.got for line in g.lines]
            assert sent[:5] == [r.line() for r in records(5, run="before")]
            assert sent[5].startswith("stage,station=s000 stage=2")
            # routine again: held (an hour), but a flush (the daemon's stop) posts it
            sink.write(records(3, run="after"))
            assert await sink.flush(10.0)
            assert sum(len(g.lines) for g in tsdb.got) == 9
