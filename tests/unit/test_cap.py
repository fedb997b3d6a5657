"""CAP 1.2 documents (gauged/alarm/cap.py): their structure against the schema in tests/data, their
texts from the config, and the Alert → Update → Cancel lifecycle with its references."""

from __future__ import annotations

import asyncio
import json
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import xmlschema
from fieldbus import until

from gauged.alarm.cap import (
    NS,
    CapTracker,
    Document,
    alert_stage,
    cap_time,
    identifier,
)
from gauged.alarm.types import Transition
from gauged.config.load import load_config
from gauged.config.models import CapArea, CapStage
from gauged.config.settings import Config
from gauged.errors import ConfigError
from gauged.uplinks.cap import CapSink, load_open

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "config" / "minato-furukawa.toml"
SCHEMA = xmlschema.XMLSchema(ROOT / "tests" / "data" / "cap-1.2-structure.xsd")
T0 = datetime(2026, 7, 1, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo
SENDER = "minato-furukawa@gauged.invalid"
# CAP 1.2 §3.3.2: whole seconds and a numeric offset, never "Z"
CAP_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$")


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    config = load_config(REFERENCE)
    config.cap.dir = tmp_path / "cap"
    return config


def parse(doc: Document | bytes) -> ET.Element:
    """Validate against the CAP 1.2 structure and return the root element."""
    xml = doc.xml if isinstance(doc, Document) else doc
    SCHEMA.validate(xml.decode("utf-8"))
    root = ET.fromstring(xml)
    assert root.tag == f"{{{NS}}}alert"
    for path in ("cap:sent", "cap:info/cap:expires"):
        for e in root.findall(path, {"cap": NS}):
            assert CAP_TIME.match(e.text or ""), e.text
    return root


def text(e: ET.Element, path: str) -> str:
    found = e.find("/".join(f"cap:{p}" for p in path.split("/")), {"cap": NS})
    assert found is not None, path
    return found.text or ""


def infos(root: ET.Element) -> dict[str, ET.Element]:
    return {text(i, "language"): i for i in root.findall("cap:info", {"cap": NS})}


def params(info: ET.Element) -> dict[str, str]:
    return {text(p, "valueName"): text(p, "value")
            for p in info.findall("cap:parameter", {"cap": NS})}


# ---- times and identifiers --------------------------------------------------------------

def test_sent_is_local_time_with_offset_whole_seconds_and_utc_as_minus_zero() -> None:
    assert cap_time(datetime(2026, 7, 1, 3, 0, 0, 123456, tzinfo=UTC), "Asia/Tokyo") == \
        "2026-07-01T12:00:00+09:00"
    assert cap_time(datetime(2026, 7, 1, 3, 0, tzinfo=UTC), "UTC") == "2026-07-01T03:00:00-00:00"
    assert cap_time(datetime(2026, 1, 1, 12, tzinfo=UTC), "America/New_York") == \
        "2026-01-01T07:00:00-05:00"


def test_identifiers_are_stable_unique_and_free_of_forbidden_characters() -> None:
    a = identifier("minato-furukawa", "shin_hiroo", "warning", at(3), "Asia/Tokyo")
    assert a == "minato-furukawa.shin_hiroo.warning.20260701T120300+0900"
    assert a == identifier("minato-furukawa", "shin_hiroo", "warning", at(3), "Asia/Tokyo")
    assert a != identifier("minato-furukawa", "shin_hiroo", "warning", at(6), "Asia/Tokyo")
    assert a != identifier("minato-furukawa", "shirokane", "warning", at(3), "Asia/Tokyo")
    odd = identifier("gw", "a b,c<d&e/f", "警戒", at(0), "Asia/Tokyo")
    assert not re.search(r"[\s,<&/]", odd)
    assert "警戒" in odd


# ---- the lifecycle ----------------------------------------------------------------------

def test_alert_update_cancel_with_references_and_one_incident(config: Config) -> None:
    tracker = CapTracker(config)
    # watch (stage 1) broadcasts nothing: no document
    assert tracker.follow("shin_hiroo", 1, at(0), 2.5) is None
    alert = tracker.follow("shin_hiroo", 2, at(3), 1.9)  # notice
    update = tracker.follow("shin_hiroo", 4, at(6), -0.1)  # overflow
    down = tracker.follow("shin_hiroo", 3, at(9), 0.5)  # back to warning: Update, no siren
    assert tracker.follow("shin_hiroo", 3, at(12), 0.6) is None  # no change, no document
    cancel = tracker.follow("shin_hiroo", 1, at(15), 2.3)  # watch: no broadcast → Cancel
    assert alert is not None
    assert update is not None
    assert down is not None
    assert cancel is not None
    docs = [alert, update, down, cancel]
    assert [d.msg_type for d in docs] == ["Alert", "Update", "Update", "Cancel"]
    assert len({d.identifier for d in docs}) == 4
    roots = [parse(d) for d in docs]
    for doc, root in zip(docs, roots, strict=True):
        assert text(root, "identifier") == doc.identifier
        assert text(root, "sender") == SENDER
        assert text(root, "status") == "Actual"
        assert text(root, "msgType") == doc.msg_type
        assert text(root, "scope") == "Public"
        assert text(root, "incidents") == alert.identifier
    assert roots[0].find("cap:references", {"cap": NS}) is None

    def refs(root: ET.Element) -> list[str]:
        return text(root, "references").split(" ")

    def ref(d: Document) -> str:
        return f"{SENDER},{d.identifier},{d.sent}"

    assert refs(roots[1]) == [ref(alert)]
    assert refs(roots[2]) == [ref(alert), ref(update)]
    assert refs(roots[3]) == [ref(alert), ref(update), ref(down)]
    assert [params(infos(r)["en-US"])["stage"] for r in roots] == \
        ["notice", "overflow", "warning", "watch"]
    assert "shin_hiroo" not in tracker.open
    # the next rise is a new incident
    again = tracker.follow("shin_hiroo", 3, at(30), 0.9)
    assert again is not None
    assert again.msg_type == "Alert"
    root = parse(again)
    assert root.find("cap:references", {"cap": NS}) is None
    assert text(root, "incidents") == again.identifier


def test_a_skipped_stage_alerts_only_the_highest_as_the_broadcast_does(config: Config) -> None:
    tracker = CapTracker(config)
    doc = tracker.follow("shirokane", 4, at(0), -0.2)
    assert doc is not None
    assert doc.msg_type == "Alert"
    assert doc.identifier.startswith("minato-furukawa.shirokane.overflow.")
    cancel = tracker.follow("shirokane", 0, at(30), 3.0)
    assert cancel is not None
    assert cancel.msg_type == "Cancel"
    assert ".normal." in cancel.identifier
    ja = infos(parse(cancel))["ja-JP"]
    assert text(ja, "responseType") == "AllClear"
    assert text(ja, "urgency") == "Past"


def test_alert_stage_is_the_highest_broadcasting_stage_at_or_below(config: Config) -> None:
    level, rain = config.stations["shin_hiroo"], config.stations["rain_ward_office"]
    assert [alert_stage(level, s) for s in range(5)] == [0, 0, 2, 3, 4]
    assert [alert_stage(rain, s) for s in range(4)] == [0, 0, 0, 3]


def test_rain_stages_without_a_broadcast_send_nothing(config: Config) -> None:
    tracker = CapTracker(config)
    assert tracker.follow("rain_ward_office", 1, at(0), 26.0) is None
    assert tracker.follow("rain_ward_office", 2, at(3), 31.0) is None  # notice: no sequence
    doc = tracker.follow("rain_ward_office", 3, at(6), 52.5)
    assert doc is not None
    assert doc.msg_type == "Alert"
    info = infos(parse(doc))
    assert text(info["ja-JP"], "event") == "大雨"
    assert text(info["en-US"], "event") == "Heavy rain"
    assert text(info["ja-JP"], "description") == \
        "激しい雨が降っています。建物や地下室の浸水に厳重に注意してください"
    assert params(info["en-US"])["rain_mm"] == "52.5"
    cancel = tracker.follow("rain_ward_office", 2, at(60), 20.0)
    assert cancel is not None
    assert cancel.msg_type == "Cancel"


# ---- what a document says ---------------------------------------------------------------

def test_texts_and_readings_come_from_the_config(config: Config) -> None:
    doc = CapTracker(config).follow("shin_hiroo", 4, at(0), -0.05)
    assert doc is not None
    root = parse(doc)
    assert text(root, "sent") == "2026-07-01T12:00:00+09:00"
    info = infos(root)
    assert list(info) == ["ja-JP", "en-US"]
    ja, en = info["ja-JP"], info["en-US"]
    assert text(ja, "description") == "古川があふれる危険があります。避難の準備をしてください。"
    assert text(en, "description") == "The Furukawa may overflow. Prepare to evacuate."
    assert text(ja, "instruction") == "避難の準備をしてください。"
    assert text(en, "instruction") == "Prepare to evacuate."
    for i in (ja, en):
        assert text(i, "category") == "Met"
        assert (text(i, "urgency"), text(i, "severity"), text(i, "certainty")) == \
            ("Immediate", "Extreme", "Observed")
        assert text(i, "responseType") == "Prepare"
    assert text(ja, "event") == "河川の増水"
    assert text(ja, "senderName") == "港区 古川水位・雨量監視"
    assert text(en, "senderName") == "Minato City Furukawa flood watch"
    assert text(ja, "area/areaDesc") == "古川沿い（広尾・新広尾公園付近）"
    assert text(en, "area/areaDesc") == "Along the Furukawa, Hiroo (Shin-Hiroo Park)"
    assert text(ja, "headline") == "新広尾公園：河川の増水（氾濫危険）"
    assert text(en, "headline") == \
        "River flood overflow: Along the Furukawa, Hiroo (Shin-Hiroo Park)"
    assert params(ja) == {"station": "shin_hiroo", "stage": "overflow", "stage_number": "4",
                          "freeboard_m": "-0.05"}
    assert ja.find("cap:expires", {"cap": NS}) is None  # none configured


def test_a_stage_reading_and_area_from_the_config_override_the_defaults(
        config: Config) -> None:
    config.cap.level["notice"] = CapStage(urgency="Future", severity="Minor",
                                          certainty="Possible")
    config.cap.expires_h = 6
    config.stations["shirokane"].area = CapArea(
        polygon=["35.64,139.72 35.65,139.72 35.65,139.73 35.64,139.72"],
        circle=["35.645,139.725 0.5"], geocode={"JIS X 0402": "13103"})
    doc = CapTracker(config).follow("shirokane", 2, at(0), 1.95)
    assert doc is not None
    en = infos(parse(doc))["en-US"]
    assert (text(en, "urgency"), text(en, "severity"), text(en, "certainty")) == \
        ("Future", "Minor", "Possible")
    assert en.find("cap:responseType", {"cap": NS}) is None
    assert en.find("cap:instruction", {"cap": NS}) is None
    assert text(en, "expires") == "2026-07-01T18:00:00+09:00"
    assert text(en, "area/areaDesc") == "古川沿い（白金）"  # the zone's name by default
    assert text(en, "area/polygon") == "35.64,139.72 35.65,139.72 35.65,139.73 35.64,139.72"
    assert text(en, "area/circle") == "35.645,139.725 0.5"
    assert text(en, "area/geocode/value") == "13103"


def test_a_sequence_without_texts_falls_back_to_the_stage_name(config: Config) -> None:
    config.sequences["level_notice"].clips = []
    config.sequences["level_notice"].siren_s = 5
    doc = CapTracker(config).follow("shin_hiroo", 2, at(0), 1.9)
    assert doc is not None
    info = infos(parse(doc))
    assert "notice" in text(info["en-US"], "description")
    assert "注意" in text(info["ja-JP"], "description")  # the stage's label in Japanese


def test_the_audible_test_is_an_exercise(config: Config) -> None:
    config.tests.audible_clip = "furukawa_rising_ja"
    doc = CapTracker(config).exercise(["ward", "furukawa_hiroo"], at(0), at(0.5))
    root = parse(doc)
    assert text(root, "status") == "Exercise"
    assert text(root, "msgType") == "Alert"
    assert "試験" in text(root, "note")
    assert doc.identifier == "minato-furukawa.test.audible.20260701T120000+0900"
    assert text(root, "sent") == "2026-07-01T12:00:30+09:00"
    ja = infos(root)["ja-JP"]
    assert text(ja, "area/areaDesc") == "区内全域、古川沿い（広尾）"
    assert text(ja, "expires") == "2026-07-01T13:00:30+09:00"


# ---- the folder, the restart, failures ----------------------------------------------------

def transition(sid: str, before: int, after: int, minutes: float, value: float) -> Transition:
    return Transition(time=at(minutes), station=sid, kind="level", from_stage=before,
                      to_stage=after, from_name="", to_name="", value=value)


async def written(sink: CapSink, count: int) -> None:
    await until(lambda: sink.health().written >= count, 10, f"{count} documents written")


async def test_documents_land_in_the_folder_and_the_reference_survives_a_restart(
        config: Config) -> None:
    published: list[tuple[str, str]] = []
    sink = CapSink(config, lambda topic, xml: published.append((topic, xml)))
    sink.open({}, at(0))
    task = asyncio.create_task(sink.run())
    try:
        sink.transitions([transition("shin_hiroo", 1, 3, 3, 0.8)])
        await written(sink, 1)
        assert await sink.flush(5)
    finally:
        task.cancel()
    folder = config.cap_dir
    alert = folder / "minato-furukawa.shin_hiroo.warning.20260701T120300+0900.xml"
    assert alert.is_file()
    assert [t for t, _ in published] == ["cap"]
    assert published[0][1].encode() == alert.read_bytes()
    parse(alert.read_bytes())
    assert not list(folder.glob(".*.tmp"))
    assert load_open(folder)["shin_hiroo"].stage == 3

    # a restart: the stages were not restored (a long outage), so the open alert is cancelled
    again: list[tuple[str, str]] = []
    sink2 = CapSink(config, lambda topic, xml: again.append((topic, xml)))
    sink2.open({"shin_hiroo": 0, "shirokane": 0}, at(400))
    assert sink2.health().documents == 1
    root = parse(again[0][1].encode())
    assert text(root, "msgType") == "Cancel"
    assert text(root, "references") == \
        f"{SENDER},{alert.stem},2026-07-01T12:03:00+09:00"
    task = asyncio.create_task(sink2.run())
    try:
        assert await sink2.flush(5)
    finally:
        task.cancel()
    assert json.loads((folder / "active.json").read_text())["open"] == {}


def test_a_restart_with_the_stage_restored_sends_nothing_and_never_a_new_alert(
        config: Config) -> None:
    sink = CapSink(config)
    sink.open({}, at(0))
    sink.transitions([transition("shin_hiroo", 1, 3, 3, 0.8)])
    sink._write(*sink._queue.popleft())  # what the writer task does
    again = CapSink(config)
    again.open({"shin_hiroo": 3, "shirokane": 4}, at(10))  # shirokane: no open alert
    assert again.health().documents == 0
    assert set(again.tracker.open) == {"shin_hiroo"}


async def test_an_unwritable_folder_is_counted_and_retried_never_raised(
        config: Config, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    config.cap.dir = blocker / "cap"
    sink = CapSink(config)
    sink.open({}, at(0))
    task = asyncio.create_task(sink.run())
    try:
        sink.transitions([transition("shin_hiroo", 0, 2, 0, 1.9)])
        await until(lambda: sink.health().failures >= 1, 10, "a failed write")
        assert sink.health().written == 0
        assert sink.health().queued == 1  # kept for the next try
        blocker.unlink()  # the disk is back
        await written(sink, 1)
    finally:
        task.cancel()
    errors = [r for r in caplog.records
              if r.levelname == "ERROR" and "cannot write" in r.getMessage()]
    assert len(errors) == 1  # once when it starts failing
    assert (blocker / "cap" / "active.json").is_file()


def test_a_document_that_cannot_be_made_is_counted_not_raised(config: Config) -> None:
    sink = CapSink(config)
    sink.open({}, at(0))
    config.sequences["level_notice"].clips = ["no_such_clip"]  # broken behind its back
    sink.transitions([transition("shin_hiroo", 0, 2, 0, 1.9),
                      transition("rain_ward_office", 2, 3, 0, 51.0)])
    assert sink.health().failures == 1
    assert sink.health().documents == 1  # the other station's document still made
    assert "shin_hiroo" in sink.health().last_error


def test_the_cap_section_is_checked(tmp_path: Path) -> None:
    text_ = REFERENCE.read_text(encoding="utf-8").replace(
        'sender = "minato-furukawa@gauged.invalid"', 'sender = "a b"')
    bad = tmp_path / "bad.toml"
    bad.write_text(text_, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert [p.split(": String should")[0] for p in err.value.problems] == [f"{bad}: cap: sender"]
