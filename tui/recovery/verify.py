"""Runbook Step 4: one deliberate verify of the PIN the user claims.

The tool sends the PIN the technician typed for this step, once, and no
other: never a documented default, never a second guess. A second verify on
the same token in the same session, or a verify when one try is left or the
count is not readable, needs the technician's typed override. The attempt
history is the audit trail (`AuditTrail.attempts`), so a restart does not
grant another try.

Which VERIFY: on a PIV or YubiKey token, PIV VERIFY `00 20 00 80` with the
PIN FF-padded to 8 bytes. On an HID Crescendo, the ACA VERIFY PIN
`00 20 00 00`, because the ACA owns the PIN there: its GET PIN PROPERTIES
gives the length and character rules, its UNLOCK PIN is the recovery path,
and HID documents this VERIFY with exactly this padding. The PIV applet of a
Crescendo shares the same PIN and counter.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field

from tui.aca import ACA_AID
from tui.apdu import CommandApdu, Status, StatusKind
from tui.errors import PcscError, PolicyError
from tui.model import PinPolicy, PinState, Profile, TokenScan
from tui.pin import PIV_MAX_LENGTH, PIV_MIN_LENGTH, encode_aca_pin, encode_piv_pin
from tui.piv import PIN_REFERENCE, PIV_AID, select_command
from tui.recovery.common import RecoveryError, RecoveryRefusedError, RecoverySettings
from tui.secret import Secret
from tui.settings import SiteSettings
from tui.transport import Channel

log = logging.getLogger("keytriage.recovery")

OPERATION = "verify-pin"

# Audit outcome written just before the VERIFY leaves; these records are the attempts counted.
SENDING = "sending"
REFUSED = "refused"

ACA_PIN_REFERENCE = 0x00

# Yubico OTP output: 32 to 48 characters of ModHex (the 16 letters below),
# typically 44. A key types it by itself when touched, into whatever field has focus.
MODHEX = frozenset("cbdefghijklnrtuv")
YUBICO_OTP_LENGTHS = range(32, 49)

COUNTER_CAVEAT = ("A successful verify resets the counter to its maximum, so the counter only reflects consecutive "
                  "failures since the last success: a healthy count does not mean the user never failed.")


class VerifyOutcome(str, enum.Enum):
    """The answer to the one VERIFY, in the runbook's terms."""

    OK = "ok"  # 9000: the smart-card PIN works
    WRONG = "wrong"  # 63Cx with tries left
    BLOCKED = "blocked"  # 6983, or 63C0 on the attempt that blocked it
    NOT_DEFINED = "not_defined"  # 6A88
    UNEXPECTED = "unexpected"
    LOST = "lost"  # sent, response lost: the outcome is unknown


@dataclass
class VerifyPermission:
    """Whether Step 4 may run now: allowed, or only with a typed override, and why."""

    allowed: bool
    needs_override: bool
    reason: str
    tries_left: int | None


@dataclass
class VerifyResult:
    """The outcome of the one VERIFY, with the verdict and next step in the runbook's words."""

    outcome: VerifyOutcome
    status: Status | None
    tries_before: int | None
    tries_after: int | None
    verdict: str
    next_step: str | None
    hints: list[str] = field(default_factory=list)
    applet: str = "PIV"


class VerifyRefusedError(RecoveryRefusedError):
    """Step 4 was rejected before the VERIFY was sent; `permission` says why."""

    def __init__(self, message: str, permission: VerifyPermission | None = None) -> None:
        super().__init__(message)
        self.permission = permission


def previous_attempts(token: TokenScan, session) -> list:
    """Return this session's audit records of verifies sent to `token` (refusals excluded)."""
    if token.token_id is None:
        return []
    return [entry for entry in session.audit.attempts(token.token_id, OPERATION) if entry.outcome == SENDING]


def verify_permission(token: TokenScan, session) -> VerifyPermission:
    """Decide whether Step 4 may send its one VERIFY to `token` in this session."""
    pin = token.smartcard.pin
    tries = pin.remaining

    if session.settings.read_only:
        return VerifyPermission(False, False, "Read-only (tier-1) mode: a verify spends a try, so it is not offered. "
                                "Escalate to a technician with write access.", tries)
    if token.token_id is None:
        return VerifyPermission(False, False, "The token has no ID, so the one-verify rule cannot be kept for it. "
                                "Capture the ID first (Step 2).", tries)
    if token.profile is Profile.UNKNOWN or pin.state is PinState.NOT_SUPPORTED:
        return VerifyPermission(False, False, "This token has no smart-card PIN to verify (no PIV or ACA applet).", tries)
    if pin.state is PinState.BLOCKED or tries == 0:
        return VerifyPermission(False, False, f"The smart-card PIN is blocked ({pin.text()}): a verify cannot succeed. "
                                "Next: Step 6.", tries)
    if pin.state is PinState.NOT_SET:
        return VerifyPermission(False, False, f"No PIN is defined on this token: check that token ID {token.token_id} "
                                "matches the user's record.", tries)

    earlier = previous_attempts(token, session)
    if earlier:
        return VerifyPermission(True, True, f"A verify was already sent to {token.token_id} in this session "
                                f"(at {earlier[-1].time}). Another one spends another try: type the override only if the "
                                "user now claims a different PIN.", tries)
    if tries == 1:
        return VerifyPermission(True, True, "Only 1 try is left: a wrong PIN blocks the smart-card PIN. "
                                "Type the override only if the user is sure.", tries)
    if tries is None and pin.state is not PinState.VERIFIED_COUNT_UNKNOWN:
        return VerifyPermission(True, True, f"The PIN tries could not be read ({pin.text()}), so this verify may spend "
                                "the last one. Type the override only if the user is sure.", tries)
    count = "the count is not readable, but the PIN was verified in this card session" if tries is None else f"{tries} tries left"
    return VerifyPermission(True, False, f"One deliberate verify ({count}).", tries)


def claimed_pin_policy(token: TokenScan, settings: SiteSettings) -> PinPolicy:
    """Return the rules a claimed PIN must meet: the key's (ACA properties or PIV 6-8 bytes) and the site's."""
    site = RecoverySettings.from_settings(settings)
    policy = token.smartcard.pin_policy if token.profile is Profile.HID_CRESCENDO else None
    low, high, numeric = (policy.min_length, policy.max_length, policy.numeric_only) if policy else (PIV_MIN_LENGTH, PIV_MAX_LENGTH, False)
    if site.pin_min_length is not None:
        low = max(low, site.pin_min_length)
    if site.pin_max_length is not None:
        high = min(high, site.pin_max_length)
    return PinPolicy(low, high, numeric or site.pin_numeric_only)


def validate_claimed_pin(pin: Secret, token: TokenScan, settings: SiteSettings) -> str | None:
    """Return why the claimed PIN cannot be the token's PIN (nothing sent), else None.

    Rejected: empty input, control characters (a terminal escape sequence that
    leaked into the field), a Yubico OTP string (32 to 48 ModHex characters,
    which a key types by itself when touched), and anything outside the key's
    and the site's length and character rules. The message never contains the
    value. An input with the digit count of an HOTP code is not rejected: a
    6- or 8-digit PIN is common, and whether a key typed it cannot be told here.
    """
    raw = pin.reveal()
    text = raw if isinstance(raw, str) else raw.decode("latin-1")
    if not text:
        return "No PIN was entered."
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        return ("The PIN contains control characters (an escape sequence from the terminal leaked into the field). "
                "Clear the field and type the PIN again.")
    if len(text) in YUBICO_OTP_LENGTHS and set(text) <= MODHEX:
        return (f"The input is {len(text)} ModHex characters, the form of a Yubico OTP that the key types by itself "
                "when touched: it is not the PIN. Ask the user for the PIN they type.")

    policy = claimed_pin_policy(token, settings)
    size = len(text.encode("utf-8"))
    if not policy.min_length <= size <= policy.max_length:
        return (f"The PIN has {size} bytes, but this key and site accept {policy.min_length} to {policy.max_length}: "
                "it cannot be the token's PIN. Ask the user to check what they type.")
    if policy.numeric_only and not text.isdigit():
        return "The PIN contains characters other than the digits 0-9, but this key accepts digits only."
    return None


def verify_command(token: TokenScan, pin: Secret) -> tuple[bytes, CommandApdu]:
    """Return the AID to select and the VERIFY for this profile, the PIN FF-padded to 8 bytes."""
    if token.profile is Profile.HID_CRESCENDO:
        policy = token.smartcard.pin_policy
        encoded = encode_aca_pin(pin, policy) if policy is not None else encode_piv_pin(pin)
        return ACA_AID, CommandApdu(0x00, 0x20, 0x00, ACA_PIN_REFERENCE, encoded.reveal_bytes(), name="VERIFY PIN (ACA)")
    encoded = encode_piv_pin(pin)
    return PIV_AID, CommandApdu(0x00, 0x20, 0x00, PIN_REFERENCE, encoded.reveal_bytes(), name="VERIFY (PIV PIN)")


def verify_pin(channel: Channel, token: TokenScan, pin: Secret, session, *, override: bool = False) -> VerifyResult:
    """Send exactly one VERIFY with `pin` and return the result.

    Raises `VerifyRefusedError` when Step 4 is not allowed now, or needs the
    override and `override` is False, and `PolicyError` when the claimed PIN
    cannot be the token's; nothing is sent in either case. Holds the token's
    lock, audits before and after, and appends a "verify" session event.
    """
    permission = verify_permission(token, session)
    token_id = token.token_id
    if not permission.allowed or (permission.needs_override and not override):
        if token_id is not None:
            session.audit.record(OPERATION, REFUSED, token_id=token_id, profile=token.profile.value,
                                 tries_before=permission.tries_left, reason=permission.reason)
        raise VerifyRefusedError(f"Verify not sent: {permission.reason}", permission)

    problem = validate_claimed_pin(pin, token, session.settings)
    if problem is not None:
        raise PolicyError(f"Verify not sent: {problem}")
    aid, command = verify_command(token, pin)
    applet = "ACA" if aid == ACA_AID else "PIV"
    tries_before = permission.tries_left

    with session.locks.hold(token_id, "verify"):
        with channel.transaction():
            _, select_status = channel.send(select_command(aid, f"SELECT {applet}"))
            if not select_status.ok:
                raise RecoveryError(f"SELECT {applet} returned {select_status}, so the VERIFY was not sent. Rescan the token.")

            session.audit.record(OPERATION, SENDING, token_id=token_id, profile=token.profile.value,
                                 tries_before=tries_before, applet=applet, override=override or None,
                                 ticket=session.triage.ticket or None)
            try:
                _, status = channel.send(command)
            except PcscError as exc:
                log.warning("VERIFY response lost for %s: %s", token_id, exc)
                result = VerifyResult(VerifyOutcome.LOST, None, tries_before, None,
                                      f"The VERIFY was sent but its response was lost ({exc}), so a try may be spent. "
                                      "Rescan to read the counter; do not send another verify blindly.", None,
                                      [COUNTER_CAVEAT], applet)
                _finish(session, token, result)
                return result

    result = _interpret(status, token, tries_before, session.settings, applet)
    _finish(session, token, result)
    return result


def _interpret(status: Status, token: TokenScan, tries_before: int | None, settings: SiteSettings, applet: str) -> VerifyResult:
    hints = [COUNTER_CAVEAT]
    if status.kind is StatusKind.OK:
        return VerifyResult(VerifyOutcome.OK, status, tries_before, token.smartcard.pin.total,
                            "9000: the smart-card PIN works, so the smart card is fine. The user may be confusing it "
                            "with the FIDO PIN, which is separate. Next: Step 7, the FIDO check.", "7", hints, applet)
    if status.kind is StatusKind.VERIFY_FAILED and status.tries:
        if settings.documented_default_pin:
            hints.insert(0, f"The provisioning records give {settings.documented_default_pin} as the documented default "
                            "PIN. Ask the user whether they ever changed it; keytriage never sends it on its own.")
        else:
            hints.insert(0, "Check the provisioning records for a documented default PIN before Step 6; "
                            "keytriage never sends one on its own.")
        noun = "try" if status.tries == 1 else "tries"
        return VerifyResult(VerifyOutcome.WRONG, status, tries_before, status.tries,
                            f"{status.sw:04X}: wrong PIN, {status.tries} {noun} left. The user does not know the PIN: "
                            "do not guess again. Next: Step 6, reset the PIN with the PUK.", "6", hints, applet)
    if status.kind in (StatusKind.BLOCKED, StatusKind.VERIFY_FAILED):
        return VerifyResult(VerifyOutcome.BLOCKED, status, tries_before, 0,
                            f"{status.sw:04X}: the smart-card PIN is blocked. Next: Step 6, reset the PIN with the PUK.",
                            "6", hints, applet)
    if status.kind is StatusKind.NOT_DEFINED:
        return VerifyResult(VerifyOutcome.NOT_DEFINED, status, tries_before, None,
                            f"6A88: no PIN is defined on this token. Check that token ID {token.token_id} matches the "
                            "user's record: they may have a different token than expected.", None, hints, applet)
    return VerifyResult(VerifyOutcome.UNEXPECTED, status, tries_before, None,
                        f"The VERIFY returned {status}, which the runbook does not cover. Record it in the ticket, "
                        "rescan, and do not repeat the verify blindly.", None, hints, applet)


def _finish(session, token: TokenScan, result: VerifyResult) -> None:
    status = result.status.sw if result.status is not None else None
    session.audit.record(OPERATION, result.outcome.value, token_id=token.token_id, profile=token.profile.value,
                         status=status, tries_before=result.tries_before, tries_after=result.tries_after,
                         applet=result.applet, step="4")
    words = result.status.words() if result.status is not None else "response lost"
    session.add_event("verify", f"Step 4 verify: {result.outcome.value} ({words})", token_id=token.token_id,
                      applet="smart card")
