"""CAP 1.2 alerts through the daemon: a river station climbs to overflow and comes back down;
the Alert, Updates and Cancel land in the CAP folder and on MQTT (a real mosquitto), valid
against the CAP 1.2 structure, each upward one in the cycle that broadcast.

The field-bus rig injects the cycle times (tests/fieldbus.py); the gauge simulator plays a
rising and falling level for station tcp_1 over real Modbus TCP.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from pathlib import Path

import aiomqtt
import pytest
import xmlschema
from fieldbus import CREST, field_rig, ramp, until
from services import Mosquitto, PtyPairFactory

from gauged.alarm.cap import NS, cap_time

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = xmlschema.XMLSchema(ROOT / "tests" / "data" / "cap-1.2-structure.xsd")
SENDER = "fieldbus-test@gauged.invalid"
TOPIC = "gauged/fieldbus-test/cap"
# tcp_1's level (m) cycle by cycle, in steps below the gauge's max_step (0.5 m): freeboard
# 3.0 → notice (no broadcast) → warning (broadcast) → overflow (siren) → warning → notice
# → normal. Leaving a stage takes two samples past its threshold by the 0.10 m margin.
assert CREST == 4.0  # the freeboards above are for this crest
RAMP = [1.0, 1.4, 1.8, 2.2, 2.6, 3.1, 3.5, 3.9, 4.2, 4.2, 3.8, 3.8, 3.4, 3.0, 2.6, 2.2, 1.8,
        1.4, 1.4]


def text(e: ET.Element, tag: str) -> str:
    found = e.find(f"cap:{tag}", {"cap": NS})
    assert found is not None, tag
    return found.text or ""


async def collect(client: aiomqtt.Client, into: list[tuple[str, str, bool]]) -> None:
    async for message in client.messages:
        payload = bytes(message.payload).decode()  # type: ignore[arg-type]
        into.append((str(message.topic), payload, message.retain))


@pytest.mark.timeout(120)
async def test_cap_follows_a_station_up_to_overflow_and_back(
        tmp_path: Path, pty_pair: PtyPairFactory, mosquitto: Mosquitto) -> None:
    def edit(config: str) -> str:
        # the ramp comes down faster than a river falls (this test is about CAP, not data
        # quality): tcp_1's gauge has the implausible-fall check off
        config = config.replace("quality = { max_step = 0.5, stale_cycles = 2 }",
                                "quality = { max_step = 0.5, stale_cycles = 2, "
                                "max_fall_m_per_h = 0 }", 1)
        return config + (f'\n[mqtt]\nenabled = true\nhost = "127.0.0.1"\n'
                         f'port = {mosquitto.port}\n\n'
                         f'[cap]\nenabled = true\nsender = "{SENDER}"\n')

    async with field_rig(tmp_path, pty_pair, edit=edit, profiles={"tcp_1": ramp(RAMP)}) as rig:
        daemon = rig.daemon
        assert daemon.cap is not None
        assert daemon.mqtt is not None
        folder = rig.config.cap_dir
        assert folder == tmp_path / "state" / "cap"  # beside the state file by default
        received: list[tuple[str, str, bool]] = []
        async with aiomqtt.Client("127.0.0.1", mosquitto.port,
                                  identifier="test-cap-reader") as client:
            await client.subscribe(TOPIC, qos=1)
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(daemon.mqtt.run(), name="test[mqtt].publish"),
                         tg.create_task(daemon.cap.run(), name="test[cap].write"),
                         tg.create_task(collect(client, received), name="test[mqtt].read")]
                await until(lambda: daemon.mqtt is not None and daemon.mqtt.connected, 10,
                            "the daemon's MQTT connection")
                for _ in RAMP:
                    await rig.cycle()
                await until(lambda: len(received) >= 4, 15, "four CAP messages on MQTT")
                assert daemon.cap is not None
                assert await daemon.cap.flush(10)
                for task in tasks:
                    task.cancel()

    tcp_1 = [(r.transitions, r.broadcasts) for r in rig.results]
    stages = [(t.from_name, t.to_name) for ts, _ in tcp_1 for t in ts if t.station == "tcp_1"]
    assert stages == [("normal", "notice"), ("notice", "warning"), ("warning", "overflow"),
                      ("overflow", "warning"), ("warning", "notice"), ("notice", "normal")]
    assert all(t.station == "tcp_1" for ts, _ in tcp_1 for t in ts)  # the others stay normal

    # the folder: one document per change of alerting stage, each valid CAP 1.2
    files = sorted(folder.glob("*.xml"))
    docs = sorted(((ET.fromstring(f.read_bytes()), f) for f in files),
                  key=lambda d: text(d[0], "sent"))
    for _, f in docs:
        SCHEMA.validate(f.read_text(encoding="utf-8"))
    roots = [r for r, _ in docs]
    assert [text(r, "msgType") for r in roots] == ["Alert", "Update", "Update", "Cancel"]
    assert {text(r, "status") for r in roots} == {"Actual"}
    assert {text(r, "sender") for r in roots} == {SENDER}
    ids = [text(r, "identifier") for r in roots]
    assert [i.split(".")[1:3] for i in ids] == [["tcp_1", "warning"], ["tcp_1", "overflow"],
                                                 ["tcp_1", "warning"], ["tcp_1", "notice"]]
    assert [f.stem for _, f in docs] == ids
    assert all(text(r, "sent").endswith("-00:00") for r in roots)  # the gateway runs on UTC
    refs = [f"{SENDER},{i},{text(r, 'sent')}" for i, r in zip(ids, roots, strict=True)]
    for n, root in enumerate(roots[1:], start=1):
        assert text(root, "references").split(" ") == refs[:n]
        assert text(root, "incidents") == ids[0]
    overflow = roots[1].find("cap:info", {"cap": NS})
    assert overflow is not None
    assert (text(overflow, "urgency"), text(overflow, "severity")) == ("Immediate", "Extreme")
    assert text(overflow, "description") == "警戒"  # the clip's text (fieldbus.toml)

    # each upward document is the cycle that broadcast, and every broadcast has one
    broadcast = {(b.time, b.stage_name) for _, bs in tcp_1 for b in bs}
    assert len(broadcast) == 2
    upward = {(text(r, "sent"), ids[n].split(".")[2]) for n, r in enumerate(roots[:2])}
    assert upward == {(cap_time(t, "UTC"), name) for t, name in broadcast}

    # MQTT: the same documents, in order, not retained
    assert [topic for topic, _, _ in received] == [TOPIC] * 4
    assert not any(retain for _, _, retain in received)
    assert [payload for _, payload, _ in received] == \
        [f.read_text(encoding="utf-8") for _, f in docs]
    assert daemon.cap.health().failures == 0
    assert daemon.snapshot()["uplinks"]["cap"]["written"] == 4
