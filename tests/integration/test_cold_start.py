"""Cold start on a calm day: the daemon's first actuator action is OFF, and nothing goes ON."""

from __future__ import annotations

from hil import SCENARIOS, Rig

from gauged.config.load import load_config


def test_alm_6_cold_start_calm_writes_no_relay_on(rig: Rig) -> None:
    rig.start_simulators(SCENARIOS / "calm_day.csv")
    rig.start_daemon()
    status = rig.wait_for_status(lambda s: s["cycles"] >= 5, timeout=rig.lead_s + 30,
                                 what="five cycles")
    assert rig.stop("daemon") == 0
    relays = rig.relay_log()
    config = load_config(rig.config)
    configured = {(r.unit, r.coil) for z in config.zones.values()
                  for r in (z.siren_relay, z.amplifier_relay) if r is not None}
    assert relays, "the daemon wrote no relay at all"
    assert relays[0]["value"] is False  # the first actuator action is OFF …
    assert all(r["value"] is False for r in relays)  # … and nothing ever went ON
    written = {(r["unit"], r["coil"]) for r in relays}
    assert written == configured  # every relay was driven OFF (and read back)
    assert all(st["stage_name"] == "normal" for st in status["stations"].values())
    assert all(st["quality"] == "good" for st in status["stations"].values())
    assert rig.audio_log() == []


def test_once_does_one_cycle_and_exits(rig: Rig) -> None:
    rig.start_simulators(SCENARIOS / "calm_day.csv")
    proc = rig.start_daemon("--once")
    assert proc.wait(timeout=30) == 0, rig.log("daemon")[-2000:]
    log = rig.log("daemon")
    assert log.count(" cycle time=") == 1
    assert "not_good=0" in log
