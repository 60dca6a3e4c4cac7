"""Typed errors of the domain layers.

Every error message is safe to log and show: it names what failed, on which
value (never a secret) and what to do next.
"""

from __future__ import annotations


class KeytriageError(Exception):
    """Base class of every error the domain layers raise on purpose."""


class PcscError(KeytriageError):
    """A PC/SC call failed; `problem` is the decoded `PcscProblem`."""

    def __init__(self, problem, message: str | None = None) -> None:
        self.problem = problem
        super().__init__(message or problem.message)


class CardRemovedError(PcscError):
    """The card left the reader (or was reset by another connection) during an exchange."""


class ApduError(KeytriageError):
    """A command APDU got a status word its caller cannot continue from."""

    def __init__(self, command_name: str, status) -> None:
        self.command_name = command_name
        self.status = status
        super().__init__(f"{command_name} failed: {status.words()} (status word {status.sw:04X})")


class MalformedResponseError(KeytriageError):
    """A card or authenticator sent data that does not parse as documented."""


class PolicyError(KeytriageError):
    """An input or action breaks the key's, the site's or the runbook's policy."""


class TokenBusyError(KeytriageError):
    """Another operation already holds this token's operation lock."""


class LabError(KeytriageError):
    """The lab key was asked for something it cannot do (unknown scenario and the like)."""
