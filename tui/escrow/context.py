"""The escrow context one session works with: the store, the flow to write through, and the Vault state.

The UI builds one at start with `build_escrow_context` and keeps it in
`Session.escrow`. Every secret-setting action takes its flow from here and
refuses, with the reason in words, when escrow is unavailable.

Where records go:

- production: Vault, configured by `tui.escrow.config` (config file `[vault]`,
  the `VAULT_*` environment, then command-line overrides);
- `--lab`: an in-memory `MemoryStore` with base path `lab/keytriage/tokens`,
  seeded after the first scan with the lab key's values "on file";
- `--lab` with `--lab-vault` (override `lab_vault`): the configured Vault, but
  under `lab/<base_path>`, so lab records never mix with real ones.

Building the context, refreshing the status, logging in and reading a value
on file all do network I/O against Vault, so the UI calls them in a thread
worker, never on the event loop and never on the device thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tui.errors import KeytriageError, PolicyError
from tui.escrow.config import (
    DEFAULT_LAB_BASE_PATH,
    TokenInfo,
    VaultConfig,
    load_vault_config,
    login_ldap,
    login_token,
    login_userpass,
)
from tui.escrow.errors import EscrowError, VaultNotConfiguredError, VaultPermissionError
from tui.escrow.flow import EscrowFlow, OnFile
from tui.escrow.memory import MemoryStore
from tui.escrow.records import (
    META_APPLIED_VERSION,
    META_LAST_SET_AT,
    META_LAST_SET_BY,
    META_LAST_STATE,
    META_LAST_VERSION,
    Encoding,
    EscrowRecord,
    RecordState,
    SecretKind,
    utc_now,
)
from tui.escrow.status import VaultState, VaultStatus, check_status
from tui.escrow.store import EscrowStore, VaultStore
from tui.model import TokenId
from tui.secret import Secret

log = logging.getLogger("keytriage.escrow")

LAB_PREFIX = "lab/"
LAB_SEED_REASON = "lab value on file"
LAB_SEED_BY = "lab seed"
# The header has about 30 columns for the Vault state at 80x24.
MAX_DISPLAY_NAME = 20

# Lab key escrow names -> (kind, encoding). The ACA PIN of a Crescendo key is
# the PIN its PIV applet shares, so it is escrowed as the PIV PIN.
LAB_ESCROW_KINDS: dict[str, tuple[SecretKind, Encoding]] = {
    "piv-puk": (SecretKind.PIV_PUK, Encoding.ASCII_FF_PADDED),
    "piv-pin": (SecretKind.PIV_PIN, Encoding.ASCII_FF_PADDED),
    "aca-pin": (SecretKind.PIV_PIN, Encoding.ASCII_FF_PADDED),
    "fido-pin": (SecretKind.FIDO_PIN, Encoding.UTF8),
    "admin-key": (SecretKind.ADMIN_KEY, Encoding.HEX),
}

# Command-line option (argparse dest) -> Vault setting.
ARGUMENT_KEYS = {
    "vault_addr": "address",
    "vault_mount": "mount",
    "vault_base": "base_path",
    "vault_namespace": "namespace",
    "lab_vault": "lab_vault",
}

LOGIN_METHODS = ("token", "userpass", "ldap")


class EscrowUnavailableError(KeytriageError):
    """Escrow cannot be used now; the message says why and what to do."""


def vault_overrides_from_args(args: Any) -> dict[str, Any]:
    """Return the Vault overrides given on the command line (`--vault-addr` and friends).

    Options left unset are omitted, so the config file and environment apply.
    A token is never taken from the command line.
    """
    overrides = {}
    for dest, key in ARGUMENT_KEYS.items():
        value = getattr(args, dest, None)
        if value not in (None, False):
            overrides[key] = value
    return overrides


def lab_base_path(base_path: str) -> str:
    """Return `base_path` under `lab/`, unchanged when it already starts there."""
    base = base_path.strip("/")
    return base if base.startswith(LAB_PREFIX) else LAB_PREFIX + base


def lab_seed_value(name: str, value: Secret) -> tuple[SecretKind, Secret, Encoding] | None:
    """Map one lab key escrow entry to its kind, stored value and encoding; None for an unknown name."""
    entry = LAB_ESCROW_KINDS.get(name)
    if entry is None:
        return None
    kind, encoding = entry
    if encoding is Encoding.HEX and isinstance(value.reveal(), str):
        # Vault returns a hex-encoded value as bytes, so the memory store keeps bytes too.
        value = Secret(bytes.fromhex(value.reveal_text()), kind.label)
    return kind, value, encoding


@dataclass
class EscrowContext:
    """The escrow store and flow of one session, with the last Vault status.

    `flow` is None when nothing is configured; a flow whose status is not
    usable still exists, because its own pre-flight names the failing path.
    `checked_at` is the `clock()` time of the last status check; the token's
    remaining TTL is computed locally from it, without asking Vault.
    """

    flow: EscrowFlow | None
    status: VaultStatus | None = None
    label: str = ""
    unavailable_reason: str = "escrow is not configured"
    store: EscrowStore | None = None
    config: VaultConfig | None = None
    lab: bool = False
    audit: Any = field(default=None, repr=False)
    user: str | None = None
    checked_at: float | None = None
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    @property
    def memory(self) -> bool:
        """True when records live in the in-memory lab store."""
        return isinstance(self.store, MemoryStore)

    @property
    def show_new_values(self) -> bool:
        """True when the site wants a newly set value shown once (`[vault] show_new_values`)."""
        return bool(self.config and self.config.show_new_values)

    @property
    def has_token(self) -> bool:
        """True when a Vault token is configured (always True for the memory store)."""
        return self.memory or (self.config is not None and self.config.token is not None)

    # Status

    def refresh_status(self) -> VaultStatus:
        """Check Vault now (health, token, capabilities) and keep the result. Blocking."""
        status = check_status(self.store)
        status.lab = self.lab
        if status.state is VaultState.TOKEN_INVALID and not self.has_token:
            status.detail = ("No Vault token is set. Set VAULT_TOKEN, put a token in ~/.vault-token, "
                             "or press l to log in to Vault.")
        self.status = status
        self.checked_at = self.clock()
        self.unavailable_reason = "" if status.usable else (status.detail or self.header_words())
        log.info("Vault status: %s", self.header_words())
        return status

    def ttl_remaining(self) -> int | None:
        """Return the token's TTL left in seconds, None when it does not expire or is not known."""
        if self.status is None or not self.status.ttl_seconds or self.checked_at is None:
            return None
        elapsed = int(self.clock() - self.checked_at)
        return max(0, self.status.ttl_seconds - elapsed)

    def header_words(self) -> str:
        """Return the Vault state for the header, e.g. "Vault: ok (userpass-alice, 52m)"."""
        status = self.status
        if status is None:
            return "Vault: checking..."
        if self.memory:
            return "Vault: lab store" if status.state is VaultState.OK else f"Vault: lab store {status.state.value}"

        name = "Vault (lab)" if self.lab else "Vault"
        if status.state is VaultState.TOKEN_INVALID and not self.has_token:
            return f"{name}: not logged in"
        if status.state is VaultState.NO_PERMISSION:
            return f"{name}: no permission on the path"
        if status.state is not VaultState.OK:
            return f"{name}: {status.state.value}"

        remaining = self.ttl_remaining()
        if remaining == 0:
            return f"{name}: token expired"
        display = (status.display_name or "token")[:MAX_DISPLAY_NAME]
        ttl = TokenInfo(display, remaining).ttl_words() if remaining is not None else "no expiry"
        if status.role == "reader":
            return f"{name}: read only ({display}, {ttl})"
        return f"{name}: ok ({display}, {ttl})"

    def require_flow(self) -> EscrowFlow:
        """Return the flow, or raise `EscrowUnavailableError` with the reason.

        The last status decides; callers refresh it first, because the token
        may have expired since.
        """
        if self.flow is None:
            raise EscrowUnavailableError(f"Escrow unavailable: {_sentence(self.unavailable_reason)} No secret can be set until it is fixed.")
        if self.status is not None and not self.status.usable:
            reason = self.status.detail or self.header_words()
            raise EscrowUnavailableError(f"Escrow unavailable: {_sentence(reason)} No secret can be set until it is fixed.")
        if self.ttl_remaining() == 0:
            raise EscrowUnavailableError("Escrow unavailable: the Vault token has expired. Press l to log in to Vault again.")
        return self.flow

    # Records

    def on_file(self, token_id: TokenId | str, kind: SecretKind) -> OnFile | None:
        """Return what metadata shows about the record (no value read), None when nothing is on file. Blocking."""
        if self.flow is None:
            raise EscrowUnavailableError(f"Escrow unavailable: {_sentence(self.unavailable_reason)}")
        return self.flow.on_file(token_id, kind)

    def value_on_file(self, token_id: TokenId | str, kind: SecretKind) -> Secret | None:
        """Return the applied value on file, or None when there is none or the policy forbids reading it. Blocking.

        Recovery uses it for "use the value on file" without showing it. The
        usual technician policy has no read on data paths; that is not an
        error here, so a 403 returns None (and is logged with its path).
        """
        if self.flow is None:
            return None
        try:
            found = self.flow.read_value_on_file(token_id, kind)
        except VaultPermissionError as error:
            log.info("The value on file is not readable with this policy: %s", error)
            return None
        return found[0] if found is not None else None

    def seed_lab(self, token_id: TokenId | str, escrow: Mapping[str, Secret]) -> list[SecretKind]:
        """Store a lab key's values "on file" as applied records of `token_id`; return the kinds seeded. Blocking.

        A kind that already has a record is left alone, so a rescan does not
        add versions and a value set in this session stays current. Refuses
        outside lab mode, so a lab value can never reach a real record.
        """
        if not self.lab or self.store is None:
            raise PolicyError("lab values are seeded only into a lab store (--lab)")
        seeded = []
        for name, value in escrow.items():
            mapped = lab_seed_value(name, value)
            if mapped is None:
                log.warning("Lab escrow entry %r has no secret kind; it was not seeded", name)
                continue
            kind, stored, encoding = mapped
            if self.store.read_metadata(token_id, kind) is not None:
                continue
            self._write_seed(token_id, kind, stored, encoding)
            seeded.append(kind)
        return seeded

    def _write_seed(self, token_id: TokenId | str, kind: SecretKind, value: Secret, encoding: Encoding) -> None:
        record = EscrowRecord(encoding=encoding.value, state=RecordState.APPLIED, set_at=utc_now(), set_by=LAB_SEED_BY,
                              reason=LAB_SEED_REASON)
        version = self.store.write(token_id, kind, record, value, cas=0)
        custom = {
            META_LAST_VERSION: str(version), META_LAST_STATE: RecordState.APPLIED.value,
            META_LAST_SET_BY: LAB_SEED_BY, META_LAST_SET_AT: record.set_at, META_APPLIED_VERSION: str(version),
        }
        try:
            self.store.update_custom_metadata(token_id, kind, custom)
        except EscrowError as error:
            log.warning("Cannot update custom metadata of the lab record %s: %s", self.store.metadata_path(token_id, kind), error)
        log.info("Seeded the lab %s of %s as applied, version %d", kind.value, token_id, version)

    # Login

    def login(self, method: str, *, secret: Secret, username: str = "", mount: str | None = None) -> TokenInfo:
        """Log in to Vault and switch the store and flow to the new token. Blocking.

        `method` is "token" (`secret` is the token), "userpass" or "ldap"
        (`secret` is the password). The token stays in memory only. Raises
        `EscrowUnavailableError` when there is nothing to log in to, and the
        typed `EscrowError`s of the login helpers when Vault refuses.
        """
        if method not in LOGIN_METHODS:
            raise PolicyError(f"Vault login method {method!r} is not supported; use one of {', '.join(LOGIN_METHODS)}")
        if self.memory:
            raise EscrowUnavailableError("The lab store needs no Vault login. Start with --lab-vault to escrow lab records to Vault.")
        if self.config is None or not self.config.configured:
            raise VaultNotConfiguredError("No Vault address is configured. Set VAULT_ADDR, --vault-addr or [vault] address in the config file, then log in.")

        if method == "token":
            config, info = login_token(self.config, secret)
        elif method == "userpass":
            config, info = login_userpass(self.config, username, secret, mount=mount)
        else:
            config, info = login_ldap(self.config, username, secret, mount=mount)

        self.config = config
        self.store = VaultStore.from_config(config)
        self.flow = EscrowFlow(self.store, user=self.user, audit=self.audit, min_versions=config.min_versions)
        self.refresh_status()
        log.info("Logged in to Vault with %s as %s", method, info.display_name)
        return info


def build_escrow_context(settings: Any, lab_scenario: str | None, overrides: Mapping[str, Any] | None = None, *,
                         audit: Any = None, user: str | None = None, env: Mapping[str, str] | None = None,
                         home: Path | None = None, clock: Callable[[], float] = time.monotonic) -> EscrowContext:
    """Build the session's escrow context and check the Vault status once. Blocking: call it in a thread.

    `settings` is the `SiteSettings` (its `raw` config file supplies the
    `[vault]` table); `overrides` uses the `[vault]` key names plus
    `lab_vault`. A broken `[vault]` table gives a context without a flow whose
    reason is the configuration error.
    """
    overrides = dict(overrides or {})
    lab_vault = bool(overrides.pop("lab_vault", False))
    lab = lab_scenario is not None
    file_config = getattr(settings, "raw", None) or {}

    try:
        config = load_vault_config(overrides, env=env, file_config=file_config, home=home)
    except PolicyError as error:
        if lab and not lab_vault:
            config = None  # the lab store needs no Vault settings
        else:
            return _broken_context(str(error), lab=lab, audit=audit, user=user, clock=clock)

    if lab and not lab_vault:
        store = MemoryStore(base_path=DEFAULT_LAB_BASE_PATH, display_name="lab")
        context = EscrowContext(EscrowFlow(store, user=user, audit=audit), label="lab store", store=store, config=config,
                                lab=True, audit=audit, user=user, clock=clock)
        context.refresh_status()
        return context

    if lab:
        config = replace(config, base_path=lab_base_path(config.base_path))
    if not config.configured:
        context = EscrowContext(None, label="Vault", unavailable_reason="no Vault address is configured", config=config,
                                lab=lab, audit=audit, user=user, clock=clock)
        context.refresh_status()
        return context

    store = VaultStore.from_config(config)
    flow = EscrowFlow(store, user=user, audit=audit, min_versions=config.min_versions)
    context = EscrowContext(flow, label=f"Vault {config.address}", store=store, config=config, lab=lab, audit=audit,
                            user=user, clock=clock)
    context.refresh_status()
    return context


def _sentence(text: str) -> str:
    """Return `text` ending with exactly one full stop."""
    text = text.strip()
    return text if text.endswith(".") else text + "."


def _broken_context(reason: str, *, lab: bool, audit: Any, user: str | None, clock: Callable[[], float]) -> EscrowContext:
    status = VaultStatus(VaultState.NOT_CONFIGURED, detail=f"The Vault settings are invalid: {reason}.", lab=lab)
    return EscrowContext(None, status=status, label="Vault", unavailable_reason=f"the Vault settings are invalid: {reason}",
                         lab=lab, audit=audit, user=user, checked_at=clock(), clock=clock)
