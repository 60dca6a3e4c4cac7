"""APDU recordings of full scans: no secret-carrying command is ever sent, and the lists stay minimal."""

import pytest

from tests.fakes import PIV_AID, FakeBackend, FakeTransport, crescendo_card, generic_piv_card, yubikey_card
from tui.backends import open_backend
from tui.lab.scenarios import SCENARIOS
from tui.scan import scan_all
from tui.settings import SiteSettings

# VERIFY, CHANGE REFERENCE DATA, RESET RETRY COUNTER / UNLOCK PIN, EXTERNAL AUTHENTICATE.
NEVER_WITH_DATA = {0x20, 0x24, 0x2C, 0x82}
# Commands that change a token whatever their data: key imports, RESET CARD, Yubico RESET.
NEVER_AT_ALL = {0x24, 0x2C, 0x82, 0xD8, 0xFE, 0xFF, 0x38, 0xFB}

SETTINGS = [
    SiteSettings(),
    SiteSettings(allow_unverified_commands=True),
    SiteSettings.from_dict({"id_sources": {p: ["guid"] for p in ("hid-crescendo", "yubikey", "piv", "unknown")}}),
]


# Proprietary-class instructions that calculate a one-time code: HOTP/TOTP
# AUTHENTICATE (80 88) and OCRA AUTHENTICATE (80 87). Each advances a counter.
NEVER_PROPRIETARY = {0x87, 0x88}

# CTAP2 commands that the read-only FIDO check may send over PC/SC:
# authenticatorGetInfo (04) and authenticatorClientPIN (06, getPINRetries only).
CTAP_GET_INFO = 0x04
CTAP_CLIENT_PIN = 0x06


def record_scan(name, settings, explain, **options):
    backend = open_backend(name)
    recordings = [backend.key(reader).card.start_recording()
                  for reader in backend.list_readers() if backend.key(reader).card is not None]
    result = scan_all(backend, settings, explain=explain, **options)
    return result, [command for recording in recordings for command, _ in recording]


def exchanges_in(commands):
    # The scan counts an exchange once with its GET RESPONSE rounds; the card counts each APDU.
    return [apdu for apdu in commands if apdu[1] != 0xC0]


@pytest.mark.parametrize("explain", [False, True])
@pytest.mark.parametrize("settings", SETTINGS)
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scan_sends_no_secret_command(name, settings, explain):
    result, commands = record_scan(name, settings, explain)
    assert result.apdu_count == len(exchanges_in(commands))
    for apdu in commands:
        ins = apdu[1]
        assert ins not in NEVER_AT_ALL, apdu.hex()
        if ins in NEVER_WITH_DATA:
            assert len(apdu) == 4, f"{apdu.hex()} carries a data field"
        if apdu[0] & 0x80:
            assert ins not in NEVER_PROPRIETARY, f"{apdu.hex()} would calculate a one-time code"


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scan_never_generates_hotp(name):
    _, commands = record_scan(name, SiteSettings(allow_unverified_commands=True), True)
    assert not [apdu.hex() for apdu in commands if apdu[:2] == b"\x80\x88"]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_fido_over_pcsc_sends_no_pin(name):
    # Over PC/SC, a CTAP request travels in NFCCTAP_MSG (80 10): only getInfo
    # and clientPin getPINRetries (subcommand 01) may appear. USB HID is off,
    # so the lab's FIDO applets are read over PC/SC.
    from fido2 import cbor

    _, commands = record_scan(name, SiteSettings(), False, usb_hid=False)
    for apdu in commands:
        if apdu[:2] != b"\x80\x10":
            continue
        request = apdu[5:5 + apdu[4]]
        assert request[0] in (CTAP_GET_INFO, CTAP_CLIENT_PIN), apdu.hex()
        if request[0] == CTAP_CLIENT_PIN:
            assert cbor.decode(request[1:])[2] == 1, "only getPINRetries may be sent"


def test_every_scenario_covered():
    # A new lab scenario must show up here: the parametrized test reads SCENARIOS.
    assert len(SCENARIOS) >= 8


def fake_scan(card, settings=None):
    result = scan_all(FakeBackend([FakeTransport("r0", card)]), settings or SiteSettings(), usb_hid=False)
    return result, [apdu.hex().upper() for apdu in card.sent]


CERTIFICATE_READS = [
    "00CB3FFF055C035FC10500",
    "00CB3FFF055C035FC10A00",
    "00CB3FFF055C035FC10B00",
    "00CB3FFF055C035FC10100",
]
HID_OATH_SELECTS = [
    "00A4040007A000000079230000",
    "00A4040007A000000079230100",
    "00A4040007A000000079230200",
]
YUBIKEY_OTP_SELECTS = [
    "00A4040007A000000527200100",
    "00A4040007A000000527210100",
]
SELECT_FIDO = "00A4040008A0000006472F000100"


def test_crescendo_minimal_list():
    result, sent = fake_scan(crescendo_card())
    assert sent == [
        "80CA9F7F00",
        "00A4040008A00000015100000000",
        "80CA9F7F00",
        "00A4040007A000000079100000",
        "00560200013100",
        "0084000000",
        "00A404000BA00000030800001000010000",
        "00200080",
        *CERTIFICATE_READS,
        *HID_OATH_SELECTS,
        SELECT_FIDO,
    ]
    assert result.apdu_count == len(sent)


def test_aca_status_query_only_when_allowed():
    _, sent = fake_scan(crescendo_card())
    assert "00200000" not in sent
    _, sent = fake_scan(crescendo_card(), SiteSettings(allow_unverified_commands=True))
    assert "00200000" in sent


def test_yubikey_minimal_list():
    _, sent = fake_scan(yubikey_card())
    assert sent[3:] == [
        "00A4040007A000000079100000",
        "00A404000BA00000030800001000010000",
        "00FD000000",
        "00F8000000",
        "00F7008000",
        "00F7008100",
        "00F7009B00",
        *CERTIFICATE_READS,
        *YUBIKEY_OTP_SELECTS,
        SELECT_FIDO,
    ]
    assert "00200080" not in sent


def test_old_yubikey_uses_status_query():
    result, sent = fake_scan(yubikey_card(version="040307"))
    assert not any(apdu.startswith("00F7") for apdu in sent)
    assert sent[-8] == "00200080"
    assert result.tokens[0].smartcard.pin.source.value == "PIV status query"


def test_generic_piv_minimal_list():
    _, sent = fake_scan(generic_piv_card())
    assert sent[3:] == [
        "00A4040007A000000079100000",
        "00A404000BA00000030800001000010000",
        "00FD000000",
        "00200080",
        "00CB3FFF055C035FC10200",
        *CERTIFICATE_READS,
        *HID_OATH_SELECTS,
        *YUBIKEY_OTP_SELECTS,
        SELECT_FIDO,
    ]


def test_each_token_one_connection():
    # Smart card and certificates in one transaction, the OTP listing in a
    # second; FIDO shares the connection, so there is no second connect.
    transport = FakeTransport("r0", generic_piv_card())
    scan_all(FakeBackend([transport]), SiteSettings(), usb_hid=False)
    assert transport.events == ["connect", "begin", "end", "begin", "end", "disconnect"]


def test_no_certificates_without_piv():
    card = crescendo_card()
    del card.applets[PIV_AID]
    result, sent = fake_scan(card)
    assert result.tokens[0].smartcard.piv_present is False
    assert result.tokens[0].certificates == []
    assert not [apdu for apdu in sent if apdu.startswith("00CB")]
