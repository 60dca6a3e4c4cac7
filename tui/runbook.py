"""The lockout runbook as a declarative step table, and its evaluation against a scan.

Each step has an id ("0".."11"), a title, a kind (how much it may cost the
user), the operation it performs and its possible outcomes, each naming the
step it leads to (`None` stops the runbook). Steps whose outcome can be read
from a read-only scan carry an evaluator. `evaluate` follows the outcomes from
Step 1 until it reaches a step without one, and that step becomes the
recommended next step. Later actions (verify, PUK reset, FIDO checks) add evaluators for their
own steps to this same table.

The order of the table is the runbook's rule: read-only first, one deliberate
verify next, destructive recovery last.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from tui.model import PcscProblem, PinState, ScanResult, TokenScan


class StepKind(str, enum.Enum):
    """Cost class of a step, shown next to its title."""

    ASK = "ask"
    READ_ONLY = "read-only"
    SINGLE_ATTEMPT = "single-attempt"
    DESTRUCTIVE = "destructive"


@dataclass(frozen=True)
class Outcome:
    """One possible result of a step.

    `summary` and `verdict` are `str.format` templates filled with the facts the
    evaluator found. `leads_to` is the next step id, `None` when the runbook
    stops here. `notice` is a template for a warning that stays in the verdict
    even though the runbook goes on (for example a missing token ID).
    """

    id: str
    summary: str
    leads_to: str | None
    verdict: str = ""
    notice: str = ""


@dataclass(frozen=True)
class Finding:
    """An evaluator's result: the outcome id and the facts for its templates."""

    outcome: str
    facts: Mapping[str, object] = field(default_factory=dict)


@dataclass
class RunbookContext:
    """Evaluator input: the whole scan and the token the technician selected."""

    scan: ScanResult
    token: TokenScan | None
    id_sources: Mapping[str, list[str]] | None = None


Evaluator = Callable[[RunbookContext], Finding]


@dataclass(frozen=True)
class Step:
    """One runbook step: what it does, what it may cost and where each outcome leads.

    `action` names the UI action that runs the step (for example "unblock"),
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
    """One step on the path taken: the step id, the outcome id and the outcome in words."""

    step: str
    outcome: str
    summary: str


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
    `tui.recovery.unlock.UnlockOutcome` value, `xauth` a `tui.xauth.XauthOutcome`
    value, `reprovisioned` True once Step 10 wiped the token.
    """

    verify: str | None = None
    verify_tries: int | None = None
    puk_reset: str | None = None
    puk_tries: int | None = None
    unlock: str | None = None
    xauth: str | None = None
    reprovisioned: bool = False


@dataclass
class RunbookResult:
    """The evaluation of the runbook against one scan and one selected token.

    `current_step` is the last step evaluated; `next_step` is where its outcome
    leads (the recommended next step), `None` when the runbook stopped.
    """

    path: list[StepTaken]
    current_step: str
    next_step: str | None
    verdict: str
    notices: list[str] = field(default_factory=list)
    action: str | None = None  # the UI action that runs `next_step` ("verify", "unblock_puk", ...)
    applet: str | None = None  # the locked applet ("smart card", "FIDO", "OATH", "external auth")
    not_lockout: str | None = None  # why this is not a lockout (user error, relying party, expired certificate)
    offered: list[OfferedStep] = field(default_factory=list)

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """The path as (step id, outcome id) pairs."""
        return [(taken.step, taken.outcome) for taken in self.path]

    @property
    def stopped(self) -> bool:
        """True when the last outcome ends the runbook."""
        return self.next_step is None


# --- evaluators for the read-only steps -------------------------------------

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


def evaluate_pin_state(context: RunbookContext) -> Finding:
    """Step 3: the smart-card PIN tries, read without spending one."""
    token = context.token
    assert token is not None, "Step 3 runs only after Step 1 found a token"
    card = token.smartcard
    pin = card.pin
    facts: dict[str, object] = {
        "pin": pin.text(),
        "source": pin.source.value,
        "puk": card.puk.text(),
        "token_id": str(token.token_id) if token.token_id else "(no ID)",
        "detail": pin.detail or "no status query answered",
    }

    if pin.state is PinState.BLOCKED or pin.remaining == 0:
        return Finding("locked", facts)
    if pin.state is PinState.NOT_SET:
        return Finding("not_set", facts)
    if pin.state is PinState.NOT_SUPPORTED:
        return Finding("no_applet", facts)
    if pin.state is PinState.VERIFIED_COUNT_UNKNOWN:
        return Finding("verified_count_unknown", facts)
    if pin.state is PinState.OK and pin.remaining is not None:
        return Finding("tries_left", facts)
    return Finding("not_readable", facts)


# --- the step table ---------------------------------------------------------

_STOP_HARDWARE = "Stop: hardware or driver issue, not a lockout. Failed check: {check}. {message}"

STEPS: dict[str, Step] = {
    step.id: step
    for step in (
        Step("0", "Ask what the user was doing", StepKind.ASK,
             "ask what the user was logging in to and what they saw; record the ticket number",
             (Outcome("smart_card", "Smart card or Windows login", "3"),
              Outcome("passkey", "Passkey login", "7"),
              Outcome("otp", "VPN with hardware OTP", "5"),
              Outcome("certificate_vpn", "VPN with certificate", "4"),
              Outcome("tap", "Tap action, not clear which", "5"),
              Outcome("unknown", "User cannot describe it", "1")),
             action="triage"),
        Step("1", "Confirm the token is detected", StepKind.READ_ONLY,
             "list the PC/SC readers and the token in each",
             (Outcome("detected", "Token detected ({readers})", "2"),
              Outcome("several", "{count} tokens, token {position} selected", "2",
                      notice="{count} tokens are connected: confirm token {position} is the user's before any change."),
              Outcome("none", "No token detected: {check} check failed", None, _STOP_HARDWARE),
              Outcome("unreadable", "Token in {reader} not readable: {check} check failed", None, _STOP_HARDWARE)),
             evaluate=evaluate_detection, action="rescan"),
        Step("2", "Capture the token ID", StepKind.READ_ONLY,
             "read the CPLC, serial or CHUID GUID as the token ID",
             (Outcome("captured", "ID {token_id}", "3"),
              Outcome("missing", "No ID captured", "3",
                      notice="No token ID: escrow will be refused later because {reason}.")),
             evaluate=evaluate_identity, action="rescan"),
        Step("3", "Read the smart-card PIN state", StepKind.READ_ONLY,
             "read the PIN and PUK tries with status queries and metadata, spending none",
             (Outcome("locked", "Smart-card PIN {pin}", "6",
                      "Smart-card PIN locked ({pin}, source: {source}); PUK {puk}. "
                      "Next: Step 6, reset the PIN with the PUK."),
              Outcome("tries_left", "Smart-card PIN {pin}", "4",
                      "Smart-card PIN not locked ({pin}, source: {source}); the user may be typing a wrong PIN. "
                      "Next: Step 4, one deliberate verify."),
              Outcome("verified_count_unknown", "Smart-card PIN {pin}", "4",
                      "Smart-card PIN was verified in this card session, so it is not blocked, "
                      "but its try count is not readable. Next: Step 4, one deliberate verify."),
              Outcome("not_readable", "Smart-card PIN tries {pin}", "4",
                      "Smart-card PIN tries could not be read ({detail}), so a verify might spend the last try. "
                      "Next: Step 4 only if the user is sure of the PIN."),
              Outcome("not_set", "Smart-card PIN NOT SET", None,
                      "No smart-card PIN is set on this token. Check that token ID {token_id} matches the "
                      "user's record: they may have a different token than expected."),
              Outcome("no_applet", "No smart-card PIN on this token", "7",
                      "This token has no smart-card PIN (no PIV or ACA applet answered). "
                      "Next: Step 7, the FIDO check.")),
             evaluate=evaluate_pin_state, action="rescan"),
        Step("4", "Verify the PIN once", StepKind.SINGLE_ATTEMPT,
             "send one VERIFY with the PIN the user claims",
             (Outcome("ok", "PIN verified (9000)", "7",
                      "The smart-card PIN works; the user may be confusing it with the FIDO PIN. Next: Step 7."),
              Outcome("wrong", "Wrong PIN, {tries} tries left", "6",
                      "The user does not know the PIN. Do not guess again: check the records for a documented "
                      "default, then Step 6."),
              Outcome("blocked", "PIN blocked (6983)", "6", "Smart-card PIN locked. Next: Step 6."),
              Outcome("not_set", "No PIN defined (6A88)", None,
                      "No PIN was ever set. Check that the token ID matches the user's record.")),
             action="verify"),
        Step("5", "Check the OTP slots", StepKind.READ_ONLY,
             "list the OATH accounts without calculating HOTP codes",
             (Outcome("present", "Expected slot present", None,
                      "The OTP slot is present: most likely HOTP counter drift between server and token."),
              Outcome("missing", "Slot missing or wrong", None, "Reprovision the OTP slot.")),
             action="otp"),
        Step("6", "Reset the PIN with the PUK", StepKind.SINGLE_ATTEMPT,
             "escrow the new PIN, then RESET RETRY COUNTER with the PUK on file",
             (Outcome("reset", "PIN reset with the PUK", None,
                      "The PIN is reset; have the user change it to one only they know."),
              Outcome("no_puk", "No PUK on the token (6A88)", "10", "No PUK is set. Next: Step 10."),
              Outcome("wrong_puk", "Wrong PUK", "10", "The PUK on file is wrong: stop, do not retry. Next: Step 10.")),
             action="unblock"),
        Step("7", "Quick FIDO check (clientPin)", StepKind.READ_ONLY,
             "read authenticatorGetInfo over USB HID and look at the clientPin option",
             (Outcome("no_pin", "clientPin false: no FIDO PIN", None,
                      "FIDO is not in use on this token; a passkey failure is on the relying party side."),
              Outcome("pin_set", "clientPin true: FIDO PIN set", "8"),
              Outcome("unsupported", "clientPin option missing", None,
                      "The authenticator does not support a client PIN: escalate.")),
             action="fido"),
        Step("8", "Check FIDO PIN retries and credentials", StepKind.SINGLE_ATTEMPT,
             "read the FIDO PIN retries, then list credentials with the user's FIDO PIN",
             (Outcome("listed", "Credentials listed", None,
                      "FIDO works; the problem is elsewhere (relying party, browser, network)."),
              Outcome("blocked", "FIDO PIN blocked", "9", "The FIDO PIN is blocked. Next: Step 9."),
              Outcome("wrong", "Wrong FIDO PIN, {tries} retries left", None,
                      "The user does not know the FIDO PIN; only a reset recovers it. Stop after one attempt.")),
             action="fido"),
        Step("9", "Reset the FIDO authenticator", StepKind.DESTRUCTIVE,
             "authenticatorReset, then set a new FIDO PIN (escrowed first)",
             (Outcome("reset", "FIDO reset and new PIN set", None,
                      "FIDO reset; the user must register the key again with every relying party."),),
             action="fido"),
        Step("10", "Reprovision the token", StepKind.DESTRUCTIVE,
             "wipe the token, set a new PIN and PUK (escrowed first)",
             (Outcome("done", "Token reprovisioned", None,
                      "Token reprovisioned; re-enroll certificates, OTP and FIDO."),),
             action="reprovision"),
        Step("11", "Check external authentication", StepKind.SINGLE_ATTEMPT,
             "get a challenge and run EXTERNAL AUTHENTICATE with the admin key on file",
             (Outcome("ok", "External authentication succeeded", None,
                      "External authentication works; investigate the relying system."),
              Outcome("failed", "External authentication failed", None,
                      "The admin key on file or on the token is wrong; last resort: reinstall a known key.")),
             action="external_auth"),
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
             steps: Mapping[str, Step] = STEPS, start: str = FIRST_EVALUATED_STEP) -> RunbookResult:
    """Follow the runbook from `start` through every step the scan can decide.

    `token` is the token the technician selected, the first one when `None`.
    Raises KeyError when an evaluator returns an outcome its step lacks.
    """
    if token is None and scan.tokens:
        token = scan.tokens[0]
    context = RunbookContext(scan, token, id_sources)

    path: list[StepTaken] = []
    notices: list[str] = []
    verdict = ""
    step_id: str | None = start
    last_step = start
    visited: set[str] = set()

    while step_id is not None and step_id not in visited:
        step = steps[step_id]
        if step.evaluate is None:
            break
        visited.add(step_id)

        finding = step.evaluate(context)
        outcome = step.outcome(finding.outcome)
        facts = dict(finding.facts)
        path.append(StepTaken(step.id, outcome.id, outcome.summary.format_map(facts)))
        if outcome.notice:
            notices.append(outcome.notice.format_map(facts))
        verdict = outcome.verdict.format_map(facts)

        last_step = step_id
        step_id = outcome.leads_to

    if not verdict and step_id is not None:
        next_step = steps[step_id]
        verdict = f"Next: Step {next_step.id}, {next_step.title[0].lower()}{next_step.title[1:]}."
    full_verdict = " ".join([verdict, *notices]).strip()
    return RunbookResult(path, last_step, step_id, full_verdict, notices)
