"""CAP 1.2 alert documents: an Alert when a station reaches a stage that broadcasts, an Update
when it moves to another such stage, a Cancel when it leaves them all.

The document builders are pure functions over the configuration (`build_alert`,
`stage_infos`, `cancel_infos`, `exercise_infos`); `CapTracker` is the pure lifecycle per
station; `CapSink` (gauged/uplinks/cap.py) writes the documents to a folder and hands them
to MQTT, and keeps the open incidents across restarts.

**The lifecycle rule.** A station's *alert stage* is the highest stage at or below its
current stage whose config names a `sequence` (0: none). It is the stage the engine last
broadcast on the way up (a skipped stage broadcasts only the highest, a stage without a
sequence broadcasts nothing), so an upward transition that broadcasts changes it and one
that does not leaves it. A document is made when the alert stage changes:

- none → a stage: `Alert` (a new incident; `incidents` names its first identifier);
- a stage → another stage, up or down: `Update` with the new stage's urgency, severity,
  certainty and texts (overflow → warning is an Update to warning: the danger is lower but
  still there, and no siren sounds on the way down);
- a stage → none (down to a stage without broadcast, or to normal): `Cancel`.

Update and Cancel carry `references`: `sender,identifier,sent` of every earlier message of
the incident (the Alert and its Updates, at most `MAX_REFERENCES`), space separated, so a
consumer that missed one still links them.

**Identifiers** are stable: `<gateway>.<station>.<stage name>.<local time>` (the stage the
document is about; `normal` or `watch` for a Cancel), so the same cycle always names the same
file, and no two cycles or stations share one. CAP forbids spaces, commas, `<` and `&` in
them; those (and `/`) in a station or stage name become `_`.

**`sent`** is the cycle's time in the gateway's time zone, `YYYY-MM-DDThh:mm:ss+hh:mm`, no
fractions; UTC is written `-00:00` as CAP 1.2 §3.3.2 requires (never `Z`).

**Scheduled tests.** The audible test plays a chime on the public loudspeakers, so people
hear it: it sends an `Exercise` Alert (status Exercise, `note` saying so, no lifecycle, an
`expires` an hour later) naming the zones it played on, so a consumer can tell the public the
sound was a test. The silent test is inaudible and sends nothing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from gauged.config.models import CapTexts, StationConfig
from gauged.config.settings import Config

log = logging.getLogger(__name__)

NS = "urn:oasis:names:tc:emergency:cap:1.2"
LANGUAGES = {"ja": "ja-JP", "en": "en-US"}
MAX_REFERENCES = 50
ACTIVE_FILE = "active.json"
EXERCISE_EXPIRES = timedelta(hours=1)
_UNSAFE = re.compile(r"[\s,<&/\\]")


# ---- times and identifiers --------------------------------------------------------------

def cap_time(when: datetime, tz: str) -> str:
    """A CAP 1.2 dateTime: local time with offset, whole seconds, UTC as `-00:00`."""
    local = when.astimezone(ZoneInfo(tz)).replace(microsecond=0)
    text = local.isoformat()
    return text[:-6] + "-00:00" if text.endswith("+00:00") else text


def identifier(gateway: str, station: str, stage_name: str, when: datetime, tz: str) -> str:
    """`<gateway>.<station>.<stage>.<local time>`: stable for one station and cycle."""
    stamp = when.astimezone(ZoneInfo(tz)).strftime("%Y%m%dT%H%M%S%z")
    return ".".join(_UNSAFE.sub("_", part) for part in (gateway, station, stage_name, stamp))


@dataclass(frozen=True)
class Ref:
    """An earlier message, as `references` names it."""

    sender: str
    identifier: str
    sent: str

    def __str__(self) -> str:
        return f"{self.sender},{self.identifier},{self.sent}"


# ---- the document -----------------------------------------------------------------------

@dataclass(frozen=True)
class Area:
    desc: str
    polygons: Sequence[str] = ()
    circles: Sequence[str] = ()
    geocodes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Info:
    """One `<info>` block: one language."""

    language: str  # ja-JP, en-US
    category: str
    event: str
    urgency: str
    severity: str
    certainty: str
    sender_name: str
    headline: str
    description: str
    area: Area
    response: str | None = None
    instruction: str | None = None
    expires: str | None = None
    parameters: Mapping[str, str] = field(default_factory=dict)


def build_alert(*, identifier: str, sender: str, sent: str, status: str, msg_type: str,
                infos: Iterable[Info], source: str | None = None, note: str | None = None,
                references: Sequence[Ref] = (), incidents: str | None = None) -> bytes:
    """A CAP 1.2 `<alert>`, UTF-8 with an XML declaration, elements in the order of the
    standard's schema."""
    # imported here: a daemon without CAP does not load the XML libraries (1 MB)
    import xml.etree.ElementTree as ET

    alert = ET.Element(f"{{{NS}}}alert")

    def add(parent: ET.Element, tag: str, text: str | None) -> ET.Element | None:
        if text is None:
            return None
        child = ET.SubElement(parent, f"{{{NS}}}{tag}")
        child.text = text
        return child

    for tag, text in (("identifier", identifier), ("sender", sender), ("sent", sent),
                      ("status", status), ("msgType", msg_type), ("source", source),
                      ("scope", "Public"), ("note", note),
                      ("references", " ".join(str(r) for r in references) or None),
                      ("incidents", incidents)):
        add(alert, tag, text)
    for i in infos:
        info = ET.SubElement(alert, f"{{{NS}}}info")
        for tag, text in (("language", i.language), ("category", i.category),
                          ("event", i.event), ("responseType", i.response),
                          ("urgency", i.urgency), ("severity", i.severity),
                          ("certainty", i.certainty), ("expires", i.expires),
                          ("senderName", i.sender_name), ("headline", i.headline),
                          ("description", i.description), ("instruction", i.instruction)):
            add(info, tag, text)
        for name, value in i.parameters.items():
            parameter = ET.SubElement(info, f"{{{NS}}}parameter")
            add(parameter, "valueName", name)
            add(parameter, "value", value)
        area = ET.SubElement(info, f"{{{NS}}}area")
        add(area, "areaDesc", i.area.desc)
        for polygon in i.area.polygons:
            add(area, "polygon", polygon)
        for circle in i.area.circles:
            add(area, "circle", circle)
        for name, value in i.area.geocodes.items():
            geocode = ET.SubElement(area, f"{{{NS}}}geocode")
            add(geocode, "valueName", name)
            add(geocode, "value", value)
    ET.indent(alert)
    data: bytes = ET.tostring(alert, encoding="utf-8", xml_declaration=True,
                              default_namespace=NS)
    return data


# ---- what a station's stage says --------------------------------------------------------

def alert_stage(st: StationConfig, stage: int) -> int:
    """The highest stage at or below `stage` that broadcasts (0: none)."""
    for n in range(min(stage, len(st.stages)), 0, -1):
        if st.stages[n - 1].sequence is not None:
            return n
    return 0


def stage_names(st: StationConfig) -> list[str]:
    return ["normal", *(s.name for s in st.stages)]


def announcement(config: Config, st: StationConfig, stage: int, lang: str) -> str:
    """The texts of the clips of the stage's sequence in `lang` ("" when there is none)."""
    seq_id = st.stages[stage - 1].sequence if stage > 0 else None
    seq = config.sequences.get(seq_id) if seq_id is not None else None
    clips = [config.clips[c] for c in seq.clips] if seq is not None else []
    return " ".join(c.text for c in clips if c.text and c.language.split("-")[0] == lang)


def _labels(config: Config, sid: str) -> tuple[CapTexts, CapTexts]:
    """(station label, area description), each in Japanese and English."""
    st = config.stations[sid]
    zones = "、".join(config.zones[z].name or z for z in st.zones if z in config.zones)
    desc = st.area.desc or zones or st.name or sid
    label = CapTexts(ja=st.name or sid, en=st.area.desc_en or sid)
    return label, CapTexts(ja=desc, en=st.area.desc_en or desc)


def _area(st: StationConfig, desc: str) -> Area:
    return Area(desc, st.area.polygon, st.area.circle, st.area.geocode)


def stage_infos(config: Config, sid: str, stage: int, sent: datetime,
                value: float | None = None) -> list[Info]:
    """The Japanese and English `<info>` of station `sid` at (alert) stage `stage`."""
    cap, st = config.cap, config.stations[sid]
    name = stage_names(st)[stage]
    reading = cap.stage(st.kind, name)
    if reading is None:  # cross_check makes sure broadcasting stages have one
        raise ValueError(f"no CAP reading for {st.kind} stage {name!r}")
    event = cap.event(st.kind)
    label, desc = _labels(config, sid)
    expires = None if cap.expires_h is None else cap_time(
        sent + timedelta(hours=cap.expires_h), config.gateway.timezone)
    params = {"station": sid, "stage": name, "stage_number": str(stage)}
    if value is not None:
        params["freeboard_m" if st.kind == "level" else "rain_mm"] = f"{value:g}"
    stage_label = reading.label or CapTexts(ja=name, en=name)
    out = []
    for lang, language in LANGUAGES.items():
        headline = (f"{label.ja}：{event.ja}（{stage_label.ja}）" if lang == "ja" else
                    f"{event.en} {stage_label.en}: {label.en}")
        text = announcement(config, st, stage, lang) or headline
        out.append(Info(
            language=language, category=cap.category, event=getattr(event, lang),
            response=reading.response, urgency=reading.urgency, severity=reading.severity,
            certainty=reading.certainty, expires=expires,
            sender_name=getattr(cap.sender_name, lang), headline=headline, description=text,
            instruction=getattr(reading.instruction, lang) if reading.instruction else None,
            parameters=params, area=_area(st, getattr(desc, lang))))
    return out


def cancel_infos(config: Config, sid: str, stage: int) -> list[Info]:
    """The `<info>` of a Cancel: the station left its alerting stages (now at `stage`)."""
    cap, st = config.cap, config.stations[sid]
    name = stage_names(st)[stage]
    event = cap.event(st.kind)
    label, desc = _labels(config, sid)
    texts = {
        "ja": (f"{label.ja}：{event.ja}の情報を解除",
               f"{label.ja}の{event.ja}の警報段階は解除されました（現在の段階: {name}）。"),
        "en": (f"{event.en} alert cancelled: {label.en}",
               f"{label.en} is no longer at an alerting stage (now: {name})."),
    }
    return [Info(language=language, category=cap.category, event=getattr(event, lang),
                 response="AllClear", urgency="Past", severity="Minor", certainty="Observed",
                 sender_name=getattr(cap.sender_name, lang), headline=texts[lang][0],
                 description=texts[lang][1],
                 parameters={"station": sid, "stage": name, "stage_number": str(stage)},
                 area=_area(st, getattr(desc, lang)))
            for lang, language in LANGUAGES.items()]


def exercise_infos(config: Config, zones: Sequence[str], sent: datetime) -> list[Info]:
    """The `<info>` of the audible scheduled test on `zones`."""
    cap, t = config.cap, config.tests
    clip = config.clips.get(t.audible_clip) if t.audible_clip else None
    where = "、".join(config.zones[z].name or z for z in zones if z in config.zones)
    expires = cap_time(sent + EXERCISE_EXPIRES, config.gateway.timezone)
    texts = {"ja": ("屋外スピーカーの定時試験", "屋外スピーカーの定時試験放送です。"),
             "en": ("Scheduled test of the outdoor loudspeakers",
                    "This is a scheduled test of the outdoor loudspeakers.")}
    out = []
    for lang, language in LANGUAGES.items():
        headline, text = texts[lang]
        if clip is not None and clip.text and clip.language.split("-")[0] == lang:
            text = f"{text} {clip.text}"
        out.append(Info(language=language, category="Other",
                        event="試験放送" if lang == "ja" else "Loudspeaker test",
                        response="None", urgency="Unknown", severity="Minor",
                        certainty="Unknown", expires=expires,
                        sender_name=getattr(cap.sender_name, lang), headline=headline,
                        description=text, parameters={"zones": " ".join(zones)},
                        area=Area(where or config.gateway.id)))
    return out


# ---- the lifecycle ----------------------------------------------------------------------

@dataclass(frozen=True)
class Document:
    identifier: str
    station: str  # "" for an exercise
    status: str  # Actual, Exercise
    msg_type: str  # Alert, Update, Cancel
    sent: str
    xml: bytes


@dataclass
class Incident:
    """A station's open alert: its stage and the messages sent about it so far."""

    stage: int
    stage_name: str
    incident: str  # the identifier of its first Alert
    refs: list[Ref]

    def as_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "stage_name": self.stage_name, "incident": self.incident,
                "refs": [[r.sender, r.identifier, r.sent] for r in self.refs]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Incident:
        return cls(int(data["stage"]), str(data["stage_name"]), str(data["incident"]),
                   [Ref(str(s), str(i), str(t)) for s, i, t in data["refs"]])


class CapTracker:
    """Per station, the open incident; turns stages into documents (pure, no I/O)."""

    def __init__(self, config: Config, open_incidents: Mapping[str, Incident] | None = None
                 ) -> None:
        self.config = config
        self.open: dict[str, Incident] = {
            sid: inc for sid, inc in (open_incidents or {}).items() if sid in config.stations}

    def follow(self, sid: str, stage: int, when: datetime,
               value: float | None = None) -> Document | None:
        """The document station `sid` needs now that it is at `stage`, or None."""
        config, st = self.config, self.config.stations[sid]
        tz, sender = config.gateway.timezone, config.cap.sender
        new = alert_stage(st, stage)
        current = self.open.get(sid)
        if new == (current.stage if current is not None else 0):
            return None
        names = stage_names(st)
        sent = cap_time(when, tz)
        ident = identifier(config.gateway.id, sid, names[new or stage], when, tz)
        refs = current.refs if current is not None else []
        if new == 0:
            msg_type, infos = "Cancel", cancel_infos(config, sid, stage)
        else:
            msg_type = "Update" if current is not None else "Alert"
            infos = stage_infos(config, sid, new, when, value)
        incident = current.incident if current is not None else ident
        xml = build_alert(identifier=ident, sender=sender, sent=sent, status="Actual",
                          msg_type=msg_type, source=f"gauged {config.gateway.id}",
                          references=refs, incidents=incident, infos=infos)
        if new == 0:
            del self.open[sid]
        else:
            self.open[sid] = Incident(new, names[new], incident,
                                      [*refs, Ref(sender, ident, sent)][-MAX_REFERENCES:])
        return Document(ident, sid, "Actual", msg_type, sent, xml)

    def exercise(self, zones: Sequence[str], fire_time: datetime, sent: datetime) -> Document:
        """The Exercise Alert of an audible scheduled test (not part of any incident)."""
        config = self.config
        tz = config.gateway.timezone
        ident = identifier(config.gateway.id, "test", "audible", fire_time, tz)
        sent_text = cap_time(sent, tz)
        xml = build_alert(identifier=ident, sender=config.cap.sender, sent=sent_text,
                          status="Exercise", msg_type="Alert",
                          source=f"gauged {config.gateway.id}",
                          note="定時試験 / scheduled test of the outdoor loudspeakers",
                          infos=exercise_infos(config, zones, sent))
        return Document(ident, "", "Exercise", "Alert", sent_text, xml)

    def as_json(self) -> dict[str, Any]:
        return {"version": 1, "open": {sid: inc.as_json() for sid, inc in self.open.items()}}
