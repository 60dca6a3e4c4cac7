"""Step 4 on the lab key: exactly one VERIFY with the PIN the technician typed, and its branches."""

from __future__ import annotations

import pytest

from test_recovery_support import make_lab
from tui.errors import PolicyError
from tui.lab.scenarios import generic_pin
from tui.recovery.verify import (
    OPERATION,
    VerifyOutcome,
    VerifyRefusedError,
    validate_claimed_pin,
    verify_permission,
    verify_pin,
)
from tui.secret import Secret
from tui.settings import SiteSettings

VERIFY = 0x20


def pin_block(text: str) -> bytes:
    return text.encode() + b"\xff" * (8 - len(text))


def verifies_with_data(lab) -> list[bytes]:
    return lab.data_sent(VERIFY)


def test_verify_ok_on_healthy_crescendo(tmp_path):
    lab = make_lab("healthy", tmp_path)

    result = verify_pin(lab.channel, lab.token, Secret("13572468"), lab.session)

    assert result.outcome is VerifyOutcome.OK
    assert result.next_step == "7"
    assert "FIDO PIN" in result.verdict
    assert result.applet == "ACA"
    # The Crescendo's ACA VERIFY PIN, 00 20 00 00, with the PIN FF-padded.
    [exchange] = [e for e in lab.sent(VERIFY) if e.command.data]
    assert exchange.command.header == "00 20 00 00"
    assert exchange.command.data == pin_block("13572468")
    assert any("consecutive failures" in hint for hint in result.hints)


def test_verify_wrong_pin_one_attempt(tmp_path):
    settings = SiteSettings(documented_default_pin="000000")
    lab = make_lab("wrong-pin", tmp_path, settings=settings)

    result = verify_pin(lab.channel, lab.token, Secret("11223344"), lab.session)

    assert result.outcome is VerifyOutcome.WRONG
    assert result.tries_before == 3
    assert result.tries_after == 2
    assert result.next_step == "6"
    assert "do not guess again" in result.verdict
    assert "000000" in result.hints[0]
    # Exactly one VERIFY left with data, the typed PIN; the documented default was never sent.
    assert verifies_with_data(lab) == [pin_block("11223344")]
    assert lab.sent(VERIFY)[0].command.header == "00 20 00 80"
    assert lab.key.store.pin.tries_left == 2


def test_verify_blocked_on_last_try(tmp_path):
    lab = make_lab("wrong-pin", tmp_path)
    lab.key.store.pin = generic_pin("24681357", tries_left=1)
    lab.token.smartcard.pin.remaining = 1

    with pytest.raises(VerifyRefusedError, match="Only 1 try"):
        verify_pin(lab.channel, lab.token, Secret("11223344"), lab.session)
    assert verifies_with_data(lab) == []

    result = verify_pin(lab.channel, lab.token, Secret("11223344"), lab.session, override=True)

    assert result.outcome is VerifyOutcome.BLOCKED
    assert result.next_step == "6"
    assert verifies_with_data(lab) == [pin_block("11223344")]


def test_verify_not_defined(tmp_path):
    lab = make_lab("no-pin", tmp_path)
    # The scan saw "no PIN" and blocks Step 4; force the state to reach the 6A88 branch.
    permission = verify_permission(lab.token, lab.session)
    assert not permission.allowed
    assert "No PIN is defined" in permission.reason

    lab.token.smartcard.pin.state = lab.token.smartcard.pin.state.__class__.OK
    lab.token.smartcard.pin.remaining = 8
    result = verify_pin(lab.channel, lab.token, Secret("13572468"), lab.session)

    assert result.outcome is VerifyOutcome.NOT_DEFINED
    assert result.next_step is None
    assert "matches the user's record" in result.verdict


def test_second_verify_needs_override(tmp_path):
    lab = make_lab("wrong-pin", tmp_path)
    verify_pin(lab.channel, lab.token, Secret("11223344"), lab.session)

    permission = verify_permission(lab.token, lab.session)
    assert permission.allowed
    assert permission.needs_override
    with pytest.raises(VerifyRefusedError, match="already sent"):
        verify_pin(lab.channel, lab.token, Secret("24681357"), lab.session)

    assert verifies_with_data(lab) == [pin_block("11223344")]


def test_second_verify_with_override_sends_one_more(tmp_path):
    lab = make_lab("wrong-pin", tmp_path)
    verify_pin(lab.channel, lab.token, Secret("11223344"), lab.session)

    result = verify_pin(lab.channel, lab.token, Secret("24681357"), lab.session, override=True)

    assert result.outcome is VerifyOutcome.OK
    assert verifies_with_data(lab) == [pin_block("11223344"), pin_block("24681357")]


def test_attempt_history_survives_restart(tmp_path):
    lab = make_lab("wrong-pin", tmp_path)
    verify_pin(lab.channel, lab.token, Secret("11223344"), lab.session)

    # A new session over the same audit file (the tool restarted) still counts the attempt.
    again = make_lab("wrong-pin", tmp_path)

    assert verify_permission(again.token, again.session).needs_override


def test_refusals_are_audited_not_counted(tmp_path):
    lab = make_lab("wrong-pin", tmp_path)
    lab.token.smartcard.pin.remaining = 1
    with pytest.raises(VerifyRefusedError):
        verify_pin(lab.channel, lab.token, Secret("11223344"), lab.session)
    lab.token.smartcard.pin.remaining = 3

    outcomes = [r.outcome for r in lab.session.audit.attempts(lab.token.token_id, OPERATION)]

    assert outcomes == ["refused"]
    assert not verify_permission(lab.token, lab.session).needs_override


def test_blocked_pin_no_verify(tmp_path):
    lab = make_lab("pin-locked-puk", tmp_path)

    permission = verify_permission(lab.token, lab.session)

    assert not permission.allowed
    assert "Step 6" in permission.reason
    with pytest.raises(VerifyRefusedError):
        verify_pin(lab.channel, lab.token, Secret("31415926"), lab.session, override=True)
    assert verifies_with_data(lab) == []


def test_read_only_mode_no_verify(tmp_path):
    lab = make_lab("wrong-pin", tmp_path, settings=SiteSettings(read_only=True))

    assert not verify_permission(lab.token, lab.session).allowed
    with pytest.raises(VerifyRefusedError, match="Read-only"):
        verify_pin(lab.channel, lab.token, Secret("24681357"), lab.session, override=True)
    assert verifies_with_data(lab) == []


def test_audit_records_tries_before_after(tmp_path):
    lab = make_lab("wrong-pin", tmp_path)

    verify_pin(lab.channel, lab.token, Secret("11223344"), lab.session)

    records = lab.session.audit.attempts(lab.token.token_id, OPERATION)
    assert [r.outcome for r in records] == ["sending", "wrong"]
    assert records[1].status == "63C2"
    assert (records[1].tries_before, records[1].tries_after) == (3, 2)
    text = (tmp_path / "audit.jsonl").read_text()
    assert "11223344" not in text
    assert lab.session.events[-1].kind == "verify"


@pytest.mark.parametrize(("value", "message"), [
    ("", "No PIN"),
    ("\x1b[<35;10;5M", "control characters"),
    ("cccccbhbdfgvnhgnbrufinjnrkkbjvceevhcdchjtthe", "ModHex"),
    ("12345", "5 bytes"),
    ("123456789", "9 bytes"),
])
def test_claimed_pin_rejected(tmp_path, value, message):
    lab = make_lab("wrong-pin", tmp_path)

    problem = validate_claimed_pin(Secret(value), lab.token, lab.session.settings)

    assert problem is not None
    assert message in problem
    if value:
        assert value not in problem


def test_claimed_pin_crescendo_digits_only(tmp_path):
    lab = make_lab("healthy", tmp_path)

    assert "digits" in validate_claimed_pin(Secret("abcdef12"), lab.token, lab.session.settings)
    assert validate_claimed_pin(Secret("13572468"), lab.token, lab.session.settings) is None


def test_six_digits_accepted_as_pin(tmp_path):
    # The digit count of an HOTP code is a normal PIN length: not rejected.
    lab = make_lab("yubikey-healthy", tmp_path)

    assert validate_claimed_pin(Secret("123456"), lab.token, lab.session.settings) is None


def test_invalid_claim_sends_nothing(tmp_path):
    lab = make_lab("wrong-pin", tmp_path)

    with pytest.raises(PolicyError, match="ModHex"):
        verify_pin(lab.channel, lab.token, Secret("cccccbhbdfgvnhgnbrufinjnrkkbjvceevhcdchjtthe"), lab.session)
    assert lab.channel.exchanges == [e for e in lab.channel.exchanges if e.command.ins != VERIFY or not e.command.data]
    assert verifies_with_data(lab) == []


def test_verify_takes_token_lock(tmp_path):
    lab = make_lab("wrong-pin", tmp_path)

    with lab.session.locks.hold(lab.token.token_id, "PUK reset"):
        with pytest.raises(Exception, match="busy with PUK reset"):
            verify_pin(lab.channel, lab.token, Secret("24681357"), lab.session)
    assert verifies_with_data(lab) == []
