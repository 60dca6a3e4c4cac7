"""Admin-key unlock on the lab Crescendo: one EXTERNAL AUTHENTICATE, then UNLOCK PIN, escrowed first."""

from __future__ import annotations

import pytest

from test_recovery_support import make_lab, versions
from tui.errors import PolicyError
from tui.escrow.records import SecretKind
from tui.lab.scenarios import LAB_STALE_ADMIN_KEY
from tui.recovery.common import ReadOnlyModeError, RecoveryRefusedError
from tui.recovery.unlock import AdminKeySource, UnlockOutcome, admin_key_from_escrow, unlock_pin, unsupported_reason
from tui.secret import Secret
from tui.settings import SiteSettings

EXTERNAL_AUTHENTICATE = 0x82
UNLOCK_PIN = 0x2C


def test_unlock_with_key_on_file(tmp_path):
    lab = make_lab("admin-key-on-file", tmp_path)
    key = admin_key_from_escrow(lab.token, lab.session)

    result = unlock_pin(lab.channel, lab.token, lab.session, key, key_source=AdminKeySource.ESCROW,
                        new_pin=Secret("58302716"))

    assert result.outcome is UnlockOutcome.UNLOCKED
    assert lab.key.store.pin.matches(b"58302716")
    assert not lab.key.store.pin.blocked
    assert len(lab.sent(EXTERNAL_AUTHENTICATE)) == 1
    [unlock] = lab.sent(UNLOCK_PIN)
    assert unlock.command.header == "00 2C 02 00"
    assert unlock.command.data == b"58302716"
    assert versions(lab, SecretKind.PIV_PIN) == ["pending", "applied"]
    assert ("piv-pin", 1, "pending") in lab.escrow_at_write


def test_pending_before_first_apdu(tmp_path):
    lab = make_lab("admin-key-on-file", tmp_path)
    key = admin_key_from_escrow(lab.token, lab.session)
    sent_before_escrow = []

    def watch(exchange):
        if lab.store.read_metadata(lab.token.token_id, SecretKind.PIV_PIN) is None:
            sent_before_escrow.append(exchange.command.name)

    lab.channel.observers.append(watch)
    unlock_pin(lab.channel, lab.token, lab.session, key, key_source=AdminKeySource.ESCROW, new_pin=Secret("58302716"))

    assert sent_before_escrow == []


def test_stale_key_fails_once(tmp_path):
    lab = make_lab("admin-key-on-file", tmp_path)
    stale = Secret(LAB_STALE_ADMIN_KEY.hex(), "admin key")

    result = unlock_pin(lab.channel, lab.token, lab.session, stale, key_source=AdminKeySource.TYPED,
                        new_pin=Secret("58302716"))

    assert result.outcome is UnlockOutcome.AUTH_FAILED
    assert "Do not retry" in result.verdict
    assert len(lab.sent(EXTERNAL_AUTHENTICATE)) == 1
    assert lab.sent(UNLOCK_PIN) == []
    assert lab.key.store.pin.blocked
    assert versions(lab, SecretKind.PIV_PIN) == ["pending", "failed"]

    # The right key is not tried automatically; a second unlock needs the override.
    with pytest.raises(RecoveryRefusedError, match="already rejected"):
        unlock_pin(lab.channel, lab.token, lab.session, admin_key_from_escrow(lab.token, lab.session),
                   key_source=AdminKeySource.ESCROW)
    assert len(lab.sent(EXTERNAL_AUTHENTICATE)) == 1

    result = unlock_pin(lab.channel, lab.token, lab.session, admin_key_from_escrow(lab.token, lab.session),
                        key_source=AdminKeySource.ESCROW, new_pin=Secret("58302716"), override=True)
    assert result.outcome is UnlockOutcome.UNLOCKED


def test_unlock_tries_exhausted(tmp_path):
    lab = make_lab("admin-key-on-file", tmp_path)
    lab.key.store.admin_key.unlock_tries_left = 0

    result = unlock_pin(lab.channel, lab.token, lab.session, admin_key_from_escrow(lab.token, lab.session),
                        key_source=AdminKeySource.ESCROW, new_pin=Secret("58302716"))

    assert result.outcome is UnlockOutcome.UNLOCK_BLOCKED
    assert lab.sent(UNLOCK_PIN) == []


def test_unlock_without_xauth_reports_tries(tmp_path):
    lab = make_lab("admin-key-on-file", tmp_path)
    # The lab ACA drops XAUTH1 before UNLOCK PIN: as if another program reset the card in between.
    original = lab.key.aca.process

    def drop_xauth(cla, ins, p1, p2, data, le):
        if ins == UNLOCK_PIN:
            lab.key.store.xauth1 = False
        return original(cla, ins, p1, p2, data, le)

    lab.key.aca.process = drop_xauth
    result = unlock_pin(lab.channel, lab.token, lab.session, admin_key_from_escrow(lab.token, lab.session),
                        key_source=AdminKeySource.ESCROW, new_pin=Secret("58302716"))

    assert result.outcome is UnlockOutcome.NOT_AUTHENTICATED
    assert result.unlock_tries_left == 2
    assert "2 unlock tries left" in result.verdict


def test_key_length_checked_before_escrow(tmp_path):
    lab = make_lab("admin-key-on-file", tmp_path)

    with pytest.raises(PolicyError, match="32 hex digits"):
        unlock_pin(lab.channel, lab.token, lab.session, Secret("0011"), key_source=AdminKeySource.TYPED)
    assert versions(lab, SecretKind.PIV_PIN) == []
    assert lab.sent(EXTERNAL_AUTHENTICATE) == []


def test_no_admin_key_refused(tmp_path):
    lab = make_lab("crescendo-no-admin-key", tmp_path)

    assert "XAUTH1 not initialised" in unsupported_reason(lab.token)
    with pytest.raises(RecoveryRefusedError, match="Step 10"):
        unlock_pin(lab.channel, lab.token, lab.session, Secret(bytes(16)), key_source=AdminKeySource.TYPED)
    assert lab.sent(EXTERNAL_AUTHENTICATE) == []


def test_piv_token_refused(tmp_path):
    lab = make_lab("pin-locked-puk", tmp_path)

    with pytest.raises(RecoveryRefusedError, match="Step 6"):
        unlock_pin(lab.channel, lab.token, lab.session, Secret(bytes(16)), key_source=AdminKeySource.TYPED)


def test_read_only_mode_no_unlock(tmp_path):
    lab = make_lab("admin-key-on-file", tmp_path, settings=SiteSettings(read_only=True))

    with pytest.raises(ReadOnlyModeError):
        unlock_pin(lab.channel, lab.token, lab.session, Secret(bytes(16)), key_source=AdminKeySource.TYPED)
    assert lab.sent(EXTERNAL_AUTHENTICATE) == []
    assert versions(lab, SecretKind.PIV_PIN) == []


def test_unlock_new_pin_follows_aca_policy(tmp_path):
    lab = make_lab("admin-key-on-file", tmp_path)

    with pytest.raises(PolicyError, match="digits 0-9"):
        unlock_pin(lab.channel, lab.token, lab.session, admin_key_from_escrow(lab.token, lab.session),
                   key_source=AdminKeySource.ESCROW, new_pin=Secret("ab3d5f7h"))
    assert lab.sent(EXTERNAL_AUTHENTICATE) == []
