"""Profile detection by the commands a key accepts, per lab scenario and per fake card."""

import pytest

from tests.fakes import FakeCard, FakeTransport, crescendo_card, generic_piv_card, h, yubikey_card
from tui.backends import open_backend
from tui.model import Profile
from tui.profiles import detect_profile
from tui.scan import scan_all
from tui.settings import SiteSettings
from tui.transport import Channel

SCENARIO_PROFILES = {
    "healthy": [Profile.HID_CRESCENDO],
    "wrong-pin": [Profile.GENERIC_PIV],
    "pin-locked-puk": [Profile.GENERIC_PIV],
    "pin-locked-no-puk": [Profile.GENERIC_PIV],
    "no-pin": [Profile.GENERIC_PIV],
    "yubikey-healthy": [Profile.YUBIKEY],
    "two-tokens": [Profile.HID_CRESCENDO, Profile.HID_CRESCENDO],
    "no-token": [],
}


@pytest.mark.parametrize(("name", "profiles"), sorted(SCENARIO_PROFILES.items()))
def test_scenario_profile(name, profiles):
    result = scan_all(open_backend(name), SiteSettings())
    assert [t.profile for t in result.tokens] == profiles


def detect(card):
    channel = Channel(FakeTransport("r0", card))
    return detect_profile(channel), [apdu.hex().upper() for apdu in card.sent]


def test_crescendo_needs_one_select():
    detection, sent = detect(crescendo_card())
    assert detection.profile is Profile.HID_CRESCENDO
    assert detection.aca_version == "3.0.3 build 1"
    assert sent == ["00A4040007A000000079100000"]


def test_yubikey_by_get_version():
    detection, sent = detect(yubikey_card())
    assert detection.profile is Profile.YUBIKEY
    assert detection.firmware == (5, 7, 4)
    assert len(sent) == 3


def test_generic_piv_without_get_version():
    detection, _ = detect(generic_piv_card())
    assert detection.profile is Profile.GENERIC_PIV
    assert detection.firmware is None


def test_unknown_card():
    detection, sent = detect(FakeCard({}))
    assert detection.profile is Profile.UNKNOWN
    assert len(sent) == 2


def test_garbled_aca_version_noted():
    card = crescendo_card()
    card.applets[h("A0000000791000")][b"SELECT"] = h("6F 05 A5 03 01 01 10 9000")
    detection, _ = detect(card)
    assert detection.profile is Profile.HID_CRESCENDO
    assert detection.aca_version is None
    assert "ACA version not read" in detection.notes[0]


def test_unknown_card_scan_state():
    result = scan_all_fake(FakeCard({}))
    token = result.tokens[0]
    assert token.profile is Profile.UNKNOWN
    assert token.smartcard.pin.remaining is None


def scan_all_fake(card):
    from tests.fakes import FakeBackend

    return scan_all(FakeBackend([FakeTransport("r0", card)]), SiteSettings())
