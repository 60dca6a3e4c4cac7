"""The runbook step table and its evaluation of Steps 1 to 3 against a scan."""

from __future__ import annotations

import pytest

from conftest import make_scan, make_token
from tui.model import Counter, PcscProblem, PinState, ScanResult, Source
from tui.runbook import STEPS, Finding, Outcome, Step, StepKind, evaluate, select_token


def test_table_has_steps_zero_to_eleven():
    # Deviation from the runbook: "6a", the admin-key unlock, sits between Steps 6 and 10.
    assert list(STEPS) == ["0", "1", "2", "3", "4", "5", "6", "6a", "7", "8", "9", "10", "11"]


@pytest.mark.parametrize(("step", "kind"), [
    ("0", StepKind.ASK), ("1", StepKind.READ_ONLY), ("2", StepKind.READ_ONLY), ("3", StepKind.READ_ONLY),
    ("4", StepKind.SINGLE_ATTEMPT), ("5", StepKind.READ_ONLY), ("6", StepKind.SINGLE_ATTEMPT),
    ("6a", StepKind.SINGLE_ATTEMPT), ("7", StepKind.READ_ONLY), ("8", StepKind.SINGLE_ATTEMPT),
    ("9", StepKind.DESTRUCTIVE), ("10", StepKind.DESTRUCTIVE), ("11", StepKind.SINGLE_ATTEMPT),
])
def test_step_kinds_follow_runbook(step, kind):
    assert STEPS[step].kind is kind


def test_every_outcome_leads_to_known_step():
    for step in STEPS.values():
        assert step.outcomes, f"Step {step.id} has no outcome"
        for outcome in step.outcomes:
            assert outcome.leads_to is None or outcome.leads_to in STEPS, (step.id, outcome.id)


def test_every_step_has_evaluator_and_action():
    for step in STEPS.values():
        assert step.evaluate is not None, step.id
        assert step.action, step.id


def test_unknown_outcome_names_step():
    with pytest.raises(KeyError, match="Step 3 has no outcome 'bogus'"):
        STEPS["3"].outcome("bogus")


def test_healthy_token_goes_to_step_four():
    result = evaluate(make_scan(make_token()))

    assert result.pairs == [("1", "detected"), ("2", "captured"), ("3", "tries_left")]
    assert result.current_step == "3"
    assert result.next_step == "4"
    assert not result.stopped
    assert "8/8 ok" in result.verdict
    assert "Step 4" in result.verdict


def test_path_summaries_carry_values():
    result = evaluate(make_scan(make_token()))

    assert result.path[0].summary == "Token detected (1 reader)"
    assert result.path[1].summary == "ID cplc:4790516856781A2B3C4D"
    assert result.path[2].summary == "Smart-card PIN 8/8 ok"


def test_blocked_pin_jumps_to_step_six():
    token = make_token(pin=Counter(PinState.BLOCKED, 0, 8, Source.STATUS_QUERY))

    result = evaluate(make_scan(token))

    assert result.pairs[-1] == ("3", "locked")
    assert result.next_step == "6"
    assert "0/8 BLOCKED" in result.verdict
    assert "PIV status query" in result.verdict


def test_zero_tries_counts_as_locked():
    # A count of 0 decides even if the state was not mapped to BLOCKED.
    token = make_token(pin=Counter(PinState.OK, 0, 8, Source.METADATA))

    assert evaluate(make_scan(token)).next_step == "6"


def test_no_token_stops_naming_check():
    scan = make_scan(problem=PcscProblem.NO_CARD)

    result = evaluate(scan)

    assert result.pairs == [("1", "none")]
    assert result.stopped
    assert result.next_step is None
    assert "Failed check: card in reader" in result.verdict
    assert "hardware or driver issue" in result.verdict


def test_no_readers_without_problem_names_readers():
    result = evaluate(ScanResult())

    assert "Failed check: readers" in result.verdict


def test_problem_detail_not_repeated():
    result = evaluate(make_scan(problem=PcscProblem.NO_CARD))

    assert result.verdict.count(PcscProblem.NO_CARD.message) == 1


def test_problem_detail_added_when_new():
    scan = make_scan(problem=PcscProblem.UNKNOWN)
    scan.problem_detail = "SCardListReaders returned 0x80100099"

    result = evaluate(scan)

    assert "(SCardListReaders returned 0x80100099)" in result.verdict


def test_service_down_names_service_check():
    result = evaluate(make_scan(problem=PcscProblem.NO_SERVICE))

    assert "Failed check: smart-card service" in result.verdict
    assert "pcscd" in result.verdict


def test_unreadable_token_stops_at_step_one():
    token = make_token(problem=PcscProblem.SHARING_VIOLATION)

    result = evaluate(make_scan(token))

    assert result.pairs == [("1", "unreadable")]
    assert "Failed check: reader access" in result.verdict


def test_several_tokens_targets_selected():
    first = make_token(0, reader="Reader A", token_id="cplc:AAAA")
    second = make_token(1, reader="Reader B", token_id="cplc:BBBB",
                        pin=Counter(PinState.BLOCKED, 0, 8, Source.METADATA))
    scan = make_scan(first, second)

    result = evaluate(scan, second)

    assert result.pairs[0] == ("1", "several")
    assert result.path[0].summary == "2 tokens, token 1 selected"
    assert result.path[1].summary == "ID cplc:BBBB"
    assert result.next_step == "6"
    assert "2 tokens are connected: confirm token 1 is the user's" in result.verdict


def test_several_tokens_default_to_first():
    scan = make_scan(make_token(0, token_id="cplc:AAAA"), make_token(1, reader="B", token_id="cplc:BBBB"))

    result = evaluate(scan)

    assert result.path[0].summary == "2 tokens, token 0 selected"


def test_missing_id_warns_about_escrow():
    token = make_token(token_id=None)

    result = evaluate(make_scan(token), id_sources={"piv": ["cplc", "guid"]})

    assert ("2", "missing") in result.pairs
    assert result.next_step == "4"
    assert "escrow will be refused later" in result.verdict
    assert "cplc, guid" in result.verdict


def test_pin_not_set_stops_with_id_check():
    token = make_token(pin=Counter(PinState.NOT_SET, source=Source.STATUS_QUERY))

    result = evaluate(make_scan(token))

    assert result.pairs[-1] == ("3", "not_set")
    assert result.stopped
    assert "cplc:4790516856781A2B3C4D" in result.verdict
    assert "matches the user's record" in result.verdict


def test_verified_count_unknown_goes_to_step_four():
    token = make_token(pin=Counter(PinState.VERIFIED_COUNT_UNKNOWN, source=Source.STATUS_QUERY))

    result = evaluate(make_scan(token))

    assert result.pairs[-1] == ("3", "verified_count_unknown")
    assert result.next_step == "4"
    assert "not readable" in result.verdict


def test_unreadable_tries_warn_before_verify():
    token = make_token(pin=Counter(PinState.NOT_READABLE, detail="status query answered 6D00"))

    result = evaluate(make_scan(token))

    assert result.pairs[-1] == ("3", "not_readable")
    assert "status query answered 6D00" in result.verdict
    assert "last try" in result.verdict


def test_no_smart_card_pin_goes_to_fido():
    token = make_token(pin=Counter(PinState.NOT_SUPPORTED))

    result = evaluate(make_scan(token))

    assert result.next_step == "7"


def test_select_token_by_id_then_reader():
    first = make_token(0, reader="A", token_id="cplc:AAAA")
    second = make_token(1, reader="B", token_id=None)
    scan = make_scan(first, second)

    assert select_token(scan, token_id="cplc:AAAA") is first
    assert select_token(scan, reader="B") is second
    assert select_token(scan, token_id="cplc:GONE") is first
    assert select_token(ScanResult()) is None


def test_table_is_extensible_with_evaluator():
    # A later step gets an evaluator by adding it to a copy of the table.
    steps = dict(STEPS)
    step_four = STEPS["4"]
    steps["4"] = Step(step_four.id, step_four.title, step_four.kind, step_four.operation,
                      step_four.outcomes + (Outcome("skipped", "Verify skipped in test", None, "Stopped at 4."),),
                      evaluate=lambda context: Finding("skipped"))

    result = evaluate(make_scan(make_token()), steps=steps)

    assert result.pairs[-1] == ("4", "skipped")
    assert result.verdict == "Stopped at 4."


# --- Step 0, the session's findings and the quick-reference table ----------------------------
#
# Three deliberate deviations from the runbook's tables are tested below:
# - passkey path: Step 4 is offered, not walked (it would spend a smart-card try on a FIDO complaint);
# - "VPN with cert-based auth" leads to Steps 4 and 11, not to "4, 10" (a full wipe);
# - an admin-key unlock branch, step "6a", sits between Steps 6 and 10 (Crescendo has no PUK command).

import datetime as dt

from tui.certs import CertificateInfo
from tui.fido.state import FidoPin, FidoPinState, FidoState, PinReason
from tui.model import AdminKey, Profile
from tui.oath import OtpApplet, OtpSlot, OtpSlots
from tui.runbook import RunbookFindings, findings_from_session
from tui.session import TriageAnswers


def fido(state: FidoPinState, retries: int | None = 8, reason: PinReason | None = None) -> FidoState:
    return FidoState(FidoPin(state, retries, reason=reason))


def otp_slots(*, configured: bool | None = True, mode: str | None = "HOTP") -> OtpSlots:
    slot = OtpSlot(OtpApplet.HID_OATH, "1", "A0000000792300", present=True, configured=configured, mode=mode,
                   digits=6, button_slot=True)
    return OtpSlots(Profile.HID_CRESCENDO, [slot])


def crescendo(**kwargs):
    token = make_token(profile=Profile.HID_CRESCENDO, **kwargs)
    token.smartcard.admin_key = AdminKey(True, "AES-128")
    return token


def run(token, *, trying=None, saw=None, tap=None, **findings):
    triage = TriageAnswers(trying=trying, saw=saw, tap=tap) if (trying or saw or tap) else None
    return evaluate(make_scan(token), token, triage=triage, findings=RunbookFindings(**findings))


BLOCKED = Counter(PinState.BLOCKED, 0, 8, Source.STATUS_QUERY)


# Row: "I can't log in with my key for anything" -> Step 1 -> 2 -> 3, follow the flow from Step 3.
def test_row_anything_follows_step_three():
    result = run(make_token(), trying="cant-say")

    assert result.pairs == [("0", "unknown"), ("1", "detected"), ("2", "captured"), ("3", "tries_left")]
    assert result.next_step == "4"
    assert result.action == "verify"


# Row: "My PIN doesn't work for smart card login" -> Step 3 -> 4 -> Step 6 if a PUK exists, else Step 10.
def test_row_smart_card_pin_to_step_six():
    result = run(make_token(), trying="smart-card", verify="wrong", verify_tries=2)

    assert result.pairs[-2:] == [("3", "tries_left"), ("4", "wrong")]
    assert result.path[-1].summary == "Wrong PIN, 2 tries left"
    assert result.next_step == "6"
    assert result.action == "unblock_puk"
    assert result.applet == "smart card"
    assert result.offers("10")


def test_row_smart_card_no_puk_to_step_ten():
    result = run(make_token(), trying="smart-card", verify="wrong", puk_reset="not_defined")

    assert result.pairs[-1] == ("6", "no_puk")
    assert result.next_step == "10"
    assert result.action == "reprovision"


def test_row_smart_card_wrong_puk_to_step_ten():
    result = run(make_token(pin=BLOCKED), trying="smart-card", puk_reset="wrong_puk", puk_tries=9)

    assert result.pairs[-1] == ("6", "wrong_puk")
    assert result.path[-1].summary == "Wrong PUK, 9 PUK tries left"
    assert result.next_step == "10"


def test_row_smart_card_reset_resolves():
    result = run(make_token(pin=BLOCKED), trying="smart-card", puk_reset="reset")

    assert result.pairs[-1] == ("6", "reset")
    assert result.stopped
    assert result.applet == "smart card"
    assert any(offer.action == "set_puk" for offer in result.offered)


# Row: "My key won't work for passkey logins" -> Step 3 -> (4 offered) -> 7 -> Step 8 or 9.
def test_row_passkey_offers_verify_not_walked():
    result = run(make_token(), trying="passkey")

    assert result.pairs[-1] == ("3", "fido_complaint")
    assert "4" not in [step for step, _ in result.pairs]
    assert result.next_step == "7"
    assert result.action == "fido"
    assert result.offers("4")


def test_row_passkey_healthy_fido_to_step_eight():
    token = make_token()
    token.fido = fido(FidoPinState.HEALTHY)

    result = run(token, trying="passkey")

    assert result.pairs[-1] == ("7", "pin_set")
    assert result.next_step == "8"


def test_row_passkey_blocked_fido_to_step_nine():
    token = make_token()
    token.fido = fido(FidoPinState.PERMANENTLY_BLOCKED, 0)

    result = run(token, trying="passkey")

    assert result.pairs[-1] == ("7", "blocked")
    assert result.next_step == "9"
    assert result.applet == "FIDO"


def test_row_passkey_listing_blocked_to_step_nine():
    token = make_token()
    token.fido = fido(FidoPinState.HEALTHY)

    result = run(token, trying="passkey", fido_listing="blocked")

    assert result.pairs[-2:] == [("7", "pin_set"), ("8", "blocked")]
    assert result.next_step == "9"


def test_passkey_with_blocked_smart_card_offers_step_six():
    result = run(make_token(pin=BLOCKED), trying="passkey")

    assert result.next_step == "7"
    assert result.offers("6")
    assert not result.offers("4")
    assert "blocked too" in result.verdict


# Row: "My OTP code is rejected" -> Step 5 -> HOTP drift.
def test_row_otp_drift_verdict():
    token = crescendo()
    token.otp = otp_slots()

    result = run(token, trying="vpn-otp")

    assert result.pairs[-2:] == [("3", "otp_complaint"), ("5", "present")]
    assert result.stopped
    assert result.applet == "OATH"
    assert result.not_lockout == "server side (HOTP counter drift)"
    assert "drift" in result.verdict


def test_otp_not_listed_yet_recommends_step_five():
    result = run(crescendo(), trying="vpn-otp")

    assert result.next_step == "5"
    assert result.action == "otp"


def test_otp_slot_missing_reprovision():
    token = crescendo()
    token.otp = otp_slots(configured=False)

    result = run(token, trying="vpn-otp")

    assert result.pairs[-1] == ("5", "missing")
    assert "PSKC" in result.verdict


def test_otp_with_blocked_smart_card_goes_to_step_six():
    token = make_token(pin=BLOCKED)
    token.otp = otp_slots()

    result = run(token, trying="vpn-otp")

    assert result.pairs[-1] == ("3", "locked")
    assert result.next_step == "6"


# Row: "My tap code stopped working" -> clarify with the tap-action note.
def test_row_tap_types_code_goes_to_otp():
    assert run(crescendo(), trying="tap", tap="types-code").next_step == "5"


def test_row_tap_touch_box_goes_to_fido():
    assert run(crescendo(), trying="tap", tap="touch-box").next_step == "7"


def test_row_tap_nothing_otp_first_then_fido():
    token = crescendo()
    token.otp = otp_slots(configured=False)

    result = run(token, trying="tap", tap="nothing")

    assert result.pairs[-1] == ("5", "missing_try_fido")
    assert result.next_step == "7"


def test_tap_nothing_codes_fine_offers_fido():
    token = crescendo()
    token.otp = otp_slots()

    result = run(token, trying="tap", tap="nothing")

    assert result.pairs[-1] == ("5", "present")
    assert result.offers("7")


# Row: "Smart card login fine, but VPN auth fails" -> Step 11.
def test_row_other_system_goes_to_step_eleven():
    result = run(crescendo(), trying="other-system")

    assert result.pairs[-1] == ("3", "external_auth_complaint")
    assert result.next_step == "11"
    assert result.action == "xauth"
    assert result.offers("4")


def test_step_eleven_failed_names_external_auth():
    result = run(crescendo(), trying="other-system", xauth="failed")

    assert result.pairs[-1] == ("11", "failed")
    assert result.applet == "external auth"


# Step 0 table row "VPN with cert-based auth": Steps 4 and 11 (deviation from "4, 10").
def test_vpn_certificate_goes_to_four_then_eleven():
    before = run(crescendo(), trying="vpn-cert")
    after = run(crescendo(), trying="vpn-cert", verify="ok")

    assert before.next_step == "4"
    assert after.pairs[-1] == ("4", "ok_external_auth")
    assert after.next_step == "11"
    assert "10" not in [step for step, _ in after.pairs]


# Step 4 branches.
def test_verify_ok_goes_to_fido():
    result = run(make_token(), trying="smart-card", verify="ok")

    assert result.pairs[-1] == ("4", "ok")
    assert result.next_step == "7"
    assert "FIDO PIN" in result.verdict


def test_verify_blocked_goes_to_step_six():
    assert run(make_token(), verify="blocked").next_step == "6"


def test_verify_not_defined_stops():
    result = run(make_token(), verify="not_defined")

    assert result.pairs[-1] == ("4", "not_set")
    assert result.stopped


# Deviation: the admin-key unlock branch between Steps 6 and 10.
def test_crescendo_locked_goes_to_admin_unlock():
    result = run(crescendo(pin=BLOCKED), trying="smart-card")

    assert result.pairs[-1] == ("6", "no_puk_command")
    assert result.next_step == "6a"
    assert result.action == "admin_unlock"
    assert result.offers("10")


def test_crescendo_without_admin_key_goes_to_step_ten():
    token = crescendo(pin=BLOCKED)
    token.smartcard.admin_key = AdminKey(False)

    result = run(token)

    assert result.pairs[-1] == ("6a", "no_admin_key")
    assert result.next_step == "10"


@pytest.mark.parametrize(("unlock", "outcome", "next_step"), [
    ("unlocked", "unlocked", None), ("auth_failed", "auth_failed", "10"), ("unlock_blocked", "unlock_blocked", "10"),
])
def test_admin_unlock_branches(unlock, outcome, next_step):
    result = run(crescendo(pin=BLOCKED), unlock=unlock)

    assert result.pairs[-1] == ("6a", outcome)
    assert result.next_step == next_step


def test_yubikey_blocked_puk_skips_to_step_ten():
    token = make_token(profile=Profile.YUBIKEY, pin=BLOCKED, puk=Counter(PinState.BLOCKED, 0, 3, Source.METADATA))

    result = run(token)

    assert result.pairs[-1] == ("6", "puk_blocked")
    assert result.next_step == "10"


def test_reprovisioned_stops():
    token = make_token(pin=BLOCKED)

    result = run(token, puk_reset="wrong_puk", reprovisioned=True)

    assert result.pairs[-1] == ("10", "done")
    assert result.stopped


# Expired login certificate: not a lockout.
def test_expired_certificate_not_lockout():
    token = make_token()
    token.certificates = [CertificateInfo("9A", True, "CN=Lab", dt.datetime(2023, 1, 1), dt.datetime(2024, 1, 31), True)]

    result = run(token, trying="smart-card")

    assert result.pairs[-1] == ("3", "certificate_expired")
    assert result.stopped
    assert result.not_lockout == "expired certificate"
    assert result.verdict.startswith("Not a lockout: expired certificate")
    assert "2024-01-31" in result.verdict


def test_expired_certificate_with_blocked_pin_still_locked():
    token = make_token(pin=BLOCKED)
    token.certificates = [CertificateInfo("9A", True, None, None, dt.datetime(2024, 1, 31), True)]

    assert run(token).pairs[-1] == ("3", "locked")


def test_expired_signature_certificate_ignored():
    token = make_token()
    token.certificates = [CertificateInfo("9C", True, None, None, dt.datetime(2024, 1, 31), True)]

    assert run(token).pairs[-1] == ("3", "tries_left")


# FIDO states (Step 7, read-only).
@pytest.mark.parametrize(("state", "reason", "outcome", "next_step"), [
    (FidoPinState.NOT_SET, PinReason.CLIENT_PIN_FALSE, "no_pin", None),
    (FidoPinState.HEALTHY, PinReason.RETRIES_LEFT, "pin_set", "8"),
    (FidoPinState.TEMPORARILY_BLOCKED, PinReason.POWER_CYCLE_STATE, "temporarily_blocked", None),
    (FidoPinState.PERMANENTLY_BLOCKED, PinReason.RETRIES_ZERO, "blocked", "9"),
    (FidoPinState.NOT_SUPPORTED, PinReason.CLIENT_PIN_OPTION_MISSING, "unsupported", None),
    (FidoPinState.NOT_SUPPORTED, PinReason.NO_AUTHENTICATOR, "no_authenticator", None),
])
def test_fido_states(state, reason, outcome, next_step):
    token = make_token()
    token.fido = fido(state, reason=reason)

    result = run(token, trying="passkey")

    assert result.pairs[-1] == ("7", outcome)
    assert result.next_step == next_step


def test_fido_not_set_is_relying_party():
    token = crescendo()
    token.fido = fido(FidoPinState.NOT_SET)

    result = run(token, trying="passkey")

    assert result.not_lockout == "relying-party side"
    assert "no FIDO lockout is possible" in result.verdict
    assert result.offers("11")


def test_fido_temporary_block_says_reinsert():
    token = make_token()
    token.fido = fido(FidoPinState.TEMPORARILY_BLOCKED, 5)

    result = run(token, trying="passkey")

    assert "re-insert" in result.verdict
    assert result.applet == "FIDO"


def test_smart_card_and_fido_fine_offers_step_eleven():
    token = crescendo()
    token.fido = fido(FidoPinState.HEALTHY)

    result = run(token, trying="smart-card", verify="ok", fido_listing="listed")

    assert result.pairs[-3:] == [("4", "ok"), ("7", "pin_set"), ("8", "listed")]
    assert result.offers("11")
    assert result.not_lockout == "relying-party side"


def test_saw_code_wrong_means_otp():
    result = run(crescendo(), saw="code-wrong")

    assert result.pairs[0] == ("0", "otp")
    assert result.next_step == "5"


def test_no_triage_keeps_step_zero_off_path():
    result = run(make_token())

    assert result.pairs[0] == ("1", "detected")


def test_findings_from_audit(tmp_path):
    from tui.audit import AuditTrail
    from tui.session import Session
    from tui.settings import SiteSettings

    token = make_token()
    audit = AuditTrail(tmp_path / "audit.jsonl", lab=True)
    session = Session(SiteSettings(), audit)
    audit.record("verify-pin", "sending", token_id=token.token_id)
    audit.record("verify-pin", "wrong", token_id=token.token_id, tries_after=2)
    audit.record("puk-reset", "refused", token_id=token.token_id)

    findings = findings_from_session(session, token)

    assert findings.verify == "wrong"
    assert findings.verify_tries == 2
    assert findings.puk_reset is None
    assert run(token, verify=findings.verify).next_step == "6"


# After a recovery the rescan shows a usable PIN; the path still ends at the recovery step.
HEALTHY_AFTER_RESET = Counter(PinState.OK, 3, 3, Source.STATUS_QUERY)


def test_puk_reset_then_rescan_shows_recovery_done():
    result = run(make_token(pin=HEALTHY_AFTER_RESET), trying="smart-card", puk_reset="reset", puk_tries=10)

    assert result.pairs[-2:] == [("3", "recovered"), ("6", "reset")]
    assert "4" not in [step for step, _ in result.pairs]
    assert result.stopped
    assert result.next_action == "ticket"
    assert result.resolved_by == "PUK reset"
    assert result.applet == "smart card"
    assert result.verdict.startswith("Smart-card PIN was locked; reset with the PUK; "
                                     "the user must change the new PIN at next login.")
    assert not result.offers("4")


def test_admin_unlock_then_rescan_shows_recovery_done():
    result = run(crescendo(pin=HEALTHY_AFTER_RESET), trying="smart-card", unlock="unlocked", unlock_tries=5)

    assert result.pairs[-3:] == [("3", "recovered"), ("6", "no_puk_command"), ("6a", "unlocked")]
    assert result.next_action == "ticket"
    assert result.resolved_by == "admin-key unlock"
    assert "Smart-card PIN was locked; unlocked with the admin key" in result.verdict


def test_reprovision_then_rescan_shows_step_ten_done():
    result = run(make_token(pin=HEALTHY_AFTER_RESET), trying="smart-card", reprovisioned=True)

    assert result.pairs[-2:] == [("3", "reprovisioned"), ("10", "done")]
    assert result.next_action == "ticket"
    assert result.resolved_by == "full reprovision"
    assert "reprovisioned with a new PIN and PUK" in result.verdict


def test_wrong_puk_then_reprovision_keeps_step_six():
    result = run(make_token(pin=HEALTHY_AFTER_RESET), puk_reset="wrong_puk", puk_tries=9, reprovisioned=True)

    assert result.pairs[-3:] == [("3", "recovered"), ("6", "wrong_puk"), ("10", "done")]
    assert result.resolved_by == "full reprovision"


def test_wrong_verify_then_reset_names_unknown_pin():
    result = run(make_token(pin=HEALTHY_AFTER_RESET), trying="smart-card", verify="wrong", verify_tries=2,
                 puk_reset="reset")

    assert result.pairs[-3:] == [("3", "tries_left"), ("4", "wrong"), ("6", "reset")]
    assert result.verdict.startswith("The user did not know the smart-card PIN; reset with the PUK")
    assert result.next_action == "ticket"


def test_failed_reset_is_not_recovery():
    result = run(make_token(pin=BLOCKED), puk_reset="wrong_puk", puk_tries=9)

    assert result.resolved_by is None
    assert result.next_step == "10"
    assert result.next_action == "reprovision"


def test_verify_ok_carries_smart_card_fine():
    token = make_token()
    token.fido = fido(FidoPinState.HEALTHY)

    result = run(token, trying="smart-card", verify="ok")

    assert result.pairs[-2:] == [("4", "ok"), ("7", "pin_set")]
    assert result.verdict.startswith("Smart card fine: the PIN verified (9000).")
    assert "Step 8" in result.verdict
    assert not result.offers("4")


def test_verify_ok_without_fido_state_points_to_step_seven():
    result = run(make_token(), trying="smart-card", verify="ok")

    assert result.verdict.startswith("Smart card fine")
    assert "FIDO PIN" in result.verdict
    assert result.next_step == "7"
    assert result.next_action == "fido"


def test_passkey_verify_walks_step_four():
    # Once the offered verify ran, the path shows it and does not offer it again.
    result = run(make_token(), trying="passkey", verify="ok")

    assert result.pairs[-2:] == [("3", "tries_left"), ("4", "ok")]
    assert result.next_step == "7"
    assert not result.offers("4")


def test_passkey_recovery_beside_fido_path_named():
    result = run(make_token(pin=HEALTHY_AFTER_RESET), trying="passkey", puk_reset="reset")

    assert result.pairs[-1] == ("3", "fido_complaint")
    assert "recovered in this session" in result.verdict
    assert not result.offers("4")


def test_unknown_puk_state_warns_step_ten():
    token = make_token(pin=BLOCKED, puk=Counter(PinState.NOT_READABLE, None, None, Source.NONE))

    result = run(token, trying="smart-card")

    assert result.next_step == "6"
    assert "PUK state unknown" in result.verdict
    assert "Step 10 follows" in result.verdict
    offer = next(offer for offer in result.offered if offer.step == "10")
    assert "PUK state unknown" in offer.reason


def test_readable_puk_state_no_unknown_warning():
    token = make_token(pin=BLOCKED, puk=Counter(PinState.OK, 3, 3, Source.METADATA))

    result = run(token, trying="smart-card")

    assert "PUK state unknown" not in result.verdict
    assert result.offers("10")


def test_hardware_stop_next_action_is_rescan():
    result = evaluate(ScanResult(problem=PcscProblem.NO_READERS))

    assert result.stopped
    assert result.next_action == "rescan"


def test_findings_from_events_after_recovery(tmp_path):
    from tui.audit import AuditTrail
    from tui.session import Session
    from tui.settings import SiteSettings

    token = make_token(pin=HEALTHY_AFTER_RESET)
    session = Session(SiteSettings(), AuditTrail(tmp_path / "audit.jsonl", lab=True))
    session.add_event("puk-reset", "Step 6 PUK reset: reset", token_id=token.token_id, resolved_by="PUK reset")
    session.add_event("fido-reset", "FIDO reset", token_id=token.token_id, resolved_by="FIDO reset")
    session.add_event("puk-reset", "other token", token_id="cplc:00", resolved_by="PUK reset")

    findings = findings_from_session(session, token)

    assert findings.puk_reset == "reset"
    assert findings.fido_reset is True
    assert findings.unlock is None
    assert run(token, puk_reset=findings.puk_reset).resolved_by == "PUK reset"


def test_findings_from_audit_reset_outcome(tmp_path):
    from tui.audit import AuditTrail
    from tui.session import Session
    from tui.settings import SiteSettings

    token = make_token(pin=HEALTHY_AFTER_RESET)
    audit = AuditTrail(tmp_path / "audit.jsonl", lab=True)
    session = Session(SiteSettings(), audit)
    audit.record("puk-reset", "reset", token_id=token.token_id, tries_after=10)

    findings = findings_from_session(session, token)

    assert findings.puk_reset == "reset"
    assert findings.puk_tries == 10
    assert run(token, puk_reset=findings.puk_reset).pairs[-1] == ("6", "reset")


def test_blocked_fido_found_without_step0_goes_to_fido():
    from tui.lab.backend import LabBackend
    from tui.runbook import evaluate
    from tui.scan import scan_all
    from tui.settings import SiteSettings

    for scenario in ("fido-blocked", "fido-auth-blocked"):
        result = scan_all(LabBackend(scenario), SiteSettings())
        token = result.tokens[0]
        runbook = evaluate(result, token)
        assert ("3", "fido_locked_found") in runbook.pairs, scenario
        assert ("4", "ok") not in runbook.pairs, scenario
        assert runbook.next_step != "4", scenario
        assert runbook.applet == "FIDO", scenario


def test_healthy_fido_keeps_step4_without_step0():
    from tui.lab.backend import LabBackend
    from tui.runbook import evaluate
    from tui.scan import scan_all
    from tui.settings import SiteSettings

    result = scan_all(LabBackend("wrong-pin"), SiteSettings())
    assert evaluate(result, result.tokens[0]).next_step == "4"


def test_step_taken_carries_problem_flag():
    locked = make_token(pin=Counter(PinState.BLOCKED, 0, 8, Source.STATUS_QUERY))
    result = evaluate(make_scan(locked))

    assert [(taken.step, taken.problem) for taken in result.path] == [("1", False), ("2", False), ("3", True)]


@pytest.mark.parametrize(("step", "outcome"), [
    ("3", "locked"), ("3", "certificate_expired"), ("4", "wrong"), ("6", "no_puk_command"),
    ("6", "puk_blocked"), ("6a", "no_admin_key"), ("7", "blocked"), ("7", "temporarily_blocked"),
    ("7", "unsupported"), ("8", "wrong"), ("11", "failed"),
])
def test_bad_outcomes_marked_problem(step, outcome):
    assert STEPS[step].outcome(outcome).problem is True


@pytest.mark.parametrize(("step", "outcome"), [
    ("1", "detected"), ("2", "captured"), ("3", "tries_left"), ("4", "ok"), ("6", "reset"),
    ("6a", "unlocked"), ("7", "pin_set"), ("7", "no_pin"), ("8", "listed"), ("9", "reset"), ("10", "done"),
    ("11", "ok"),
])
def test_good_outcomes_not_problem(step, outcome):
    assert STEPS[step].outcome(outcome).problem is False
