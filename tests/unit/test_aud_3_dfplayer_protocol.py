"""AUD-3: the serial MP3 module's frames (drivers/dfplayer.py), byte for byte."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from drivers.dfplayer import ACK, PLAY, STATUS, STOP, VOLUME, Frame, checksum, decode
from gauged.config.load import load_config
from gauged.errors import ConfigError

REFERENCE = Path(__file__).resolve().parents[2] / "config" / "minato-furukawa.toml"


def test_aud_3_frames_match_the_modules_datasheet() -> None:
    # the DFPlayer datasheet's own examples: track 1 (0x03), without and with feedback
    assert Frame(0x03, 1).encode() == bytes.fromhex("7EFF0603000001FEF7EF")
    assert Frame(0x03, 1, True).encode() == bytes.fromhex("7EFF0603010001FEF6EF")
    # what the player sends: track 5 of the mp3 folder (0x12), acknowledged
    assert PLAY == 0x12
    assert Frame(PLAY, 5, True).encode() == bytes.fromhex("7EFF0612010005FEE3EF")
    assert Frame(VOLUME, 30).encode() == bytes.fromhex("7EFF060600001EFED7EF")
    assert Frame(STOP).encode() == bytes.fromhex("7EFF0616000000FEE5EF")
    assert Frame(PLAY, 2999).encode()[5:7] == (2999).to_bytes(2, "big")


def test_aud_3_checksum_is_the_twos_complement_of_the_sum() -> None:
    body = bytes([0xFF, 0x06, 0x42, 0x00, 0x02, 0x01])
    assert (sum(body) + checksum(body)) & 0xFFFF == 0


@pytest.mark.parametrize("frame", [Frame(ACK), Frame(STATUS, 0x0201), Frame(PLAY, 513, True)])
def test_aud_3_decode_returns_what_encode_wrote(frame: Frame) -> None:
    buffer = bytearray(frame.encode())
    assert decode(buffer) == ([frame], 0)
    assert buffer == bytearray()


def test_aud_3_decode_skips_junk_and_bad_checksums_and_keeps_a_partial_frame() -> None:
    good = Frame(STATUS, 0x0201).encode()
    bad = bytearray(Frame(ACK).encode())
    bad[8] ^= 0x01  # checksum broken
    noise = b"\x00\x13\x7e\xff"  # a start byte that leads nowhere
    buffer = bytearray(noise + bytes(bad) + good + good[:6])
    frames, junk = decode(buffer)
    assert frames == [Frame(STATUS, 0x0201)]
    assert junk == len(noise) + len(bad)
    assert buffer == bytearray(good[:6])  # waits for the rest
    buffer += good[6:]
    assert decode(buffer) == ([Frame(STATUS, 0x0201)], 0)


def test_aud_3_a_wrong_end_byte_or_length_is_junk() -> None:
    for index, value in ((9, 0x00), (2, 0x07), (1, 0xFE)):
        raw = bytearray(Frame(ACK).encode())
        raw[index] = value
        assert decode(raw) == ([], 10)  # no other start byte in it: all of it is junk
        assert raw == bytearray()


def _reference_with(tmp_path: Path, players: str) -> Path:
    text = REFERENCE.read_text(encoding="utf-8")
    text = re.sub(r'\[players\.speakers\]\nkind = "sink"\nhost = "127.0.0.1"\nport = \d+',
                  players, text)
    path = tmp_path / "gauged.toml"
    path.write_text(text.replace('file = "clips/', f'file = "{REFERENCE.parent}/clips/'),
                    encoding="utf-8")
    return path


def test_aud_3_check_config_wants_one_zone_and_every_track(tmp_path: Path) -> None:
    config = _reference_with(tmp_path, '[players.speakers]\nkind = "dfplayer"\n'
                             'port = "/dev/ttyS1"\ntracks = { furukawa_rising_ja = 1, '
                             'furukawa_rising_en = 1, siren = 4 }')
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    lines = [line.split(": ", 1)[1] for line in caught.value.problems]
    assert lines == [
        "player speakers: kind: a dfplayer module has one output and plays one zone; zones "
        "furukawa_hiroo, furukawa_shirokane, ward share it",
        "player speakers: tracks.siren: unknown clip 'siren'",
        "player speakers: tracks: no track number for clip(s) furukawa_warning_ja, "
        "furukawa_warning_en, furukawa_overflow_ja, furukawa_overflow_en, heavy_rain_ja, "
        "heavy_rain_en",
        "player speakers: tracks.furukawa_rising_en: track 1 is already clip "
        "furukawa_rising_ja"]


def test_aud_3_a_track_number_outside_the_card_is_refused(tmp_path: Path) -> None:
    config = _reference_with(tmp_path, '[players.speakers]\nkind = "dfplayer"\n'
                             'port = "/dev/ttyS1"\ntracks = { furukawa_rising_ja = 3000 }')
    with pytest.raises(ConfigError, match="track 3000 is not between 1 and 2999"):
        load_config(config)
