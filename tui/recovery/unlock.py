"""Admin-key unlock of an HID Crescendo PIN: XAUTH1, then UNLOCK PIN with a new escrowed PIN.

The ACA grants XAUTH1 after GET CHALLENGE and EXTERNAL AUTHENTICATE with the
admin key (`tui.xauth.authenticate`), and UNLOCK PIN `00 2C 02 00 Lc <new
PIN FF-padded>` then sets a new PIN and restores its tries. The new PIN is
escrowed as pending before the first APDU, and the whole exchange (SELECT
ACA, GET CHALLENGE, one EXTERNAL AUTHENTICATE, UNLOCK PIN) runs inside the
apply step in one PC/SC transaction, so XAUTH1 still holds for UNLOCK PIN.

UNLOCK PIN has its own try counter: 63Cx means XAUTH1 was not authenticated
and x unlock tries are left, and 6983 means the unlock tries are exhausted.
A failed EXTERNAL AUTHENTICATE is never retried here; a second unlock of the
same token in the session after a rejected key needs the technician's
override.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field

from tui.aca import select_aca
from tui.apdu import CommandApdu, Status, StatusKind
from tui.errors import PcscError, PolicyError
from tui.escrow.actions import initial_pin_request
from tui.escrow.flow import ApplyOutcome, Outcome, TransmitLostError
from tui.escrow.records import Encoding, SecretKind
from tui.model import Profile, TokenScan
from tui.pin import encode_pin
from tui.recovery.common import RecoveryRefusedError, require_token_id, require_writable, session_flow
from tui.recovery.generate import check_new_pin, generate_pin_for
from tui.secret import Secret
from tui.transport import Channel
from tui.xauth import XauthOutcome, XauthResult, authenticate, parse_admin_key

log = logging.getLogger("keytriage.recovery")

OPERATION = "admin-unlock"


class AdminKeySource(str, enum.Enum):
    """The source of the admin key."""

    ESCROW = "escrow record"
    TYPED = "typed by the technician"


class UnlockOutcome(str, enum.Enum):
    """The end state of the admin-key unlock."""

    UNLOCKED = "unlocked"
    AUTH_FAILED = "auth_failed"  # EXTERNAL AUTHENTICATE rejected the cryptogram
    NOT_AUTHENTICATED = "not_authenticated"  # UNLOCK PIN 63Cx: XAUTH1 not held, x unlock tries left
    UNLOCK_BLOCKED = "unlock_blocked"  # 6983: unlock tries exhausted
    NO_ADMIN_KEY = "no_admin_key"  # XAUTH1 not initialised
    REFUSED = "refused"  # escrow refused: nothing sent
    UNKNOWN = "unknown"
    UNEXPECTED = "unexpected"


@dataclass
class UnlockResult:
    """The result of the unlock: outcome, unlock tries left, the escrow result and the verdict."""

    outcome: UnlockOutcome
    verdict: str
    next_steps: list[str] = field(default_factory=list)
    status: Status | None = None
    unlock_tries_left: int | None = None
    xauth: object | None = None  # tui.xauth.XauthResult
    escrow: object | None = None  # tui.escrow.flow.EscrowResult
    new_pin: Secret | None = field(default=None, repr=False)


def unsupported_reason(token: TokenScan) -> str | None:
    """Return why the admin-key unlock cannot run on `token`, None when it can."""
    if token.profile is not Profile.HID_CRESCENDO:
        return (f"The admin-key unlock is an HID Crescendo ACA command; this is a {token.profile.label}. "
                "Reset the PIN with the PUK (Step 6) instead.")
    if token.smartcard.admin_key.present is False:
        return "No admin key is set on this token (XAUTH1 not initialised), so the PIN cannot be unlocked with one. Next: Step 10."
    return None


def admin_key_from_escrow(token: TokenScan, session) -> Secret:
    """Read the applied admin key on file; raise when the policy does not allow it or none is applied.

    Raises `VaultPermissionError` (naming the path) when the Vault policy
    does not allow reading values, and `RecoveryRefusedError` when no applied
    admin key is on file.
    """
    token_id = require_token_id(token, "Reading the admin key on file")
    found = session_flow(session).read_value_on_file(token_id, SecretKind.ADMIN_KEY)
    if found is None:
        raise RecoveryRefusedError(f"No applied admin key is on file for {token_id}. Type the key, or go to Step 10.")
    return found[0]


def earlier_failed_unlock(token: TokenScan, session) -> bool:
    """True when an unlock of `token` was rejected for its admin key in this session."""
    if token.token_id is None:
        return False
    failed = (UnlockOutcome.AUTH_FAILED.value, UnlockOutcome.NOT_AUTHENTICATED.value)
    return any(entry.outcome in failed for entry in session.audit.attempts(token.token_id, OPERATION))


def unlock_pin_command(new_pin: Secret, token: TokenScan) -> CommandApdu:
    """Build UNLOCK PIN `00 2C 02 00 Lc <new PIN FF-padded>`; its data field is redacted in every log."""
    encoded = encode_pin(new_pin, token.smartcard.pin_policy, label="new PIN")
    return CommandApdu(0x00, 0x2C, 0x02, 0x00, encoded.reveal_bytes(), name="UNLOCK PIN", sensitive=True)


def unlock_pin(channel: Channel, token: TokenScan, session, admin_key: Secret, *, key_source: AdminKeySource,
               new_pin: Secret | None = None, confirmed_version: int | None = None,
               override: bool = False) -> UnlockResult:
    """Authenticate once with `admin_key`, escrow the new PIN, then send UNLOCK PIN; never retry.

    Raises before anything is written or sent: `ReadOnlyModeError`,
    `RecoveryRefusedError` (not a Crescendo, no admin key, no token ID, an
    earlier rejected key without `override`), `PolicyError` (an admin key of
    the wrong length for the token's key type, a new PIN the key or site
    rejects), `EscrowUnavailableError`. `new_pin` defaults to a generated one.
    """
    require_writable(session.settings, "The admin-key unlock")
    token_id = require_token_id(token, "The admin-key unlock")
    reason = unsupported_reason(token)
    if reason:
        raise RecoveryRefusedError(reason)
    if earlier_failed_unlock(token, session) and not override:
        raise RecoveryRefusedError(f"An admin key was already rejected by {token_id} in this session, and each rejection "
                                   "may spend an unlock try. Check that the key belongs to this token ID; type the "
                                   "override only to try a different key deliberately.")

    key_type = token.smartcard.admin_key.key_type
    parse_admin_key(admin_key, key_type)
    new_pin = new_pin or generate_pin_for(token, session.settings)
    check_new_pin(new_pin, token, session.settings)
    command = unlock_pin_command(new_pin, token)
    flow = session_flow(session)
    seen: dict[str, object] = {}

    def apply() -> ApplyOutcome:
        with channel.transaction():
            try:
                status, _ = select_aca(channel)
            except PcscError as error:
                return ApplyOutcome.failed(None, f"SELECT ACA failed before the admin key was used: {error}")
            if not status.ok:
                return ApplyOutcome.failed(status, "the ACA could not be selected, so nothing was sent")

            session.audit.record(OPERATION, "sending", token_id=token_id, profile=token.profile.value,
                                 source=key_source.value, override=override or None)
            try:
                xauth = authenticate(channel, admin_key, key_type=key_type, select=False)
            except PolicyError as error:
                # The challenge length disagreed with the key: EXTERNAL AUTHENTICATE was not sent.
                return ApplyOutcome.failed(None, str(error))
            seen["xauth"] = xauth
            if not xauth.succeeded:
                return ApplyOutcome.failed(xauth.status, xauth.verdict)

            try:
                _, unlock_status = channel.send(command)
            except PcscError as error:
                raise TransmitLostError(f"UNLOCK PIN was sent but its response was lost: {error}") from error
        seen["status"] = unlock_status
        if unlock_status.ok:
            return ApplyOutcome.applied(unlock_status)
        return ApplyOutcome.failed(unlock_status)

    request = initial_pin_request(token_id, SecretKind.PIV_PIN, new_pin, encoding=Encoding.ASCII_FF_PADDED.value,
                                  ticket=session.triage.ticket, profile=token.profile.value)
    with session.locks.hold(token_id, "admin-key unlock"):
        escrow = flow.set_secret(request, apply, confirmed_version=confirmed_version)

    result = _interpret(escrow, seen.get("xauth"), seen.get("status"))
    result.escrow = escrow
    result.xauth = seen.get("xauth")
    result.new_pin = new_pin if result.outcome in (UnlockOutcome.UNLOCKED, UnlockOutcome.UNKNOWN) else None
    _finish(session, token, key_source, result)
    return result


def _interpret(escrow, xauth: XauthResult | None, status: Status | None) -> UnlockResult:
    if escrow.outcome in (Outcome.REFUSED, Outcome.CONFLICT, Outcome.NOT_ESCROWED):
        return UnlockResult(UnlockOutcome.REFUSED, f"Nothing was sent to the token. {escrow.message}")
    if escrow.outcome is Outcome.UNKNOWN:
        return UnlockResult(UnlockOutcome.UNKNOWN, f"{escrow.message} Rescan: if the PIN shows full tries, the new PIN "
                            "on file is current.", status=status)
    if escrow.outcome is Outcome.APPLIED:
        return UnlockResult(UnlockOutcome.UNLOCKED, "The PIN is unlocked with the admin key; the new PIN is escrowed. "
                            "Give it to the user and have them change it to one only they know.", status=status)

    if xauth is None:
        return UnlockResult(UnlockOutcome.UNEXPECTED, escrow.message)
    if not xauth.succeeded:
        outcome = {
            XauthOutcome.FAILED: UnlockOutcome.AUTH_FAILED,
            XauthOutcome.BLOCKED: UnlockOutcome.UNLOCK_BLOCKED,
            XauthOutcome.NOT_INITIALISED: UnlockOutcome.NO_ADMIN_KEY,
        }.get(xauth.outcome, UnlockOutcome.UNEXPECTED)
        verdict = (f"EXTERNAL AUTHENTICATE: {xauth.verdict} UNLOCK PIN was not sent. Do not retry with the same key."
                   if outcome is UnlockOutcome.AUTH_FAILED else f"{xauth.verdict} UNLOCK PIN was not sent.")
        return UnlockResult(outcome, verdict, list(xauth.next_steps), xauth.status)

    if status is not None and status.kind is StatusKind.VERIFY_FAILED:
        return UnlockResult(UnlockOutcome.NOT_AUTHENTICATED,
                            f"{status.sw:04X}: UNLOCK PIN reports XAUTH1 not authenticated, {status.tries} unlock tries "
                            "left. Another program may have reset the card between the commands; do not repeat blindly.",
                            status=status, unlock_tries_left=status.tries)
    if status is not None and status.kind is StatusKind.BLOCKED:
        return UnlockResult(UnlockOutcome.UNLOCK_BLOCKED, "6983: the unlock tries are exhausted; the PIN cannot be "
                            "unlocked with the admin key any more. Next: Step 10.", status=status, unlock_tries_left=0)
    if status is not None and status.kind is StatusKind.WRONG_DATA:
        return UnlockResult(UnlockOutcome.UNEXPECTED, "6A80: the key rejected the new PIN's format; the old PIN is "
                            "unchanged. Check the PIN properties and try a PIN that meets them.", status=status)
    words = str(status) if status is not None else "no status word"
    return UnlockResult(UnlockOutcome.UNEXPECTED, f"UNLOCK PIN returned {words}. {escrow.message}", status=status)


def _finish(session, token: TokenScan, key_source: AdminKeySource, result: UnlockResult) -> None:
    status = result.status.sw if result.status is not None else None
    escrow = result.escrow
    session.audit.record(OPERATION, result.outcome.value, token_id=token.token_id, profile=token.profile.value,
                         status=status, tries_after=result.unlock_tries_left, source=key_source.value,
                         escrow_path=getattr(escrow, "kv_path", None), step="6a")
    reference = escrow.reference() if escrow is not None else None
    refs = [reference] if reference else []
    unlocked = result.outcome is UnlockOutcome.UNLOCKED
    session.add_event("admin-unlock", f"Admin-key unlock ({key_source.value}): {result.outcome.value}",
                      token_id=token.token_id, applet="smart card", resolved_by="admin-key unlock" if unlocked else None,
                      escrow_refs=refs,
                      user_actions=["Change the PIN issued by the help desk to one only you know."] if unlocked else [])


__all__ = ["AdminKeySource", "OPERATION", "UnlockOutcome", "UnlockResult", "admin_key_from_escrow", "unlock_pin",
           "unsupported_reason"]
