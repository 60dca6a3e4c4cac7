"""Runbook Step 6: reset the smart-card PIN with the PUK (PIV RESET RETRY COUNTER).

The new PIN is escrowed as pending (kind piv-pin, reason "initial PIN issued
by the help desk") before `00 2C 00 80 10 PUK || new PIN` is sent, each
8 bytes. The PUK is one the technician chose: the escrow record on file,
the site PUK manifest, or typed. A wrong PUK (63Cx) stops at once: the
result gives the PUK tries left, the audit records that no retry is offered,
and further PUK resets of that token are rejected for the session.

PUK encodings differ: PIV allows any 8 bytes, a YubiKey takes 6 to 8
characters (bytes 00-7F only from firmware 5.7), and the vendor CLI's
"16-digit PUK" is read here as 8 bytes written in hex. The encoding comes
from the escrow record (a hex-encoded record is stored as bytes), the
manifest row, or the `[recovery] puk_encoding` site setting for a typed PUK.
A PUK the token cannot take is rejected before the pending write.

HID publishes no PUK command for the Crescendo, so Step 6 runs on the PIV
and YubiKey profiles only; a Crescendo is pointed to the admin-key unlock.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field

from tui.apdu import CommandApdu, Status, StatusKind
from tui.errors import KeytriageError, PcscError, PolicyError
from tui.escrow.actions import initial_pin_request
from tui.escrow.flow import ApplyOutcome, Outcome, TransmitLostError
from tui.escrow.records import Encoding, SecretKind
from tui.model import PinState, Profile, TokenScan
from tui.pin import encode_piv_pin, encode_puk
from tui.piv import PIN_REFERENCE, PIV_AID, select_command
from tui.recovery.common import (RecoveryRefusedError, RecoverySettings, require_token_id, require_writable,
                                 session_flow)
from tui.recovery.generate import check_new_pin, generate_pin_for
from tui.recovery.manifest import lookup_puk
from tui.secret import Secret
from tui.transport import Channel

log = logging.getLogger("keytriage.recovery")

OPERATION = "puk-reset"
NO_PUK_RETRY = "wrong PUK: stopped, no PUK retry offered"

# YubiKey firmware from which the PUK takes bytes 00-7F only.
YUBIKEY_ASCII_PUK_FIRMWARE = (5, 7, 0)


class PukSource(str, enum.Enum):
    """The source of the PUK."""

    ESCROW = "escrow record"
    MANIFEST = "site PUK manifest"
    TYPED = "typed by the technician"


@dataclass
class PukChoice:
    """The PUK the technician chose for the one RESET RETRY COUNTER, its encoding and source."""

    source: PukSource
    puk: Secret = field(repr=False)
    encoding: str = "padded"
    version: int | None = None  # escrow version, when from escrow
    detail: str = ""  # e.g. "manifest line 4"


@dataclass
class PukAvailability:
    """The PUK sources on file for a token, described without revealing a value."""

    escrow: str | None  # e.g. "on file (v3)", None when nothing is on file
    escrow_readable: bool
    manifest: str | None  # e.g. "manifest line 4", None when no row
    notes: list[str] = field(default_factory=list)


class PukResetOutcome(str, enum.Enum):
    """The end state of Step 6."""

    RESET = "reset"
    WRONG_PUK = "wrong_puk"
    PUK_BLOCKED = "puk_blocked"
    NOT_DEFINED = "not_defined"
    REFUSED = "refused"  # escrow refused, conflict or not escrowed: nothing sent
    UNKNOWN = "unknown"  # sent, response lost
    UNEXPECTED = "unexpected"


@dataclass
class PukResetResult:
    """The result of Step 6: outcome, PUK tries left, the escrow result and the verdict."""

    outcome: PukResetOutcome
    verdict: str
    next_step: str | None
    status: Status | None = None
    puk_tries_left: int | None = None
    escrow: object | None = None  # tui.escrow.flow.EscrowResult
    new_pin: Secret | None = field(default=None, repr=False)


def unsupported_reason(token: TokenScan) -> str | None:
    """Return why Step 6 cannot run on this token's profile (Crescendo), None when it can."""
    if token.profile is Profile.HID_CRESCENDO:
        return ("HID publishes no PUK command for the Crescendo, so the PIN cannot be reset with a PUK here. "
                "Use the admin-key unlock instead.")
    if token.profile not in (Profile.YUBIKEY, Profile.GENERIC_PIV) or not token.smartcard.piv_present:
        return "This token has no PIV applet, so it has no PUK to reset the PIN with."
    return None


def puk_availability(token: TokenScan, session) -> PukAvailability:
    """Report the PUK sources on file for `token` (escrow metadata, manifest row) without reading values."""
    notes: list[str] = []
    escrow_words = None
    readable = False
    if token.token_id is not None:
        try:
            flow = session_flow(session)
            on_file = flow.on_file(token.token_id, SecretKind.PIV_PUK)
            escrow_words = on_file.words() if on_file is not None else None
            report = flow.preflight(token.token_id, SecretKind.PIV_PUK)
            readable = report.can_read_values
        except KeytriageError as exc:
            notes.append(f"Escrow not checked: {exc}")

    manifest_words = None
    try:
        entry = lookup_puk(session.settings, token.token_id) if token.token_id is not None else None
        if entry is not None:
            manifest_words = f"manifest line {entry.line} ({entry.encoding})"
    except PolicyError as exc:
        notes.append(str(exc))
    return PukAvailability(escrow_words, readable, manifest_words, notes)


def puk_from_escrow(token: TokenScan, session) -> PukChoice:
    """Read the applied PUK on file; raise when the policy does not allow reading or none is applied.

    Raises `VaultPermissionError` (naming the path) when the Vault policy
    does not allow reading values, and `RecoveryRefusedError` when no applied
    PUK is on file.
    """
    token_id = require_token_id(token, "Reading the PUK on file")
    found = session_flow(session).read_value_on_file(token_id, SecretKind.PIV_PUK)
    if found is None:
        raise RecoveryRefusedError(f"No applied PIV PUK is on file for {token_id}. Use the site manifest or type the PUK.")
    value, version = found
    # A hex-encoded record comes back as bytes: the 8 bytes sent as they are.
    encoding = "hex-8-bytes" if isinstance(value.reveal(), bytes) else "padded"
    return PukChoice(PukSource.ESCROW, value, encoding, version, f"escrow version {version}")


def puk_from_manifest(token: TokenScan, session) -> PukChoice:
    """Return the PUK of the site manifest row for `token`; raise when there is none."""
    token_id = require_token_id(token, "Reading the PUK manifest")
    if not session.settings.puk_manifest:
        raise RecoveryRefusedError("No PUK manifest is configured ([site] puk_manifest).")
    entry = lookup_puk(session.settings, token_id)
    if entry is None:
        raise RecoveryRefusedError(f"The PUK manifest {session.settings.puk_manifest} has no row for {token_id}.")
    return PukChoice(PukSource.MANIFEST, entry.puk, entry.encoding, None, f"manifest line {entry.line}")


def typed_puk(token: TokenScan, session, puk: Secret) -> PukChoice:
    """Wrap a typed PUK with the site's encoding for this profile."""
    encoding = RecoverySettings.from_settings(session.settings).puk_encoding_for(token.profile.value)
    return PukChoice(PukSource.TYPED, puk, encoding)


def puk_block(choice: PukChoice, token: TokenScan) -> bytes:
    """Return the 8-byte PUK block; raise `PolicyError` for a PUK this token cannot take."""
    raw = choice.puk.reveal()
    if isinstance(raw, bytes):
        if len(raw) != 8:
            raise PolicyError(f"the PUK from the {choice.source.value} has {len(raw)} bytes; a binary PUK must be exactly 8")
        block = raw
    else:
        block = encode_puk(choice.puk, choice.encoding).reveal_bytes()

    if token.profile is Profile.YUBIKEY:
        firmware = _firmware(token)
        if choice.encoding == "hex-8-bytes" or isinstance(raw, bytes):
            raise PolicyError(f"the PUK from the {choice.source.value} is 8 binary bytes, but a YubiKey PUK is "
                              "6 to 8 characters; check the record's encoding")
        if firmware is not None and firmware >= YUBIKEY_ASCII_PUK_FIRMWARE and any(b > 0x7F for b in block.rstrip(b"\xff")):
            raise PolicyError("the PUK contains non-ASCII characters, which a YubiKey from firmware 5.7 rejects")
    return block


def _firmware(token: TokenScan) -> tuple[int, ...] | None:
    text = token.smartcard.firmware
    try:
        return tuple(int(part) for part in text.split(".")) if text else None
    except ValueError:
        return None


def reset_retry_counter_command(block: bytes, new_pin: Secret) -> CommandApdu:
    """Build RESET RETRY COUNTER `00 2C 00 80 10 PUK || new PIN`; its data field is redacted in every log."""
    data = block + encode_piv_pin(new_pin, label="new PIN").reveal_bytes()
    return CommandApdu(0x00, 0x2C, 0x00, PIN_REFERENCE, data, name="RESET RETRY COUNTER", sensitive=True)


def earlier_wrong_puk(token: TokenScan, session) -> bool:
    """True when a PUK reset of `token` already failed with a wrong PUK in this session."""
    if token.token_id is None:
        return False
    return any(entry.outcome == PukResetOutcome.WRONG_PUK.value for entry in session.audit.attempts(token.token_id, OPERATION))


def reset_pin_with_puk(channel: Channel, token: TokenScan, session, puk: PukChoice, *,
                       new_pin: Secret | None = None, confirmed_version: int | None = None) -> PukResetResult:
    """Escrow the new PIN, then send one RESET RETRY COUNTER with `puk`; never retry a wrong PUK.

    Raises before anything is written or sent: `ReadOnlyModeError`,
    `RecoveryRefusedError` (Crescendo, no token ID, PUK blocked, an earlier
    wrong PUK), `PolicyError` (a PUK or new PIN the token or site rejects),
    `EscrowUnavailableError`. `new_pin` defaults to a generated one.
    """
    require_writable(session.settings, "The PUK reset")
    token_id = require_token_id(token, "The PUK reset")
    reason = unsupported_reason(token)
    if reason:
        raise RecoveryRefusedError(reason)
    if token.smartcard.puk.state is PinState.BLOCKED:
        raise RecoveryRefusedError(f"The PUK is blocked ({token.smartcard.puk.text()}): a PUK reset cannot succeed. Next: Step 10.")
    if earlier_wrong_puk(token, session):
        raise RecoveryRefusedError(f"A wrong PUK was already sent to {token_id} in this session. The runbook stops there: "
                                   "treat the PUK as unknown and go to Step 10. No PUK retry is offered.")

    block = puk_block(puk, token)
    new_pin = new_pin or generate_pin_for(token, session.settings)
    check_new_pin(new_pin, token, session.settings)
    flow = session_flow(session)
    command = reset_retry_counter_command(block, new_pin)
    puk_tries = token.smartcard.puk.remaining
    seen: dict[str, Status] = {}

    def apply() -> ApplyOutcome:
        with channel.transaction():
            try:
                _, select_status = channel.send(select_command(PIV_AID, "SELECT PIV"))
            except PcscError as error:
                return ApplyOutcome.failed(None, f"SELECT PIV failed before the PUK was sent: {error}")
            if not select_status.ok:
                return ApplyOutcome.failed(select_status, "the PIV applet could not be selected, so the PUK was not sent")

            session.audit.record(OPERATION, "sending", token_id=token_id, profile=token.profile.value,
                                 tries_before=puk_tries, source=puk.source.value)
            try:
                _, status = channel.send(command)
            except PcscError as error:
                raise TransmitLostError(f"RESET RETRY COUNTER was sent but its response was lost: {error}") from error
        seen["status"] = status
        if status.ok:
            return ApplyOutcome.applied(status)
        return ApplyOutcome.failed(status)

    request = initial_pin_request(token_id, SecretKind.PIV_PIN, new_pin, encoding=Encoding.ASCII_FF_PADDED.value,
                                  ticket=session.triage.ticket, profile=token.profile.value)
    with session.locks.hold(token_id, "PUK reset"):
        escrow = flow.set_secret(request, apply, confirmed_version=confirmed_version)

    result = _interpret(escrow, seen.get("status"), puk_tries)
    result.escrow = escrow
    result.new_pin = new_pin if result.outcome in (PukResetOutcome.RESET, PukResetOutcome.UNKNOWN) else None
    _finish(session, token, puk, result)
    return result


def _interpret(escrow, status: Status | None, puk_tries: int | None) -> PukResetResult:
    if escrow.outcome in (Outcome.REFUSED, Outcome.CONFLICT, Outcome.NOT_ESCROWED):
        return PukResetResult(PukResetOutcome.REFUSED, f"Nothing was sent to the token. {escrow.message}", "6")
    if escrow.outcome is Outcome.UNKNOWN:
        return PukResetResult(PukResetOutcome.UNKNOWN,
                              f"{escrow.message} Rescan: if the PIN shows full tries, the new PIN on file is current.",
                              None, status)
    if escrow.outcome is Outcome.APPLIED:
        return PukResetResult(PukResetOutcome.RESET, "The PIN is reset with the PUK; the new PIN is escrowed. "
                              "Give it to the user and have them change it to one only they know.", None, status)

    if status is not None and status.kind is StatusKind.VERIFY_FAILED and status.tries:
        noun = "try" if status.tries == 1 else "tries"
        return PukResetResult(PukResetOutcome.WRONG_PUK,
                              f"{status.sw:04X}: wrong PUK, {status.tries} PUK {noun} left. Stop: do not retry. Treat the "
                              "PUK as unknown and go to Step 10.", "10", status, status.tries)
    if status is not None and status.kind in (StatusKind.BLOCKED, StatusKind.VERIFY_FAILED):
        return PukResetResult(PukResetOutcome.PUK_BLOCKED, f"{status.sw:04X}: the PUK is blocked. Next: Step 10.", "10",
                              status, 0)
    if status is not None and status.kind is StatusKind.NOT_DEFINED:
        return PukResetResult(PukResetOutcome.NOT_DEFINED, "6A88: no PIN or PUK is defined, so the PUK is not actually "
                              "set. Abort; next: Step 10.", "10", status)
    words = str(status) if status is not None else "no status word"
    return PukResetResult(PukResetOutcome.UNEXPECTED, f"RESET RETRY COUNTER returned {words}. {escrow.message}", None,
                          status, puk_tries)


def _finish(session, token: TokenScan, puk: PukChoice, result: PukResetResult) -> None:
    status = result.status.sw if result.status is not None else None
    reason = NO_PUK_RETRY if result.outcome is PukResetOutcome.WRONG_PUK else None
    escrow = result.escrow
    session.audit.record(OPERATION, result.outcome.value, token_id=token.token_id, profile=token.profile.value,
                         status=status, tries_after=result.puk_tries_left, source=puk.source.value, reason=reason,
                         escrow_path=getattr(escrow, "kv_path", None), step="6")
    reference = escrow.reference() if escrow is not None else None
    refs = [reference] if reference else []
    actions = ["Change the PIN issued by the help desk to one only you know."] if result.outcome is PukResetOutcome.RESET else []
    session.add_event("puk-reset", f"Step 6 PUK reset ({puk.source.value}): {result.outcome.value}", token_id=token.token_id,
                      applet="smart card", resolved_by="PUK reset" if result.outcome is PukResetOutcome.RESET else None,
                      escrow_refs=refs, user_actions=actions)
