"""The one place where CTAP status codes become typed results with words.

Every CTAP error that reaches keytriage, from python-fido2's `CtapError` over
USB HID or PC/SC, goes through `decode_ctap_error`. The result states what
happened, how many PIN tries are left when that is known, and what the
technician does next. Over PC/SC python-fido2 2.2.1 turns every status word
other than 9000, 9100 and 61xx into `CtapError(OTHER)`, so the real code is
lost there; that case has its own kind.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from tui.errors import KeytriageError

TRANSPORT_USB_HID = "usb-hid"
TRANSPORT_PCSC = "pcsc"

# CTAP 2.1 status codes keytriage distinguishes.
CTAP1_ERR_CHANNEL_BUSY = 0x06
CTAP2_ERR_OPERATION_DENIED = 0x27
CTAP2_ERR_KEEPALIVE_CANCEL = 0x2D
CTAP2_ERR_USER_ACTION_TIMEOUT = 0x2F
CTAP2_ERR_NOT_ALLOWED = 0x30
CTAP2_ERR_PIN_INVALID = 0x31
CTAP2_ERR_PIN_BLOCKED = 0x32
CTAP2_ERR_PIN_AUTH_INVALID = 0x33
CTAP2_ERR_PIN_AUTH_BLOCKED = 0x34
CTAP2_ERR_PIN_NOT_SET = 0x35
CTAP2_ERR_PIN_POLICY_VIOLATION = 0x37
CTAP2_ERR_ACTION_TIMEOUT = 0x3A
CTAP1_ERR_OTHER = 0x7F


class FidoErrorKind(str, enum.Enum):
    """Meaning of a CTAP error for the runbook, independent of its transport."""

    PIN_INVALID = "pin_invalid"
    PIN_AUTH_BLOCKED = "pin_auth_blocked"
    PIN_BLOCKED = "pin_blocked"
    PIN_NOT_SET = "pin_not_set"
    PIN_POLICY_VIOLATION = "pin_policy_violation"
    PIN_AUTH_INVALID = "pin_auth_invalid"
    NOT_ALLOWED = "not_allowed"
    OPERATION_DENIED = "operation_denied"
    USER_ACTION_TIMEOUT = "user_action_timeout"
    KEEPALIVE_CANCEL = "keepalive_cancel"
    CHANNEL_BUSY = "channel_busy"
    OTHER_OVER_PCSC = "other_over_pcsc"
    OTHER = "other"


@dataclass(frozen=True)
class FidoResult:
    """A decoded CTAP error: its kind, code, tries left (None when unknown) and words."""

    kind: FidoErrorKind
    code: int
    name: str
    transport: str | None
    message: str
    retries: int | None = None

    @property
    def power_cycle_required(self) -> bool:
        """True when the key refuses PIN attempts until it is removed and re-inserted."""
        return self.kind is FidoErrorKind.PIN_AUTH_BLOCKED

    @property
    def consumed_retry(self) -> bool:
        """True when the failed attempt used up a PIN try."""
        return self.kind in (FidoErrorKind.PIN_INVALID, FidoErrorKind.PIN_AUTH_BLOCKED, FidoErrorKind.PIN_BLOCKED)


class FidoError(KeytriageError):
    """A CTAP operation failed; `result` is the decoded `FidoResult`."""

    def __init__(self, result: FidoResult) -> None:
        self.result = result
        super().__init__(result.message)


def _code_of(error: object) -> int:
    """Return the CTAP status code of a `CtapError` or a bare integer."""
    code = getattr(error, "code", error)
    return int(code)  # type: ignore[arg-type]


def _code_name(code: int) -> str:
    from fido2.ctap import CtapError

    try:
        return CtapError.ERR(code).name
    except ValueError:
        return "UNKNOWN"


def decode_ctap_error(
    error: object,
    *,
    transport: str | None = None,
    retries: int | None = None,
    reset_window_s: float | None = None,
    min_pin_length: int | None = None,
) -> FidoResult:
    """Decode a `CtapError` (or a CTAP status code) into a `FidoResult`.

    `retries` is the PIN retry count read after the failure, when the caller
    read it; `reset_window_s` and `min_pin_length` make the reset-timing and
    PIN-policy messages concrete.
    """
    code = _code_of(error)
    name = _code_name(code)
    tag = f"CTAP 0x{code:02X} {name}"

    def result(kind: FidoErrorKind, message: str, tries: int | None = retries) -> FidoResult:
        return FidoResult(kind, code, name, transport, message, tries)

    if code == CTAP2_ERR_PIN_INVALID:
        left = "tries left unknown" if retries is None else f"{retries} tries left"
        return result(FidoErrorKind.PIN_INVALID, f"Wrong FIDO PIN ({tag}), {left}. Stop here: a forgotten FIDO PIN has no recovery except a FIDO reset.")
    if code == CTAP2_ERR_PIN_AUTH_BLOCKED:
        return result(
            FidoErrorKind.PIN_AUTH_BLOCKED,
            f"Three wrong FIDO PINs in a row ({tag}): the key rejects every PIN attempt until it is removed and re-inserted. No credential is lost.",
        )
    if code == CTAP2_ERR_PIN_BLOCKED:
        return result(
            FidoErrorKind.PIN_BLOCKED,
            f"The FIDO PIN is blocked ({tag}, 0 tries left). Only a FIDO reset recovers the key, and it erases every FIDO credential on it.",
            0,
        )
    if code == CTAP2_ERR_PIN_NOT_SET:
        return result(FidoErrorKind.PIN_NOT_SET, f"No FIDO PIN is set ({tag}). This is not a failure and no try was used.")
    if code == CTAP2_ERR_PIN_POLICY_VIOLATION:
        minimum = "the key's minimum" if min_pin_length is None else f"at least {min_pin_length}"
        return result(
            FidoErrorKind.PIN_POLICY_VIOLATION,
            f"The key rejected the new FIDO PIN ({tag}): use {minimum} characters and at most 63 bytes, and a new value when a PIN change is forced.",
        )
    if code == CTAP2_ERR_PIN_AUTH_INVALID:
        return result(FidoErrorKind.PIN_AUTH_INVALID, f"The key rejected the PIN/UV auth parameter ({tag}). Read the FIDO state again and retry once; no PIN try was used.")
    if code == CTAP2_ERR_NOT_ALLOWED:
        window = "a few seconds" if reset_window_s is None else f"{reset_window_s:g} seconds"
        return result(
            FidoErrorKind.NOT_ALLOWED,
            f"The key did not allow the operation ({tag}). For a FIDO reset this means it came too late: it must arrive within {window} of inserting the key. Remove and re-insert the key, then confirm at once.",
        )
    if code == CTAP2_ERR_OPERATION_DENIED:
        return result(FidoErrorKind.OPERATION_DENIED, f"The key denied the operation ({tag}): the touch was declined, or the key does not allow it on this transport. Retry over USB HID if this was PC/SC.")
    if code in (CTAP2_ERR_USER_ACTION_TIMEOUT, CTAP2_ERR_ACTION_TIMEOUT):
        return result(FidoErrorKind.USER_ACTION_TIMEOUT, f"No touch was detected in time ({tag}). Ask the user to touch the key while it blinks, then retry.")
    if code == CTAP2_ERR_KEEPALIVE_CANCEL:
        return result(FidoErrorKind.KEEPALIVE_CANCEL, f"The operation was cancelled before the key was touched ({tag}). Nothing changed on the key.")
    if code == CTAP1_ERR_CHANNEL_BUSY:
        return result(FidoErrorKind.CHANNEL_BUSY, f"The key is busy with another request ({tag}). Wait for it to finish, then retry.")
    if code == CTAP1_ERR_OTHER and transport == TRANSPORT_PCSC:
        return result(
            FidoErrorKind.OTHER_OVER_PCSC,
            "unknown CTAP error over PC/SC, retry over USB HID if available (the PC/SC path reports every failure status word as CTAP 0x7F OTHER).",
        )
    return result(FidoErrorKind.OTHER, f"The authenticator returned an unexpected error ({tag}).")
