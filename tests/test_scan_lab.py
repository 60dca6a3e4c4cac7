"""Scan values per lab scenario: the state shown to the technician after Steps 1 to 3."""

import pytest

from tui.backends import open_backend
from tui.errors import LabError
from tui.model import PcscProblem, PinState, Profile, Source
from tui.scan import next_step_for, scan_all
from tui.settings import SiteSettings


def scan(name, **kwargs):
    return scan_all(open_backend(name), SiteSettings(), **kwargs)


def test_wrong_pin_three_tries():
    result = scan("wrong-pin")
    token = result.tokens[0]
    assert token.smartcard.pin.remaining == 3
    assert token.smartcard.pin.state is PinState.OK
    assert token.smartcard.pin.source is Source.STATUS_QUERY
    assert next_step_for(token).startswith("Step 4")


def test_pin_locked_puk_blocked():
    token = scan("pin-locked-puk").tokens[0]
    assert token.smartcard.pin.remaining == 0
    assert token.smartcard.pin.state is PinState.BLOCKED
    assert token.smartcard.puk.state is PinState.NOT_READABLE
    assert token.smartcard.puk.remaining is None
    assert next_step_for(token).startswith("Step 6")


def test_no_pin_not_set():
    token = scan("no-pin").tokens[0]
    assert token.smartcard.pin.state is PinState.NOT_SET
    assert token.smartcard.pin.remaining is None
    assert "records" in next_step_for(token)


def test_two_tokens_two_ids():
    result = scan("two-tokens")
    assert [t.index for t in result.tokens] == [0, 1]
    assert result.tokens[0].token_id != result.tokens[1].token_id
    assert result.tokens[1].smartcard.pin.remaining == 5


def test_no_token_names_failed_check():
    result = scan("no-token")
    assert result.tokens == []
    assert result.problem is PcscProblem.NO_CARD
    assert result.readers
    step = next_step_for(None, result.problem)
    assert step.startswith("Step 1")
    assert "card in reader" in step


def test_yubikey_counts_from_metadata():
    token = scan("yubikey-healthy").tokens[0]
    assert token.profile is Profile.YUBIKEY
    assert token.smartcard.pin.source is Source.METADATA
    assert (token.smartcard.pin.remaining, token.smartcard.pin.total) == (3, 3)
    assert token.smartcard.puk.source is Source.METADATA
    assert token.smartcard.puk.remaining == 3
    assert token.smartcard.pin.is_default is True
    assert token.smartcard.serial == 99000001
    assert str(token.token_id) == "serial:99000001"
    assert token.cuid is None


def test_healthy_crescendo_state():
    token = scan("healthy").tokens[0]
    sc = token.smartcard
    assert token.profile is Profile.HID_CRESCENDO
    assert sc.aca_version == "3.0.3 build 1"
    assert sc.admin_key.key_type == "AES-128"
    assert (sc.pin_policy.min_length, sc.pin_policy.max_length, sc.pin_policy.numeric_only) == (6, 8, True)
    assert sc.pin.remaining == 8
    assert sc.puk.state is PinState.NOT_READABLE
    assert token.cuid_source == "cplc"
    assert len(token.cuid) == 20
    assert str(token.token_id) == f"cplc:{token.cuid}"


def test_lab_scenario_recorded():
    result = scan("healthy")
    assert result.lab_scenario == "healthy"
    assert result.tokens[0].is_lab


def test_apdu_count_matches_card():
    backend = open_backend("wrong-pin")
    result = scan_all(backend, SiteSettings())
    assert result.apdu_count == backend.apdu_count


def test_explain_reads_guid():
    token = scan("wrong-pin", explain=True).tokens[0]
    sources = [c.source for c in token.id_candidates]
    assert sources == ["cplc", "cplc-gp", "guid"]


def test_unknown_scenario_rejected():
    with pytest.raises(LabError):
        open_backend("no-such-scenario")


def present_slots(token):
    return [slot.label for slot in token.otp.present()]


def test_otp_drift_slots():
    token = scan("otp-drift").tokens[0]
    slot = token.otp.button_slot()
    assert present_slots(token) == ["OTP slot 1", "OTP slot 2", "OTP slot 3"]
    assert (slot.configured, slot.mode, slot.counter, slot.name) == (True, "HOTP", 1042, "VPN OTP")
    assert [s.configured for s in token.otp.slots[1:]] == [False, False]


def test_crescendo_without_oath_lists_no_slot():
    token = scan("xauth-stale").tokens[0]
    assert token.otp.present() == []
    assert token.otp.notes


def test_yubikey_otp_listing():
    token = scan("yubikey-healthy").tokens[0]
    assert token.otp.present() == []
    assert token.fido.pin.state.value == "not_supported"


def test_certificates_per_scenario():
    expected = {
        "healthy": ["9A"],
        "otp-drift": ["9A"],
        "xauth-stale": ["9A"],
        "wrong-pin": [],
        "pin-locked-puk": [],
        "yubikey-healthy": [],
    }
    for name, slots in expected.items():
        token = scan(name).tokens[0]
        assert [c.slot for c in token.certificates] == ["9A", "9C", "9D", "9E"], name
        assert [c.slot for c in token.certificates if c.present] == slots, name
        assert all(c.expired is False for c in token.certificates if c.present), name


def test_certificate_subject_per_chip():
    result = scan("two-tokens")
    assert [t.certificates[0].subject for t in result.tokens] == ["Lab Crescendo 7", "Lab Crescendo 8"]


def test_expired_certificate_scenario():
    import datetime as dt

    # Lab certificates expire 545 days after the scenario is built.
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1000)
    token = scan("healthy", clock=lambda: later).tokens[0]
    assert token.certificates[0].expired is True
    assert token.certificates[0].text().startswith("expired ")
    # An expired certificate is not a lockout: the PIN state is unchanged.
    assert token.smartcard.pin.state is PinState.OK


def test_fido_healthy_scenario():
    token = scan("healthy").tokens[0]
    assert token.fido.pin.state.value == "healthy"
    assert token.fido.pin.retries == 8
    assert token.fido.client_pin_option is True
