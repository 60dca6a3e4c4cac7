"""Runbook Step 10: wipe the token and set a new PIN and PUK, escrowed first."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from tui.model import ScanResult, TokenScan
from tui.secret import Secret
from tui.settings import SiteSettings
from tui.transport import Channel

OPERATION = "reprovision"


class ResetMethod(str, enum.Enum):
    """How the token is wiped."""

    YUBIKEY_PIV_RESET = "YubiKey PIV reset (00 FB 00 00)"
    CRESCENDO_RESET_CARD = "ACA RESET CARD (00 38 00 00)"
    NONE = "no reset the tool can send"


class ResetAuth(str, enum.Enum):
    """What grants a Crescendo RESET CARD: XAUTH1 with an admin key, or the verified PIN."""

    ADMIN_KEY_ON_FILE = "admin key on file"
    ADMIN_KEY_TYPED = "admin key typed by the technician"
    FACTORY_ADMIN_KEY = "factory default admin key (all zero)"
    PIN_TYPED = "PIN typed by the technician"
    FACTORY_PIN = "factory default PIN 00000000"


@dataclass
class ReprovisionPlan:
    """What Step 10 would do to this token, what is lost, and why it may be refused."""

    token_id: str | None
    method: ResetMethod
    ready: bool  # the method's precondition holds (refusals aside)
    precondition: str
    losses: list[str] = field(default_factory=list)
    untouched: list[str] = field(default_factory=list)
    follow_up: list[str] = field(default_factory=list)
    auth_options: list[ResetAuth] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def confirmation(self) -> str:
        """What the technician types to confirm: the last four characters of the token ID."""
        raise NotImplementedError


@dataclass
class ReprovisionResult:
    """The result of Step 10: whether the wipe ran, the escrow results and the follow-up actions."""

    wiped: bool
    verdict: str
    steps: list[str] = field(default_factory=list)
    escrow: list[object] = field(default_factory=list)  # tui.escrow.flow.EscrowResult
    follow_up: list[str] = field(default_factory=list)
    new_pin: Secret | None = field(default=None, repr=False)
    new_puk: Secret | None = field(default=None, repr=False)


def plan_reprovision(token: TokenScan, scan: ScanResult, settings: SiteSettings) -> ReprovisionPlan:
    """Plan Step 10 for `token`: method, precondition, losses and refusals; sends nothing."""
    raise NotImplementedError


def reprovision(channel: Channel, token: TokenScan, scan: ScanResult, session, *, confirmation: str,
                user_accepted: bool, auth: ResetAuth | None = None, secret: Secret | None = None,
                new_pin: Secret | None = None, new_puk: Secret | None = None) -> ReprovisionResult:
    """Wipe the token, then set a new PIN and PUK through escrow, and record the follow-up actions.

    `secret` is the typed admin key or PIN for `auth`; none for the on-file or factory options.
    """
    raise NotImplementedError
