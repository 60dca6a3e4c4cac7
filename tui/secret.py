"""The `Secret` type that carries every PIN, PUK, FIDO PIN, key, OTP code and seed.

A `Secret` never shows its value through `repr`, `str`, `format`, pickling or
`copy`, so a secret that reaches a log call, an f-string, an exception message
or Textual's crash report (which prints local variables) shows as a mask. Code
that must send the value calls `reveal()` at the last moment and keeps the
result in a local that does not outlive the call.
"""

from __future__ import annotations

import hmac
from typing import NoReturn

MASK = "****"


class Secret:
    """A secret value (text or bytes) with a masked representation.

    `kind` is a field term such as "PIV PIN" or "admin key"; it is shown in
    place of the value so messages stay useful without the secret.
    """

    __slots__ = ("_value", "kind")

    def __init__(self, value: str | bytes, kind: str = "secret") -> None:
        if not isinstance(value, (str, bytes)):
            raise TypeError(f"a {kind} must be str or bytes, not {type(value).__name__}")
        self._value = value
        self.kind = kind

    def reveal(self) -> str | bytes:
        """Return the value itself. Call only where it is sent or escrowed."""
        return self._value

    def reveal_bytes(self, encoding: str = "utf-8") -> bytes:
        """Return the value as bytes, encoding text with `encoding`."""
        value = self._value
        return value if isinstance(value, bytes) else value.encode(encoding)

    def reveal_text(self) -> str:
        """Return the value as text; raise TypeError for a binary secret."""
        if isinstance(self._value, bytes):
            raise TypeError(f"this {self.kind} is binary and has no text form")
        return self._value

    def __len__(self) -> int:
        # The length is needed for local policy checks (PIN 6-8 bytes and the like)
        # and is shown to the technician anyway as the count of typed characters.
        return len(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return f"Secret({self.kind}={MASK})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self.reveal_bytes(), other.reveal_bytes())

    __hash__ = None  # type: ignore[assignment]  # equal secrets must not collide in sets by value

    def __reduce__(self) -> NoReturn:
        raise TypeError(f"a {self.kind} cannot be pickled")

    def __copy__(self) -> Secret:
        return Secret(self._value, self.kind)

    def __deepcopy__(self, memo: dict) -> Secret:
        return Secret(self._value, self.kind)
