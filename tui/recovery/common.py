"""Refusals and errors shared by the recovery actions."""

from __future__ import annotations

from tui.errors import KeytriageError, PolicyError
from tui.settings import SiteSettings


class RecoveryError(KeytriageError):
    """A recovery action could not run; the message says why and what to do next."""


class ReadOnlyModeError(PolicyError):
    """The site runs keytriage in read-only (tier-1) mode, so nothing that changes a token runs."""


class RecoveryRefusedError(PolicyError):
    """A recovery action was refused before anything was sent: the message names the rule."""


def require_writable(settings: SiteSettings, action: str) -> None:
    """Raise `ReadOnlyModeError` naming `action` when `settings.read_only` is set."""
    raise NotImplementedError
