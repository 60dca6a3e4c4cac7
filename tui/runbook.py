"""The lockout runbook as a declarative step table, and its evaluation against a scan and a session.

Each step has an id ("0".."11", plus "6a" for the admin-key unlock), a title,
a kind (how much it may cost the user), the operation it performs and its
possible outcomes, each naming the step it leads to (`None` stops the
runbook). An evaluator reads the scan, the Step 0 answers and what the
session found (`RunbookFindings`) and returns the outcome, or None while the
step has not run: that step then becomes the recommended next step.

Steps 1 to 3 always run first, whatever Step 0 says, because they are
read-only and Step 1 can stop the runbook. Step 0 sets the focus that Step 3
routes by.

The order of the table is the runbook's rule: read-only first, one deliberate
verify next, destructive recovery last. Three deviations from the runbook's
tables are deliberate:
- On the passkey path Step 4 is offered, not walked: a verify spends a
  smart-card try to answer a FIDO complaint, so it runs only if the
  technician chooses it. The quick-reference row says "Step 3 -> 4 -> 7".
- "VPN with cert-based auth" leads to Steps 4 and 11. The Step 0 table says
  "Steps 4, 10", which would send a VPN complaint straight to a full wipe.
- An admin-key unlock branch ("6a") sits between Steps 6 and 10: an HID
  Crescendo has no public PUK command, and its ACA unlocks the PIN with the
  admin key (XAUTH1, then UNLOCK PIN), which destroys nothing.
Step 6's text sends a wrong PUK to "Step 8"; the outcome table here sends it
to Step 10, the full reprovision, which is what its Decide line says.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from tui.model import PcscProblem, PinState, Profile, ScanResult, TokenScan

class StepKind(str, enum.Enum):
    """Cost class of a step, shown next to its title."""

    ASK = "ask"
    READ_ONLY = "read-only"
    SINGLE_ATTEMPT = "single-attempt"
    DESTRUCTIVE = "destructive"


# Applets a verdict names as locked (or as the one the complaint is about).
SMART_CARD = "smart card"
FIDO = "FIDO"
OATH = "OATH"
EXTERNAL_AUTH = "external auth"

# Reasons a verdict gives for "not a lockout".
USER_ERROR = "user error"
RELYING_PARTY = "relying-party side"
EXPIRED_CERTIFICATE = "expired certificate"
SERVER_SIDE = "server side (HOTP counter drift)"
HARDWARE = "hardware or driver issue"


@dataclass(frozen=True)
class Outcome:
    """One possible result of a step.

    `summary`, `verdict` and `notice` are `str.format` templates filled with
    the facts the evaluator found. `leads_to` is the next step id, `None`
    when the runbook stops here. `notice` is a warning that stays in the
    verdict even though the runbook goes on. `applet` names the locked applet
    this outcome establishes, and `not_lockout` gives the reason it is no lockout at all.
    `focus` (Step 0 only) lists the steps the complaint points to.
    `resolves` names the recovery that settled the lockout (for example
    "PUK reset"), and `carry` is a finding that stays in front of the
    verdicts of the steps after this one. `problem` is True when the step
    found something wrong (a blocked PIN, an expired certificate, a missing
    command), so the runbook panel marks it apart from a step that found
    nothing wrong.
    """

    id: str
    summary: str
    leads_to: str | None
    verdict: str = ""
    notice: str = ""
    applet: str = ""
    not_lockout: str = ""
    focus: str = ""
    resolves: str = ""
    carry: str = ""
    problem: bool = False


@dataclass(frozen=True)
class Finding:
    """An evaluator's result: the outcome id and the facts for its templates."""

    outcome: str
    facts: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class OfferedStep:
    """A step the runbook offers but does not walk: the technician may run it deliberately."""

    step: str
    action: str
    reason: str


@dataclass
class RunbookFindings:
    """What this session learnt beyond the scan, for the steps after Step 3.

    Each field is None until its step ran: `verify` is a
    `tui.recovery.verify.VerifyOutcome` value, `puk_reset` a
    `tui.recovery.puk_reset.PukResetOutcome` value, `unlock` a
    `tui.recovery.unlock.UnlockOutcome` value, `fido_listing` one of
    "listed", "wrong", "blocked" (Step 8), `fido_reset` True once Step 9 ran,
    `xauth` a `tui.xauth.XauthOutcome` value, `reprovisioned` True once
    Step 10 wiped the token. The FIDO state and OTP listing come from the
    scan (`TokenScan.fido`, `TokenScan.otp`).
    """

    verify: str | None = None
    verify_tries: int | None = None
    puk_reset: str | None = None
    puk_tries: int | None = None
    unlock: str | None = None
    unlock_tries: int | None = None
    fido_listing: str | None = None
    fido_reset: bool = False
    xauth: str | None = None
    reprovisioned: bool = False


@dataclass
class RunbookContext:
    """Evaluator input: the scan, the selected token, the Step 0 answers and the session's findings."""

    scan: ScanResult
    token: TokenScan | None
    id_sources: Mapping[str, list[str]] | None = None
    triage: object | None = None  # tui.session.TriageAnswers
    findings: RunbookFindings = field(default_factory=RunbookFindings)
    focus: str = ""  # the Step 0 focus, e.g. "passkey"; "" when Step 0 was not answered


# An evaluator returns None while its step has not run yet.
Evaluator = Callable[[RunbookContext], "Finding | None"]


@dataclass(frozen=True)
class Step:
    """One runbook step: what it does, what it may cost and where each outcome leads.

    `action` names the UI action that runs the step (for example "verify"),
    so the runbook panel can show its key once that action exists.
    """

    id: str
    title: str
    kind: StepKind
    operation: str
    outcomes: tuple[Outcome, ...]
    evaluate: Evaluator | None = None
    action: str | None = None

    def outcome(self, outcome_id: str) -> Outcome:
        """Return the outcome with `outcome_id`; raise KeyError naming the step and the id."""
        for outcome in self.outcomes:
            if outcome.id == outcome_id:
                return outcome
        raise KeyError(f"Step {self.id} has no outcome {outcome_id!r}; known: {', '.join(o.id for o in self.outcomes)}")


@dataclass(frozen=True)
class StepTaken:
    """One step on the path taken: the step id, the outcome id, the outcome in words and whether it is a problem."""

    step: str
    outcome: str
    summary: str
    problem: bool = False


@dataclass
class RunbookResult:
    """The evaluation of the runbook against one scan, one selected token and the session.

    `current_step` is the last step evaluated; `next_step` is where its
    outcome leads (the recommended next step), `None` when the runbook
    stopped. `action` is the UI action that runs `next_step`. `applet` names
    the locked applet once one is established, and `not_lockout` the reason
    when the complaint is no lockout at all. `offered` lists steps the
    technician may run deliberately although the path does not walk them.
    `resolved_by` names the recovery that settled the lockout in this
    session, e.g. "PUK reset".
    """

    path: list[StepTaken]
    current_step: str
    next_step: str | None
    verdict: str
    notices: list[str] = field(default_factory=list)
    action: str | None = None
    applet: str | None = None
    not_lockout: str | None = None
    offered: list[OfferedStep] = field(default_factory=list)
    resolved_by: str | None = None

    @property
    def next_action(self) -> str:
        """The UI action to take next: the next step's, else "rescan" after a hardware stop, else "ticket"."""
        if self.next_step is not None:
            return self.action or ""
        if self.not_lockout == HARDWARE:
            return "rescan"
        return "ticket"

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """The path as (step id, outcome id) pairs."""
        return [(taken.step, taken.outcome) for taken in self.path]

    @property
    def stopped(self) -> bool:
        """True when the last outcome ends the runbook."""
        return self.next_step is None

    def offers(self, step: str) -> bool:
        """True when `step` is among the offered steps."""
        return any(offer.step == step for offer in self.offered)


# --- Step 0: the triage answers ---------------------------------------------

# Keys of `TriageAnswers.trying`: the runbook's Step 0 table, plus the
# quick-reference row "smart card login fine, but VPN auth fails".
TRYING_CHOICES: dict[str, str] = {
    "smart-card": "Smart card / Windows login",
    "passkey": "Passkey login (Microsoft, GitHub, etc.)",
    "vpn-otp": "VPN with hardware OTP",
    "vpn-cert": "VPN with cert-based auth",
    "tap": "\"Tap action\" or \"single touch\" code",
    "other-system": "Smart card login works, but another system (VPN) fails",
    "cant-say": "The user cannot say",
}

# Keys of `TriageAnswers.saw`: the runbook's user phrases.
SAW_CHOICES: dict[str, str] = {
    "pin-rejected": "It asked for my PIN and rejected it",
    "code-wrong": "It didn't ask for anything, just said the code was wrong",
    "touch-nothing": "It asked me to touch the key and nothing happened",
    "cant-say": "The user cannot say",
}

# Keys of `TriageAnswers.tap`: the tap-action question.
TAP_CHOICES: dict[str, str] = {
    "types-code": "It types out a code by itself",
    "touch-box": "A box pops up and asks me to touch the key",
    "nothing": "Nothing happens when I tap it",
}

_TRYING_OUTCOMES = {
    "smart-card": "smart_card",
    "passkey": "passkey",
    "vpn-otp": "otp",
    "vpn-cert": "certificate_vpn",
    "other-system": "external_auth",
}
_SAW_OUTCOMES = {"code-wrong": "otp", "pin-rejected": "pin_rejected", "touch-nothing": "tap_unknown"}
_TAP_OUTCOMES = {"types-code": "tap_otp", "touch-box": "tap_fido", "nothing": "tap_unknown"}


def evaluate_triage(context: RunbookContext) -> Finding | None:
    """Step 0: turn the answers into a focus; None when nothing was answered."""
    triage = context.triage
    if triage is None:
        return None
    trying = getattr(triage, "trying", None)
    saw = getattr(triage, "saw", None)
    tap = getattr(triage, "tap", None)

    if trying in _TRYING_OUTCOMES:
        return Finding(_TRYING_OUTCOMES[trying])
    if trying == "tap":
        # Unanswered tap question: the OTP listing is free, so it goes first.
        return Finding(_TAP_OUTCOMES.get(tap or "", "tap_unknown"))
    # What the user saw narrows it when they cannot name the system.
    if saw in _SAW_OUTCOMES:
        return Finding(_SAW_OUTCOMES[saw])
    if trying is None and saw is None and tap is None:
        return None
    return Finding("unknown")


# --- Steps 1 to 3: the read-only scan ---------------------------------------

def _failed_check(problem: PcscProblem | None, detail: str = "") -> dict[str, object]:
    problem = problem or PcscProblem.NO_READERS
    # The detail often repeats the problem's own message; show it only when it adds something.
    if detail and detail not in problem.message:
        message = f"{problem.message} ({detail})"
    else:
        message = problem.message
    return {"check": problem.check, "message": message}


def evaluate_detection(context: RunbookContext) -> Finding:
    """Step 1: is there a token, is the selected one readable, are there several?"""
    scan = context.scan
    token = context.token
    if not scan.tokens or token is None:
        return Finding("none", _failed_check(scan.problem, scan.problem_detail))

    if token.problem is not None or token.error:
        facts = _failed_check(token.problem or PcscProblem.UNKNOWN, token.error or "")
        facts["reader"] = token.reader
        return Finding("unreadable", facts)

    if len(scan.tokens) > 1:
        position = next(i for i, candidate in enumerate(scan.tokens) if candidate is token)
        return Finding("several", {"count": len(scan.tokens), "position": position})

    readers = len(scan.readers) or 1
    return Finding("detected", {"readers": f"{readers} reader" if readers == 1 else f"{readers} readers"})


def evaluate_identity(context: RunbookContext) -> Finding:
    """Step 2: did the scan capture a token ID to key the ticket and escrow by?"""
    token = context.token
    assert token is not None, "Step 2 runs only after Step 1 found a token"
    if token.token_id is not None:
        return Finding("captured", {"token_id": str(token.token_id)})

    sources = (context.id_sources or {}).get(token.profile.value)
    if sources:
        reason = f"none of the ID sources ({', '.join(sources)}) returned a value"
    else:
        reason = "no ID source returned a value"
    return Finding("missing", {"reason": reason})


def expired_login_certificate(token: TokenScan) -> object | None:
    """Return the 9A (PIV authentication) certificate summary when it is present and expired."""
    for certificate in token.certificates or []:
        if getattr(certificate, "slot", None) == "9A" and getattr(certificate, "present", None) and getattr(certificate, "expired", None):
            return certificate
    return None


_FIDO_FOCUS = ("passkey", "tap_fido")
_OTP_FOCUS = ("otp", "tap_otp", "tap_unknown")
_CERTIFICATE_FOCUS = ("", "unknown", "smart_card", "pin_rejected", "certificate_vpn", "external_auth")


def evaluate_pin_state(context: RunbookContext) -> Finding:
    """Step 3: the smart-card PIN tries, read without spending one, routed by the Step 0 focus."""
    token = context.token
    assert token is not None, "Step 3 runs only after Step 1 found a token"
    card = token.smartcard
    pin = card.pin
    focus = context.focus
    facts: dict[str, object] = {
        "pin": pin.text(),
        "source": pin.source.value,
        "puk": card.puk.text(),
        "token_id": str(token.token_id) if token.token_id else "(no ID)",
        "detail": pin.detail or "no status query answered",
    }
    locked = pin.state is PinState.BLOCKED or pin.remaining == 0
    findings = context.findings

    # A FIDO or OTP complaint goes to its own applet whatever the smart-card
    # state is. Once the technician chose the offered verify, the path walks
    # Step 4 as the quick reference does ("Step 3 -> 4 -> 7").
    if focus in _FIDO_FOCUS and findings.verify is None:
        return Finding("fido_complaint", facts)
    if focus in _OTP_FOCUS and not locked:
        return Finding("otp_complaint", facts)

    if locked:
        return Finding("locked", facts)

    # Step 0 unanswered ("if the user can't describe it, the token's state will
    # narrow it down"): a FIDO PIN the scan found blocked is the lockout, so the
    # path goes to the FIDO steps instead of spending a smart-card try.
    if focus in ("", "unknown") and findings.verify is None and not recovery_succeeded(findings):
        fido_pin = _fido_pin_blocked(token)
        if fido_pin is not None:
            facts["fido_pin"] = fido_pin
            return Finding("fido_locked_found", facts)

    # The rescan after a successful recovery shows a usable PIN, so the path
    # goes to the recovery step that settled the lockout instead of Step 4.
    # A wrong or blocked verify already leads there through Step 4.
    if recovery_succeeded(findings) and findings.verify not in ("wrong", "blocked"):
        if findings.puk_reset is not None or findings.unlock is not None:
            return Finding("recovered", facts)
        return Finding("reprovisioned", facts)

    certificate = expired_login_certificate(token)
    if certificate is not None and focus in _CERTIFICATE_FOCUS:
        not_after = getattr(certificate, "not_after", None)
        facts["expired_on"] = not_after.date().isoformat() if not_after is not None else "an unknown date"
        return Finding("certificate_expired", facts)

    if pin.state is PinState.NOT_SET:
        return Finding("not_set", facts)
    if pin.state is PinState.NOT_SUPPORTED:
        return Finding("no_applet", facts)
    if focus == "external_auth":
        return Finding("external_auth_complaint", facts)
    if pin.state is PinState.VERIFIED_COUNT_UNKNOWN:
        return Finding("verified_count_unknown", facts)
    if pin.state is PinState.OK and pin.remaining is not None:
        return Finding("tries_left", facts)
    return Finding("not_readable", facts)


# --- Steps 4 to 11: what the session found ----------------------------------

def recovery_succeeded(findings: RunbookFindings) -> bool:
    """True when this session reset, unlocked or reprovisioned the smart-card PIN."""
    return findings.puk_reset == "reset" or findings.unlock == "unlocked" or findings.reprovisioned


def _lock_cause(findings: RunbookFindings) -> str:
    # A wrong verify is the only route to a recovery with a PIN that was not locked.
    if findings.verify == "wrong":
        return "The user did not know the smart-card PIN"
    return "Smart-card PIN was locked"


def evaluate_verify(context: RunbookContext) -> Finding | None:
    """Step 4: the one deliberate verify, once it ran."""
    outcome = context.findings.verify
    if outcome is None:
        return None
    facts = {"tries": "?" if context.findings.verify_tries is None else context.findings.verify_tries}
    if outcome == "ok":
        return Finding("ok_external_auth" if context.focus in ("certificate_vpn", "external_auth") else "ok", facts)
    if outcome == "wrong":
        return Finding("wrong", facts)
    if outcome == "blocked":
        return Finding("blocked", facts)
    if outcome == "not_defined":
        return Finding("not_set", facts)
    return Finding("inconclusive", facts)


def evaluate_otp(context: RunbookContext) -> Finding | None:
    """Step 5: the OTP listing from the scan, judged by `tui.drift`."""
    token = context.token
    slots = getattr(token, "otp", None) if token is not None else None
    if slots is None:
        return None
    from tui.drift import DriftVerdict, assess_drift

    assessment = assess_drift(slots, token.smartcard)
    facts = {"slot": assessment.title, "verdict": assessment.verdict.value}
    if assessment.verdict is DriftVerdict.SMART_CARD_FIRST:
        return Finding("smart_card_first", facts)
    if assessment.verdict is DriftVerdict.REPROVISION:
        return Finding("missing_try_fido" if context.focus == "tap_unknown" else "missing", facts)
    if assessment.verdict is DriftVerdict.CLOCK_SKEW:
        return Finding("clock_skew", facts)
    if assessment.verdict is DriftVerdict.UNCONFIRMED:
        return Finding("unconfirmed", facts)
    return Finding("present", facts)


def evaluate_puk_reset(context: RunbookContext) -> Finding | None:
    """Step 6: known from the scan on a Crescendo or a blocked PUK, else from the reset."""
    token = context.token
    assert token is not None
    findings = context.findings
    facts = {"tries": "?" if findings.puk_tries is None else findings.puk_tries, "puk": token.smartcard.puk.text(),
             "cause": _lock_cause(findings)}

    if findings.puk_reset is None:
        if token.profile is Profile.HID_CRESCENDO:
            return Finding("no_puk_command", facts)
        if token.smartcard.puk.state is PinState.BLOCKED:
            return Finding("puk_blocked", facts)
        return None
    if findings.puk_reset == "reset":
        return Finding("reset", facts)
    if findings.puk_reset == "wrong_puk":
        return Finding("wrong_puk", facts)
    if findings.puk_reset == "puk_blocked":
        return Finding("puk_blocked", facts)
    if findings.puk_reset == "not_defined":
        return Finding("no_puk", facts)
    # Refused before sending, or the response was lost: the step has not settled.
    return None


def evaluate_admin_unlock(context: RunbookContext) -> Finding | None:
    """Step 6a: no admin key is known from the scan; otherwise the unlock's outcome."""
    token = context.token
    assert token is not None
    findings = context.findings
    facts = {"tries": "?" if findings.unlock_tries is None else findings.unlock_tries, "cause": _lock_cause(findings)}
    if findings.unlock is None:
        if token.smartcard.admin_key.present is False:
            return Finding("no_admin_key", facts)
        return None
    outcome = {
        "unlocked": "unlocked",
        "auth_failed": "auth_failed",
        "not_authenticated": "auth_failed",
        "unlock_blocked": "unlock_blocked",
        "no_admin_key": "no_admin_key",
    }.get(findings.unlock)
    return Finding(outcome, facts) if outcome else None


def _fido_pin_blocked(token: TokenScan) -> str | None:
    """Return the FIDO PIN text when the scan found it blocked (temporarily or for good), else None."""
    state = getattr(token, "fido", None)
    pin = getattr(state, "pin", None)
    if pin is None:
        return None
    from tui.fido.state import FidoPinState

    if pin.state in (FidoPinState.TEMPORARILY_BLOCKED, FidoPinState.PERMANENTLY_BLOCKED):
        return pin.text()
    return None


def _fido_state(context: RunbookContext):
    token = context.token
    return getattr(token, "fido", None) if token is not None else None


def evaluate_fido(context: RunbookContext) -> Finding | None:
    """Step 7: the read-only FIDO state from the scan (getInfo and getPINRetries)."""
    state = _fido_state(context)
    if state is None:
        return None
    from tui.fido.state import FidoPinState, PinReason

    pin = state.pin
    facts = {"fido_pin": pin.text(), "explanation": pin.explanation or ""}
    if pin.state is FidoPinState.NOT_SET:
        return Finding("no_pin", facts)
    if pin.state is FidoPinState.HEALTHY:
        return Finding("pin_set", facts)
    if pin.state is FidoPinState.TEMPORARILY_BLOCKED:
        return Finding("temporarily_blocked", facts)
    if pin.state is FidoPinState.PERMANENTLY_BLOCKED:
        return Finding("blocked", facts)
    if pin.state is FidoPinState.NOT_SUPPORTED:
        if pin.reason is PinReason.NO_AUTHENTICATOR:
            return Finding("no_authenticator", facts)
        return Finding("unsupported", facts)
    if pin.state is FidoPinState.NOT_ACCESSIBLE:
        return Finding("not_accessible", facts)
    return Finding("unknown", facts)


def evaluate_fido_listing(context: RunbookContext) -> Finding | None:
    """Step 8: the credential listing with the user's FIDO PIN, once it ran."""
    listing = context.findings.fido_listing
    if listing in ("listed", "wrong", "blocked"):
        return Finding(listing)
    return None


def evaluate_fido_reset(context: RunbookContext) -> Finding | None:
    """Step 9: done once the FIDO reset ran."""
    return Finding("reset") if context.findings.fido_reset else None


def evaluate_reprovision(context: RunbookContext) -> Finding | None:
    """Step 10: done once the token was wiped and reprovisioned."""
    findings = context.findings
    if not findings.reprovisioned:
        return None
    return Finding("done", {"cause": _lock_cause(findings)})


def evaluate_xauth(context: RunbookContext) -> Finding | None:
    """Step 11: the admin-key test, once it ran."""
    outcome = context.findings.xauth
    if outcome is None:
        return None
    if outcome == "functional":
        return Finding("ok")
    if outcome in ("failed", "blocked"):
        return Finding("failed")
    if outcome == "not initialised":
        return Finding("not_initialised")
    return Finding("inconclusive", {"outcome": outcome})


# --- the step table ---------------------------------------------------------

_STOP_HARDWARE = "Stop: hardware or driver issue, not a lockout. Failed check: {check}. {message}"
_FIDO_CHECK = "Next: Step 7, the read-only FIDO check."

STEPS: dict[str, Step] = {
    step.id: step
    for step in (
        Step("0", "Ask what the user was doing", StepKind.ASK,
             "ask what the user was logging in to and what they saw; record the ticket number",
             (Outcome("smart_card", "Triage: smart card / Windows login", "1", focus="3, 4"),
              Outcome("passkey", "Triage: passkey login", "1", focus="7, 8, 9"),
              Outcome("otp", "Triage: OTP code rejected", "1", focus="5"),
              Outcome("certificate_vpn", "Triage: VPN with certificate", "1", focus="4, 11"),
              Outcome("external_auth", "Triage: smart card fine, another system fails", "1", focus="11"),
              Outcome("tap_otp", "Triage: tap types a code (OATH HOTP)", "1", focus="5"),
              Outcome("tap_fido", "Triage: tap asks for a touch (FIDO2)", "1", focus="7, 8"),
              Outcome("tap_unknown", "Triage: tap does nothing, OATH or FIDO2", "1", focus="5, 7"),
              Outcome("pin_rejected", "Triage: PIN asked and rejected", "1", focus="3, 4, 7"),
              Outcome("unknown", "Triage: user cannot describe it", "1", focus="1, 2, 3")),
             evaluate=evaluate_triage, action="triage"),
        Step("1", "Confirm the token is detected", StepKind.READ_ONLY,
             "list the PC/SC readers and the token in each",
             (Outcome("detected", "Token detected ({readers})", "2"),
              Outcome("several", "{count} tokens, token {position} selected", "2",
                      notice="{count} tokens are connected: confirm token {position} is the user's before any change."),
              Outcome("none", "No token detected: {check} check failed", None, _STOP_HARDWARE, not_lockout=HARDWARE,
                      problem=True),
              Outcome("unreadable", "Token in {reader} not readable: {check} check failed", None, _STOP_HARDWARE,
                      not_lockout=HARDWARE, problem=True)),
             evaluate=evaluate_detection, action="rescan"),
        Step("2", "Capture the token ID", StepKind.READ_ONLY,
             "read the CPLC, serial or CHUID GUID as the token ID",
             (Outcome("captured", "ID {token_id}", "3"),
              Outcome("missing", "No ID captured", "3",
                      notice="No token ID: escrow will be refused later because {reason}.", problem=True)),
             evaluate=evaluate_identity, action="rescan"),
        Step("3", "Read the smart-card PIN state", StepKind.READ_ONLY,
             "read the PIN and PUK tries with status queries and metadata, spending none",
             (Outcome("locked", "Smart-card PIN {pin}", "6",
                      "Smart-card PIN locked ({pin}, source: {source}); PUK {puk}. "
                      "Next: Step 6, reset the PIN with the PUK.", applet=SMART_CARD, problem=True),
              Outcome("recovered", "Smart-card PIN {pin} after the recovery", "6",
                      "Smart-card PIN usable again ({pin}). Next: Step 6, the recovery's result.", applet=SMART_CARD),
              Outcome("reprovisioned", "Smart-card PIN {pin} after the reprovision", "10",
                      "Smart-card PIN usable again ({pin}). Next: Step 10, the reprovision's result.",
                      applet=SMART_CARD),
              Outcome("tries_left", "Smart-card PIN {pin}", "4",
                      "Smart-card PIN not locked ({pin}, source: {source}); the user may be typing a wrong PIN. "
                      "Next: Step 4, one deliberate verify."),
              Outcome("verified_count_unknown", "Smart-card PIN {pin}", "4",
                      "Smart-card PIN was verified in this card session, so it is not blocked, "
                      "but its try count is not readable. Next: Step 4, one deliberate verify."),
              Outcome("not_readable", "Smart-card PIN tries {pin}", "4",
                      "Smart-card PIN tries could not be read ({detail}), so a verify might spend the last try. "
                      "Next: Step 4 only if the user is sure of the PIN.", problem=True),
              Outcome("not_set", "Smart-card PIN NOT SET", None,
                      "No smart-card PIN is set on this token. Check that token ID {token_id} matches the "
                      "user's record: they may have a different token than expected.", problem=True),
              Outcome("no_applet", "No smart-card PIN on this token", "7",
                      "This token has no smart-card PIN (no PIV or ACA applet answered). "
                      "Next: Step 7, the FIDO check."),
              Outcome("fido_complaint", "Smart-card PIN {pin}; the complaint is about FIDO", "7",
                      "Smart-card PIN {pin}. The complaint is about a passkey, so the FIDO PIN is checked next; "
                      "a smart-card verify is offered but would spend a try on a FIDO complaint. " + _FIDO_CHECK),
              Outcome("fido_locked_found", "Smart-card PIN {pin}; FIDO PIN {fido_pin}", "7",
                      "Smart-card PIN not locked ({pin}); the scan found the FIDO PIN {fido_pin}, so FIDO is the "
                      "locked applet. Next: Step 7, the FIDO check; a smart-card verify would spend a try on "
                      "the wrong applet. Ask the user what they were doing (i) to confirm.", applet=FIDO, problem=True),
              Outcome("otp_complaint", "Smart-card PIN {pin}; the complaint is about an OTP code", "5",
                      "Smart-card PIN {pin}. The complaint is about an OTP code. Next: Step 5, list the OTP slots "
                      "(read-only, generates no code)."),
              Outcome("external_auth_complaint", "Smart-card PIN {pin}; smart-card login reported working", "11",
                      "Smart-card PIN {pin} and smart-card login reportedly works, but another system fails. "
                      "Next: Step 11, the external-authentication check."),
              Outcome("certificate_expired", "Smart-card PIN {pin}; login certificate (9A) EXPIRED {expired_on}", None,
                      "Not a lockout: expired certificate. The PIV authentication certificate (slot 9A) expired on "
                      "{expired_on}, so logins fail although the PIN is fine ({pin}). Renew the certificate through "
                      "the CA or CMS; do not verify or reset the PIN.", not_lockout=EXPIRED_CERTIFICATE, problem=True)),
             evaluate=evaluate_pin_state, action="rescan"),
        Step("4", "Verify the PIN once", StepKind.SINGLE_ATTEMPT,
             "send one VERIFY with the PIN the user claims",
             (Outcome("ok", "PIN verified (9000)", "7",
                      "Smart card fine: the PIN verified, so the user may mean the FIDO PIN, which is separate. "
                      + _FIDO_CHECK, carry="Smart card fine: the PIN verified (9000)."),
              Outcome("ok_external_auth", "PIN verified (9000)", "11",
                      "The smart-card PIN works, so the failing path is the certificate or external authentication. "
                      "Next: Step 11, the external-authentication check."),
              Outcome("wrong", "Wrong PIN, {tries} tries left", "6",
                      "The user does not know the PIN. Do not guess again: check the records for a documented "
                      "default, then Step 6.", applet=SMART_CARD, not_lockout=USER_ERROR, problem=True),
              Outcome("blocked", "PIN blocked (6983)", "6", "Smart-card PIN locked. Next: Step 6.", applet=SMART_CARD,
                      problem=True),
              Outcome("not_set", "No PIN defined (6A88)", None,
                      "No PIN was ever set. Check that the token ID matches the user's record.", problem=True),
              Outcome("inconclusive", "Verify gave no usable answer", None,
                      "The verify gave no usable answer (lost response or unexpected status word). Rescan to read "
                      "the counter before anything else.", problem=True)),
             evaluate=evaluate_verify, action="verify"),
        Step("5", "Check the OTP slots", StepKind.READ_ONLY,
             "list the OATH accounts without calculating HOTP codes",
             (Outcome("present", "{slot}", None,
                      "Not a lockout: the OTP slot is present, most likely HOTP counter drift between server and "
                      "token. Resynchronise on the validation server.", applet=OATH, not_lockout=SERVER_SIDE),
              Outcome("clock_skew", "{slot}", None,
                      "Not a lockout: a TOTP slot does not drift; check the clocks of the validation server and "
                      "of the computer against NTP.", applet=OATH, not_lockout="server side (clock skew)"),
              Outcome("unconfirmed", "{slot}", None,
                      "The OTP slot is present but its configuration is not readable: ask the user to press the "
                      "button once in a text editor to tell drift from an empty slot.", applet=OATH, problem=True),
              Outcome("missing", "{slot}", None, "The OTP slot is missing or wrong: reprovision it through the "
                      "PSKC workflow.", applet=OATH, problem=True),
              Outcome("missing_try_fido", "{slot}", "7",
                      "No configured OTP slot, so the tap is most likely FIDO2. " + _FIDO_CHECK, problem=True),
              Outcome("smart_card_first", "Smart-card PIN not usable", "6",
                      "Step 5 applies once the smart-card PIN works: recover it first. Next: Step 6.",
                      applet=SMART_CARD, problem=True)),
             evaluate=evaluate_otp, action="otp"),
        Step("6", "Reset the PIN with the PUK", StepKind.SINGLE_ATTEMPT,
             "escrow the new PIN, then RESET RETRY COUNTER with the PUK on file",
             (Outcome("reset", "PIN reset with the PUK", None,
                      "{cause}; reset with the PUK; the user must change the new PIN at next login.",
                      applet=SMART_CARD, resolves="PUK reset"),
              Outcome("no_puk", "No PUK on the token (6A88)", "10", "No PUK is set. Next: Step 10.", applet=SMART_CARD,
                      problem=True),
              Outcome("wrong_puk", "Wrong PUK, {tries} PUK tries left", "10",
                      "The PUK used is wrong: stop, do not retry; treat the PUK as unknown. Next: Step 10.",
                      applet=SMART_CARD, problem=True),
              Outcome("puk_blocked", "PUK blocked ({puk})", "10",
                      "The PUK is blocked, so the PIN cannot be reset with it. Next: Step 10.", applet=SMART_CARD,
                      problem=True),
              Outcome("no_puk_command", "No PUK command on this key", "6a",
                      "HID publishes no PUK command for the Crescendo, so the PIN is unlocked with the admin key "
                      "instead. Next: the admin-key unlock.", applet=SMART_CARD, problem=True)),
             evaluate=evaluate_puk_reset, action="unblock_puk"),
        Step("6a", "Unlock the PIN with the admin key", StepKind.SINGLE_ATTEMPT,
             "escrow the new PIN, then GET CHALLENGE, EXTERNAL AUTHENTICATE and UNLOCK PIN",
             (Outcome("unlocked", "PIN unlocked with the admin key", None,
                      "{cause}; unlocked with the admin key; the user must change the new PIN at next login.",
                      applet=SMART_CARD, resolves="admin-key unlock"),
              Outcome("auth_failed", "Admin key rejected, {tries} unlock tries left", "10",
                      "The admin key was rejected: do not retry with the same key. Check that the record belongs to "
                      "this token ID; without a working key, Step 10.", applet=SMART_CARD, problem=True),
              Outcome("unlock_blocked", "Unlock tries exhausted", "10",
                      "The unlock counter is exhausted. Next: Step 10.", applet=SMART_CARD, problem=True),
              Outcome("no_admin_key", "No admin key on the token", "10",
                      "No admin key is set (XAUTH1 not initialised), so the PIN cannot be unlocked. Next: Step 10.",
                      applet=SMART_CARD, problem=True)),
             evaluate=evaluate_admin_unlock, action="admin_unlock"),
        Step("7", "Quick FIDO check (clientPin)", StepKind.READ_ONLY,
             "read authenticatorGetInfo over USB HID and look at the clientPin option",
             (Outcome("no_pin", "clientPin false: no FIDO PIN", None,
                      "No FIDO PIN: FIDO is not in use with a PIN, so no FIDO lockout is possible. If the complaint "
                      "was FIDO, the problem is on the relying-party side.", applet=FIDO, not_lockout=RELYING_PARTY),
              Outcome("pin_set", "clientPin true: FIDO PIN {fido_pin}", "8",
                      "The FIDO PIN is set and not blocked. Next: Step 8, list the credentials with the user's FIDO PIN."),
              # CTAP 2.1 makes PIN_AUTH_BLOCKED (0x34) temporary: three wrong PINs in a row block PIN use until
              # the key is power-cycled. The runbook's Step 8 calls it "exhausted", which is PIN_BLOCKED (0x32).
              Outcome("temporarily_blocked", "FIDO PIN {fido_pin}", None,
                      "The FIDO PIN is blocked until the key is removed and re-inserted (three wrong PINs in a row). "
                      "Remove and re-insert the key, then try once more; no reset is needed.",
                      applet=FIDO, problem=True),
              Outcome("blocked", "FIDO PIN {fido_pin}", "9",
                      "The FIDO PIN is blocked; only a FIDO reset recovers it. Next: Step 9.",
                      applet=FIDO, problem=True),
              Outcome("unsupported", "clientPin option missing", None,
                      "The authenticator does not support a client PIN: escalate.", problem=True),
              Outcome("no_authenticator", "No FIDO authenticator", None,
                      "This key has no FIDO authenticator, so a passkey failure does not come from it."),
              Outcome("not_accessible", "FIDO not accessible", None, "{explanation}", problem=True),
              Outcome("unknown", "FIDO PIN state not readable", None, "{explanation}", problem=True)),
             evaluate=evaluate_fido, action="fido"),
        Step("8", "Check FIDO PIN retries and credentials", StepKind.SINGLE_ATTEMPT,
             "read the FIDO PIN retries, then list credentials with the user's FIDO PIN",
             (Outcome("listed", "Credentials listed", None,
                      "FIDO works; the problem is elsewhere (relying party, browser, network).",
                      not_lockout=RELYING_PARTY),
              Outcome("blocked", "FIDO PIN blocked", "9", "The FIDO PIN is blocked. Next: Step 9.", applet=FIDO,
                      problem=True),
              Outcome("wrong", "Wrong FIDO PIN", None,
                      "The user does not know the FIDO PIN; only a reset recovers it. Stop after one attempt.",
                      applet=FIDO, not_lockout=USER_ERROR, problem=True)),
             evaluate=evaluate_fido_listing, action="fido"),
        Step("9", "Reset the FIDO authenticator", StepKind.DESTRUCTIVE,
             "authenticatorReset, then set a new FIDO PIN (escrowed first)",
             (Outcome("reset", "FIDO reset and new PIN set", None,
                      "FIDO reset; the user must register the key again with every relying party.", applet=FIDO,
                      resolves="FIDO reset"),),
             evaluate=evaluate_fido_reset, action="fido"),
        Step("10", "Reprovision the token", StepKind.DESTRUCTIVE,
             "wipe the token, set a new PIN and PUK (escrowed first)",
             (Outcome("done", "Token reprovisioned", None,
                      "{cause}; the token was reprovisioned with a new PIN and PUK. Re-enrol certificates, OTP and "
                      "FIDO; the user must change the new PIN at next login.", applet=SMART_CARD,
                      resolves="full reprovision"),),
             evaluate=evaluate_reprovision, action="reprovision"),
        Step("11", "Check external authentication", StepKind.SINGLE_ATTEMPT,
             "get a challenge and run EXTERNAL AUTHENTICATE with the admin key on file",
             (Outcome("ok", "External authentication succeeded", None,
                      "External authentication works; investigate the relying system.", not_lockout="relying-system side"),
              Outcome("failed", "External authentication failed", None,
                      "The admin key on file or on the token is wrong; last resort: reinstall a known key.",
                      applet=EXTERNAL_AUTH, problem=True),
              Outcome("not_initialised", "No admin key on the token", None,
                      "No admin key is set, so external authentication is not the failing path."),
              Outcome("inconclusive", "External authentication: {outcome}", None,
                      "The external-authentication check was inconclusive; see its result.", problem=True)),
             evaluate=evaluate_xauth, action="xauth"),
    )
}

FIRST_EVALUATED_STEP = "1"


def select_token(scan: ScanResult, token_id: str | None = None, reader: str | None = None) -> TokenScan | None:
    """Return the token with `token_id` (or, for a token without ID, in `reader`); else the first one."""
    if token_id is not None:
        for token in scan.tokens:
            if token.token_id is not None and str(token.token_id) == token_id:
                return token
    if reader is not None:
        for token in scan.tokens:
            if token.reader == reader:
                return token
    return scan.tokens[0] if scan.tokens else None


def evaluate(scan: ScanResult, token: TokenScan | None = None, *,
             id_sources: Mapping[str, list[str]] | None = None,
             triage: object | None = None, findings: RunbookFindings | None = None,
             steps: Mapping[str, Step] = STEPS, start: str = FIRST_EVALUATED_STEP) -> RunbookResult:
    """Follow the runbook from `start` through every step the scan and the session can decide.

    `token` is the token the technician selected, the first one when `None`.
    `triage` is the session's `TriageAnswers`; when it has answers, Step 0
    is the first step on the path and sets the focus. `findings` are the
    results of the steps run so far. Raises KeyError when an evaluator
    returns an outcome its step lacks.
    """
    if token is None and scan.tokens:
        token = scan.tokens[0]
    context = RunbookContext(scan, token, id_sources, triage, findings or RunbookFindings())

    path: list[StepTaken] = []
    notices: list[str] = []
    outcomes: list[Outcome] = []
    verdict = ""

    step_zero = steps.get("0")
    if triage is not None and step_zero is not None and step_zero.evaluate is not None:
        finding = step_zero.evaluate(context)
        if finding is not None:
            outcome = step_zero.outcome(finding.outcome)
            context.focus = outcome.id
            path.append(StepTaken("0", outcome.id, outcome.summary.format_map(dict(finding.facts))))

    step_id: str | None = start
    last_step = start
    visited: set[str] = set()
    while step_id is not None and step_id not in visited:
        step = steps[step_id]
        if step.evaluate is None:
            break
        finding = step.evaluate(context)
        if finding is None:
            break
        visited.add(step_id)

        outcome = step.outcome(finding.outcome)
        facts = dict(finding.facts)
        path.append(StepTaken(step.id, outcome.id, outcome.summary.format_map(facts), outcome.problem))
        outcomes.append(outcome)
        if outcome.notice:
            notices.append(outcome.notice.format_map(facts))
        carried = [o.carry for o in outcomes[:-1] if o.carry]
        verdict = " ".join([*carried, outcome.verdict.format_map(facts)])

        last_step = step_id
        step_id = outcome.leads_to

    if not verdict and step_id is not None:
        next_step = steps[step_id]
        verdict = f"Next: Step {next_step.id}, {next_step.title[0].lower()}{next_step.title[1:]}."

    applet = next((o.applet for o in reversed(outcomes) if o.applet), None)
    not_lockout = outcomes[-1].not_lockout or None if outcomes and step_id is None else None
    resolved_by = outcomes[-1].resolves or None if outcomes and step_id is None else None
    offered = _offered_steps(context, path, step_id, steps)
    notices.extend(_offer_notices(context, path, step_id))
    full_verdict = " ".join([verdict, *notices]).strip()
    action = steps[step_id].action if step_id is not None else None
    return RunbookResult(path, last_step, step_id, full_verdict, notices, action, applet, not_lockout, offered,
                         resolved_by)


def puk_state_unknown(token: TokenScan | None) -> bool:
    """True when the scan could not read the PUK tries, as on a generic PIV key without metadata."""
    if token is None:
        return False
    return token.smartcard.puk.state in (PinState.NOT_READABLE, PinState.UNKNOWN)


def _offer_notices(context: RunbookContext, path: list[StepTaken], next_step: str | None) -> list[str]:
    notices = []
    token = context.token
    pairs = [(t.step, t.outcome) for t in path]
    if ("3", "fido_complaint") in pairs and token is not None:
        pin = token.smartcard.pin
        if pin.state is PinState.BLOCKED or pin.remaining == 0:
            notices.append(f"The smart-card PIN is blocked too ({pin.text()}): Step 6 is offered.")

    # The runbook sends a locked PIN to Step 6 first; on a key that does not
    # report its PUK tries the technician must know that Step 10 may follow.
    if next_step == "6" and puk_state_unknown(token) and context.findings.puk_reset is None:
        notices.append("PUK state unknown: this key does not report its PUK tries. "
                       "Without a PUK on file, Step 10 follows.")

    # A recovery run beside a FIDO or OTP path is not on the path, so the verdict names it.
    walked = {t.step for t in path}
    if recovery_succeeded(context.findings) and not walked & {"6", "6a", "10"}:
        notices.append("The smart-card PIN was recovered in this session.")
    return notices


def _offered_steps(context: RunbookContext, path: list[StepTaken], next_step: str | None,
                   steps: Mapping[str, Step]) -> list[OfferedStep]:
    """List the steps the technician may run deliberately, beside the recommended one."""
    token = context.token
    if token is None or token.problem is not None or not any(t.step == "3" for t in path):
        return []
    pairs = [(t.step, t.outcome) for t in path]
    walked = {t.step for t in path}
    pin = token.smartcard.pin
    locked = pin.state is PinState.BLOCKED or pin.remaining == 0
    pin_usable = not locked and pin.state in (PinState.OK, PinState.VERIFIED_COUNT_UNKNOWN, PinState.NOT_READABLE)
    offered: list[OfferedStep] = []

    def offer(step: str, reason: str, action: str | None = None) -> None:
        if step == next_step and action is None:
            return
        name = action or steps[step].action or ""
        if all((o.step, o.action) != (step, name) for o in offered):
            offered.append(OfferedStep(step, name, reason))

    recovered_now = recovery_succeeded(context.findings)
    if "4" not in walked and pin_usable and not recovered_now and (("3", "fido_complaint") in pairs or ("3", "external_auth_complaint") in pairs
                                             or ("3", "otp_complaint") in pairs):
        offer("4", "One deliberate smart-card verify; it spends a smart-card try on a complaint about another applet.")
    if ("3", "fido_complaint") in pairs and locked:
        offer("6", "The smart-card PIN is blocked too; reset it with the PUK.")
    if next_step in ("6", "6a"):
        if next_step == "6" and puk_state_unknown(token):
            offer("10", "PUK state unknown: without a PUK on file, or if the PUK fails, wipe and reprovision.")
        else:
            offer("10", "Full reprovision, only if the PIN cannot be recovered without a wipe.")
    if context.focus == "tap_unknown" and "7" not in walked and ("5", "present") in pairs:
        offer("7", "If the OTP codes are fine, check FIDO2: the tap may be a FIDO2 touch.")

    # Step 11 fits when the smart card and FIDO are fine but a system still rejects the user.
    smart_card_fine = ("4", "ok") in pairs or (pin_usable and context.findings.verify in (None, "ok")
                                               and context.focus in ("passkey", "tap_fido"))
    fido_fine = any(pair in pairs for pair in (("7", "no_pin"), ("8", "listed"), ("7", "no_authenticator")))
    has_aca = token.profile is Profile.HID_CRESCENDO or token.smartcard.admin_key.present is True
    if smart_card_fine and fido_fine and has_aca and "11" not in walked:
        offer("11", "The smart card and FIDO are fine; if the user still cannot authenticate to a system, "
                    "check external authentication.")

    # A PIN that works or was just reset is recoverable next time only with a PUK on file.
    recovered = any(pair in pairs for pair in (("4", "ok"), ("6", "reset")))
    if recovered and token.profile in (Profile.YUBIKEY, Profile.GENERIC_PIV):
        offer("6", "Set a PUK where none is on file, so the next lockout is recoverable without a wipe.", "set_puk")
    return offered


# Audit operations of the recovery actions, and the outcomes that do not settle a step.
_AUDIT_OPERATIONS = {"verify": "verify-pin", "puk_reset": "puk-reset", "unlock": "admin-unlock",
                     "reprovision": "reprovision"}
_UNSETTLED = frozenset({"sending", "refused", "lost", "unknown", "not wiped"})


def findings_from_session(session, token: TokenScan | None) -> RunbookFindings:
    """Build the findings of the recovery steps from the session's audit trail and events for `token`.

    The latest settled audit record of each operation counts, so a
    restarted session continues where the last one stopped. A session event
    with `resolved_by` set counts as a success where the audit trail has no
    settled record, and is the only source for the FIDO reset. FIDO and OTP
    come from the scan; the FIDO listing and the external-authentication
    check are passed in by their features.
    """
    findings = RunbookFindings()
    if token is None or token.token_id is None:
        return findings

    def latest(operation: str):
        records = [r for r in session.audit.attempts(token.token_id, operation) if r.outcome not in _UNSETTLED]
        return records[-1] if records else None

    record = latest(_AUDIT_OPERATIONS["verify"])
    if record is not None:
        findings.verify, findings.verify_tries = record.outcome, record.tries_after
    record = latest(_AUDIT_OPERATIONS["puk_reset"])
    if record is not None:
        findings.puk_reset, findings.puk_tries = record.outcome, record.tries_after
    record = latest(_AUDIT_OPERATIONS["unlock"])
    if record is not None:
        findings.unlock, findings.unlock_tries = record.outcome, record.tries_after
    record = latest(_AUDIT_OPERATIONS["reprovision"])
    findings.reprovisioned = record is not None and record.outcome == "wiped"

    resolved = {event.kind for event in session.events
                if event.token_id == str(token.token_id) and event.resolved_by}
    if findings.puk_reset is None and "puk-reset" in resolved:
        findings.puk_reset = "reset"
    if findings.unlock is None and "admin-unlock" in resolved:
        findings.unlock = "unlocked"
    findings.reprovisioned = findings.reprovisioned or "reprovision" in resolved
    findings.fido_reset = "fido-reset" in resolved
    return findings
