"""Per-token operation locks: one operation at a time on a token.

The lock is keyed by token ID, not by reader, because the reader index can
change between scans while the token stays the same. It guards this process
only; the PC/SC transaction around each APDU sequence guards the card itself
against other processes.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from tui.errors import TokenBusyError


class TokenLocks:
    """A registry of non-blocking per-token locks."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._held: dict[str, str] = {}

    @contextlib.contextmanager
    def hold(self, token_id: object, operation: str) -> Iterator[None]:
        """Hold the lock of `token_id` for `operation`; raise `TokenBusyError` if another holds it."""
        key = str(token_id)
        with self._guard:
            if key in self._held:
                raise TokenBusyError(f"token {key} is busy with {self._held[key]}; wait for it to finish, then try {operation} again")
            self._held[key] = operation
        try:
            yield
        finally:
            with self._guard:
                self._held.pop(key, None)

    def busy_with(self, token_id: object) -> str | None:
        """Return the operation holding `token_id`, or None."""
        with self._guard:
            return self._held.get(str(token_id))

    def any_held(self) -> bool:
        """True while any token is locked (quit waits for that)."""
        with self._guard:
            return bool(self._held)
