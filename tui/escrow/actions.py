"""Secret-setting actions built on the escrow flow: each escrows first, then sends its APDUs.

The first action is "set a PUK" on a PIV token whose PUK is not on file: a new
PUK is generated, escrowed as pending, set with PIV CHANGE REFERENCE DATA
(`00 24 00 81 10 <old PUK> <new PUK>`, each FF-padded to 8 bytes), and its
outcome recorded.
"""

from __future__ import annotations

import logging
import secrets

from tui.apdu import CommandApdu, StatusKind
from tui.errors import PcscError, PolicyError
from tui.escrow.errors import EscrowError
from tui.escrow.flow import ApplyOutcome, EscrowFlow, EscrowResult, SetRequest, TransmitLostError
from tui.escrow.records import INITIAL_PIN_REASON, Encoding, SecretKind
from tui.model import Profile, TokenId
from tui.piv import PIV_AID, PUK_REFERENCE, select_command
from tui.secret import Secret
from tui.transport import Channel

log = logging.getLogger("keytriage.escrow")

PIV_REFERENCE_LENGTH = 8  # PIV PIN and PUK blocks are 8 bytes, right-padded with FF
PIV_MIN_LENGTH = 6
GENERATED_PUK_DIGITS = 8
SET_PUK_REASON = "PUK set where none was on file"
NO_PUK_COMMAND_MESSAGE = (
    "An HID Crescendo has no public command to change its PUK (CHANGE REFERENCE DATA for reference 81 returns "
    "6A88), so no PUK was generated or escrowed. To recover a blocked smart-card PIN on this key, use the "
    "admin-key unlock instead."
)
PUK_CHECK_HINT = (
    "On a YubiKey with firmware 5.3 or later, GET METADATA for the PUK (reference 81) shows the tries left and whether "
    "the default PUK is still set, without spending a try. Otherwise the candidate can only be checked by spending a "
    "PUK try: ask before doing so."
)


def generate_piv_puk() -> Secret:
    """Return a new PIV PUK: 8 random ASCII digits from `secrets`."""
    digits = "".join(secrets.choice("0123456789") for _ in range(GENERATED_PUK_DIGITS))
    return Secret(digits, SecretKind.PIV_PUK.label)


def pad_piv_reference(value: Secret) -> bytes:
    """Return a PIV PIN or PUK as its 8-byte block, ASCII right-padded with FF.

    Raises `PolicyError` (naming the kind, never the value) for a value that is
    not 6 to 8 ASCII characters.
    """
    raw = value.reveal_bytes("ascii") if isinstance(value.reveal(), bytes) else _ascii(value)
    if not PIV_MIN_LENGTH <= len(raw) <= PIV_REFERENCE_LENGTH:
        raise PolicyError(f"the {value.kind} must be {PIV_MIN_LENGTH} to {PIV_REFERENCE_LENGTH} characters, got {len(raw)}")
    return raw + b"\xff" * (PIV_REFERENCE_LENGTH - len(raw))


def _ascii(value: Secret) -> bytes:
    try:
        return value.reveal_text().encode("ascii")
    except UnicodeEncodeError:
        raise PolicyError(f"the {value.kind} must be ASCII characters only") from None


def change_puk_command(old_puk: Secret, new_puk: Secret) -> CommandApdu:
    """Build PIV CHANGE REFERENCE DATA for the PUK; its data field is redacted in every log."""
    data = pad_piv_reference(old_puk) + pad_piv_reference(new_puk)
    return CommandApdu(0x00, 0x24, 0x00, PUK_REFERENCE, data, name="CHANGE REFERENCE DATA (PUK)", sensitive=True)


def set_piv_puk(channel: Channel, flow: EscrowFlow, token_id: TokenId | str, old_puk: Secret, *,
                profile: str = "piv", ticket: str = "", reason: str = SET_PUK_REASON,
                new_puk: Secret | None = None, confirmed_version: int | None = None,
                allow_on_file: bool = False) -> EscrowResult:
    """Set a new PIV PUK, escrowed before it is sent, and return the escrow result.

    `old_puk` is the PUK the token contains now (typed by the technician, or the
    documented default). `new_puk` defaults to a generated one. Raises
    `PolicyError` before anything is written when the profile has no public
    PUK command (HID Crescendo), a PUK is already on file (unless
    `allow_on_file`) or a value has the wrong length. After a CONFLICT
    result, pass its `conflict.current_version` as `confirmed_version` once the
    technician confirms.
    """
    # Checked before any escrow write: a Crescendo would answer 6A88 and leave a failed record behind.
    if profile == Profile.HID_CRESCENDO.value:
        raise PolicyError(NO_PUK_COMMAND_MESSAGE)

    new_puk = new_puk or generate_piv_puk()
    pad_piv_reference(old_puk)
    pad_piv_reference(new_puk)

    if not allow_on_file and confirmed_version is None:
        try:
            on_file = flow.on_file(token_id, SecretKind.PIV_PUK)
        except EscrowError:
            on_file = None  # the flow's pre-flight reports the Vault problem with its path
        if on_file is not None:
            raise PolicyError(f"a PIV PUK is already {on_file.words()} for {token_id}; use it, or replace it deliberately")

    request = SetRequest(
        token_id=token_id,
        kind=SecretKind.PIV_PUK,
        value=new_puk,
        encoding=Encoding.ASCII_FF_PADDED.value,
        reason=reason,
        ticket=ticket,
        profile=profile,
        check_hint=PUK_CHECK_HINT,
    )

    def apply() -> ApplyOutcome:
        with channel.transaction():
            try:
                _, select_status = channel.send(select_command(PIV_AID, "SELECT PIV"))
            except PcscError as error:
                # SELECT carries no secret and changes nothing: the PUK is untouched.
                return ApplyOutcome.failed(None, f"SELECT PIV failed before the PUK was sent: {error}")
            if not select_status.ok:
                return ApplyOutcome.failed(select_status, "the PIV applet could not be selected, so the PUK was not sent")

            try:
                _, status = channel.send(change_puk_command(old_puk, new_puk))
            except PcscError as error:
                raise TransmitLostError(f"CHANGE REFERENCE DATA (PUK) was sent but its response was lost: {error}") from error

        if status.ok:
            return ApplyOutcome.applied(status)
        if status.kind is StatusKind.VERIFY_FAILED:
            return ApplyOutcome.failed(status, "The old PUK was wrong. Do not try another guess: find the PUK on file or in the provisioning records.")
        if status.kind is StatusKind.BLOCKED:
            return ApplyOutcome.failed(status, "The PUK is blocked; it cannot be changed. Recovery needs a PIV reset.")
        return ApplyOutcome.failed(status)

    return flow.set_secret(request, apply, confirmed_version=confirmed_version)


def initial_pin_request(token_id: TokenId | str, kind: SecretKind, pin: Secret, *, encoding: str, ticket: str = "", profile: str = "") -> SetRequest:
    """Return the request for a user PIN issued by the help desk, with its standard reason and label."""
    return SetRequest(token_id=token_id, kind=kind, value=pin, encoding=encoding, reason=INITIAL_PIN_REASON,
                      label=INITIAL_PIN_REASON, ticket=ticket, profile=profile)
