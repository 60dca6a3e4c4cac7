"""The lab ACA against HID's published APDUs: PIN, admin key (XAUTH1), unlock and reset."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tui.lab.aca import AcaApplet, aca_admin_key, aca_pin
from tui.lab.card import AdminKeyType, CredentialStore, VirtualCard, pad_ff
from tui.lab.piv import CHUID_TAG
from tui.lab.scenarios import crescendo_key

SELECT_ACA = "00A4040007A0000000791000"
AES_KEY = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
TDES_KEY = bytes.fromhex("0123456789ABCDEFFEDCBA98765432100011223344556677")


def send(card: VirtualCard, hex_apdu: str) -> tuple[bytes, int]:
    raw = card.transmit(bytes.fromhex(hex_apdu))
    return raw[:-2], raw[-2] << 8 | raw[-1]


def aca_card(pin=None, admin_key=None, **options) -> tuple[VirtualCard, CredentialStore, AcaApplet]:
    store = CredentialStore(pin=pin if pin is not None else aca_pin(), admin_key=admin_key)
    applet = AcaApplet(store, **options)
    card = VirtualCard([applet], b"\x3b\x00")
    send(card, SELECT_ACA)
    return card, store, applet


def encrypt(key_type: str, key: bytes, block: bytes) -> bytes:
    """Compute the cryptogram independently of the lab code."""
    if key_type == "AES":
        algorithm = algorithms.AES(key)
    else:
        from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES

        algorithm = TripleDES(key)
    encryptor = Cipher(algorithm, modes.ECB()).encryptor()
    return encryptor.update(block) + encryptor.finalize()


# --- golden vectors from HID's OATH personalisation trace ---


def test_select_reply_golden():
    store = CredentialStore(pin=aca_pin())
    card = VirtualCard([AcaApplet(store)], b"\x3b\x00")
    data, sw = send(card, SELECT_ACA)
    assert (data + bytes((sw >> 8, sw & 0xFF))).hex().upper() == "6F128407A0000000791000A507010510030003019000"


def test_select_reply_version_configurable():
    store = CredentialStore(pin=aca_pin())
    card = VirtualCard([AcaApplet(store, version=(4, 1, 0, 7))], b"\x3b\x00")
    data, _ = send(card, SELECT_ACA)
    assert data.hex().upper() == "6F128407A0000000791000A50701051004010007"


def test_verify_default_pin_golden():
    key = crescendo_key(60)
    send(key.card, SELECT_ACA)
    assert send(key.card, "00200000083030303030303030") == (b"", 0x9000)


# --- PIN ---


def test_get_pin_properties():
    card, _, _ = aca_card(pin_lengths=(6, 8), numeric_only=True)
    assert send(card, "00560200013100") == (bytes.fromhex("31050608000001"), 0x9000)
    card, _, _ = aca_card(pin_lengths=(4, 8), numeric_only=False)
    assert send(card, "00560200013100") == (bytes.fromhex("31050408000000"), 0x9000)
    assert send(card, "00560100013100") == (b"", 0x6A86)


def test_status_query_consumes_no_try():
    card, store, _ = aca_card(aca_pin("12345678", 6, 8))
    for _ in range(5):
        assert send(card, "0020000000") == (b"", 0x63C6)
    assert store.pin.tries_left == 6


def test_verify_counts_down_blocks_and_restores():
    card, store, _ = aca_card(aca_pin("12345678", 2, 8))
    assert send(card, "0020000008" + pad_ff(b"1111").hex()) == (b"", 0x63C1)
    assert send(card, "0020000008" + pad_ff(b"12345678").hex()) == (b"", 0x9000)
    assert store.pin.tries_left == 8
    assert send(card, "0020000000") == (b"", 0x9000)

    store.pin.tries_left = 1
    assert send(card, "0020000008" + pad_ff(b"1111").hex()) == (b"", 0x63C0)
    assert send(card, "0020000000") == (b"", 0x6983)
    assert send(card, "0020000008" + pad_ff(b"12345678").hex()) == (b"", 0x6983)


def test_verify_without_pin_defined():
    store = CredentialStore(pin=None)
    card = VirtualCard([AcaApplet(store)], b"\x3b\x00")
    send(card, SELECT_ACA)
    assert send(card, "0020000000") == (b"", 0x6A88)


def test_change_pin():
    card, store, _ = aca_card(aca_pin("12345678", 8, 8), pin_lengths=(6, 8))
    old, new = pad_ff(b"12345678").hex(), pad_ff(b"246810").hex()
    assert send(card, "0024010010" + pad_ff(b"000000").hex() + new) == (b"", 0x63C7)
    # A new PIN that breaks the format is rejected before the old PIN is checked.
    assert send(card, "0024010010" + old + pad_ff(b"12ab56").hex()) == (b"", 0x6A80)
    assert store.pin.tries_left == 7
    assert send(card, "0024010010" + old + new) == (b"", 0x9000)
    assert store.pin.tries_left == 8
    assert send(card, "0020000008" + new) == (b"", 0x9000)


# --- GET CHALLENGE and EXTERNAL AUTHENTICATE ---


@pytest.mark.parametrize(("key", "length"), [(AES_KEY, 16), (TDES_KEY, 8)])
def test_get_challenge_length_by_key_type(key, length):
    card, _, _ = aca_card(admin_key=aca_admin_key(key))
    challenge, sw = send(card, "0084000000")
    assert sw == 0x9000
    assert len(challenge) == length


def test_get_challenge_without_admin_key():
    card, _, _ = aca_card(admin_key=None)
    assert send(card, "0084000000") == (b"", 0x6A88)


@pytest.mark.parametrize(("key", "kind"), [(AES_KEY, "AES"), (TDES_KEY, "3DES")])
def test_external_authenticate_right_key(key, kind):
    card, store, _ = aca_card(admin_key=aca_admin_key(key))
    challenge, _ = send(card, "0084000000")
    cryptogram = encrypt(kind, key, challenge)
    assert send(card, f"00820001{len(cryptogram):02X}" + cryptogram.hex()) == (b"", 0x9000)
    assert store.xauth1 is True


def test_external_authenticate_wrong_key():
    card, store, _ = aca_card(admin_key=aca_admin_key(AES_KEY))
    challenge, _ = send(card, "0084000000")
    cryptogram = encrypt("AES", bytes(16), challenge)
    assert send(card, "0082000110" + cryptogram.hex()) == (b"", 0x6300)
    assert store.xauth1 is False
    assert store.admin_key.unlock_tries_left == 2


def test_external_authenticate_needs_fresh_challenge():
    card, _, _ = aca_card(admin_key=aca_admin_key(AES_KEY))
    assert send(card, "0082000110" + bytes(16).hex()) == (b"", 0x6985)

    # A challenge serves only the command right after it.
    challenge, _ = send(card, "0084000000")
    send(card, "0020000000")
    assert send(card, "0082000110" + encrypt("AES", AES_KEY, challenge).hex()) == (b"", 0x6985)


def test_external_authenticate_without_admin_key():
    card, _, _ = aca_card(admin_key=None)
    assert send(card, "0082000110" + bytes(16).hex()) == (b"", 0x6A88)


# --- UNLOCK PIN ---


def authenticate(card: VirtualCard, key: bytes = AES_KEY) -> None:
    challenge, _ = send(card, "0084000000")
    assert send(card, "0082000110" + encrypt("AES", key, challenge).hex()) == (b"", 0x9000)


def test_unlock_pin_needs_xauth1():
    card, store, _ = aca_card(aca_pin("12345678", 0, 8), admin_key=aca_admin_key(AES_KEY, unlock_tries=3))
    new_pin = pad_ff(b"55556666").hex()
    assert send(card, "002C020008" + new_pin) == (b"", 0x63C2)
    assert store.pin.blocked

    authenticate(card)
    assert send(card, "002C020008" + new_pin) == (b"", 0x9000)
    assert store.pin.tries_left == 8
    assert store.admin_key.unlock_tries_left == 3
    assert send(card, "0020000008" + new_pin) == (b"", 0x9000)


def test_unlock_tries_exhausted():
    card, _, _ = aca_card(aca_pin("12345678", 0, 8), admin_key=aca_admin_key(AES_KEY, unlock_tries=1))
    assert send(card, "002C020008" + pad_ff(b"55556666").hex()) == (b"", 0x63C0)
    assert send(card, "002C020008" + pad_ff(b"55556666").hex()) == (b"", 0x6983)


def test_unlock_counting_switch_off():
    card, store, _ = aca_card(aca_pin("12345678", 0, 8), admin_key=aca_admin_key(AES_KEY, unlock_tries=3),
                              unauthenticated_unlock_spends_try=False)
    assert send(card, "002C020008" + pad_ff(b"55556666").hex()) == (b"", 0x63C3)
    assert store.admin_key.unlock_tries_left == 3


def test_unlock_pin_rejects_bad_format():
    card, _, _ = aca_card(aca_pin("12345678", 0, 8), admin_key=aca_admin_key(AES_KEY))
    authenticate(card)
    assert send(card, "002C020008" + pad_ff(b"12").hex()) == (b"", 0x6A80)


# --- PUT XAUTH KEY and RESET CARD ---


def test_put_xauth_key_needs_pin_or_xauth1():
    card, store, _ = aca_card(aca_pin("12345678"), admin_key=None)
    put = "00D8010015" + "00" + "02" + "10" + "10" + AES_KEY.hex() + "00"
    assert send(card, put) == (b"", 0x6982)

    send(card, "0020000008" + pad_ff(b"12345678").hex())
    assert send(card, put) == (b"", 0x9000)
    assert store.admin_key.key_type is AdminKeyType.AES128
    challenge, _ = send(card, "0084000000")
    assert len(challenge) == 16


def test_reset_card_needs_authentication():
    key = crescendo_key(61, pin=aca_pin("13572468"))
    card = key.card
    send(card, SELECT_ACA)
    assert send(card, "00380000") == (b"", 0x6982)
    assert key.piv.objects


def test_reset_card_wipes_after_verify():
    key = crescendo_key(62, pin=aca_pin("13572468"))
    card = key.card
    send(card, SELECT_ACA)
    send(card, "0020000008" + pad_ff(b"13572468").hex())
    assert send(card, "00380000") == (b"", 0x9000)

    assert key.piv.objects == {}
    assert CHUID_TAG not in key.piv.objects
    assert key.store.admin_key is None
    assert key.store.pin_verified is False
    assert send(card, "0084000000") == (b"", 0x6A88)
    assert send(card, "00200000083030303030303030") == (b"", 0x9000)


def test_reset_card_with_xauth1():
    key = crescendo_key(63, pin=aca_pin("13572468", 0), admin_key=AES_KEY)
    card = key.card
    send(card, SELECT_ACA)
    authenticate(card)
    assert send(card, "00380000") == (b"", 0x9000)
    assert key.store.pin.tries_left == key.store.pin.max_tries
