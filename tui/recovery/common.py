"""Refusals, errors and the `[recovery]` site settings shared by the recovery actions.

The `[recovery]` table of the config file narrows what the key itself allows:

    [recovery]
    pin_min_length = 8          # new and claimed PINs: at least this many characters
    pin_max_length = 8          # at most this many
    pin_numeric_only = true     # digits only
    generated_pin_length = 8    # length of a PIN the tool generates
    puk_encoding = "padded"     # or "hex-8-bytes"; per profile: [recovery.puk_encoding] piv = "hex-8-bytes"

Every key is optional; without the table the key's own policy applies.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tui.errors import KeytriageError, PolicyError
from tui.model import TokenScan
from tui.pin import PUK_ENCODINGS
from tui.settings import SiteSettings


class RecoveryError(KeytriageError):
    """A recovery action could not run; the message says why and what to do next."""


class ReadOnlyModeError(PolicyError):
    """The site runs keytriage in read-only (tier-1) mode, so nothing that changes a token runs."""


class RecoveryRefusedError(PolicyError):
    """A recovery action was rejected before anything was sent; the message names the rule."""


def require_writable(settings: SiteSettings, action: str) -> None:
    """Raise `ReadOnlyModeError` naming `action` when `settings.read_only` is set."""
    if settings.read_only:
        raise ReadOnlyModeError(f"{action} changes the token, and this keytriage runs in read-only (tier-1) mode "
                                "([site] read_only = true). Escalate to a technician with write access.")


def require_token_id(token: TokenScan, action: str) -> str:
    """Return the token ID as text; raise `RecoveryRefusedError` when the scan captured none."""
    if token.token_id is None:
        reason = token.id_reason or "the scan captured no token ID"
        raise RecoveryRefusedError(f"{action} needs the token ID, to key the escrow record and the attempt history, "
                                   f"but {reason}. Capture the ID first (Step 2).")
    return str(token.token_id)


@dataclass
class RecoverySettings:
    """The `[recovery]` table: site rules for new and claimed PINs, and the PUK encoding."""

    pin_min_length: int | None = None
    pin_max_length: int | None = None
    pin_numeric_only: bool = False
    generated_pin_length: int = 8
    puk_encoding: str = "padded"
    puk_encoding_by_profile: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: SiteSettings) -> RecoverySettings:
        """Read `[recovery]` from the raw config; raise `PolicyError` naming a bad key."""
        table = (settings.raw or {}).get("recovery", {})
        if not isinstance(table, dict):
            raise PolicyError("[recovery] must be a table")
        result = cls()
        for key in ("pin_min_length", "pin_max_length", "generated_pin_length"):
            if key in table:
                value = table[key]
                if not isinstance(value, int) or isinstance(value, bool) or not 4 <= value <= 8:
                    raise PolicyError(f"[recovery] {key} must be a whole number from 4 to 8, got {value!r}")
                setattr(result, key, value)
        if "pin_numeric_only" in table:
            if not isinstance(table["pin_numeric_only"], bool):
                raise PolicyError(f"[recovery] pin_numeric_only must be true or false, got {table['pin_numeric_only']!r}")
            result.pin_numeric_only = table["pin_numeric_only"]

        encoding = table.get("puk_encoding", "padded")
        if isinstance(encoding, dict):
            for profile, value in encoding.items():
                result.puk_encoding_by_profile[profile] = _check_encoding(value, f"[recovery.puk_encoding] {profile}")
        else:
            result.puk_encoding = _check_encoding(encoding, "[recovery] puk_encoding")
        return result

    def puk_encoding_for(self, profile: str) -> str:
        """Return the PUK encoding for a profile value ("piv", "yubikey", ...)."""
        return self.puk_encoding_by_profile.get(profile, self.puk_encoding)


def _check_encoding(value: object, where: str) -> str:
    if value not in PUK_ENCODINGS:
        raise PolicyError(f"{where} must be one of {', '.join(PUK_ENCODINGS)}, got {value!r}")
    return str(value)


def session_flow(session):
    """Return the session's escrow flow; raise `EscrowUnavailableError` with the reason when there is none."""
    from tui.escrow.context import EscrowContext, EscrowUnavailableError

    context = session.escrow
    if context is None:
        raise EscrowUnavailableError("Escrow unavailable: escrow is not configured. No secret can be set until it is fixed.")
    if isinstance(context, EscrowContext):
        return context.require_flow()
    # A bare EscrowFlow is accepted too (headless paths and tests).
    return context
