"""The escrow context one session works with: the flow to write through, and the Vault state.

The UI builds one at start (a lab `MemoryStore` for `--lab`, Vault
otherwise) and keeps it in `Session.escrow`. Every secret-setting action
takes its flow from here and refuses, with the reason in words, when escrow
is unavailable.
"""

from __future__ import annotations

from dataclasses import dataclass

from tui.errors import KeytriageError


class EscrowUnavailableError(KeytriageError):
    """Escrow cannot be used now; the message says why and what to do."""


@dataclass
class EscrowContext:
    """The escrow flow (None when unavailable), the last Vault status and a label for the UI."""

    flow: object | None  # tui.escrow.flow.EscrowFlow
    status: object | None = None  # tui.escrow.status.VaultStatus
    label: str = ""  # e.g. "lab store" or "Vault https://vault.example:8200"
    unavailable_reason: str = "escrow is not configured"

    def require_flow(self):
        """Return the flow, or raise `EscrowUnavailableError` with the reason."""
        if self.flow is None:
            raise EscrowUnavailableError(f"Escrow unavailable: {self.unavailable_reason}. No secret can be set until it is fixed.")
        return self.flow
