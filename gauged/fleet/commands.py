"""An operator's signed command to one gateway through a central broker.

`gauged command ACTION --gateway ID --broker HOST:PORT` signs the command exactly as for the
local daemon (gauged/ops/commands.py: `command_body`, `sign`, with `[commands] secret`),
publishes it on `<prefix>/<gateway>/command` (QoS 1, never retained: a gateway refuses a
retained command) and waits for the gateway's reply with the same id on
`<prefix>/<gateway>/command/reply`. The broker's ACL lets the `operator` user write
commands; each gateway checks the signature and that the command names it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiomqtt

from gauged.fleet.view import BrokerAddress


async def send(broker: BrokerAddress, username: str, password: str, topic_prefix: str,
               gateway: str, payload: bytes, command_id: str,
               timeout_s: float = 30.0) -> dict[str, Any]:
    """Publish the signed `payload`; the gateway's reply, or a `failed` one on timeout."""
    base = f"{topic_prefix}/{gateway}/command"
    async with aiomqtt.Client(broker.host, broker.port, username=username or None,
                              password=password or None) as client:
        await client.subscribe(f"{base}/reply", qos=1)
        await client.publish(base, payload, qos=1, retain=False)
        try:
            async with asyncio.timeout(timeout_s):
                async for message in client.messages:
                    raw = message.payload
                    if not isinstance(raw, bytes | bytearray):
                        continue
                    try:
                        reply = json.loads(raw)
                    except ValueError:
                        continue
                    if isinstance(reply, dict) and reply.get("id") == command_id:
                        return reply
        except TimeoutError:
            pass
    return {"id": command_id, "status": "failed",
            "reason": f"no reply from {gateway} within {timeout_s:g} s"}
