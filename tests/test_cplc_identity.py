"""CPLC parsing, the CUID in both byte orders, and the choice of the token ID."""

import pytest

from tests.fakes import CPLC_BODY, h
from tui.errors import MalformedResponseError
from tui.gp import parse_cplc
from tui.identity import choose_token_id, cuid_from_cplc, cuid_from_cplc_gp_order, id_candidates
from tui.model import Profile
from tui.piv import parse_chuid_guid
from tui.settings import SiteSettings

# Distinct bytes per field: fabricator 4790, type 5168, serial A1B2C3D4, batch 5678.
CPLC_REPLY = h("9F7F2A") + CPLC_BODY


def test_cplc_fields_parsed():
    cplc = parse_cplc(CPLC_REPLY)
    assert cplc.ic_fabricator == h("4790")
    assert cplc.ic_type == h("5168")
    assert cplc.ic_serial_number == h("A1B2C3D4")
    assert cplc.ic_batch_identifier == h("5678")
    assert cplc.as_hex()["ic_serial_number"] == "A1B2C3D4"


def test_cplc_without_tag_parsed():
    assert parse_cplc(CPLC_BODY).ic_serial_number == h("A1B2C3D4")


def test_cuid_default_order_batch_before_serial():
    assert cuid_from_cplc(parse_cplc(CPLC_REPLY)) == "479051685678A1B2C3D4"


def test_cuid_gp_order_serial_before_batch():
    assert cuid_from_cplc_gp_order(parse_cplc(CPLC_REPLY)) == "47905168A1B2C3D45678"


def test_cuid_is_20_upper_hex():
    cuid = cuid_from_cplc(parse_cplc(CPLC_REPLY))
    assert len(cuid) == 20
    assert cuid == cuid.upper()


@pytest.mark.parametrize("data", [
    h("9F7F2A") + CPLC_BODY[:-1],
    h("9F7F29") + CPLC_BODY[:-1],
    CPLC_BODY[:30],
    b"",
    h("9F7F"),
])
def test_short_or_garbled_cplc_rejected(data):
    with pytest.raises(MalformedResponseError):
        parse_cplc(data)


def test_candidates_in_fixed_order():
    candidates = id_candidates(parse_cplc(CPLC_REPLY), 12345678, "00112233445566778899AABBCCDDEEFF")
    assert [c.source for c in candidates] == ["cplc", "cplc-gp", "serial", "guid"]
    assert candidates[2].value == "12345678"


def test_default_choice_is_cplc():
    choice = choose_token_id(Profile.YUBIKEY, id_candidates(parse_cplc(CPLC_REPLY), 12345678), SiteSettings())
    assert str(choice.token_id) == "cplc:479051685678A1B2C3D4"
    assert choice.cuid == "479051685678A1B2C3D4"
    assert choice.cuid_source == "cplc"


def test_yubikey_without_cplc_uses_serial():
    choice = choose_token_id(Profile.YUBIKEY, id_candidates(None, 12345678), SiteSettings())
    assert str(choice.token_id) == "serial:12345678"
    assert choice.cuid is None


def test_site_order_picks_gp_order():
    settings = SiteSettings.from_dict({"id_sources": {"hid-crescendo": ["cplc-gp", "guid"]}})
    choice = choose_token_id(Profile.HID_CRESCENDO, id_candidates(parse_cplc(CPLC_REPLY)), settings)
    assert str(choice.token_id) == "cplc-gp:47905168A1B2C3D45678"
    assert choice.cuid_source == "cplc-gp"


def test_no_candidate_gives_reason():
    choice = choose_token_id(Profile.GENERIC_PIV, [], SiteSettings())
    assert choice.token_id is None
    assert "no token ID" in choice.reason
    assert "cplc, guid" in choice.reason


def test_serial_not_allowed_for_piv():
    choice = choose_token_id(Profile.GENERIC_PIV, id_candidates(None, 42), SiteSettings())
    assert choice.token_id is None


def test_chuid_guid_parsed():
    chuid = h("53 1A 30 02 D4E7 34 10 00112233445566778899AABBCCDDEEFF 35 00 FE 00")
    assert parse_chuid_guid(chuid) == "00112233445566778899AABBCCDDEEFF"


def test_zero_guid_is_none():
    assert parse_chuid_guid(h("53 12 34 10") + bytes(16)) is None


def test_chuid_without_53_rejected():
    with pytest.raises(MalformedResponseError):
        parse_chuid_guid(h("34 10") + bytes(16))
