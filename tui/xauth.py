"""External authentication (XAUTH1) with the ACA admin key: the runbook's Step 11.

The ACA of an HID Crescendo key grants XAUTH1 after GET CHALLENGE
(`00 84 00 00 00`) and EXTERNAL AUTHENTICATE (`00 82 00 01 Lc <cryptogram>`),
where the cryptogram is the challenge encrypted in ECB mode with the admin key.
The challenge length gives the key type: 8 bytes for a 3DES key, 16 bytes for
an AES-128 key, and GET CHALLENGE returns 6A88 when no admin key is set.

`test_admin_key` is the Step 11 check. `authenticate` is the same exchange
without the verdict text, for the admin-key PIN unlock that needs XAUTH1 in
the session before UNLOCK PIN. A failed EXTERNAL AUTHENTICATE is never retried
here: the caller decides whether to spend another attempt.

The key tested is by default the admin key on file in escrow:
`admin_key_on_file` reads only its metadata, and `read_admin_key_on_file`
reads the value just before the test.
"""

from __future__ import annotations

import enum
import string
from dataclasses import dataclass

from typing import TYPE_CHECKING

from tui.aca import GET_CHALLENGE_COMMAND, admin_key_from_challenge, select_aca
from tui.apdu import CommandApdu, Status, StatusKind
from tui.errors import KeytriageError, PolicyError
from tui.model import AdminKey
from tui.secret import Secret
from tui.transport import Channel

if TYPE_CHECKING:
    from tui.escrow.context import EscrowContext
    from tui.escrow.flow import OnFile

# P2 of EXTERNAL AUTHENTICATE: key index 1, the XAUTH1 admin key.
XAUTH1_KEY_INDEX = 0x01

TDES = "3DES"
AES_128 = "AES-128"

# Key lengths in bytes each type accepts. A 16-byte 3DES key is two-key 3DES
# (K1 K2), which is expanded to K1 K2 K1 before use.
KEY_LENGTHS = {TDES: (24, 16), AES_128: (16,)}


def external_authenticate_command(cryptogram: bytes) -> CommandApdu:
    """Build EXTERNAL AUTHENTICATE for key index 1; the data field is always redacted."""
    return CommandApdu(0x00, 0x82, 0x00, XAUTH1_KEY_INDEX, cryptogram, name="EXTERNAL AUTHENTICATE", sensitive=True)


# --- the admin key as typed or escrowed ---------------------------------------------------


def _expected_digits(key_type: str | None) -> str:
    if key_type == AES_128:
        return "32 hex digits for an AES-128 key"
    if key_type == TDES:
        return "48 hex digits (or 32 for two-key 3DES) for a 3DES key"
    return "32 hex digits for AES-128, or 48 (or 32) for 3DES"


def parse_admin_key(key: Secret, key_type: str | None = None) -> Secret:
    """Check an admin key locally and return it as a binary `Secret`.

    `key` is hex text (spaces and colons between digits are ignored) or the
    raw key bytes. `key_type`, when known, is "3DES" or "AES-128" and the key
    length must fit it. Raises `PolicyError` naming the expected length; the
    message never contains the key. Nothing is sent to a token.
    """
    if key_type is not None and key_type not in KEY_LENGTHS:
        raise ValueError(f"unknown admin key type {key_type!r}; use {TDES!r} or {AES_128!r}")

    value = key.reveal()
    if isinstance(value, str):
        digits = "".join(ch for ch in value if ch not in " :\t")
        if not digits or any(ch not in string.hexdigits for ch in digits):
            raise PolicyError(f"the admin key is not hexadecimal: enter {_expected_digits(key_type)}")
        if len(digits) % 2:
            raise PolicyError(f"the admin key has an odd number of hex digits ({len(digits)}): enter {_expected_digits(key_type)}")
        raw = bytes.fromhex(digits)
        got = f"{len(digits)} hex digits"
    else:
        raw = bytes(value)
        got = f"{len(raw)} bytes"

    allowed = KEY_LENGTHS[key_type] if key_type else (16, 24)
    if len(raw) not in allowed:
        raise PolicyError(f"the admin key has {got}: enter {_expected_digits(key_type)}")
    return Secret(raw, "admin key")


def key_types_for(key: Secret) -> tuple[str, ...]:
    """Return the admin key types a binary key of this length can be."""
    return tuple(key_type for key_type, lengths in KEY_LENGTHS.items() if len(key) in lengths)


def compute_cryptogram(key_type: str, key: Secret, challenge: bytes) -> bytes:
    """Encrypt `challenge` with the admin key in ECB mode (the EXTERNAL AUTHENTICATE data).

    `key` is a binary `Secret` from `parse_admin_key`. Raises ValueError when
    the challenge is not one block of the key type's cipher.
    """
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    block = 8 if key_type == TDES else 16
    if len(challenge) != block:
        raise ValueError(f"a {key_type} cryptogram needs an {block}-byte challenge, got {len(challenge)} bytes")

    raw = key.reveal_bytes()
    if key_type == TDES:
        if len(raw) == 16:
            # Two-key 3DES: K1 K2 K1, written out rather than left to the cipher.
            raw = raw + raw[:8]
        algorithm = _triple_des(raw)
    else:
        algorithm = algorithms.AES(raw)
    encryptor = Cipher(algorithm, modes.ECB()).encryptor()
    return encryptor.update(challenge) + encryptor.finalize()


def _triple_des(key: bytes):
    # cryptography 43 moved TripleDES to the decrepit module and deprecated
    # the old location; older releases have only the old one.
    try:
        from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    except ImportError:  # pragma: no cover - depends on the installed cryptography
        from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES
    return TripleDES(key)


# --- the admin key on file in escrow ------------------------------------------------------


class AdminKeyNotOnFileError(KeytriageError):
    """Escrow has no applied admin key for the token, so there is nothing on file to test."""


def admin_key_on_file(escrow: EscrowContext, token_id: str) -> OnFile | None:
    """Return the escrow metadata of the admin key on file for `token_id`, None when nothing is on file.

    Blocking: it may call Vault. The value is not read. Raises
    `EscrowUnavailableError` when escrow cannot be used now and `EscrowError`
    when Vault fails; both messages name the reason.
    """
    from tui.escrow.records import SecretKind

    return escrow.require_flow().on_file(token_id, SecretKind.ADMIN_KEY)


def read_admin_key_on_file(escrow: EscrowContext, token_id: str) -> tuple[Secret, int]:
    """Read the applied admin key on file for `token_id`; return it with its escrow version.

    Blocking: it calls Vault. The key stays in a `Secret` and is never
    logged. Raises `AdminKeyNotOnFileError` when no version is applied,
    `VaultPermissionError` naming the path when the Vault policy does not
    allow reading values, and the other escrow errors as
    `admin_key_on_file` does.
    """
    from tui.escrow.records import SecretKind

    found = escrow.require_flow().read_value_on_file(token_id, SecretKind.ADMIN_KEY)
    if found is None:
        raise AdminKeyNotOnFileError(f"no applied admin key is on file for {token_id}; type the key to test it")
    return found


# --- Step 11 ------------------------------------------------------------------------------


class XauthOutcome(str, enum.Enum):
    """Outcome of one admin-key test."""

    FUNCTIONAL = "functional"
    FAILED = "failed"
    BLOCKED = "blocked"
    NOT_INITIALISED = "not initialised"
    NO_CHALLENGE = "no challenge"
    NO_ACA = "no ACA"
    UNEXPECTED = "unexpected"


VERDICTS = {
    # Worded to read right in a ticket also when the test was only a check after another fix.
    XauthOutcome.FUNCTIONAL: ("External auth is functional: the token accepted the admin key. If a system "
                              "that uses it still fails, investigate that system."),
    XauthOutcome.FAILED: "Wrong key on file or corrupted key on the token.",
    XauthOutcome.BLOCKED: "The admin key is blocked on the token.",
    XauthOutcome.NOT_INITIALISED: "No admin key is set on this token (XAUTH1 not initialised).",
    XauthOutcome.NO_CHALLENGE: "The token had no current challenge when EXTERNAL AUTHENTICATE arrived.",
    XauthOutcome.NO_ACA: "This token has no ACA, so it has no XAUTH1 admin key to test.",
    XauthOutcome.UNEXPECTED: "The token answered with a status word the runbook does not cover.",
}

LAST_RESORT = (
    "Last resort: delete the admin key and reinstall a known-good one (PUT XAUTH KEY, which needs the "
    "smart-card PIN or XAUTH1). Escrow the new key to Vault under the token ID before it is written, "
    "and update the relying system with it."
)

NEXT_STEPS = {
    XauthOutcome.FUNCTIONAL: (
        "The token and the key on file agree, so the failure is in the system that authenticates the token.",
        "Check which admin key that system holds for this token ID and its logs for the rejected attempt.",
    ),
    XauthOutcome.FAILED: (
        "Do not repeat the test with the same key: the answer will not change.",
        "Compare the escrow record's token ID with this token's ID; a record of another token is the usual cause.",
        "If another known key exists for this token, test that one deliberately.",
        LAST_RESORT,
    ),
    XauthOutcome.BLOCKED: (
        "The admin key can no longer authenticate.",
        LAST_RESORT,
    ),
    XauthOutcome.NOT_INITIALISED: (
        "External auth cannot be the failing path on this token. Return to the decision table.",
        "If the relying system expects an admin key, install one (escrowed first) through the provisioning workflow.",
    ),
    XauthOutcome.NO_CHALLENGE: (
        "Nothing was authenticated. Another program may have sent commands between GET CHALLENGE and "
        "EXTERNAL AUTHENTICATE, or the key was reset. Close other smart-card programs, then run the test again.",
    ),
    XauthOutcome.NO_ACA: (
        "Step 11 applies to HID Crescendo keys. A YubiKey's equivalent is the PIV management key.",
    ),
    XauthOutcome.UNEXPECTED: (
        "Record the status word in the ticket and escalate; do not repeat the test blindly.",
    ),
}


@dataclass
class XauthResult:
    """The result of one admin-key test, in the runbook's words."""

    outcome: XauthOutcome
    admin_key: AdminKey
    status: Status | None = None
    external_authenticate_sent: bool = False

    @property
    def verdict(self) -> str:
        """The runbook's conclusion for this outcome."""
        text = VERDICTS[self.outcome]
        if self.outcome is XauthOutcome.UNEXPECTED and self.status is not None:
            text = f"{text} ({self.status})"
        return text

    @property
    def next_steps(self) -> tuple[str, ...]:
        """What the technician does next, in order."""
        return NEXT_STEPS[self.outcome]

    @property
    def succeeded(self) -> bool:
        """True when XAUTH1 was granted."""
        return self.outcome is XauthOutcome.FUNCTIONAL


_EXTERNAL_AUTH_OUTCOMES = {
    StatusKind.OK: XauthOutcome.FUNCTIONAL,
    StatusKind.WARNING: XauthOutcome.FAILED,
    StatusKind.VERIFY_FAILED: XauthOutcome.FAILED,
    StatusKind.BLOCKED: XauthOutcome.BLOCKED,
    StatusKind.NOT_DEFINED: XauthOutcome.NOT_INITIALISED,
    StatusKind.CONDITIONS: XauthOutcome.NO_CHALLENGE,
}


def authenticate(channel: Channel, key: Secret, *, key_type: str | None = None, select: bool = True) -> XauthResult:
    """Run SELECT ACA (unless `select` is False), GET CHALLENGE and one EXTERNAL AUTHENTICATE.

    `key` is hex text or raw bytes; `key_type` is the admin key type the scan
    read, if any. The key is checked before the first APDU, and checked
    against the challenge length before EXTERNAL AUTHENTICATE; either check
    raises `PolicyError` naming the expected length. EXTERNAL AUTHENTICATE is
    sent at most once and its 6300 is read as a bad cryptogram, not a try
    count. Call it inside `channel.transaction()` when XAUTH1 must still hold
    for a following command.
    """
    binary_key = parse_admin_key(key, key_type)

    if select:
        status, _ = select_aca(channel)
        if status.kind is StatusKind.NOT_SUPPORTED:
            return XauthResult(XauthOutcome.NO_ACA, AdminKey(None), status)
        if not status.ok:
            return XauthResult(XauthOutcome.UNEXPECTED, AdminKey(None), status)

    response, status = channel.send(GET_CHALLENGE_COMMAND)
    admin_key = admin_key_from_challenge(status, response.data)
    if admin_key.present is False:
        return XauthResult(XauthOutcome.NOT_INITIALISED, admin_key, status)
    if admin_key.key_type is None:
        # Another status word, or a 9000 challenge that is neither 8 nor 16 bytes.
        return XauthResult(XauthOutcome.UNEXPECTED, admin_key, status)

    challenge = response.data
    token_type = admin_key.key_type
    if token_type not in key_types_for(binary_key):
        raise PolicyError(
            f"the token's admin key is {token_type} ({len(challenge)}-byte challenge), but the key given has "
            f"{len(binary_key)} bytes: enter {_expected_digits(token_type)}. EXTERNAL AUTHENTICATE was not sent."
        )

    cryptogram = compute_cryptogram(token_type, binary_key, challenge)
    _, status = channel.send(external_authenticate_command(cryptogram), counter_in_630x=False)
    outcome = _EXTERNAL_AUTH_OUTCOMES.get(status.kind, XauthOutcome.UNEXPECTED)
    return XauthResult(outcome, admin_key, status, external_authenticate_sent=True)


def test_admin_key(channel: Channel, key: Secret, *, key_type: str | None = None) -> XauthResult:
    """Test the admin key on file against the token (runbook Step 11) and return the verdict.

    The whole exchange runs in one PC/SC transaction so no other program can
    consume the challenge. See `authenticate` for the checks and errors.
    """
    with channel.transaction():
        return authenticate(channel, key, key_type=key_type)


# pytest would collect `test_admin_key` from modules that import it by name.
test_admin_key.__test__ = False  # type: ignore[attr-defined]
