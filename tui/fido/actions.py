"""FIDO2 actions of runbook Steps 8 and 9: one deliberate FIDO PIN attempt and a new FIDO PIN.

`list_credentials` spends the session's one FIDO PIN attempt on a token: it
gets a pinUvAuthToken with the credential-management permission (the legacy
token on keys without pinUvAuthToken) and lists relying parties and user
names through authenticatorCredentialManagement. The listing is returned for
display only. Logs and the audit trail get the outcome and counts, never a
relying-party ID or a user name.

Before any PIN goes out, the action refuses without device traffic when the
last FIDO state shows a block, and reads getPINRetries afresh (no PIN) to
refuse a key that was blocked meanwhile. A second attempt in the same
session needs `override=True`, which the UI grants only after showing the
tries left and a typed confirmation.

`set_new_fido_pin` escrows the new PIN (kind `fido-pin`) through the escrow
flow before clientPin setPIN sends it.

Every function here blocks on the key: run them on the device thread.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

from tui.errors import KeytriageError, PolicyError
from tui.fido.errors import FidoErrorKind, FidoResult, decode_ctap_error
from tui.fido.state import FidoPinState, FidoState, read_fido_state
from tui.secret import Secret

log = logging.getLogger("keytriage.fido")

FIDO_PIN_OPERATION = "fido-pin"
CRED_LIST_OPERATION = "fido-cred-list"

# CTAP 2.1: a FIDO PIN has at least 4 Unicode code points and at most 63 bytes of UTF-8.
MIN_PIN_CODE_POINTS = 4
MAX_PIN_BYTES = 63
GENERATED_PIN_DIGITS = 8

# Outcomes of a "fido-pin" audit record; every one except NOT_SET sent a PIN
# that the key checked, so it counts as the session's attempt.
OUTCOME_ACCEPTED = "accepted"
OUTCOME_WRONG = "wrong"
OUTCOME_AUTH_BLOCKED = "auth-blocked"
OUTCOME_BLOCKED = "blocked"
OUTCOME_NOT_SET = "not-set"
OUTCOME_FAILED = "failed"
NOT_COUNTED_OUTCOMES = frozenset({OUTCOME_NOT_SET})

SET_PIN_REASON = "FIDO PIN set by the help desk"


class Refusal(str, enum.Enum):
    """Reason a FIDO PIN was not sent."""

    TEMPORARILY_BLOCKED = "temporarily_blocked"
    PERMANENTLY_BLOCKED = "permanently_blocked"
    NOT_SET = "not_set"
    NOT_SUPPORTED = "not_supported"
    ATTEMPT_USED = "attempt_used"
    NO_STATE = "no_state"


class FidoPinRefused(KeytriageError):
    """No FIDO PIN was sent: `refusal` gives the reason and `retries` the tries left when known."""

    def __init__(self, refusal: Refusal, message: str, retries: int | None = None) -> None:
        self.refusal = refusal
        self.retries = retries
        super().__init__(message)


# --- PIN rules -------------------------------------------------------------------------------


def validate_fido_pin(pin: Secret, min_pin_length: int | None = None) -> str | None:
    """Return why `pin` breaks the FIDO PIN rules, or None when it is acceptable.

    The rules are at least max(4, `min_pin_length`) Unicode code points and at
    most 63 bytes of UTF-8. The text names lengths only, never the value.
    """
    minimum = max(MIN_PIN_CODE_POINTS, min_pin_length or 0)
    text = pin.reveal_text()
    if len(text) < minimum:
        return f"the FIDO PIN must have at least {minimum} characters, this one has {len(text)}"
    size = len(text.encode("utf-8"))
    if size > MAX_PIN_BYTES:
        return f"the FIDO PIN must be at most {MAX_PIN_BYTES} bytes in UTF-8, this one is {size} bytes"
    return None


def check_fido_pin(pin: Secret, min_pin_length: int | None = None) -> None:
    """Raise `PolicyError` when `pin` breaks the FIDO PIN rules (see `validate_fido_pin`)."""
    problem = validate_fido_pin(pin, min_pin_length)
    if problem is not None:
        raise PolicyError(f"{problem}; nothing was sent to the key")


def generate_fido_pin(min_pin_length: int | None = None) -> Secret:
    """Return a new FIDO PIN of random digits from `secrets`: 8 digits, or the key's minimum when longer."""
    length = max(GENERATED_PIN_DIGITS, min_pin_length or 0)
    return Secret("".join(secrets.choice("0123456789") for _ in range(length)), "FIDO PIN")


# --- attempt history -----------------------------------------------------------------------------


def pin_attempts(audit: Any, token_key: str, *, within: dt.timedelta | None = None) -> list[Any]:
    """Return the audit records of FIDO PIN attempts on `token_key` that count against the one attempt.

    A PIN_NOT_SET response spends no try, so its record does not count.
    """
    kwargs = {} if within is None else {"within": within}
    return [entry for entry in audit.attempts(token_key, FIDO_PIN_OPERATION, **kwargs)
            if entry.outcome not in NOT_COUNTED_OUTCOMES]


def refusal_for_state(state: FidoState | None) -> FidoPinRefused | None:
    """Return the refusal the FIDO state calls for before any PIN is sent, or None."""
    if state is None:
        return FidoPinRefused(Refusal.NO_STATE, "The FIDO state has not been read; read it first (no PIN is sent).")
    pin = state.pin
    if pin.state is FidoPinState.TEMPORARILY_BLOCKED:
        return FidoPinRefused(
            Refusal.TEMPORARILY_BLOCKED,
            "The key rejects FIDO PIN attempts until it is removed and re-inserted (three wrong PINs in a row). "
            "No PIN was sent. Re-insert the key, then read the FIDO state again.", pin.retries)
    if pin.state is FidoPinState.PERMANENTLY_BLOCKED:
        return FidoPinRefused(
            Refusal.PERMANENTLY_BLOCKED,
            "The FIDO PIN is blocked (0 tries left). No PIN was sent: only a FIDO reset recovers the key (Step 9).", 0)
    if pin.state in (FidoPinState.NOT_SUPPORTED, FidoPinState.NOT_ACCESSIBLE):
        return FidoPinRefused(Refusal.NOT_SUPPORTED, f"No FIDO PIN can be sent: {pin.explanation or pin.state.label}.")
    return None


# --- credential listing ----------------------------------------------------------------------


@dataclass
class RelyingParty:
    """One relying party with discoverable credentials, and the user names registered there."""

    rp_id: str
    name: str = ""
    user_names: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        # Relying-party IDs and user names must not reach logs or tracebacks.
        return f"RelyingParty(<{len(self.user_names)} users>)"


@dataclass
class CredentialListing:
    """The discoverable credentials on a key, for display only."""

    relying_parties: list[RelyingParty] = field(default_factory=list)
    remaining: int | None = None

    @property
    def credential_count(self) -> int:
        """The number of discoverable credentials listed."""
        return sum(len(rp.user_names) for rp in self.relying_parties)

    def counts_text(self) -> str:
        """Return the counts alone, e.g. "3 credentials for 2 relying parties"; safe for logs and audit."""
        count = self.credential_count
        parties = len(self.relying_parties)
        return f"{count} credential{'s' if count != 1 else ''} for {parties} relying part{'ies' if parties != 1 else 'y'}"

    def __repr__(self) -> str:
        return f"CredentialListing({self.counts_text()})"


@dataclass
class PinAttemptResult:
    """The outcome of the FIDO PIN attempt: the listing when accepted, else the decoded CTAP error."""

    outcome: str
    message: str
    listing: CredentialListing | None = None
    error: FidoResult | None = None
    retries_before: int | None = None
    retries_after: int | None = None
    state: FidoState | None = None  # the FIDO state read after the attempt

    @property
    def pin_sent(self) -> bool:
        """True when the PIN reached the key."""
        return self.outcome != OUTCOME_NOT_SET or self.error is not None


def _client_pin(ctap: Any) -> Any:
    from fido2.ctap2.pin import ClientPin, PinProtocolV1

    try:
        return ClientPin(ctap)
    except ValueError:
        # CTAP 2.0 keys may omit pinUvAuthProtocols; protocol 1 is the one they all have.
        return ClientPin(ctap, PinProtocolV1())


def _outcome_for(result: FidoResult) -> str:
    return {
        FidoErrorKind.PIN_INVALID: OUTCOME_WRONG,
        FidoErrorKind.PIN_AUTH_BLOCKED: OUTCOME_AUTH_BLOCKED,
        FidoErrorKind.PIN_BLOCKED: OUTCOME_BLOCKED,
        FidoErrorKind.PIN_NOT_SET: OUTCOME_NOT_SET,
    }.get(result.kind, OUTCOME_FAILED)


def list_credentials(device: Any, pin: Secret, *, token_key: str, audit: Any, state: FidoState | None,
                     transport: str | None = None, override: bool = False) -> PinAttemptResult:
    """Spend one deliberate FIDO PIN attempt and list the key's discoverable credentials.

    `device` is an open fido2 `CtapDevice` of the token and `state` the FIDO
    state last read for it. The attempt is counted under `token_key`, the
    token ID (or "reader:<name>"). Raises `FidoPinRefused` before anything is
    sent when the state shows a block, when the session's attempt is used and
    `override` is False, or when a fresh getPINRetries shows a block; raises
    `PolicyError` for a PIN that breaks the length rules. A NOT_SET state
    returns the finding without sending the PIN.
    """
    refusal = refusal_for_state(state)
    if refusal is not None:
        raise refusal
    if state.pin.state is FidoPinState.NOT_SET:
        return PinAttemptResult(OUTCOME_NOT_SET, state.pin.explanation, state=state)

    used = pin_attempts(audit, token_key)
    if used and not override:
        last = used[-1]
        raise FidoPinRefused(
            Refusal.ATTEMPT_USED,
            f"A FIDO PIN attempt was already made on this token in this session ({last.outcome} at {last.time}). "
            "A second attempt needs the override.", state.pin.retries)
    check_fido_pin(pin, state.min_pin_length)

    from fido2.ctap import CtapError
    from fido2.ctap2 import Ctap2

    # Read again without a PIN: the key may have been blocked since the last read.
    fresh = read_fido_state(device, transport=transport, label=state.device)
    refusal = refusal_for_state(fresh)
    if refusal is not None:
        raise refusal
    if fresh.pin.state is FidoPinState.NOT_SET:
        return PinAttemptResult(OUTCOME_NOT_SET, fresh.pin.explanation, state=fresh)
    check_fido_pin(pin, fresh.min_pin_length)

    ctap = Ctap2(device)
    client_pin = _client_pin(ctap)
    retries_before = fresh.pin.retries
    try:
        token = client_pin.get_pin_token(pin.reveal_text(), client_pin.PERMISSION.CREDENTIAL_MGMT)
    except CtapError as exc:
        return _pin_rejected(exc, client_pin, device, token_key=token_key, audit=audit, transport=transport,
                             retries_before=retries_before, override=override, label=state.device)

    _audit(audit, FIDO_PIN_OPERATION, OUTCOME_ACCEPTED, token_key, tries_before=retries_before,
           override="typed" if override else None)
    log.info("FIDO PIN accepted on %s", token_key)
    listing = _enumerate(ctap, client_pin, token, token_key=token_key, audit=audit, transport=transport)
    after = read_fido_state(device, transport=transport, label=state.device)
    return PinAttemptResult(OUTCOME_ACCEPTED, f"The FIDO PIN is correct. {listing.counts_text().capitalize()}.",
                            listing=listing, retries_before=retries_before, retries_after=after.pin.retries, state=after)


def _pin_rejected(exc: Any, client_pin: Any, device: Any, *, token_key: str, audit: Any, transport: str | None,
                  retries_before: int | None, override: bool, label: str) -> PinAttemptResult:
    from fido2.ctap import CtapError

    retries = None
    if exc.code == CtapError.ERR.PIN_INVALID:
        # The error carries no count: read it afresh, which sends no PIN.
        try:
            retries, _ = client_pin.get_pin_retries()
        except CtapError as retry_error:
            log.info("getPINRetries after a wrong FIDO PIN failed: CTAP 0x%02X", retry_error.code)
    result = decode_ctap_error(exc, transport=transport, retries=retries)
    outcome = _outcome_for(result)
    _audit(audit, FIDO_PIN_OPERATION, outcome, token_key, status=f"CTAP 0x{result.code:02X}",
           tries_before=retries_before, tries_after=result.retries, override="typed" if override else None)
    log.info("FIDO PIN attempt on %s: %s", token_key, result.kind.value)
    after = read_fido_state(device, transport=transport, label=label, last_pin_result=result)
    return PinAttemptResult(outcome, result.message, error=result, retries_before=retries_before,
                            retries_after=result.retries if result.retries is not None else after.pin.retries, state=after)


def _enumerate(ctap: Any, client_pin: Any, token: bytes, *, token_key: str, audit: Any, transport: str | None) -> CredentialListing:
    from fido2.ctap import CtapError
    from fido2.ctap2 import CredentialManagement

    if not CredentialManagement.is_supported(ctap.info):
        _audit(audit, CRED_LIST_OPERATION, "not-supported", token_key)
        raise FidoActionError("The key accepted the FIDO PIN but does not support credential management, so no listing is possible.")
    manager = CredentialManagement(ctap, client_pin.protocol, token)
    listing = CredentialListing()
    try:
        metadata = manager.get_metadata()
        listing.remaining = metadata.get(CredentialManagement.RESULT.MAX_REMAINING_COUNT)
        for entry in manager.enumerate_rps():
            rp = entry.get(CredentialManagement.RESULT.RP, {})
            party = RelyingParty(str(rp.get("id", "")), str(rp.get("name", "")))
            for credential in manager.enumerate_creds(entry[CredentialManagement.RESULT.RP_ID_HASH]):
                user = credential.get(CredentialManagement.RESULT.USER, {})
                party.user_names.append(str(user.get("name") or user.get("displayName") or "(no user name)"))
            listing.relying_parties.append(party)
    except CtapError as exc:
        result = decode_ctap_error(exc, transport=transport)
        _audit(audit, CRED_LIST_OPERATION, OUTCOME_FAILED, token_key, status=f"CTAP 0x{result.code:02X}")
        raise FidoActionError(f"Listing the credentials failed after the FIDO PIN was accepted: {result.message}") from None
    _audit(audit, CRED_LIST_OPERATION, "listed", token_key, count=listing.credential_count, result=listing.counts_text())
    return listing


class FidoActionError(KeytriageError):
    """A FIDO action failed after it started. The message names what failed and what to do next."""


def _audit(audit: Any, operation: str, outcome: str, token_key: str, **fields: Any) -> None:
    if audit is None:
        return
    try:
        audit.record(operation, outcome, token_id=token_key, applet="FIDO", **{k: v for k, v in fields.items() if v is not None})
    except KeytriageError as exc:
        # The attempt already happened; losing its record must not hide the result.
        log.warning("Cannot write the %s audit record for %s: %s", operation, token_key, exc)


# --- new FIDO PIN ----------------------------------------------------------------------------------


def site_lets_user_set_pin(settings: Any) -> bool:
    """Return True when `[site] fido_pin_set_by_user = true`: the user sets the FIDO PIN at first registration."""
    raw = getattr(settings, "raw", None) or {}
    site = raw.get("site", {}) if isinstance(raw, dict) else {}
    return site.get("fido_pin_set_by_user") is True


def set_new_fido_pin(device: Any, flow: Any, token_id: str, new_pin: Secret, *, transport: str | None = None,
                     ticket: str = "", profile: str = "", reason: str = SET_PIN_REASON,
                     confirmed_version: int | None = None) -> Any:
    """Escrow `new_pin` as the token's `fido-pin`, then set it with clientPin setPIN; return the `EscrowResult`.

    Works only on a key without a FIDO PIN (after a reset, or never set).
    Raises `PolicyError` before anything is written when the key already has
    a PIN, has no clientPin support, or `new_pin` breaks the length rules.
    """
    from fido2.ctap import CtapError
    from fido2.ctap2 import Ctap2
    from fido2.ctap2.pin import ClientPin

    from tui.escrow.flow import ApplyOutcome, SetRequest, TransmitLostError
    from tui.escrow.records import Encoding, SecretKind

    try:
        ctap = Ctap2(device)
    except OSError as exc:
        raise FidoActionError(f"the key stopped responding to getInfo ({exc}); nothing was written or set. Reinsert it and retry.") from exc
    if not ClientPin.is_supported(ctap.info):
        raise PolicyError("the key's getInfo carries no clientPin option, so it takes no FIDO PIN; nothing was written")
    if ctap.info.options.get("clientPin"):
        raise PolicyError("the key already has a FIDO PIN; a new one can be set only after a FIDO reset. Nothing was written")
    versions = set(ctap.info.versions)
    min_length = ctap.info.min_pin_length if versions & {"FIDO_2_1", "FIDO_2_1_PRE"} else None
    check_fido_pin(new_pin, min_length)

    request = SetRequest(token_id=token_id, kind=SecretKind.FIDO_PIN, value=new_pin, encoding=Encoding.UTF8.value,
                         reason=reason, ticket=ticket, profile=profile)

    def apply() -> ApplyOutcome:
        try:
            _client_pin(ctap).set_pin(new_pin.reveal_text())
        except CtapError as exc:
            result = decode_ctap_error(exc, transport=transport, min_pin_length=min_length)
            return ApplyOutcome.failed(None, result.message)
        except OSError as exc:
            raise TransmitLostError(f"clientPin setPIN was sent but its response was lost: {exc}") from exc
        return ApplyOutcome.applied()

    return flow.set_secret(request, apply, confirmed_version=confirmed_version)
