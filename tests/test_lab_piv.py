"""The lab PIV applet: status query, VERIFY counters, PUK, data objects, YubiKey extensions."""

from __future__ import annotations

import datetime as dt

from cryptography import x509

from tui.apdu import CommandApdu, StatusKind
from tui.lab.backend import LabBackend
from tui.lab.card import CredentialStore, VirtualCard, reference
from tui.lab.piv import (
    CHUID_TAG,
    PivApplet,
    PivQuirks,
    YubiKeyInfo,
    certificate_object,
    pin_block,
    self_signed_certificate,
    yubikey_management_key,
    yubikey_pin,
    yubikey_puk,
)
from tui.lab.scenarios import crescendo_key
from tui.transport import Channel

SELECT_PIV = "00A4040005A000000308"


def send(card: VirtualCard, hex_apdu: str) -> tuple[bytes, int]:
    raw = card.transmit(bytes.fromhex(hex_apdu))
    return raw[:-2], raw[-2] << 8 | raw[-1]


def verify_apdu(pin: str) -> str:
    return "0020008008" + pin_block(pin).hex()


def piv_card(pin=None, puk=None, *, yubikey=None, quirks=None, objects=None) -> tuple[VirtualCard, CredentialStore, PivApplet]:
    store = CredentialStore(pin=pin, puk=puk)
    applet = PivApplet(store, yubikey=yubikey, quirks=quirks, objects=objects)
    card = VirtualCard([applet], b"\x3b\x00")
    send(card, SELECT_PIV)
    return card, store, applet


def test_select_reply_is_application_property_template():
    store = CredentialStore()
    card = VirtualCard([PivApplet(store)], b"\x3b\x00")
    assert send(card, SELECT_PIV) == (bytes.fromhex("61114F0600001000010079074F05A000000308"), 0x9000)
    assert send(card, "00A404000BA000000308000010000100")[1] == 0x9000


# --- VERIFY ---


def test_status_query_consumes_no_try():
    card, store, _ = piv_card(reference("123456", 8, 3))
    for _ in range(5):
        assert send(card, "00200080") == (b"", 0x63C3)
    assert store.pin.tries_left == 3


def test_wrong_verify_decrements_and_correct_restores():
    card, store, _ = piv_card(reference("123456", 8, 8))
    assert send(card, verify_apdu("654321")) == (b"", 0x63C7)
    assert send(card, verify_apdu("000000")) == (b"", 0x63C6)
    assert send(card, "00200080") == (b"", 0x63C6)

    assert send(card, verify_apdu("123456")) == (b"", 0x9000)
    assert store.pin.tries_left == 8
    assert send(card, "00200080") == (b"", 0x9000)


def test_last_wrong_verify_blocks():
    card, store, _ = piv_card(reference("123456", 8, 1))
    assert send(card, verify_apdu("999999")) == (b"", 0x63C0)
    assert store.pin.blocked
    assert send(card, "00200080") == (b"", 0x6983)
    # Even the right PIN is rejected once blocked.
    assert send(card, verify_apdu("123456")) == (b"", 0x6983)


def test_verify_without_pin_answers_6a88():
    card, _, _ = piv_card(None)
    assert send(card, "00200080") == (b"", 0x6A88)
    assert send(card, verify_apdu("123456")) == (b"", 0x6A88)


def test_verify_data_must_be_eight_bytes():
    card, store, _ = piv_card(reference("123456", 8, 8))
    assert send(card, "0020008006313233343536") == (b"", 0x6A80)
    assert store.pin.tries_left == 8


def test_p1_ff_resets_verified_state():
    card, store, _ = piv_card(reference("123456", 8, 8))
    send(card, verify_apdu("123456"))
    assert send(card, "0020FF80") == (b"", 0x9000)
    assert store.pin_verified is False
    assert send(card, "00200080") == (b"", 0x63C8)


def test_neo_quirk_answers_630x():
    card, _, _ = piv_card(reference("123456", 8, 5), quirks=PivQuirks(counter_in_630x=True))
    assert send(card, "00200080") == (b"", 0x6305)
    assert send(card, verify_apdu("000000")) == (b"", 0x6304)


def test_status_query_quirks():
    card, _, _ = piv_card(reference("123456", 3, 3), quirks=PivQuirks(status_query_never_ok=True))
    send(card, verify_apdu("123456"))
    assert send(card, "00200080") == (b"", 0x63C3)

    card, store, _ = piv_card(reference("123456", 3, 3), quirks=PivQuirks(status_query_clears_verified=True))
    send(card, verify_apdu("123456"))
    assert send(card, "00200080") == (b"", 0x9000)
    assert store.pin_verified is False


def test_power_on_drops_verified_state():
    card, store, _ = piv_card(reference("123456", 8, 8))
    send(card, verify_apdu("123456"))
    card.power_on()
    send(card, SELECT_PIV)
    assert send(card, "00200080") == (b"", 0x63C8)


def test_other_aid_loses_state_quirk():
    store = CredentialStore(pin=reference("123456", 3, 3))
    piv = PivApplet(store, quirks=PivQuirks(lose_state_on_deselect=True))
    other = PivApplet(CredentialStore())
    other.aid = bytes.fromhex("A0000005272101")
    card = VirtualCard([piv, other], b"\x3b\x00")
    send(card, SELECT_PIV)
    send(card, verify_apdu("123456"))
    send(card, "00A4040007A0000005272101")
    send(card, SELECT_PIV)
    assert send(card, "00200080") == (b"", 0x63C3)


# --- CHANGE REFERENCE DATA and RESET RETRY COUNTER ---


def test_change_pin():
    card, store, _ = piv_card(reference("123456", 3, 3))
    assert send(card, "0024008010" + pin_block("000000").hex() + pin_block("654321").hex()) == (b"", 0x63C2)
    assert send(card, "0024008010" + pin_block("123456").hex() + pin_block("654321").hex()) == (b"", 0x9000)
    assert store.pin.tries_left == 3
    assert send(card, verify_apdu("654321")) == (b"", 0x9000)


def test_change_pin_rejects_short_new_pin_without_spending():
    card, store, _ = piv_card(reference("123456", 3, 3))
    assert send(card, "0024008010" + pin_block("123456").hex() + pin_block("123").hex()) == (b"", 0x6A80)
    assert store.pin.tries_left == 3


def test_change_puk():
    card, store, _ = piv_card(reference("123456", 3, 3), reference("12345678", 3, 3, kind="PUK"))
    assert send(card, "0024008110" + pin_block("12345678").hex() + pin_block("87654321").hex()) == (b"", 0x9000)
    assert store.puk.matches(pin_block("87654321"))


def test_reset_retry_counter_with_right_puk():
    card, store, _ = piv_card(reference("123456", 8, 0), reference("12345678", 10, 10, kind="PUK"))
    data = pin_block("12345678").hex() + pin_block("24682468").hex()
    assert send(card, "002C008010" + data) == (b"", 0x9000)
    assert store.pin.tries_left == 8
    assert send(card, verify_apdu("24682468")) == (b"", 0x9000)


def test_reset_retry_counter_with_wrong_puk():
    card, store, _ = piv_card(reference("123456", 8, 0), reference("12345678", 3, 2, kind="PUK"))
    data = pin_block("00000000").hex() + pin_block("24682468").hex()
    assert send(card, "002C008010" + data) == (b"", 0x63C1)
    assert store.pin.blocked
    assert send(card, "002C008010" + data) == (b"", 0x63C0)
    assert send(card, "002C008010" + pin_block("12345678").hex() + pin_block("24682468").hex()) == (b"", 0x6983)


def test_reset_retry_counter_without_puk():
    card, _, _ = piv_card(reference("123456", 8, 0), None)
    assert send(card, "002C008010" + pin_block("12345678").hex() + pin_block("24682468").hex()) == (b"", 0x6A88)


# --- GET DATA ---


def test_get_data_chuid_and_absent_objects():
    card, _, _ = piv_card(objects={CHUID_TAG: bytes.fromhex("3410") + bytes(range(16))})
    data, sw = send(card, "00CB3FFF055C035FC10200")
    assert sw == 0x9000
    assert data == bytes.fromhex("5312") + bytes.fromhex("3410") + bytes(range(16))
    assert send(card, "00CB3FFF055C035FC10500") == (b"", 0x6A82)
    assert send(card, "00CB3FFF035C055F00") == (b"", 0x6A80)  # tag list length does not match


def test_long_certificate_object_uses_61xx_chaining():
    now = dt.datetime.now(dt.timezone.utc)
    der = self_signed_certificate("lab chaining", now - dt.timedelta(days=1), now + dt.timedelta(days=30))
    card, _, applet = piv_card()
    applet.put_certificate(0x9A, der)
    big_object = certificate_object(der + bytes(400))  # pad past 512 bytes to need two GET RESPONSE rounds
    applet.objects[bytes.fromhex("5FC10A")] = big_object

    raw = card.transmit(bytes.fromhex("00CB3FFF055C035FC10A00"))
    assert raw[-2] == 0x61
    assert len(raw) == 258

    # Channel follows 61xx with GET RESPONSE and joins the pieces.
    class Direct:
        reader = "direct"

        def transmit_raw(self, apdu):
            return card.transmit(apdu)

    response, status = Channel(Direct()).send(CommandApdu(0x00, 0xCB, 0x3F, 0xFF, bytes.fromhex("5C035FC105"), le=0))
    assert status.kind is StatusKind.OK
    assert response.data[0] == 0x53
    # 53 82 LL LL { 70 82 LL LL cert, 71 01 00, FE 00 }
    inner = response.data[4:]
    assert inner[:2] == b"\x70\x82"
    length = int.from_bytes(inner[2:4], "big")
    assert inner[4:4 + length] == der
    assert inner[4 + length:] == bytes.fromhex("710100FE00")
    certificate = x509.load_der_x509_certificate(inner[4:4 + length])
    assert certificate.not_valid_after_utc > now

    response, status = Channel(Direct()).send(CommandApdu(0x00, 0xCB, 0x3F, 0xFF, bytes.fromhex("5C035FC10A"), le=0))
    assert status.kind is StatusKind.OK
    assert response.data[4:] == big_object


def test_self_signed_certificate_dates():
    not_before = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
    not_after = dt.datetime(2021, 1, 1, tzinfo=dt.timezone.utc)
    certificate = x509.load_der_x509_certificate(self_signed_certificate("expired", not_before, not_after))
    assert certificate.not_valid_before_utc == not_before
    assert certificate.not_valid_after_utc == not_after


# --- YubiKey extensions ---


def yubikey_card(firmware=(5, 4, 3), quirks=None, pin=None, puk=None):
    store = CredentialStore(pin=pin or yubikey_pin(), puk=puk or yubikey_puk(), admin_key=yubikey_management_key())
    applet = PivApplet(store, yubikey=YubiKeyInfo(firmware, 99000042), quirks=quirks)
    card = VirtualCard([applet], b"\x3b\x00")
    send(card, SELECT_PIV)
    return card, store, applet


def test_get_serial_and_version():
    card, _, _ = yubikey_card()
    assert send(card, "00F8000000") == ((99000042).to_bytes(4, "big"), 0x9000)
    assert send(card, "00FD000000") == (bytes((5, 4, 3)), 0x9000)


def test_get_metadata_pin_puk_management_key():
    card, _, _ = yubikey_card()
    assert send(card, "00F7008000") == (bytes.fromhex("0101FF" "050101" "06020303"), 0x9000)
    assert send(card, "00F7008100") == (bytes.fromhex("0101FF" "050101" "06020303"), 0x9000)
    assert send(card, "00F7009B00") == (bytes.fromhex("010103" "050101"), 0x9000)


def test_get_metadata_tracks_tries_and_default_flag():
    card, _, _ = yubikey_card()
    send(card, verify_apdu("000000"))
    assert send(card, "00F7008000") == (bytes.fromhex("0101FF" "050101" "06020302"), 0x9000)
    send(card, "0024008010" + pin_block("123456").hex() + pin_block("975310").hex())
    assert send(card, "00F7008000") == (bytes.fromhex("0101FF" "050100" "06020303"), 0x9000)


def test_get_metadata_needs_firmware_5_3():
    card, _, _ = yubikey_card(firmware=(5, 2, 7))
    assert send(card, "00F7008000") == (b"", 0x6D00)
    card, _, _ = yubikey_card(firmware=(5, 3, 0))
    assert send(card, "00F7008000")[1] == 0x9000


def test_get_metadata_absent_quirk():
    card, _, _ = yubikey_card(quirks=PivQuirks(metadata_absent=True))
    assert send(card, "00F7008000") == (b"", 0x6D00)


def test_yubikey_commands_absent_on_generic_piv():
    card, _, _ = piv_card(reference("123456", 8, 8))
    for apdu in ("00F8000000", "00FD000000", "00F7008000", "00FB0000"):
        assert send(card, apdu) == (b"", 0x6D00)


def test_piv_reset_needs_pin_and_puk_blocked():
    card, store, applet = yubikey_card(pin=yubikey_pin(b"111111", 0), puk=yubikey_puk(b"22222222", 1))
    applet.objects[CHUID_TAG] = b"\x34\x00"
    assert send(card, "00FB0000") == (b"", 0x6985)

    store.puk.tries_left = 0
    assert send(card, "00FB0000") == (b"", 0x9000)
    assert store.pin.is_default and store.pin.tries_left == 3
    assert store.puk.is_default and store.puk.tries_left == 3
    assert applet.objects == {}
    assert send(card, verify_apdu("123456")) == (b"", 0x9000)


# --- shared PIN on a Crescendo key ---


def test_crescendo_piv_and_aca_share_pin():
    key = crescendo_key(50)
    card = key.card
    send(card, "00A4040007A0000000791000")
    assert send(card, "00200000083030303030303030") == (b"", 0x9000)
    send(card, SELECT_PIV)
    assert send(card, "00200080") == (b"", 0x9000)

    card.power_on()
    send(card, SELECT_PIV)
    assert send(card, verify_apdu("1111")) == (b"", 0x63C7)
    send(card, "00A4040007A0000000791000")
    assert send(card, "0020000000") == (b"", 0x63C7)


def test_lab_backend_piv_counter_matches_scenario():
    backend = LabBackend("wrong-pin")
    transport = backend.open(backend.list_readers()[0])
    transport.connect()
    channel = Channel(transport)
    channel.send(CommandApdu(0x00, 0xA4, 0x04, 0x00, bytes.fromhex("A000000308")))
    _, status = channel.send(CommandApdu(0x00, 0x20, 0x00, 0x80), status_query=True)
    assert status.kind is StatusKind.VERIFY_FAILED
    assert status.tries == 3
