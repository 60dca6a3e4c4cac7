"""PIV certificate summaries: valid, expired, malformed and absent, against a fixed clock."""

from __future__ import annotations

import datetime as dt
import gzip

import pytest

from tests.fakes import PIV_AID, FakeBackend, FakeTransport, generic_piv_card, h
from tui.certs import CertificateInfo, certificate_command, parse_certificate_object, read_certificates
from tui.lab.card import tlv
from tui.lab.piv import certificate_object, self_signed_certificate
from tui.scan import scan_all
from tui.settings import SiteSettings
from tui.transport import Channel

UTC = dt.timezone.utc
NOW = dt.datetime(2025, 3, 14, 20, 1, 2, tzinfo=UTC)
ISSUED = dt.datetime(2023, 2, 1, tzinfo=UTC)
EXPIRY_PAST = dt.datetime(2024, 1, 31, 12, 0, tzinfo=UTC)
EXPIRY_FUTURE = dt.datetime(2026, 9, 12, tzinfo=UTC)


def object_reply(der: bytes, *, compressed: bool = False) -> bytes:
    content = tlv(0x70, der) + tlv(0x71, b"\x01" if compressed else b"\x00") + tlv(0xFE, b"")
    return tlv(0x53, content)


@pytest.fixture(scope="module")
def valid_der():
    return self_signed_certificate("Alice Example", ISSUED, EXPIRY_FUTURE)


@pytest.fixture(scope="module")
def expired_der():
    return self_signed_certificate("Bob Example", ISSUED, EXPIRY_PAST)


def test_valid_certificate(valid_der):
    info = parse_certificate_object("9A", object_reply(valid_der), NOW)
    assert info.present is True
    assert info.subject == "Alice Example"
    assert info.not_before == ISSUED
    assert info.not_after == EXPIRY_FUTURE
    assert info.expired is False
    assert info.error is None
    assert info.text() == "valid to 2026-09-12"


def test_expired_certificate(expired_der):
    info = parse_certificate_object("9C", object_reply(expired_der), NOW)
    assert info.expired is True
    assert info.not_after == EXPIRY_PAST
    assert info.text() == "expired 2024-01-31"


def test_expiry_depends_on_clock(expired_der):
    before = EXPIRY_PAST - dt.timedelta(seconds=1)
    assert parse_certificate_object("9A", object_reply(expired_der), before).expired is False


def test_compressed_certificate(valid_der):
    info = parse_certificate_object("9D", object_reply(gzip.compress(valid_der), compressed=True), NOW)
    assert info.subject == "Alice Example"
    assert info.error is None


@pytest.mark.parametrize("reply, reason", [
    (tlv(0x53, tlv(0x70, b"\x30\x03\x02\x01\x01")), "unreadable"),
    (tlv(0x53, tlv(0x71, b"\x00")), "no certificate (tag 70)"),
    (h("7003010203"), "no 53 template"),
    (h("5382FFFF00"), "claims"),
    (tlv(0x53, tlv(0x70, b"not gzip") + tlv(0x71, b"\x01")), "unreadable"),
])
def test_malformed_object_is_unreadable(reply, reason):
    info = parse_certificate_object("9E", reply, NOW)
    assert info.present is True
    assert info.error is not None
    assert reason in info.error
    assert info.subject is None
    assert info.expired is None
    assert info.text() == "present, unreadable"


def test_certificate_without_common_name():
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Lab Org")])
    der = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
           .serial_number(1).not_valid_before(ISSUED).not_valid_after(EXPIRY_FUTURE)
           .sign(key, hashes.SHA256()).public_bytes(Encoding.DER))
    assert parse_certificate_object("9A", object_reply(der), NOW).subject == "O=Lab Org"


def test_command_bytes():
    assert certificate_command("9A").to_bytes().hex().upper() == "00CB3FFF055C035FC10500"
    assert certificate_command("9E").to_bytes().hex().upper() == "00CB3FFF055C035FC10100"
    with pytest.raises(KeyError, match="9A, 9C, 9D, 9E"):
        certificate_command("82")


def card_with_objects(valid_der, expired_der):
    card = generic_piv_card()
    table = card.applets[PIV_AID]
    table[h("00CB3FFF055C035FC10500")] = tlv(0x53, certificate_object(valid_der)) + h("9000")
    table[h("00CB3FFF055C035FC10A00")] = tlv(0x53, certificate_object(expired_der)) + h("9000")
    table[h("00CB3FFF055C035FC10B00")] = tlv(0x53, tlv(0x70, b"garbage")) + h("9000")
    table[h("00CB3FFF055C035FC10100")] = h("6A82")
    return card


def test_read_four_slots(valid_der, expired_der):
    card = card_with_objects(valid_der, expired_der)
    card.selected = PIV_AID
    transport = FakeTransport("r0", card)
    transport.connect()
    certificates = read_certificates(Channel(transport), NOW)
    assert [c.slot for c in certificates] == ["9A", "9C", "9D", "9E"]
    assert [c.present for c in certificates] == [True, True, True, False]
    assert [c.expired for c in certificates] == [False, True, None, None]
    assert certificates[2].error is not None
    assert certificates[3] == CertificateInfo("9E", False)


def test_other_status_leaves_slot_unknown():
    card = generic_piv_card()
    card.applets[PIV_AID][h("00CB3FFF055C035FC10500")] = h("6982")
    card.selected = PIV_AID
    certificates = read_certificates(Channel(FakeTransport("r0", card)), NOW)
    assert certificates[0].present is None
    assert "6982" in certificates[0].error
    assert certificates[0].text() == "unknown"


def test_scan_with_fixed_clock(valid_der, expired_der):
    card = card_with_objects(valid_der, expired_der)
    result = scan_all(FakeBackend([FakeTransport("r0", card)]), SiteSettings(), clock=lambda: NOW, usb_hid=False)
    token = result.tokens[0]
    assert [c.text() for c in token.certificates] == [
        "valid to 2026-09-12", "expired 2024-01-31", "present, unreadable", "none",
    ]
    # A malformed certificate changes nothing in the smart-card result.
    assert token.problem is None
    assert token.smartcard.pin.remaining == 5


def test_certificate_json(expired_der):
    data = parse_certificate_object("9A", object_reply(expired_der), NOW).to_dict()
    assert data == {
        "slot": "9A", "purpose": "PIV authentication", "present": True, "subject": "Bob Example",
        "not_before": "2023-02-01T00:00:00+00:00", "not_after": "2024-01-31T12:00:00+00:00",
        "expired": True, "error": None,
    }
