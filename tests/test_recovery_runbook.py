"""The runbook walked on lab scenarios: scan, run the recovery action, rescan, evaluate again."""

from __future__ import annotations

from test_recovery_support import make_lab
from tui.oath import list_otp_slots
from tui.recovery.puk_reset import puk_from_escrow, reset_pin_with_puk
from tui.recovery.reprovision import plan_reprovision, reprovision
from tui.recovery.unlock import AdminKeySource, admin_key_from_escrow, unlock_pin
from tui.recovery.verify import verify_pin
from tui.runbook import evaluate, findings_from_session
from tui.scan import scan_all
from tui.secret import Secret
from tui.session import TriageAnswers


def walk(lab, **triage):
    scan = scan_all(lab.backend, lab.session.settings)
    token = next(t for t in scan.tokens if t.token_id == lab.token.token_id)
    answers = TriageAnswers(**triage) if triage else None
    return evaluate(scan, token, triage=answers, findings=findings_from_session(lab.session, token))


def test_expired_certificate_scenario(tmp_path):
    lab = make_lab("cert-expired", tmp_path)

    result = walk(lab, trying="smart-card")

    assert result.pairs[-1] == ("3", "certificate_expired")
    assert result.not_lockout == "expired certificate"


def test_wrong_pin_then_puk_reset(tmp_path):
    lab = make_lab("wrong-pin", tmp_path)
    assert walk(lab, trying="smart-card").next_step == "4"

    verify_pin(lab.channel, lab.token, Secret("11223344"), lab.session)
    after_verify = walk(lab, trying="smart-card")
    assert after_verify.pairs[-1] == ("4", "wrong")
    assert after_verify.next_step == "6"

    reset_pin_with_puk(lab.channel, lab.token, lab.session, puk_from_escrow(lab.token, lab.session),
                       new_pin=Secret("58302716"))
    after_reset = walk(lab, trying="smart-card")
    assert after_reset.pairs[-1] == ("6", "reset")
    assert after_reset.stopped


def test_admin_key_on_file_scenario(tmp_path):
    lab = make_lab("admin-key-on-file", tmp_path)
    before = walk(lab)
    assert before.next_step == "6a"

    unlock_pin(lab.channel, lab.token, lab.session, admin_key_from_escrow(lab.token, lab.session),
               key_source=AdminKeySource.ESCROW, new_pin=Secret("58302716"))
    after = walk(lab)

    # The rescan shows the PIN healthy again; the path ends at the unlock, and
    # the next thing to do is closing the ticket, not another verify.
    assert after.pairs[-1] == ("6a", "unlocked")
    assert after.next_action == "ticket"
    assert findings_from_session(lab.session, lab.token).unlock == "unlocked"


def test_crescendo_no_admin_key_scenario(tmp_path):
    result = walk(make_lab("crescendo-no-admin-key", tmp_path))

    assert result.pairs[-1] == ("6a", "no_admin_key")
    assert result.next_step == "10"


def test_yubikey_all_blocked_reprovisioned(tmp_path):
    lab = make_lab("yubikey-all-blocked", tmp_path)
    assert walk(lab).next_step == "10"
    plan = plan_reprovision(lab.token, lab.scan, lab.session.settings)

    reprovision(lab.channel, lab.token, lab.scan, lab.session, confirmation=plan.confirmation, user_accepted=True,
                 new_pin=Secret("58302716"), new_puk=Secret("40917365"))

    assert findings_from_session(lab.session, lab.token).reprovisioned


def test_otp_drift_scenario(tmp_path):
    lab = make_lab("otp-drift", tmp_path)
    scan = scan_all(lab.backend, lab.session.settings)
    token = scan.tokens[0]
    token.otp = list_otp_slots(lab.channel, token.profile, lab.session.settings, is_lab=True)

    result = evaluate(scan, token, triage=TriageAnswers(trying="vpn-otp"))

    assert result.pairs[-1] == ("5", "present")
    assert result.not_lockout == "server side (HOTP counter drift)"
