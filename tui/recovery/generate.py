"""New PINs and PUKs from `secrets`, to the key's and the site's policy, and the weak-value checks.

A weak value is one an attacker tries first: a factory default (123456,
12345678, 00000000 and the like), a run of one repeated character, or digits
that go up or down by one at each position (123456, 876543).
"""

from __future__ import annotations

import secrets

from tui.errors import PolicyError
from tui.model import PinPolicy, Profile, TokenScan
from tui.pin import PIV_MAX_LENGTH, PIV_MIN_LENGTH
from tui.recovery.common import RecoverySettings
from tui.secret import Secret
from tui.settings import SiteSettings

DIGITS = "0123456789"

# Values every site rejects: factory defaults and the obvious sequences.
KNOWN_DEFAULTS = frozenset({
    "000000", "0000000", "00000000", "123456", "1234567", "12345678", "123123", "654321", "87654321",
    "111111", "11111111", "123321", "112233", "121212", "696969", "159753",
})

# How many times generation may draw before giving up: a valid draw is
# overwhelmingly likely, so reaching the limit means the policy admits almost nothing.
MAX_DRAWS = 1000


def weak_value_reason(text: str) -> str | None:
    """Return why `text` is a weak PIN or PUK (known default, repeated or sequential characters), else None."""
    if text in KNOWN_DEFAULTS:
        return "it is a well-known default or common value"
    if len(set(text)) == 1:
        return "it repeats one character"
    if len(text) >= 2 and all(ch in DIGITS for ch in text):
        steps = {int(b) - int(a) for a, b in zip(text, text[1:])}
        if steps in ({1}, {-1}):
            return "its digits are sequential"
    return None


def new_pin_policy(token: TokenScan, settings: SiteSettings) -> PinPolicy:
    """Return the policy a new PIN must meet on this token: the key's, narrowed by the site's.

    The key's policy is GET PIN PROPERTIES on a Crescendo, else the PIV rule
    of 6 to 8 bytes. The site's `[recovery]` table can raise the minimum,
    lower the maximum and require digits only, never widen the key's range.
    """
    site = RecoverySettings.from_settings(settings)
    key_policy = token.smartcard.pin_policy if token.profile is Profile.HID_CRESCENDO else None
    if key_policy is not None:
        low, high, numeric = key_policy.min_length, key_policy.max_length, key_policy.numeric_only
    else:
        low, high, numeric = PIV_MIN_LENGTH, PIV_MAX_LENGTH, False

    if site.pin_min_length is not None:
        low = max(low, site.pin_min_length)
    if site.pin_max_length is not None:
        high = min(high, site.pin_max_length)
    if low > high:
        raise PolicyError(f"the site's PIN length rule ([recovery] pin_min_length/pin_max_length) leaves no length this "
                          f"key accepts ({token.profile.label}: {low} > {high}); fix the [recovery] table")
    return PinPolicy(low, high, numeric or site.pin_numeric_only)


def check_pin_policy(pin: Secret, policy: PinPolicy, *, label: str = "new PIN") -> None:
    """Raise `PolicyError` (naming the rule, never the value) for a PIN outside `policy` or weak."""
    raw = pin.reveal()
    text = raw if isinstance(raw, str) else raw.decode("latin-1")
    size = len(pin.reveal_bytes("utf-8"))
    if not policy.min_length <= size <= policy.max_length:
        raise PolicyError(f"the {label} has {size} bytes; this key and site need {policy.min_length} to {policy.max_length}")
    if policy.numeric_only and not all(ch in DIGITS for ch in text):
        raise PolicyError(f"the {label} contains characters other than the digits 0-9; this key and site accept digits only")
    reason = weak_value_reason(text)
    if reason:
        raise PolicyError(f"the {label} is rejected because {reason}; choose another or let keytriage generate one")


def check_new_pin(pin: Secret, token: TokenScan, settings: SiteSettings) -> None:
    """Raise `PolicyError` (naming the rule, never the value) for a new PIN this token or site rejects."""
    check_pin_policy(pin, new_pin_policy(token, settings))


def generate_pin(policy: PinPolicy, *, length: int | None = None) -> Secret:
    """Return a random numeric PIN that meets `policy` and passes `weak_value_reason`.

    `length` defaults to the policy's maximum. Digits are used even when the
    policy allows more, so users can type the PIN on any keypad.
    """
    size = length if length is not None else policy.max_length
    if not policy.min_length <= size <= policy.max_length:
        raise PolicyError(f"a generated PIN of {size} digits does not fit this key's {policy.min_length} to {policy.max_length}")
    for _ in range(MAX_DRAWS):
        text = "".join(secrets.choice(DIGITS) for _ in range(size))
        if weak_value_reason(text) is None:
            return Secret(text, "new PIN")
    raise PolicyError(f"no acceptable {size}-digit PIN was drawn in {MAX_DRAWS} tries; check the PIN policy")


def generate_pin_for(token: TokenScan, settings: SiteSettings) -> Secret:
    """Return a random PIN for `token` at the site's generated length, clipped to the allowed range."""
    policy = new_pin_policy(token, settings)
    wanted = RecoverySettings.from_settings(settings).generated_pin_length
    return generate_pin(policy, length=min(max(wanted, policy.min_length), policy.max_length))


def generate_puk(encoding: str = "padded") -> Secret:
    """Return a random PUK in `encoding` ("padded": 8 digits, "hex-8-bytes": 16 hex digits)."""
    for _ in range(MAX_DRAWS):
        if encoding == "padded":
            text = "".join(secrets.choice(DIGITS) for _ in range(8))
        elif encoding == "hex-8-bytes":
            text = secrets.token_hex(8).upper()
        else:
            raise PolicyError(f"unknown PUK encoding {encoding!r}; use padded or hex-8-bytes")
        if weak_value_reason(text) is None:
            return Secret(text, "PIV PUK")
    raise PolicyError(f"no acceptable PUK was drawn in {MAX_DRAWS} tries")  # pragma: no cover - practically unreachable
