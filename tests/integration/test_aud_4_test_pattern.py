"""AUD-4: the audible siren test sounds the test pattern, not a flood-fighting signal.

The test runner (scheduled by the calendar, or asked for by an operator's command: both run
`ProofTestRunner.run("audible")`) drives the siren relay of the relay board simulator with
`[tests] siren_pattern`, each blast read back, then plays the chime with the amplifier ON."""

from __future__ import annotations

from pathlib import Path

from fieldbus import field_rig
from services import PtyPairFactory

from gauged.config.signals import SUIBO_SIGNALS, resembles

SPEED = 50.0
SIREN, AMP = 0, 1  # coils of zone `riverside` in tests/data/fieldbus.toml
PATTERN = [1.0, 1.0, 1.0]


async def test_aud_4_the_audible_test_chirps_the_test_pattern(
        tmp_path: Path, pty_pair: PtyPairFactory) -> None:
    def edit(text: str) -> str:
        return text + ('\n[tests]\naudible_clip = "warning"\naudible_zones = ["riverside"]\n'
                       'siren_pattern = [1, 1, 1]\n')

    assert not any(resembles(PATTERN, s) for s in SUIBO_SIGNALS.values())
    async with field_rig(tmp_path, pty_pair, speed=SPEED, edit=edit) as rig:
        before = len(rig.fleet.relay_log)
        result = await rig.daemon.test_runner.run("audible")
        writes = rig.fleet.relay_log[before:]
    assert result["ok"] is True, result
    [zone] = result["zones"]
    assert zone["siren"]["ok"] is True
    assert zone["siren"]["on_s"] == 2.0
    siren = [(w["value"], w["t_real"]) for w in writes
             if w["coil"] == SIREN and w["value"] != w["previous"]]
    assert [on for on, _ in siren] == [True, False, True, False]  # two chirps
    blasts = [(siren[i][1], siren[i + 1][1]) for i in (0, 2)]
    for on, off in blasts:  # about 1 simulated second each (0.02 s of wall time at 50×)
        assert 0.9 / SPEED <= off - on <= 1.0 / SPEED + 0.1
    assert blasts[1][0] - blasts[0][1] >= 0.9 / SPEED  # the pause between them
    amp = [w["value"] for w in writes if w["coil"] == AMP and w["value"] != w["previous"]]
    assert amp == [True, False]
    assert rig.fleet.coils("relays", 1)[SIREN] is False
    # the chime followed the chirps
    assert [e["clip"] for e in rig.fleet.audio_log][-1:] == ["warning"]
