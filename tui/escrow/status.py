"""Vault state as one typed value for the header line and the pre-flight.

`check_status` asks, in order: is Vault configured, reachable, initialised and
unsealed (`sys/health`), is the token valid (`auth/token/lookup-self`), and
what may it do under the escrow base path (`sys/capabilities-self`). The first
failing check decides the state. None of these calls reads a secret value.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from tui.escrow.errors import (
    EscrowError,
    VaultNotConfiguredError,
    VaultPermissionError,
    VaultSealedError,
    VaultStandbyError,
    VaultTokenError,
    VaultUninitializedError,
    VaultUnreachableError,
)
from tui.escrow.records import SecretKind
from tui.escrow.store import EscrowStore, api_path

log = logging.getLogger("keytriage.escrow")

# Token ID used only to ask sys/capabilities-self about the base path; nothing is stored under it.
PROBE_TOKEN_ID = "status-probe"
WRITE_CAPABILITIES = frozenset({"create", "update", "root"})
READ_CAPABILITIES = frozenset({"read", "root"})


class VaultState(str, enum.Enum):
    """The Vault state the header shows and the pre-flight acts on."""

    NOT_CONFIGURED = "not configured"
    UNREACHABLE = "unreachable"
    UNINITIALIZED = "not initialised"
    SEALED = "sealed"
    STANDBY = "standby, no active node"
    TOKEN_INVALID = "token invalid or expired"
    NO_PERMISSION = "no permission"
    OK = "ok"


@dataclass
class VaultStatus:
    """The result of `check_status`: the state and what the UI shows with it.

    `role` is "writer" (may escrow, may not read values: the normal technician
    policy), "read-write", "reader" or None. `detail` is a full sentence with
    the API path and the fix, empty when the state is ok.
    """

    state: VaultState
    detail: str = ""
    role: str | None = None
    ttl_seconds: int | None = None
    ttl_text: str | None = None
    display_name: str | None = None
    standby_node: bool = False
    lab: bool = False
    error: EscrowError | None = None

    @property
    def usable(self) -> bool:
        """True when values can be escrowed now."""
        return self.state is VaultState.OK and self.role in ("writer", "read-write")

    @property
    def can_read_values(self) -> bool:
        """True when the policy allows "use the value on file"."""
        return self.state is VaultState.OK and self.role in ("reader", "read-write")

    def words(self) -> str:
        """A short form for the header, e.g. "Vault: ok (writer, 52m)" or "Vault: sealed"."""
        name = "Vault (lab)" if self.lab else "Vault"
        if self.state is not VaultState.OK:
            return f"{name}: {self.state.value}"
        extras = [self.role or "no access"]
        if self.ttl_text and not self.lab:
            extras.append(self.ttl_text)
        if self.standby_node:
            extras.append("standby node")
        return f"{name}: ok ({', '.join(extras)})"


def _state_for_error(error: EscrowError) -> VaultState:
    table = [
        (VaultNotConfiguredError, VaultState.NOT_CONFIGURED),
        (VaultUnreachableError, VaultState.UNREACHABLE),
        (VaultUninitializedError, VaultState.UNINITIALIZED),
        (VaultStandbyError, VaultState.STANDBY),
        (VaultSealedError, VaultState.SEALED),
        (VaultTokenError, VaultState.TOKEN_INVALID),
        (VaultPermissionError, VaultState.NO_PERMISSION),
    ]
    for cls, state in table:
        if isinstance(error, cls):
            return state
    return VaultState.UNREACHABLE


def status_from_error(error: EscrowError, *, lab: bool = False) -> VaultStatus:
    """Return the status that `error` implies, its message as the detail."""
    return VaultStatus(_state_for_error(error), detail=str(error), lab=lab, error=error)


def role_for(capabilities: set[str], read_capabilities: set[str]) -> str | None:
    """Name the role from capabilities on a data path (write) and on the same path for reading."""
    can_write = bool(capabilities & WRITE_CAPABILITIES)
    can_read = bool(read_capabilities & READ_CAPABILITIES)
    if can_write and can_read:
        return "read-write"
    if can_write:
        return "writer"
    if can_read:
        return "reader"
    return None


def check_status(store: EscrowStore | None) -> VaultStatus:
    """Check health, token and capabilities under the base path, and return the state.

    Never raises an `EscrowError`: each one becomes the matching state.
    """
    if store is None:
        error = VaultNotConfiguredError("No Vault address is configured. Set VAULT_ADDR or [vault] address in the config file, or use lab mode.")
        return status_from_error(error)
    lab = store.is_lab

    try:
        health = store.health()
        if not health.initialized:
            raise VaultUninitializedError("Vault is not initialised (sys/health returned 501). Ask the Vault operators to initialise it.", api_path="/v1/sys/health")
        if health.sealed:
            raise VaultSealedError("Vault is sealed (sys/health returned 503). Escrow is unavailable until an operator unseals Vault.", api_path="/v1/sys/health")

        token = store.token_info()
        data_path = store.data_path(PROBE_TOKEN_ID, SecretKind.PIV_PIN)
        caps = store.capabilities([data_path])[data_path]
    except EscrowError as error:
        log.info("Vault status: %s", error)
        return status_from_error(error, lab=lab)

    role = role_for(caps, caps)
    status = VaultStatus(VaultState.OK, role=role, ttl_seconds=token.ttl_seconds, ttl_text=token.ttl_words(),
                         display_name=token.display_name, standby_node=health.standby, lab=lab)
    if role is None:
        path = api_path(data_path).rsplit("/", 2)[0] + "/<token ID>/<kind>"
        status.state = VaultState.NO_PERMISSION
        status.detail = (f"The Vault token ({token.display_name}) has no create, update or read capability on {path}. "
                         "Ask the Vault administrators for the escrow writer policy.")
    return status
