"""Find the token again by its ID just before a write, so a swapped key is never written to."""

from __future__ import annotations

from dataclasses import dataclass, field

from tui.model import Profile, TokenId
from tui.recovery.common import RecoveryError
from tui.settings import SiteSettings
from tui.transport import Channel, ReaderBackend


class TargetError(RecoveryError):
    """The token to write to cannot be resolved."""


class TokenGoneError(TargetError):
    """No attached token has the expected ID (removed or swapped)."""


class TokenAmbiguousError(TargetError):
    """More than one attached token has the expected ID, so the write target is not certain."""


@dataclass
class TokenLite:
    """The little a re-resolution reads: reader, profile, token ID, and every reader holding a card."""

    reader: str
    profile: Profile
    token_id: TokenId | None
    atr: str = ""
    attached: list[str] = field(default_factory=list)


def attached_readers(backend: ReaderBackend) -> list[str]:
    """Return the readers that hold a card (connect succeeds), in listing order."""
    raise NotImplementedError


def open_token(backend: ReaderBackend, token_id: TokenId | str, settings: SiteSettings) -> tuple[TokenLite, Channel]:
    """List the readers, read each token's ID, and return the one whose ID is `token_id`, connected.

    Sends only read-only APDUs. The caller owns the returned channel and
    disconnects its transport. Raises `TokenGoneError` or `TokenAmbiguousError`.
    """
    raise NotImplementedError
