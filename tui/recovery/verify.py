"""Runbook Step 4: one deliberate verify of the PIN the user claims."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from tui.apdu import Status
from tui.model import TokenScan
from tui.recovery.common import RecoveryRefusedError
from tui.secret import Secret
from tui.settings import SiteSettings
from tui.transport import Channel

OPERATION = "verify-pin"


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
    """Step 4 was refused before the VERIFY was sent; `permission` says why."""


def verify_permission(token: TokenScan, session) -> VerifyPermission:
    """Decide whether Step 4 may send its one VERIFY to `token` in this session."""
    raise NotImplementedError


def validate_claimed_pin(pin: Secret, token: TokenScan, settings: SiteSettings) -> str | None:
    """Return why the claimed PIN cannot be the token's PIN (nothing sent), else None."""
    raise NotImplementedError


def verify_pin(channel: Channel, token: TokenScan, pin: Secret, session, *, override: bool = False) -> VerifyResult:
    """Send exactly one VERIFY with `pin` and return the result; raise before sending when refused."""
    raise NotImplementedError
