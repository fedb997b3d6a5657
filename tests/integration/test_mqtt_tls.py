"""MQTT over TLS with username and password (the `[mqtt] tls`, `ca_file` settings) against a
real mosquitto with a TLS listener and a CA made for the test with `openssl`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import subprocess
from pathlib import Path

import aiomqtt
import pytest
from fieldbus import until
from pydantic import SecretStr
from services import MosquittoFactory

from gauged.config.models import MqttConfig
from gauged.uplinks.mqtt import MqttPublisher

USERS = {"gauged": "tls-gateway-password"}


def make_ca(folder: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca, cert, key)."""
    ca_key, ca, key, csr, cert = (folder / f"{name}-{n}" for n in (
        "ca.key", "ca.pem", "server.key", "server.csr", "server.pem"))
    ext = folder / f"{name}-ext.cnf"
    ext.write_text("subjectAltName = IP:127.0.0.1\n")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out",
        str(ca), "-days", "2", "-subj", f"/CN={name} test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", "/CN=127.0.0.1")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))
    for path in (ca, cert, key):
        path.chmod(0o644)
    return ca, cert, key




async def test_mqtt_over_tls_with_a_password_and_a_refusal_for_an_unknown_ca(
        tmp_path: Path, mosquitto_factory: MosquittoFactory,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", "gauged.uplinks.mqtt")
    ca, cert, key = make_ca(tmp_path, "good")
    other_ca, _, _ = make_ca(tmp_path, "other")
    broker = mosquitto_factory(users=USERS, extra_config=(
        f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n"))
    tls = MqttConfig(enabled=True, host=broker.host, port=broker.port, username="gauged",
                     password=SecretStr(USERS["gauged"]), tls=True, ca_file=ca)
    publisher = MqttPublisher(tls, "tls-gw")
    publisher.publish_state("river", {"stage": 2, "stage_name": "warning"})
    untrusting = MqttPublisher(tls.model_copy(update={"ca_file": other_ca}), "tls-gw2")
    tasks = [asyncio.create_task(p.run()) for p in (publisher, untrusting)]
    try:
        await until(lambda: publisher.connected, 20, "the TLS connection")
        context = ssl.create_default_context(cafile=str(ca))
        async with aiomqtt.Client(broker.host, broker.port, username="gauged",
                                  password=USERS["gauged"],
                                  tls_context=context) as reader:
            await reader.subscribe("gauged/tls-gw/station/river/state")
            async for message in reader.messages:
                assert isinstance(message.payload, bytes)
                assert json.loads(message.payload)["stage_name"] == "warning"
                break
        assert untrusting.connected is False  # a broker it cannot verify: no connection
        assert "certificate verify failed" in caplog.text
    finally:
        for t in tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
