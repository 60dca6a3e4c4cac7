"""PIN and PUK encodings for VERIFY, CHANGE REFERENCE DATA and RESET RETRY COUNTER.

Both PIV and the Crescendo ACA take the PIN as its ASCII (here UTF-8) bytes
right-padded with FF to 8 bytes, e.g. "123456" -> 31 32 33 34 35 36 FF FF.
Every function takes and returns `Secret`; error messages give lengths and
rules, never the value.
"""

from __future__ import annotations

from tui.errors import PolicyError
from tui.model import PinPolicy
from tui.secret import Secret

PADDED_LENGTH = 8
PAD_BYTE = 0xFF

# SP 800-73-4: PIN and PUK are 6 to 8 bytes.
PIV_MIN_LENGTH = 6
PIV_MAX_LENGTH = 8

DIGITS = frozenset("0123456789")
HEX_DIGITS = frozenset("0123456789abcdefABCDEF")

PUK_ENCODINGS = ("padded", "hex-8-bytes")


def _text(value: Secret) -> str:
    # A binary secret is checked byte by byte, each byte as one character.
    raw = value.reveal()
    return raw if isinstance(raw, str) else raw.decode("latin-1")


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _check_length(value: Secret, label: str, min_length: int, max_length: int) -> bytes:
    encoded = value.reveal_bytes("utf-8")
    if not encoded:
        raise PolicyError(f"{label} is empty; this key needs {min_length} to {max_length} characters")
    if min_length <= len(encoded) <= max_length:
        return encoded

    characters = len(_text(value))
    if characters == len(encoded):
        raise PolicyError(f"{label} has {_plural(characters, 'character')}; this key needs {min_length} to {max_length}")
    raise PolicyError(f"{label} has {_plural(characters, 'character')} that take {len(encoded)} bytes in UTF-8; "
                      f"this key needs {min_length} to {max_length} bytes")


def _pad(encoded: bytes, kind: str) -> Secret:
    return Secret(encoded + bytes([PAD_BYTE]) * (PADDED_LENGTH - len(encoded)), kind)


def encode_piv_pin(pin: Secret, *, label: str = "PIN") -> Secret:
    """Validate a PIV PIN (6 to 8 bytes) and return it FF-padded to 8 bytes.

    Any UTF-8 text is accepted, as YubiKeys accept any ASCII; SP 800-73-4
    itself requires digits, which the site may enforce on its own.
    """
    encoded = _check_length(pin, label, PIV_MIN_LENGTH, PIV_MAX_LENGTH)
    return _pad(encoded, f"{label} (encoded)")


def encode_aca_pin(pin: Secret, policy: PinPolicy, *, label: str = "PIN") -> Secret:
    """Validate an ACA PIN against the key's `PinPolicy` and return it FF-padded to 8 bytes.

    A numeric-only policy allows the digits 0-9 (bytes 30-39) alone.
    """
    encoded = _check_length(pin, label, policy.min_length, policy.max_length)
    if policy.numeric_only and not set(_text(pin)) <= DIGITS:
        raise PolicyError(f"{label} contains characters other than the digits 0-9; this key accepts digits only")
    return _pad(encoded, f"{label} (encoded)")


def encode_pin(pin: Secret, policy: PinPolicy | None, *, label: str = "PIN") -> Secret:
    """Encode a PIN with the key's policy when it was read (ACA), else with the PIV rule."""
    if policy is None:
        return encode_piv_pin(pin, label=label)
    return encode_aca_pin(pin, policy, label=label)


def encode_puk(puk: Secret, encoding: str = "padded") -> Secret:
    """Encode a PUK: "padded" is 6 to 8 bytes FF-padded (PIV), "hex-8-bytes" is 16 hex digits as 8 bytes."""
    if encoding == "padded":
        return encode_piv_pin(puk, label="PUK")
    if encoding != "hex-8-bytes":
        raise PolicyError(f"unknown PUK encoding {encoding!r}; use one of {', '.join(PUK_ENCODINGS)}")

    text = _text(puk)
    if len(text) != 2 * PADDED_LENGTH:
        raise PolicyError(f"PUK has {_plural(len(text), 'character')}; the hex-8-bytes encoding needs 16 hex digits")
    if not set(text) <= HEX_DIGITS:
        raise PolicyError("PUK contains characters that are not hex digits (0-9, A-F); the hex-8-bytes encoding needs 16 hex digits")
    return Secret(bytes.fromhex(text), "PUK (encoded)")
