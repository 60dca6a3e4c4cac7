"""APDU recordings of full scans: no secret-carrying command is ever sent, and the lists stay minimal."""

import pytest

from tests.fakes import FakeBackend, FakeTransport, crescendo_card, generic_piv_card, yubikey_card
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


def record_scan(name, settings, explain):
    backend = open_backend(name)
    recordings = [backend.key(reader).card.start_recording()
                  for reader in backend.list_readers() if backend.key(reader).card is not None]
    result = scan_all(backend, settings, explain=explain)
    return result, [command for recording in recordings for command, _ in recording]


@pytest.mark.parametrize("explain", [False, True])
@pytest.mark.parametrize("settings", SETTINGS)
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scan_sends_no_secret_command(name, settings, explain):
    result, commands = record_scan(name, settings, explain)
    assert result.apdu_count == len(commands)
    for apdu in commands:
        ins = apdu[1]
        assert ins not in NEVER_AT_ALL, apdu.hex()
        if ins in NEVER_WITH_DATA:
            assert len(apdu) == 4, f"{apdu.hex()} carries a data field"


def test_every_scenario_covered():
    # A new lab scenario must show up here: the parametrized test reads SCENARIOS.
    assert len(SCENARIOS) >= 8


def fake_scan(card, settings=None):
    result = scan_all(FakeBackend([FakeTransport("r0", card)]), settings or SiteSettings())
    return result, [apdu.hex().upper() for apdu in card.sent]


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
    ]
    assert "00200080" not in sent


def test_old_yubikey_uses_status_query():
    result, sent = fake_scan(yubikey_card(version="040307"))
    assert not any(apdu.startswith("00F7") for apdu in sent)
    assert sent[-1] == "00200080"
    assert result.tokens[0].smartcard.pin.source.value == "PIV status query"


def test_generic_piv_minimal_list():
    _, sent = fake_scan(generic_piv_card())
    assert sent[3:] == [
        "00A4040007A000000079100000",
        "00A404000BA00000030800001000010000",
        "00FD000000",
        "00200080",
        "00CB3FFF055C035FC10200",
    ]


def test_each_token_in_one_transaction():
    transport = FakeTransport("r0", generic_piv_card())
    scan_all(FakeBackend([transport]), SiteSettings())
    assert transport.events == ["connect", "begin", "end", "disconnect"]
