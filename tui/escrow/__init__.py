"""Escrow to Vault: every PIN, PUK and key the tool sets is stored in Vault KV v2 before it is applied.

Importing this package does not import hvac; `VaultStore.from_config` and the
login helpers import it when they run.
"""

from tui.escrow.config import VaultConfig, load_vault_config
from tui.escrow.errors import EscrowError
from tui.escrow.flow import ApplyOutcome, EscrowFlow, EscrowResult, Outcome, SetRequest, TransmitLostError
from tui.escrow.memory import MemoryStore
from tui.escrow.records import Encoding, RecordState, SecretKind
from tui.escrow.status import VaultState, VaultStatus, check_status
from tui.escrow.store import EscrowStore, VaultStore

__all__ = [
    "ApplyOutcome", "Encoding", "EscrowError", "EscrowFlow", "EscrowResult", "EscrowStore", "MemoryStore",
    "Outcome", "RecordState", "SecretKind", "SetRequest", "TransmitLostError", "VaultConfig", "VaultState",
    "VaultStatus", "VaultStore", "check_status", "load_vault_config",
]
