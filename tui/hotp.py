"""RFC 4226 HOTP: the code an OATH token computes from its seed and counter.

The lab OATH applets compute their codes here, and tests check the host side
against it. The counter is always encoded as 8 bytes big-endian, as RFC 4226
section 5.2 requires; encoding it in fewer bytes gives wrong codes once the
counter passes 127 or 255.
"""

from __future__ import annotations

import hashlib
import hmac

# HMAC algorithms an OATH slot can use, by the names the token vendors show.
ALGORITHMS = {"SHA-1": hashlib.sha1, "SHA-256": hashlib.sha256, "SHA-512": hashlib.sha512}

MAX_COUNTER = 2**64 - 1
SUPPORTED_DIGITS = range(6, 11)


def hotp_value(seed: bytes, counter: int, *, algorithm: str = "SHA-1") -> int:
    """Compute the 31-bit dynamically truncated HOTP value (RFC 4226 section 5.3).

    Raises ValueError for a counter outside 0..2**64-1 or an unknown algorithm.
    """
    if not 0 <= counter <= MAX_COUNTER:
        raise ValueError(f"HOTP counter {counter} is outside 0..2**64-1")
    try:
        digest_function = ALGORITHMS[algorithm]
    except KeyError:
        raise ValueError(f"unknown HOTP algorithm {algorithm!r}; use one of {', '.join(ALGORITHMS)}") from None

    digest = hmac.new(seed, counter.to_bytes(8, "big"), digest_function).digest()

    # Dynamic truncation: the low nibble of the last byte is the offset of
    # four bytes whose value, without the top bit, is the code.
    offset = digest[-1] & 0x0F
    return int.from_bytes(digest[offset:offset + 4], "big") & 0x7FFFFFFF


def hotp(seed: bytes, counter: int, *, digits: int = 6, algorithm: str = "SHA-1") -> str:
    """Compute the HOTP code for `counter` as a zero-padded decimal string of `digits` digits.

    Raises ValueError for digits outside 6..10, a counter out of range or an
    unknown algorithm.
    """
    if digits not in SUPPORTED_DIGITS:
        raise ValueError(f"HOTP codes have 6 to 10 digits, got {digits}")
    value = hotp_value(seed, counter, algorithm=algorithm)
    return str(value % 10**digits).zfill(digits)


def to_bcd(code: str) -> bytes:
    """Pack a decimal code into BCD, two digits a byte (755224 -> 75 52 24).

    An odd number of digits gets a leading zero nibble.
    """
    if not code.isdigit():
        raise ValueError("a BCD code must contain decimal digits only")
    if len(code) % 2:
        code = "0" + code
    return bytes.fromhex(code)


def from_bcd(data: bytes) -> str:
    """Unpack BCD bytes into a decimal string; raise ValueError on a nibble above 9."""
    text = data.hex()
    if not text.isdigit():
        raise ValueError(f"{len(data)} bytes of OTP code are not valid BCD")
    return text
