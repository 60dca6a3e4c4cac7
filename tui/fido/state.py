"""Read-only FIDO2 state of one authenticator (runbook Steps 7 and 8, no PIN sent).

`read_fido_state` sends authenticatorGetInfo and clientPin getPINRetries and
nothing else: no PIN, no pinHashEnc, no token request. From the two answers
it derives one `FidoPinState`. The power-cycle requirement comes from
getPINRetries' powerCycleState when the key reports it, or else from a
PIN_AUTH_BLOCKED answer that an earlier, deliberate PIN attempt received. It
is never inferred by counting failures, because the key counts them itself
and re-insertion clears them.
"""

from __future__ import annotations

import enum
import logging
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tui.errors import KeytriageError
from tui.fido.errors import TRANSPORT_PCSC, TRANSPORT_USB_HID, FidoErrorKind, FidoResult, decode_ctap_error

if TYPE_CHECKING:
    from fido2.ctap import CtapDevice

    from tui.fido.discovery import FidoDiscovery, NotAccessible

log = logging.getLogger("keytriage.fido")

# What a broken or damaged authenticator can raise through python-fido2 2.2.1:
# transport errors (OSError), and for damaged CBOR replies ValueError,
# IndexError, KeyError, TypeError and struct.error from its decoders.
DEVICE_ERRORS = (OSError, ValueError, LookupError, TypeError, struct.error, KeytriageError)

AAGUID_NOTE = "identifies the authenticator model, not this key"


class FidoPinState(str, enum.Enum):
    """State of the FIDO PIN as far as it can be read without sending a PIN."""

    NOT_SUPPORTED = "not_supported"
    NOT_ACCESSIBLE = "not_accessible"
    NOT_SET = "not_set"
    HEALTHY = "healthy"
    TEMPORARILY_BLOCKED = "temporarily_blocked"
    PERMANENTLY_BLOCKED = "permanently_blocked"
    UNKNOWN = "unknown"

    @property
    def label(self) -> str:
        """The state in words, upper-case where it calls for action."""
        return {
            FidoPinState.NOT_SUPPORTED: "not supported",
            FidoPinState.NOT_ACCESSIBLE: "not accessible",
            FidoPinState.NOT_SET: "no PIN set",
            FidoPinState.HEALTHY: "ok",
            FidoPinState.TEMPORARILY_BLOCKED: "BLOCKED until re-inserted",
            FidoPinState.PERMANENTLY_BLOCKED: "BLOCKED (reset only)",
            FidoPinState.UNKNOWN: "unknown",
        }[self]


class PinReason(str, enum.Enum):
    """The authenticator response the PIN state rests on."""

    NO_AUTHENTICATOR = "no_authenticator"
    CLIENT_PIN_OPTION_MISSING = "client_pin_option_missing"
    CLIENT_PIN_FALSE = "client_pin_false"
    PERMISSION_DENIED = "permission_denied"
    POWER_CYCLE_STATE = "power_cycle_state"
    PIN_AUTH_BLOCKED_ANSWER = "pin_auth_blocked_answer"
    RETRIES_ZERO = "retries_zero"
    RETRIES_LEFT = "retries_left"
    READ_FAILED = "read_failed"


@dataclass
class FidoPin:
    """The FIDO PIN: state, tries left (None when unknown), power-cycle flag and explanation."""

    state: FidoPinState
    retries: int | None = None
    power_cycle_required: bool | None = None
    reason: PinReason | None = None
    explanation: str = ""

    def text(self) -> str:
        """E.g. "5 tries left, BLOCKED until re-inserted", "no PIN set"."""
        if self.retries is None or self.state in (FidoPinState.NOT_SET, FidoPinState.NOT_SUPPORTED):
            return self.state.label
        return f"{self.retries} tries left, {self.state.label}"


@dataclass
class FidoState:
    """Result of the read-only FIDO check on one token."""

    pin: FidoPin
    transport: str | None = None
    device: str = ""
    client_pin_option: bool | None = None  # None: the getInfo options carry no clientPin ("option missing")
    min_pin_length: int | None = None
    force_pin_change: bool | None = None
    remaining_discoverable_credentials: int | None = None
    versions: list[str] = field(default_factory=list)
    aaguid: str | None = None
    firmware_version: int | None = None
    pin_uv_protocols: list[int] = field(default_factory=list)
    credential_management: bool | None = None
    not_accessible: NotAccessible | None = None
    error: FidoResult | None = None
    error_text: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def found(self) -> bool:
        """True when an authenticator was found, whether or not this login can open it."""
        return self.pin.reason is not PinReason.NO_AUTHENTICATOR


def _explain_not_set() -> str:
    return (
        "No FIDO PIN is set (getInfo clientPin: false), so no FIDO PIN lockout is possible. "
        "This does not mean FIDO is unused: relying parties can register credentials without a PIN, "
        "and no listing shows those. If the user's problem is FIDO, look at the relying party."
    )


def _state_without_device(not_accessible: NotAccessible | None, transport: str | None, label: str) -> FidoState:
    if not_accessible is not None:
        pin = FidoPin(
            FidoPinState.NOT_ACCESSIBLE,
            reason=PinReason.PERMISSION_DENIED,
            explanation=f"{not_accessible.message} {not_accessible.fix}",
        )
        return FidoState(pin, transport or not_accessible.transport, label or not_accessible.path, not_accessible=not_accessible)
    pin = FidoPin(
        FidoPinState.NOT_SUPPORTED,
        reason=PinReason.NO_AUTHENTICATOR,
        explanation="No FIDO authenticator was found on this token over USB HID or PC/SC.",
    )
    return FidoState(pin, transport, label)


def read_fido_state(
    device: CtapDevice | None,
    *,
    transport: str | None = None,
    label: str = "",
    not_accessible: NotAccessible | None = None,
    last_pin_result: FidoResult | None = None,
) -> FidoState:
    """Read the FIDO PIN state of `device` with getInfo and getPINRetries only.

    `device` is any python-fido2 `CtapDevice` (USB HID, PC/SC or the lab's);
    None with `not_accessible` reports a key this login cannot open, and None
    alone reports that no authenticator was found. `transport` is "usb-hid"
    or "pcsc" and selects the PC/SC wording for CTAP 0x7F. `last_pin_result`
    is the decoded answer to a PIN attempt made earlier in this session, used
    only when the key does not report powerCycleState. Never raises for
    device trouble; the state says what failed.
    """
    if device is None:
        return _state_without_device(not_accessible, transport, label)

    from fido2.ctap import CtapError
    from fido2.ctap2 import Ctap2

    state = FidoState(FidoPin(FidoPinState.UNKNOWN), transport, label or repr(device))
    try:
        ctap = Ctap2(device)
    except CtapError as exc:
        return _failed(state, decode_ctap_error(exc, transport=transport), "getInfo")
    except PermissionError as exc:
        return _permission_failed(state, exc)
    except DEVICE_ERRORS as exc:
        return _failed_text(state, f"getInfo failed: {type(exc).__name__}: {exc}")

    try:
        _fill_info(state, ctap.info)
    except DEVICE_ERRORS as exc:
        return _failed_text(state, f"getInfo reply could not be read: {type(exc).__name__}: {exc}")
    if state.client_pin_option is None:
        state.pin = FidoPin(
            FidoPinState.NOT_SUPPORTED,
            reason=PinReason.CLIENT_PIN_OPTION_MISSING,
            explanation=(
                "The authenticator's getInfo options carry no clientPin entry: it does not support a FIDO PIN. "
                "This is vendor-specific behaviour; escalate."
            ),
        )
        return state

    try:
        retries, power_cycle_state = _read_retries(ctap)
    except CtapError as exc:
        return _retries_failed(state, decode_ctap_error(exc, transport=transport))
    except PermissionError as exc:
        return _permission_failed(state, exc)
    except DEVICE_ERRORS as exc:
        return _failed_text(state, f"getPINRetries failed: {type(exc).__name__}: {exc}")

    state.pin = _classify(state.client_pin_option, retries, power_cycle_state, last_pin_result)
    log.debug("FIDO state over %s: %s, retries %s", transport or "unknown transport", state.pin.state.value, retries)
    return state


def _fill_info(state: FidoState, info: Any) -> None:
    options = dict(info.options)
    state.client_pin_option = options.get("clientPin")
    state.versions = list(info.versions)
    state.aaguid = str(info.aaguid) if info.aaguid else None
    state.pin_uv_protocols = list(info.pin_uv_protocols)
    state.firmware_version = info.firmware_version or None
    state.remaining_discoverable_credentials = info.remaining_disc_creds
    state.credential_management = bool(options.get("credMgmt") or ("FIDO_2_1_PRE" in info.versions and options.get("credentialMgmtPreview")))
    # fido2 fills absent getInfo fields with defaults (minPINLength 4, forcePINChange
    # False); only CTAP 2.1 keys report them, so older keys show them as unknown.
    if "FIDO_2_1" in info.versions or "FIDO_2_1_PRE" in info.versions:
        state.min_pin_length = info.min_pin_length
        state.force_pin_change = info.force_pin_change
    if state.force_pin_change:
        state.notes.append("The key requires a FIDO PIN change before the PIN can be used again (forcePINChange).")


def _read_retries(ctap: Any) -> tuple[int, bool | None]:
    from fido2.ctap2.pin import ClientPin, PinProtocolV1

    try:
        client_pin = ClientPin(ctap)
    except ValueError:
        # No common PIN/UV auth protocol listed: CTAP 2.0 keys may omit the
        # list, and getPINRetries needs no shared secret, so protocol 1 serves.
        client_pin = ClientPin(ctap, PinProtocolV1())
    retries, power_cycle_state = client_pin.get_pin_retries()
    # CTAP defines pinRetries as an unsigned count (8 at most on every key we
    # know); anything else is a damaged reply, not a number to show.
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 255:
        raise ValueError(f"getPINRetries returned {retries!r}, not a retry count")
    return retries, None if power_cycle_state is None else bool(power_cycle_state)


def _classify(client_pin: bool, retries: int, power_cycle_state: bool | None, last: FidoResult | None) -> FidoPin:
    if not client_pin:
        return FidoPin(FidoPinState.NOT_SET, retries, power_cycle_state, PinReason.CLIENT_PIN_FALSE, _explain_not_set())
    if retries == 0:
        return FidoPin(
            FidoPinState.PERMANENTLY_BLOCKED,
            0,
            power_cycle_state,
            PinReason.RETRIES_ZERO,
            "The FIDO PIN is blocked (0 tries left). Only a FIDO reset recovers the key; it erases every FIDO credential, "
            "and the user must register the key again with every relying party.",
        )
    temporarily = (
        "Three wrong FIDO PINs in a row: the key rejects PIN attempts until it is removed and re-inserted. "
        f"{retries} tries left; nothing is lost. Re-insert the key, then read the state again."
    )
    if power_cycle_state:
        return FidoPin(FidoPinState.TEMPORARILY_BLOCKED, retries, True, PinReason.POWER_CYCLE_STATE, temporarily)
    if power_cycle_state is None and last is not None and last.kind is FidoErrorKind.PIN_AUTH_BLOCKED:
        return FidoPin(FidoPinState.TEMPORARILY_BLOCKED, retries, True, PinReason.PIN_AUTH_BLOCKED_ANSWER, temporarily)
    return FidoPin(
        FidoPinState.HEALTHY,
        retries,
        power_cycle_state,
        PinReason.RETRIES_LEFT,
        f"A FIDO PIN is set and {retries} tries are left. If the user knows the PIN, one deliberate attempt settles it.",
    )


def _failed(state: FidoState, result: FidoResult, step: str) -> FidoState:
    state.error = result
    state.error_text = f"{step}: {result.message}"
    state.pin = FidoPin(FidoPinState.UNKNOWN, reason=PinReason.READ_FAILED, explanation=state.error_text)
    return state


def _failed_text(state: FidoState, text: str) -> FidoState:
    state.error_text = text
    state.pin = FidoPin(FidoPinState.UNKNOWN, reason=PinReason.READ_FAILED, explanation=text)
    return state


def _retries_failed(state: FidoState, result: FidoResult) -> FidoState:
    # Some keys answer getPINRetries itself with the lockout code.
    if result.kind is FidoErrorKind.PIN_BLOCKED:
        state.error = result
        state.pin = FidoPin(FidoPinState.PERMANENTLY_BLOCKED, 0, None, PinReason.RETRIES_ZERO, result.message)
        return state
    if result.kind is FidoErrorKind.PIN_AUTH_BLOCKED:
        state.error = result
        state.pin = FidoPin(FidoPinState.TEMPORARILY_BLOCKED, None, True, PinReason.PIN_AUTH_BLOCKED_ANSWER, result.message)
        return state
    return _failed(state, result, "getPINRetries")


def _permission_failed(state: FidoState, exc: OSError) -> FidoState:
    from tui.fido.discovery import not_accessible_for

    problem = not_accessible_for(state.device, state.transport or TRANSPORT_USB_HID, exc)
    return _state_without_device(problem, state.transport, state.device)


def read_discovered_state(discovery: FidoDiscovery, *, last_pin_result: FidoResult | None = None) -> FidoState:
    """Read the state through the best endpoint `find_fido_devices` returned.

    An accessible USB HID device comes first (it reports real CTAP codes),
    then PC/SC, then an inaccessible device, which gives NOT_ACCESSIBLE.
    Notes record when another path of the same token was not accessible.
    """
    endpoint = discovery.best()
    if endpoint is None:
        state = read_fido_state(None)
    else:
        state = read_fido_state(
            endpoint.device,
            transport=endpoint.transport,
            label=endpoint.label,
            not_accessible=endpoint.not_accessible,
            last_pin_result=last_pin_result,
        )
    for other in discovery.endpoints:
        if other is not endpoint and other.not_accessible is not None:
            state.notes.append(f"{other.not_accessible.message} {other.not_accessible.fix}")
    state.notes.extend(discovery.notes)
    if endpoint is not None and endpoint.transport == TRANSPORT_PCSC and endpoint.device is not None:
        state.notes.append("Read over PC/SC: CTAP errors there arrive without their code; USB HID gives the exact code.")
    return state
