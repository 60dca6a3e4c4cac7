"""The `EscrowStore` seam and its Vault implementation over an hvac client.

A store speaks in token IDs, secret kinds and KV versions; it knows nothing
about tokens or APDUs. `VaultStore` takes the hvac client as a parameter, so
tests pass a client pointed at the test server and the UI one built from the
user's settings. `tui.escrow.memory.MemoryStore` is the lab implementation.

Every hvac exception is decoded by `tui.escrow.errors.decode_vault_error`, so
callers see only `EscrowError` types whose messages name the API path.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from tui.escrow.config import TokenInfo, VaultConfig, build_client, lookup_token
from tui.escrow.errors import EscrowError, VaultPathError, VaultPermissionError, decode_vault_error
from tui.escrow.records import EscrowRecord, SecretKind, SecretMetadata, VersionInfo, kv_path, record_path
from tui.model import TokenId
from tui.secret import Secret

log = logging.getLogger("keytriage.escrow")


@dataclass(frozen=True)
class HealthInfo:
    """What `sys/health` reports: the HTTP status and the node's state."""

    http_status: int
    initialized: bool = True
    sealed: bool = False
    standby: bool = False
    version: str | None = None


@runtime_checkable
class EscrowStore(Protocol):
    """Versioned storage of escrow records, with check-and-set writes.

    Paths without `/v1/` (for example `secret/data/keytriage/tokens/x/piv-puk`)
    are ACL paths as policies name them, and `api_path` adds `/v1/`. What a
    technician reads and types is `kv_path` (`secret/keytriage/tokens/x/piv-puk`).
    """

    mount: str
    base_path: str
    is_lab: bool
    address: str

    def kv_path(self, token_id: TokenId | str, kind: SecretKind) -> str:
        """Return the record's KV path `<mount>/<base>/<id>/<kind>`, the form `vault kv get` takes."""

    def data_path(self, token_id: TokenId | str, kind: SecretKind) -> str:
        """Return the ACL path of the record's data, `<mount>/data/<base>/<id>/<kind>`."""

    def metadata_path(self, token_id: TokenId | str, kind: SecretKind) -> str:
        """Return the ACL path of the record's metadata, `<mount>/metadata/<base>/<id>/<kind>`."""

    def health(self) -> HealthInfo:
        """Return the server's health. Raises `VaultUnreachableError` when it cannot be reached."""

    def token_info(self) -> TokenInfo:
        """Return the token's display name and TTL. Raises `VaultTokenError` for a bad token."""

    def capabilities(self, paths: Iterable[str]) -> dict[str, set[str]]:
        """Return the token's capabilities on each ACL path ("root" means all)."""

    def read_metadata(self, token_id: TokenId | str, kind: SecretKind) -> SecretMetadata | None:
        """Return the record's metadata, or None when nothing was ever written."""

    def write(self, token_id: TokenId | str, kind: SecretKind, record: EscrowRecord, value: Secret, *, cas: int) -> int:
        """Write a new version with check-and-set `cas` and return its number.

        Raises `CasConflictError` when the current version is not `cas`.
        """

    def read_version(self, token_id: TokenId | str, kind: SecretKind, version: int | None = None) -> tuple[EscrowRecord, Secret, int]:
        """Return the record, value and number of `version` (latest when None). Needs read on the data path."""

    def update_custom_metadata(self, token_id: TokenId | str, kind: SecretKind, custom: dict[str, str]) -> None:
        """Replace the record's custom metadata (versionless, non-secret facts)."""

    def mount_max_versions(self) -> int | None:
        """Return the mount's max_versions (0 means Vault's default of 10), or None when not readable."""


def api_path(acl_path: str) -> str:
    """Return the HTTP API path for an ACL path: `/v1/` in front."""
    return f"/v1/{acl_path}"


class VaultStore:
    """An `EscrowStore` on a KV version 2 mount, through the hvac `client` given."""

    is_lab = False

    def __init__(self, client: Any, *, mount: str = "secret", base_path: str = "keytriage/tokens", address: str | None = None) -> None:
        self.client = client
        self.mount = mount.strip("/")
        self.base_path = base_path.strip("/")
        self.address = address or getattr(getattr(client, "adapter", None), "base_uri", "") or ""

    @classmethod
    def from_config(cls, config: VaultConfig) -> VaultStore:
        """Build a store with a client made from `config`."""
        return cls(build_client(config), mount=config.mount, base_path=config.base_path, address=config.address)

    def __repr__(self) -> str:
        return f"VaultStore({self.address!r}, mount={self.mount!r}, base_path={self.base_path!r})"

    def _sub_path(self, token_id: TokenId | str, kind: SecretKind) -> str:
        return record_path(self.base_path, token_id, kind)

    def data_path(self, token_id: TokenId | str, kind: SecretKind) -> str:
        """Return the ACL path of the record's data."""
        return f"{self.mount}/data/{self._sub_path(token_id, kind)}"

    def kv_path(self, token_id: TokenId | str, kind: SecretKind) -> str:
        """Return the record's KV path, the form shown to technicians."""
        return kv_path(self.mount, self.base_path, token_id, kind)

    def metadata_path(self, token_id: TokenId | str, kind: SecretKind) -> str:
        """Return the ACL path of the record's metadata."""
        return f"{self.mount}/metadata/{self._sub_path(token_id, kind)}"

    def _error(self, exc: BaseException, method: str, acl_path: str, capability: str | None = None) -> EscrowError:
        error = decode_vault_error(exc, method=method, api_path=api_path(acl_path), capability=capability, address=self.address)
        log.debug("Vault request failed: %s", error)
        return error

    def health(self) -> HealthInfo:
        """Return the server's health from `GET /v1/sys/health` (no token needed)."""
        try:
            response = self.client.sys.read_health_status(method="GET")
        except Exception as exc:  # decoded into one typed error
            raise self._error(exc, "GET", "sys/health") from None

        if isinstance(response, dict):
            status, body = 200, response
        else:
            status = response.status_code
            try:
                body = response.json()
            except ValueError:
                body = {}
        return HealthInfo(
            http_status=status,
            initialized=bool(body.get("initialized", status != 501)),
            sealed=bool(body.get("sealed", status == 503)),
            standby=bool(body.get("standby", status in (429, 473))),
            version=body.get("version"),
        )

    def token_info(self) -> TokenInfo:
        """Return the token's display name and TTL from lookup-self."""
        return lookup_token(self.client)

    def capabilities(self, paths: Iterable[str]) -> dict[str, set[str]]:
        """Return the token's capabilities on each ACL path from `sys/capabilities-self`."""
        paths = list(paths)
        try:
            response = self.client.sys.get_capabilities(paths=paths)
        except Exception as exc:  # decoded into one typed error
            raise self._error(exc, "POST", "sys/capabilities-self", "update") from None
        data = response.get("data") or response
        result = {}
        for path in paths:
            caps = data.get(path)
            if caps is None and len(paths) == 1:
                caps = data.get("capabilities")
            result[path] = set(caps or ["deny"])
        return result

    def read_metadata(self, token_id: TokenId | str, kind: SecretKind) -> SecretMetadata | None:
        """Return the record's metadata, or None on HTTP 404."""
        acl_path = self.metadata_path(token_id, kind)
        try:
            response = self.client.secrets.kv.v2.read_secret_metadata(path=self._sub_path(token_id, kind), mount_point=self.mount)
        except Exception as exc:  # decoded into one typed error
            error = self._error(exc, "GET", acl_path, "read")
            if type(error) is VaultPathError:
                return None
            raise error from None
        return parse_metadata(response.get("data") or {})

    def write(self, token_id: TokenId | str, kind: SecretKind, record: EscrowRecord, value: Secret, *, cas: int) -> int:
        """Write a new version with check-and-set and return its number."""
        acl_path = self.data_path(token_id, kind)
        capability = "create" if cas == 0 else "update"
        try:
            response = self.client.secrets.kv.v2.create_or_update_secret(
                path=self._sub_path(token_id, kind), secret=record.to_payload(value), cas=cas, mount_point=self.mount)
        except Exception as exc:  # decoded into one typed error
            error = self._error(exc, "POST", acl_path, capability)
            raise error from None
        return int(response["data"]["version"])

    def read_version(self, token_id: TokenId | str, kind: SecretKind, version: int | None = None) -> tuple[EscrowRecord, Secret, int]:
        """Return the record, value and number of `version` (latest when None)."""
        from tui.escrow.records import value_from_payload

        acl_path = self.data_path(token_id, kind)
        try:
            response = self.client.secrets.kv.v2.read_secret_version(
                path=self._sub_path(token_id, kind), version=version, mount_point=self.mount, raise_on_deleted_version=True)
        except Exception as exc:  # decoded into one typed error
            raise self._error(exc, "GET", acl_path, "read") from None
        data = response["data"]
        payload = data.get("data") or {}
        return EscrowRecord.from_payload(payload), value_from_payload(payload, kind), int(data["metadata"]["version"])

    def update_custom_metadata(self, token_id: TokenId | str, kind: SecretKind, custom: dict[str, str]) -> None:
        """Replace the record's custom metadata with `custom`."""
        acl_path = self.metadata_path(token_id, kind)
        try:
            self.client.secrets.kv.v2.update_metadata(path=self._sub_path(token_id, kind), custom_metadata=custom, mount_point=self.mount)
        except Exception as exc:  # decoded into one typed error
            raise self._error(exc, "POST", acl_path, "update") from None

    def mount_max_versions(self) -> int | None:
        """Return the mount's max_versions from `<mount>/config`, or None when not readable."""
        try:
            response = self.client.secrets.kv.v2.read_configuration(mount_point=self.mount)
        except Exception as exc:  # decoded into one typed error
            error = self._error(exc, "GET", f"{self.mount}/config", "read")
            if isinstance(error, (VaultPermissionError, VaultPathError)):
                return None
            raise error from None
        return int((response.get("data") or {}).get("max_versions") or 0)


def parse_metadata(data: dict[str, Any]) -> SecretMetadata:
    """Build `SecretMetadata` from the `data` of a KV v2 metadata response."""
    versions = {}
    for number, info in (data.get("versions") or {}).items():
        info = info or {}
        versions[int(number)] = VersionInfo(
            version=int(number),
            created_time=info.get("created_time"),
            deleted=bool(info.get("deletion_time")),
            destroyed=bool(info.get("destroyed")),
        )
    return SecretMetadata(
        current_version=int(data.get("current_version") or 0),
        versions=versions,
        max_versions=int(data.get("max_versions") or 0),
        cas_required=bool(data.get("cas_required")),
        custom_metadata=dict(data.get("custom_metadata") or {}),
        updated_time=data.get("updated_time"),
    )
