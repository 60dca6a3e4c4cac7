"""Lab scenarios: each builds, its counters are as described, and its IDs are lab IDs."""

from __future__ import annotations

import pytest

from tui.errors import LabError
from tui.lab.card import VirtualCard, pad_ff
from tui.lab.gp import (
    CPLC_FIELDS,
    CPLC_LENGTH,
    LAB_CPLC_FABRICATOR,
    LAB_SERIAL_RANGE,
    CardManager,
    Cplc,
    CplcMode,
    is_lab_cplc,
    lab_cplc,
)
from tui.lab.scenarios import SCENARIOS, Scenario, get_scenario, lab_atr, scenario

SELECT_PIV = "00A4040005A000000308"
SELECT_ACA = "00A4040007A0000000791000"
EXPECTED_SCENARIOS = {
    "healthy", "wrong-pin", "pin-locked-puk", "pin-locked-no-puk", "no-pin", "yubikey-healthy", "two-tokens", "no-token",
}


def send(card: VirtualCard, hex_apdu: str) -> tuple[bytes, int]:
    raw = card.transmit(bytes.fromhex(hex_apdu))
    return raw[:-2], raw[-2] << 8 | raw[-1]


def pin_status(card: VirtualCard) -> int:
    send(card, SELECT_PIV)
    return send(card, "00200080")[1]


def cplc_of(card: VirtualCard) -> bytes:
    data, sw = send(card, "80CA9F7F00")
    assert sw == 0x9000
    assert data[:3] == bytes.fromhex("9F7F2A")
    return data[3:]


# --- registry ---


def test_registry_has_every_scenario():
    assert EXPECTED_SCENARIOS <= set(SCENARIOS)


@pytest.mark.parametrize("name", sorted(EXPECTED_SCENARIOS))
def test_scenario_builds_fresh_keys(name):
    first = get_scenario(name).build()
    second = get_scenario(name).build()
    assert first
    assert get_scenario(name).description
    for key_a, key_b in zip(first, second):
        assert key_a.reader.endswith(" 00")
        if key_a.card is not None:
            assert key_a.card is not key_b.card
            assert key_a.store is not key_b.store


def test_unknown_scenario_names_value_and_choices():
    with pytest.raises(LabError) as caught:
        get_scenario("pin-lockd")
    message = str(caught.value)
    assert "'pin-lockd'" in message
    assert "pin-locked-puk" in message
    assert "healthy" in message


def test_duplicate_registration_rejected():
    with pytest.raises(LabError, match="already registered"):
        scenario("healthy", "again")(lambda: [])


def test_registration_adds_scenario():
    name = "test-only-empty"
    try:
        scenario(name, "empty reader for this test")(lambda: get_scenario("no-token").build())
        assert isinstance(get_scenario(name), Scenario)
        assert get_scenario(name).build()[0].card is None
    finally:
        SCENARIOS.pop(name, None)


# --- states as described ---


def test_healthy_state():
    (key,) = get_scenario("healthy").build()
    card = key.card
    assert key.reader == "HID Global Crescendo Key 00 00"
    assert pin_status(card) == 0x63C8
    send(card, SELECT_ACA)
    assert send(card, "0020000000") == (b"", 0x63C8)
    challenge, sw = send(card, "0084000000")
    assert (len(challenge), sw) == (16, 0x9000)
    assert is_lab_cplc(cplc_of(card))


def test_healthy_has_certificate_and_chuid():
    (key,) = get_scenario("healthy").build()
    assert bytes.fromhex("5FC105") in key.piv.objects
    assert bytes.fromhex("5FC102") in key.piv.objects


def test_wrong_pin_state():
    (key,) = get_scenario("wrong-pin").build()
    assert key.reader == "Generic PIV reader 00 00"
    assert pin_status(key.card) == 0x63C3
    assert key.store.pin.max_tries == 8
    assert key.aca is None


def test_pin_locked_puk_state_and_escrowed_puk_works():
    (key,) = get_scenario("pin-locked-puk").build()
    card = key.card
    assert pin_status(card) == 0x6983
    assert key.store.pin.max_tries == 8
    assert not key.store.puk.blocked

    puk = key.escrow["piv-puk"]
    assert "73910264" not in repr(key.escrow)
    data = pad_ff(puk.reveal_bytes()).hex() + pad_ff(b"24680135").hex()
    assert send(card, "002C008010" + data) == (b"", 0x9000)
    assert pin_status(card) == 0x63C8


def test_pin_locked_no_puk_state():
    (key,) = get_scenario("pin-locked-no-puk").build()
    card = key.card
    assert pin_status(card) == 0x6983
    assert key.store.puk.blocked
    assert "piv-puk" not in key.escrow
    data = pad_ff(b"12345678").hex() + pad_ff(b"24680135").hex()
    assert send(card, "002C008010" + data) == (b"", 0x6983)


def test_no_pin_state():
    (key,) = get_scenario("no-pin").build()
    assert pin_status(key.card) == 0x6A88


def test_yubikey_healthy_state():
    (key,) = get_scenario("yubikey-healthy").build()
    card = key.card
    assert key.reader == "Yubico YubiKey OTP+FIDO+CCID 00 00"
    assert pin_status(card) == 0x63C3
    assert send(card, "00FD000000") == (bytes((5, 4, 3)), 0x9000)
    serial, _ = send(card, "00F8000000")
    assert int.from_bytes(serial, "big") in LAB_SERIAL_RANGE
    assert send(card, "00F7008000") == (bytes.fromhex("0101FF05010106020303"), 0x9000)
    assert send(card, "00F7008100") == (bytes.fromhex("0101FF05010106020303"), 0x9000)
    # No card manager: a YubiKey is not known to answer GlobalPlatform CPLC.
    assert send(card, "00A4040008A000000151000000")[1] == 0x6A82


def test_two_tokens_have_different_ids():
    first, second = get_scenario("two-tokens").build()
    assert first.reader != second.reader
    cplc_first, cplc_second = cplc_of(first.card), cplc_of(second.card)
    assert cplc_first != cplc_second
    assert is_lab_cplc(cplc_first) and is_lab_cplc(cplc_second)
    assert pin_status(first.card) == 0x63C8
    assert pin_status(second.card) == 0x63C5


def test_no_token_state():
    (key,) = get_scenario("no-token").build()
    assert key.card is None
    assert key.store is None


def test_lab_ids_distinct_across_scenarios():
    cplcs = []
    for name in sorted(EXPECTED_SCENARIOS):
        for key in get_scenario(name).build():
            manager = key.card_manager
            if manager is not None:
                cplcs.append(manager.cplc.to_bytes())
    assert len(cplcs) == len(set(cplcs))


# --- CPLC layout and lab IDs ---


def test_cplc_layout():
    assert CPLC_LENGTH == 42
    cplc = Cplc(0x1AB0, 0x7E57, 0xC0DE0001, 0x5A17, os_id=0x4B54, os_release_date=0x4100,
                os_release_level=0x0100, ic_fabrication_date=0x4123,
                ic_personalization_equipment_id=0x01020304)
    raw = cplc.to_bytes()
    assert len(raw) == 42
    assert raw[0:2] == bytes.fromhex("1AB0")  # IC fabricator
    assert raw[2:4] == bytes.fromhex("7E57")  # IC type
    assert raw[4:6] == bytes.fromhex("4B54")  # OS ID
    assert raw[6:8] == bytes.fromhex("4100")  # OS release date
    assert raw[8:10] == bytes.fromhex("0100")  # OS release level
    assert raw[10:12] == bytes.fromhex("4123")  # IC fabrication date
    assert raw[12:16] == bytes.fromhex("C0DE0001")  # IC serial number
    assert raw[16:18] == bytes.fromhex("5A17")  # IC batch identifier
    assert raw[38:42] == bytes.fromhex("01020304")  # personalization equipment ID
    assert [name for name, _ in CPLC_FIELDS][6:8] == ["ic_serial_number", "ic_batch_identifier"]


def test_lab_cuid_orders_differ():
    cplc = lab_cplc(1)
    assert cplc.ic_fabricator == LAB_CPLC_FABRICATOR == 0x1AB0
    assert cplc.cuid_cplc_order() == "1AB07E57C0DE00015A17"
    assert cplc.cuid_coolkey_order() == "1AB07E575A17C0DE0001"


def test_get_data_cplc_modes():
    anytime = VirtualCard([CardManager(lab_cplc(9))], b"\x3b\x00")
    assert send(anytime, "80CA9F7F00")[1] == 0x9000

    after_select = VirtualCard([CardManager(lab_cplc(9), mode=CplcMode.AFTER_SELECT)], b"\x3b\x00")
    assert send(after_select, "80CA9F7F00") == (b"", 0x6D00)
    fci, sw = send(after_select, "00A4040008A000000003000000")
    assert sw == 0x9000
    assert fci.hex().upper() == "6F108408A000000003000000A5049F6501FF"
    assert send(after_select, "80CA9F7F00")[1] == 0x9000

    absent = VirtualCard([CardManager(None)], b"\x3b\x00")
    send(absent, "00A4040008A000000151000000")
    assert send(absent, "80CA9F7F00") == (b"", 0x6A88)
    absent_6d00 = VirtualCard([CardManager(lab_cplc(9), mode=CplcMode.ABSENT, missing_sw=0x6D00)], b"\x3b\x00")
    send(absent_6d00, "00A4040008A000000151000000")
    assert send(absent_6d00, "80CA9F7F00") == (b"", 0x6D00)


def test_cplc_any_time_with_piv_selected():
    (key,) = get_scenario("healthy").build()
    send(key.card, SELECT_PIV)
    assert is_lab_cplc(cplc_of(key.card))
    # The PIV applet stays selected afterwards.
    assert send(key.card, "00200080")[1] == 0x63C8


def test_lab_atr_check_byte():
    atr = lab_atr(b"LAB")
    assert atr[:4] == bytes.fromhex("3B838001")
    check = 0
    for byte in atr[1:]:
        check ^= byte
    assert check == 0
