"""Step 10 on the lab key: the plan, the refusals, the wipe and the escrowed new PIN and PUK."""

from __future__ import annotations

import pytest

from test_recovery_support import make_lab, versions
from tui.escrow.records import SecretKind
from tui.recovery.common import ReadOnlyModeError, RecoveryRefusedError
from tui.recovery.reprovision import ResetAuth, ResetMethod, plan_reprovision, reprovision
from tui.secret import Secret
from tui.settings import SiteSettings

PIV_RESET = 0xFB
RESET_CARD = 0x38
WIPES = (PIV_RESET, RESET_CARD)


def wipes(lab) -> list:
    return [e for e in lab.channel.exchanges if e.command.ins in WIPES]


def test_yubikey_plan_ready_when_both_blocked(tmp_path):
    lab = make_lab("yubikey-all-blocked", tmp_path)

    plan = plan_reprovision(lab.token, lab.scan, lab.session.settings)

    assert plan.method is ResetMethod.YUBIKEY_PIV_RESET
    assert plan.ready
    assert plan.refusals == []
    assert plan.confirmation == str(lab.token.token_id)[-4:]
    assert any("PIV" in loss for loss in plan.losses)
    assert "FIDO2 credentials and the FIDO PIN" in plan.untouched
    assert "OATH and OTP slots" in plan.untouched


def test_yubikey_plan_puk_not_blocked(tmp_path):
    lab = make_lab("yubikey-pin-locked", tmp_path)

    plan = plan_reprovision(lab.token, lab.scan, lab.session.settings)

    assert not plan.ready
    assert "Step 6" in plan.precondition


def test_yubikey_plan_puk_blocked_pin_known(tmp_path):
    lab = make_lab("puk-blocked-pin-known", tmp_path)

    plan = plan_reprovision(lab.token, lab.scan, lab.session.settings)

    assert not plan.ready
    assert "set-retries" in plan.precondition
    assert "No wipe is needed" in plan.precondition


def test_crescendo_plan_lists_losses_and_grants(tmp_path):
    lab = make_lab("admin-key-on-file", tmp_path)

    plan = plan_reprovision(lab.token, lab.scan, lab.session.settings)

    assert plan.method is ResetMethod.CRESCENDO_RESET_CARD
    assert plan.ready
    assert ResetAuth.ADMIN_KEY_ON_FILE in plan.auth_options
    assert ResetAuth.FACTORY_ADMIN_KEY in plan.auth_options
    # The PIN is blocked, so it cannot grant RESET CARD.
    assert ResetAuth.PIN_TYPED not in plan.auth_options
    assert any("admin (XAUTH1) key" in loss for loss in plan.losses)
    assert any("OATH" in loss for loss in plan.losses)
    assert any("PSKC" in action for action in plan.follow_up)


def test_crescendo_without_grant_has_no_reset(tmp_path):
    lab = make_lab("crescendo-no-admin-key", tmp_path)

    plan = plan_reprovision(lab.token, lab.scan, lab.session.settings)

    assert not plan.ready
    assert plan.auth_options == []
    assert "vendor tool or the CMS" in plan.precondition


def test_generic_piv_has_no_reset(tmp_path):
    lab = make_lab("pin-locked-no-puk", tmp_path)

    plan = plan_reprovision(lab.token, lab.scan, lab.session.settings)

    assert plan.method is ResetMethod.NONE
    assert not plan.ready
    with pytest.raises(RecoveryRefusedError, match="no reset the tool can send"):
        reprovision(lab.channel, lab.token, lab.scan, lab.session, confirmation=plan.confirmation, user_accepted=True)


def test_yubikey_reprovision_end_to_end(tmp_path):
    lab = make_lab("yubikey-all-blocked", tmp_path)
    plan = plan_reprovision(lab.token, lab.scan, lab.session.settings)

    result = reprovision(lab.channel, lab.token, lab.scan, lab.session, confirmation=plan.confirmation,
                         user_accepted=True, new_pin=Secret("58302716"), new_puk=Secret("40917365"))

    assert result.wiped
    assert lab.key.store.pin.matches(b"58302716")
    assert lab.key.store.puk.matches(b"40917365")
    assert [e.command.header for e in wipes(lab)] == ["00 FB 00 00"]
    assert versions(lab, SecretKind.PIV_PIN) == ["pending", "applied"]
    assert versions(lab, SecretKind.PIV_PUK) == ["pending", "applied"]
    # Each CHANGE REFERENCE DATA left while its record was pending.
    assert ("piv-pin", 1, "pending") in lab.escrow_at_write
    assert ("piv-puk", 1, "pending") in lab.escrow_at_write
    assert result.follow_up
    kinds = [event.kind for event in lab.session.events]
    assert "reprovision" in kinds
    assert "follow-up" in kinds


def test_crescendo_reprovision_with_key_on_file(tmp_path):
    lab = make_lab("admin-key-on-file", tmp_path)
    plan = plan_reprovision(lab.token, lab.scan, lab.session.settings)

    result = reprovision(lab.channel, lab.token, lab.scan, lab.session, confirmation=plan.confirmation.lower(),
                         user_accepted=True, auth=ResetAuth.ADMIN_KEY_ON_FILE, new_pin=Secret("58302716"))

    assert result.wiped
    assert [e.command.header for e in wipes(lab)] == ["00 38 00 00"]
    assert lab.key.store.pin.matches(b"58302716")
    assert lab.key.store.admin_key is None
    assert versions(lab, SecretKind.PIV_PIN) == ["pending", "applied"]
    assert any("No PUK set" in step for step in result.steps)
    follow_ups = [e.summary for e in lab.session.events if e.kind == "follow-up"]
    assert any("PSKC" in text for text in follow_ups)
    assert any("IdP" in text for text in follow_ups)
    assert any("FIDO2" in text for text in follow_ups)


def test_crescendo_factory_key_rejected_once(tmp_path):
    lab = make_lab("admin-key-on-file", tmp_path)
    plan = plan_reprovision(lab.token, lab.scan, lab.session.settings)

    result = reprovision(lab.channel, lab.token, lab.scan, lab.session, confirmation=plan.confirmation,
                         user_accepted=True, auth=ResetAuth.FACTORY_ADMIN_KEY, new_pin=Secret("58302716"))

    assert not result.wiped
    assert "EXTERNAL AUTHENTICATE failed" in result.verdict
    assert wipes(lab) == []
    assert len([e for e in lab.channel.exchanges if e.command.ins == 0x82]) == 1
    assert [e.command.data for e in lab.channel.exchanges if e.command.ins == 0x82][0] != b""
    assert versions(lab, SecretKind.PIV_PIN) == []


def test_crescendo_typed_pin_grant(tmp_path):
    lab = make_lab("healthy", tmp_path)
    plan = plan_reprovision(lab.token, lab.scan, lab.session.settings)

    result = reprovision(lab.channel, lab.token, lab.scan, lab.session, confirmation=plan.confirmation,
                         user_accepted=True, auth=ResetAuth.PIN_TYPED, secret=Secret("13572468"),
                         new_pin=Secret("58302716"))

    assert result.wiped
    verifies = [e.command.data for e in lab.channel.exchanges if e.command.ins == 0x20 and e.command.data]
    assert verifies == [b"13572468"]


def test_wrong_confirmation_refused(tmp_path):
    lab = make_lab("yubikey-all-blocked", tmp_path)

    with pytest.raises(RecoveryRefusedError, match="last four characters"):
        reprovision(lab.channel, lab.token, lab.scan, lab.session, confirmation="0000", user_accepted=True)
    assert wipes(lab) == []


def test_user_acceptance_required(tmp_path):
    lab = make_lab("yubikey-all-blocked", tmp_path)
    plan = plan_reprovision(lab.token, lab.scan, lab.session.settings)

    with pytest.raises(RecoveryRefusedError, match="user accepts"):
        reprovision(lab.channel, lab.token, lab.scan, lab.session, confirmation=plan.confirmation, user_accepted=False)
    assert wipes(lab) == []


def test_two_tokens_refused(tmp_path):
    lab = make_lab("two-tokens", tmp_path)
    plan = plan_reprovision(lab.token, lab.scan, lab.session.settings)

    assert any("2 tokens are attached" in refusal for refusal in plan.refusals)
    assert all(token.reader in plan.refusals[0] for token in lab.scan.tokens)
    with pytest.raises(RecoveryRefusedError, match="2 tokens"):
        reprovision(lab.channel, lab.token, lab.scan, lab.session, confirmation=plan.confirmation, user_accepted=True,
                    auth=ResetAuth.PIN_TYPED, secret=Secret("00000000"))
    assert wipes(lab) == []


def test_read_only_mode_no_reprovision(tmp_path):
    lab = make_lab("yubikey-all-blocked", tmp_path, settings=SiteSettings(read_only=True))
    plan = plan_reprovision(lab.token, lab.scan, lab.session.settings)

    assert any("Read-only" in refusal for refusal in plan.refusals)
    with pytest.raises(ReadOnlyModeError):
        reprovision(lab.channel, lab.token, lab.scan, lab.session, confirmation=plan.confirmation, user_accepted=True)
    assert wipes(lab) == []


def test_crescendo_grant_must_be_chosen(tmp_path):
    lab = make_lab("admin-key-on-file", tmp_path)
    plan = plan_reprovision(lab.token, lab.scan, lab.session.settings)

    with pytest.raises(RecoveryRefusedError, match="choose how RESET CARD is granted"):
        reprovision(lab.channel, lab.token, lab.scan, lab.session, confirmation=plan.confirmation, user_accepted=True)
    assert lab.channel.exchanges == [e for e in lab.channel.exchanges if e.command.ins not in (0x82, 0x20, 0x38)]
