"""`MemoryStore`: the lab-mode escrow store, in memory, with Vault's KV v2 semantics.

Lab mode runs the same escrow flow as production against this store: every
write creates a version, check-and-set is enforced (cas 0 only for a new
record), `cas_required` and `max_versions` behave as in Vault, and metadata
lists versions with their creation time. Records live under `lab/` by default
so a lab record can never be mistaken for a real one. Nothing is persisted.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from tui.escrow.config import DEFAULT_LAB_BASE_PATH, TokenInfo, os_user
from tui.escrow.errors import CasConflictError, VaultPathError, VaultPermissionError, VaultRequestError, VaultSealedError
from tui.escrow.records import (
    META_APPLIED_VERSION,
    META_LAST_SET_AT,
    META_LAST_SET_BY,
    META_LAST_STATE,
    META_LAST_VERSION,
    EscrowRecord,
    RecordState,
    SecretKind,
    SecretMetadata,
    VersionInfo,
    kv_path,
    record_path,
    utc_now,
)
from tui.escrow.store import HealthInfo, api_path
from tui.model import TokenId
from tui.secret import Secret

# Vault keeps this many versions when max_versions is 0 on both the key and the mount.
VAULT_DEFAULT_MAX_VERSIONS = 10
ALL_CAPABILITIES = frozenset({"create", "read", "update", "delete", "list"})


@dataclass
class _Version:
    record: EscrowRecord
    value: Secret
    created_time: str


@dataclass
class _Entry:
    versions: dict[int, _Version] = field(default_factory=dict)
    current_version: int = 0
    max_versions: int = 0
    cas_required: bool = False
    custom_metadata: dict[str, str] = field(default_factory=dict)
    updated_time: str | None = None


class MemoryStore:
    """An in-memory `EscrowStore` for lab mode and tests.

    `readable=False` models the usual technician policy (create and update on
    data, read on metadata, no read of values). `fail_next(operation, error)`
    makes the next call of a store method raise `error`, for fault tests
    without an HTTP server.
    """

    is_lab = True
    address = "memory"

    def __init__(self, *, mount: str = "secret", base_path: str = DEFAULT_LAB_BASE_PATH, display_name: str = "lab",
                 readable: bool = True, mount_max_versions: int = 0, cas_required: bool = False) -> None:
        self.mount = mount.strip("/")
        self.base_path = base_path.strip("/")
        self.display_name = display_name
        self.readable = readable
        self.sealed = False
        self._mount_max_versions = mount_max_versions
        self._mount_cas_required = cas_required
        self._entries: dict[str, _Entry] = {}
        self._faults: dict[str, list[BaseException]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryStore(mount={self.mount!r}, base_path={self.base_path!r}, records={len(self._entries)})"

    def fail_next(self, operation: str, error: BaseException) -> None:
        """Make the next call of store method `operation` (e.g. "write") raise `error`."""
        self._faults.setdefault(operation, []).append(error)

    def _check_fault(self, operation: str) -> None:
        queue = self._faults.get(operation)
        if queue:
            raise queue.pop(0)
        if self.sealed and operation != "health":
            raise VaultSealedError("Vault is sealed (lab store); escrow is unavailable until it is unsealed.")

    def data_path(self, token_id: TokenId | str, kind: SecretKind) -> str:
        """Return the ACL path of the record's data."""
        return f"{self.mount}/data/{record_path(self.base_path, token_id, kind)}"

    def kv_path(self, token_id: TokenId | str, kind: SecretKind) -> str:
        """Return the record's KV path, the form shown to technicians."""
        return kv_path(self.mount, self.base_path, token_id, kind)

    def metadata_path(self, token_id: TokenId | str, kind: SecretKind) -> str:
        """Return the ACL path of the record's metadata."""
        return f"{self.mount}/metadata/{record_path(self.base_path, token_id, kind)}"

    def seed(self, token_id: TokenId | str, kind: SecretKind, value: Secret, *, encoding: str,
             state: RecordState = RecordState.APPLIED, reason: str = "on file", set_by: str = "lab seed") -> int:
        """Store `value` as a record "on file" (default state applied) and return its version."""
        record = EscrowRecord(encoding=encoding, state=state, set_at=utc_now(), set_by=set_by, reason=reason)
        metadata = self.read_metadata(token_id, kind)
        version = self.write(token_id, kind, record, value, cas=metadata.current_version if metadata else 0)
        custom = dict(metadata.custom_metadata) if metadata else {}
        custom.update({META_LAST_VERSION: str(version), META_LAST_STATE: state.value, META_LAST_SET_BY: set_by, META_LAST_SET_AT: record.set_at})
        if state is RecordState.APPLIED:
            custom[META_APPLIED_VERSION] = str(version)
        self.update_custom_metadata(token_id, kind, custom)
        return version

    def health(self) -> HealthInfo:
        """Return a healthy, unsealed state unless `sealed` is set."""
        self._check_fault("health")
        return HealthInfo(http_status=503 if self.sealed else 200, sealed=self.sealed)

    def token_info(self) -> TokenInfo:
        """Return the lab identity with no expiry."""
        self._check_fault("token_info")
        return TokenInfo(display_name=self.display_name, ttl_seconds=None, policies=("lab",))

    def capabilities(self, paths: Iterable[str]) -> dict[str, set[str]]:
        """Return full capabilities, without read on data paths when `readable` is False."""
        self._check_fault("capabilities")
        result = {}
        for path in paths:
            caps = set(ALL_CAPABILITIES)
            if not self.readable and f"{self.mount}/data/" in path:
                caps.discard("read")
            result[path] = caps
        return result

    def _key(self, token_id: TokenId | str, kind: SecretKind) -> str:
        return record_path(self.base_path, token_id, kind)

    def read_metadata(self, token_id: TokenId | str, kind: SecretKind) -> SecretMetadata | None:
        """Return the record's metadata, or None when nothing was written."""
        self._check_fault("read_metadata")
        with self._lock:
            entry = self._entries.get(self._key(token_id, kind))
            if entry is None:
                return None
            return SecretMetadata(
                current_version=entry.current_version,
                versions={n: VersionInfo(n, v.created_time) for n, v in entry.versions.items()},
                max_versions=entry.max_versions,
                cas_required=entry.cas_required,
                custom_metadata=dict(entry.custom_metadata),
                updated_time=entry.updated_time,
            )

    def write(self, token_id: TokenId | str, kind: SecretKind, record: EscrowRecord, value: Secret, *, cas: int | None) -> int:
        """Write a new version with check-and-set and return its number."""
        self._check_fault("write")
        path = self.data_path(token_id, kind)
        with self._lock:
            entry = self._entries.get(self._key(token_id, kind))
            current = entry.current_version if entry else 0
            required = self._mount_cas_required or (entry is not None and entry.cas_required)
            if cas is None and required:
                raise VaultRequestError(f"POST {api_path(path)} was rejected because the secret requires check-and-set (cas_required).", api_path=api_path(path), method="POST")
            if cas is not None and cas != current:
                raise CasConflictError(f"Another writer changed {api_path(path)} since its version was read (check-and-set mismatch).",
                                       api_path=api_path(path), expected_version=cas)

            if entry is None:
                entry = self._entries.setdefault(self._key(token_id, kind), _Entry())
            now = utc_now()
            entry.current_version = current + 1
            entry.versions[entry.current_version] = _Version(record, Secret(value.reveal(), value.kind), now)
            entry.updated_time = now
            self._prune(entry)
            return entry.current_version

    def _prune(self, entry: _Entry) -> None:
        keep = entry.max_versions or self._mount_max_versions or VAULT_DEFAULT_MAX_VERSIONS
        for number in sorted(entry.versions)[:-keep]:
            del entry.versions[number]

    def read_version(self, token_id: TokenId | str, kind: SecretKind, version: int | None = None) -> tuple[EscrowRecord, Secret, int]:
        """Return the record, value and number of `version` (latest when None)."""
        self._check_fault("read_version")
        path = api_path(self.data_path(token_id, kind))
        if not self.readable:
            raise VaultPermissionError(f"Permission denied: GET {path} needs the read capability on {path.removeprefix('/v1/')} (HTTP 403).",
                                       api_path=path, capability="read", method="GET")
        with self._lock:
            entry = self._entries.get(self._key(token_id, kind))
            number = version or (entry.current_version if entry else 0)
            if entry is None or number not in entry.versions:
                raise VaultPathError(f"Nothing is stored at {path} (HTTP 404).", api_path=path, method="GET")
            stored = entry.versions[number]
            return stored.record, Secret(stored.value.reveal(), stored.value.kind), number

    def update_custom_metadata(self, token_id: TokenId | str, kind: SecretKind, custom: dict[str, str]) -> None:
        """Replace the record's custom metadata."""
        self._check_fault("update_custom_metadata")
        with self._lock:
            entry = self._entries.setdefault(self._key(token_id, kind), _Entry())
            entry.custom_metadata = dict(custom)
            entry.updated_time = utc_now()

    def set_max_versions(self, token_id: TokenId | str, kind: SecretKind, max_versions: int, *, cas_required: bool | None = None) -> None:
        """Set a record's max_versions (and cas_required), as the metadata endpoint does."""
        with self._lock:
            entry = self._entries.setdefault(self._key(token_id, kind), _Entry())
            entry.max_versions = max_versions
            if cas_required is not None:
                entry.cas_required = cas_required

    def mount_max_versions(self) -> int | None:
        """Return the mount-wide max_versions (0 means Vault's default of 10)."""
        self._check_fault("mount_max_versions")
        return self._mount_max_versions

