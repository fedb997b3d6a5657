"""Home Assistant MQTT discovery documents for a gateway's stations (`[mqtt] discovery`).

Home Assistant creates an entity for every retained JSON document it finds on
`<discovery_prefix>/<component>/<node id>/<object id>/config`. The node id is the gateway
id (characters outside `[A-Za-z0-9_-]` become `_`), so that a broker's ACL line
`pattern write homeassistant/+/%u/#` lets each gateway write only its own documents.

Per gateway: a `binary_sensor` (connectivity) reading `<base>/availability`. Per station:
a `sensor` for its value (level in m, or rain of the stage window in mm) and a `sensor`
for its stage name, both reading the retained `<base>/station/<id>/state` and unavailable
while the gateway is offline. Home Assistant is a consumer like any other: nothing here is
read back, and no command is offered through it.
"""

from __future__ import annotations

import json
import re
from typing import Any

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def node_id(name: str) -> str:
    """`name` with the characters Home Assistant refuses in topic ids replaced by `_`."""
    return _UNSAFE.sub("_", name)


def _device(gateway: str, version: str) -> dict[str, Any]:
    return {"identifiers": [f"gauged_{node_id(gateway)}"], "name": f"gauged {gateway}",
            "manufacturer": "gauged", "model": "flood-warning gateway", "sw_version": version}


def gateway_documents(prefix: str, base: str, gateway: str,
                      version: str) -> dict[str, str]:
    """topic → retained document: the gateway's connectivity."""
    node = node_id(gateway)
    doc = {"name": "connectivity", "unique_id": f"gauged_{node}_availability",
           "state_topic": f"{base}/availability", "payload_on": "online",
           "payload_off": "offline", "device_class": "connectivity",
           "entity_category": "diagnostic", "device": _device(gateway, version)}
    return {f"{prefix}/binary_sensor/{node}/availability/config": _dumps(doc)}


def station_documents(prefix: str, base: str, gateway: str, version: str, station: str,
                      kind: str) -> dict[str, str]:
    """topic → retained document: a station's value and stage (`kind`: level or rain)."""
    node, obj = node_id(gateway), node_id(station)
    common = {"state_topic": f"{base}/station/{station}/state",
              "availability_topic": f"{base}/availability", "payload_available": "online",
              "payload_not_available": "offline", "device": _device(gateway, version)}
    if kind == "level":
        value = {"name": f"{station} level", "unit_of_measurement": "m",
                 "device_class": "distance", "state_class": "measurement",
                 "value_template": "{{ value_json.level_m }}"}
    else:
        value = {"name": f"{station} rain", "unit_of_measurement": "mm",
                 "device_class": "precipitation", "state_class": "measurement",
                 "value_template": "{{ value_json.rain_60m_mm }}"}
    stage = {"name": f"{station} stage", "value_template": "{{ value_json.stage_name }}",
             "icon": "mdi:alarm-light"}
    return {
        f"{prefix}/sensor/{node}/{obj}_value/config": _dumps(
            common | value | {"unique_id": f"gauged_{node}_{obj}_value"}),
        f"{prefix}/sensor/{node}/{obj}_stage/config": _dumps(
            common | stage | {"unique_id": f"gauged_{node}_{obj}_stage"}),
    }


def _dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, ensure_ascii=False, sort_keys=True)
