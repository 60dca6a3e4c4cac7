"""Runbook Step 6: reset the smart-card PIN with the PUK (PIV RESET RETRY COUNTER)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from tui.apdu import Status
from tui.model import TokenScan
from tui.secret import Secret
from tui.transport import Channel

OPERATION = "puk-reset"


class PukSource(str, enum.Enum):
    """Where the PUK came from."""

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
    """What PUK sources exist for a token, without revealing a value."""

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
    raise NotImplementedError


def puk_availability(token: TokenScan, session) -> PukAvailability:
    """Report the PUK sources on file for `token` (escrow metadata, manifest row) without reading values."""
    raise NotImplementedError


def puk_from_escrow(token: TokenScan, session) -> PukChoice:
    """Read the applied PUK on file; raise when the policy does not allow reading or none is applied."""
    raise NotImplementedError


def puk_from_manifest(token: TokenScan, session) -> PukChoice:
    """Return the PUK of the site manifest row for `token`; raise when there is none."""
    raise NotImplementedError


def reset_pin_with_puk(channel: Channel, token: TokenScan, session, puk: PukChoice, *,
                       new_pin: Secret | None = None, confirmed_version: int | None = None) -> PukResetResult:
    """Escrow the new PIN, then send one RESET RETRY COUNTER with `puk`; never retry a wrong PUK."""
    raise NotImplementedError
