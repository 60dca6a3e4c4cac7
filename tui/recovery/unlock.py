"""Admin-key unlock of an HID Crescendo PIN: XAUTH1, then UNLOCK PIN with a new escrowed PIN."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from tui.apdu import Status
from tui.model import TokenScan
from tui.secret import Secret
from tui.transport import Channel

OPERATION = "admin-unlock"


class AdminKeySource(str, enum.Enum):
    """Where the admin key came from."""

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
    raise NotImplementedError


def admin_key_from_escrow(token: TokenScan, session) -> Secret:
    """Read the applied admin key on file; raise when the policy does not allow it or none is applied."""
    raise NotImplementedError


def unlock_pin(channel: Channel, token: TokenScan, session, admin_key: Secret, *, key_source: AdminKeySource,
               new_pin: Secret | None = None, confirmed_version: int | None = None) -> UnlockResult:
    """Authenticate once with `admin_key`, escrow the new PIN, then send UNLOCK PIN; never retry."""
    raise NotImplementedError
