"""New PINs and PUKs from `secrets`, to the key's and the site's policy, and the weak-value checks."""

from __future__ import annotations

from tui.model import PinPolicy, TokenScan
from tui.secret import Secret
from tui.settings import SiteSettings

# Values every site rejects: factory defaults and the obvious sequences.
KNOWN_DEFAULTS = frozenset({"000000", "00000000", "123456", "1234567", "12345678", "123123", "654321", "87654321"})


def weak_value_reason(text: str) -> str | None:
    """Return why `text` is a weak PIN or PUK (repeated or sequential digits, known default), else None."""
    raise NotImplementedError


def new_pin_policy(token: TokenScan, settings: SiteSettings) -> PinPolicy:
    """Return the policy a new PIN must meet on this token: the key's, narrowed by the site's."""
    raise NotImplementedError


def check_new_pin(pin: Secret, token: TokenScan, settings: SiteSettings) -> None:
    """Raise `PolicyError` (naming the rule, never the value) for a new PIN this token or site rejects."""
    raise NotImplementedError


def generate_pin(policy: PinPolicy, *, length: int | None = None) -> Secret:
    """Return a random numeric PIN that meets `policy` and passes `weak_value_reason`."""
    raise NotImplementedError


def generate_puk(encoding: str = "padded") -> Secret:
    """Return a random PUK in `encoding` ("padded": 8 digits; "hex-8-bytes": 16 hex digits)."""
    raise NotImplementedError
