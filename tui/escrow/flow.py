"""Escrow-before-apply: the one code path every secret-setting action goes through.

`EscrowFlow.set_secret` runs four steps and stops at the first that fails:

1. Pre-flight: Vault reachable and unsealed, token valid, create and update on
   the record's data path and read on its metadata path. A failure returns a
   REFUSED result naming the path and capability; nothing is written or sent.
2. Escrow the value as `pending` with check-and-set (cas 0 for a new record,
   else the current version from metadata). A check-and-set mismatch means
   another technician wrote meanwhile: the flow returns CONFLICT with who and
   when, and writes again only when the caller passes `confirmed_version`.
   Any other failure returns NOT_ESCROWED. In both cases the apply callback
   is never called, so nothing reaches the token.
3. Call the apply callback, which sends the APDUs.
4. Record the outcome as a new version with cas = the pending version:
   `applied`, `failed` with the status word, or `unknown` when the response was
   lost. When this write fails the result is NOT CONFIRMED, keeps the value,
   and `retry_record()` writes the outcome again.

Nothing here reads a secret value: the normal technician policy may write but
not read values, so the flow needs only metadata. `read_value_on_file` is the
separate, policy-gated way to use the value on file.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from tui.apdu import Status
from tui.errors import KeytriageError, PcscError
from tui.escrow.config import DEFAULT_MIN_VERSIONS, TokenInfo, os_user
from tui.escrow.errors import (
    CasConflictError,
    ConflictInfo,
    EscrowError,
    VaultPathError,
    VaultPermissionError,
    VaultSealedError,
    VaultUninitializedError,
)
from tui.escrow.memory import VAULT_DEFAULT_MAX_VERSIONS
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
    kv_reference,
    utc_now,
)
from tui.escrow.store import EscrowStore, api_path
from tui.model import TokenId
from tui.secret import Secret

log = logging.getLogger("keytriage.escrow")



class TransmitLostError(KeytriageError):
    """The command was sent to the token but its response was lost, so the outcome is unknown.

    Apply callbacks raise it; the flow records the value as `unknown`.
    """


@dataclass(frozen=True)
class ApplyOutcome:
    """The apply callback's report: success, or failure with its status word."""

    success: bool
    status: Status | None = None
    message: str = ""

    @classmethod
    def applied(cls, status: Status | None = None) -> ApplyOutcome:
        """Return a success outcome."""
        return cls(True, status)

    @classmethod
    def failed(cls, status: Status | None, message: str = "") -> ApplyOutcome:
        """Return a failure outcome; the token kept its old value."""
        return cls(False, status, message)


ApplyCallback = Callable[[], ApplyOutcome]


class Outcome(str, enum.Enum):
    """The end state of a secret-setting action."""

    REFUSED = "refused"  # pre-flight failed: nothing written, nothing sent
    CONFLICT = "conflict"  # check-and-set mismatch on the pending write: nothing sent
    NOT_ESCROWED = "not escrowed"  # the pending write failed: nothing sent
    APPLIED = "applied"
    FAILED = "failed"
    UNKNOWN = "unknown"


@dataclass
class SetRequest:
    """One secret to escrow and apply, with the fields its record carries."""

    token_id: TokenId | str
    kind: SecretKind
    value: Secret = field(repr=False)
    encoding: str
    reason: str = ""
    ticket: str = ""
    profile: str = ""
    label: str = ""
    check_hint: str = ""


@dataclass
class PreflightReport:
    """The pre-flight findings: paths, the current version to use as cas, and warnings.

    `data_path` and `metadata_path` are ACL paths for requests and permission
    errors. `kv_path` is the record's location as technicians see it.
    """

    data_path: str
    metadata_path: str
    kv_path: str
    current_version: int
    metadata: SecretMetadata | None
    token: TokenInfo
    can_update_metadata: bool
    can_read_values: bool
    warnings: list[str] = field(default_factory=list)


@dataclass
class EscrowResult:
    """The result of `set_secret`, for the UI and the audit trail.

    `value` stays available whatever happened, so the UI can keep it on screen
    when it is not safely recorded. `confirmed` is True once the outcome record
    (step 4) is written; `not_confirmed` flags an applied, failed or unknown
    outcome whose record is missing, and `retry_record()` writes it again.
    `data_path` is the ACL path of the record's data, and `kv_path` the
    location to show.
    """

    outcome: Outcome
    request: SetRequest = field(repr=False)
    message: str
    pending_version: int | None = None
    outcome_version: int | None = None
    confirmed: bool = False
    status: Status | None = None
    error: EscrowError | None = None
    conflict: ConflictInfo | None = None
    warnings: list[str] = field(default_factory=list)
    data_path: str | None = None
    kv_path: str | None = None
    _retry: Callable[[], EscrowResult] | None = field(default=None, repr=False, compare=False)

    @property
    def value(self) -> Secret:
        """The value this action set or tried to set."""
        return self.request.value

    @property
    def sent(self) -> bool:
        """True when the apply callback ran, so the token may have changed."""
        return self.outcome in (Outcome.APPLIED, Outcome.FAILED, Outcome.UNKNOWN)

    @property
    def not_confirmed(self) -> bool:
        """True when the token was addressed but its outcome is not recorded in escrow."""
        return self.sent and not self.confirmed

    def retry_record(self) -> EscrowResult:
        """Write the outcome record again; only for a NOT CONFIRMED result."""
        if self._retry is None:
            raise EscrowError(f"There is no outcome record to retry for this {self.request.kind.label} result ({self.outcome.value}).")
        return self._retry()

    @property
    def version(self) -> int | None:
        """The newest version this result wrote: the outcome record, else the pending one."""
        return self.outcome_version or self.pending_version

    def reference(self) -> str | None:
        """Return `<KV path> v<version>` for tickets and logs, None when nothing was written."""
        if not self.kv_path or not self.version:
            return None
        return kv_reference(self.kv_path, self.version)

    def escrow_sentence(self) -> str:
        """Return where the value was escrowed before it was sent and how the outcome was recorded.

        The flow writes the value as pending (version N) before the token receives
        it, then records the outcome as version N+1 with check-and-set on N.
        """
        where = self.kv_path or "the escrow record"
        if not self.pending_version:
            return f"Not escrowed to {where}; nothing was sent to the token."
        text = f"Escrowed to {where} (version {self.pending_version}, pending) before it was set"
        if self.outcome_version:
            return f"{text}; recorded as {self.outcome.value} in version {self.outcome_version}."
        if self.sent:
            return f"{text}; the {self.outcome.value} outcome record is NOT CONFIRMED."
        return f"{text}."

    def words(self) -> str:
        """Return a one-line summary, e.g. "PIV PUK applied, escrow version 2 (NOT CONFIRMED)"."""
        text = f"{self.request.kind.label} {self.outcome.value}"
        if self.outcome_version:
            text += f", escrow version {self.outcome_version}"
        elif self.pending_version:
            text += f", pending escrow version {self.pending_version}"
        if self.not_confirmed:
            text += " (NOT CONFIRMED)"
        return text


@dataclass(frozen=True)
class OnFile:
    """A record's state as metadata shows it, without reading its value."""

    current_version: int
    applied_version: int | None
    last_state: str | None
    last_set_at: str | None
    last_set_by: str | None
    version_count: int

    def words(self) -> str:
        """E.g. "on file (v3)" or "on file (v4 pending)"."""
        if self.applied_version and self.last_state in (None, RecordState.APPLIED.value):
            return f"on file (v{self.applied_version})"
        if self.last_state:
            return f"on file (v{self.current_version} {self.last_state})"
        return f"on file (v{self.current_version}, state not readable)"


class AuditSink(Protocol):
    """The part of `tui.audit.AuditTrail` the flow uses."""

    def record(self, operation: str, outcome: str, **fields: Any) -> Any:
        """Append one audit record."""


class EscrowFlow:
    """The shared escrow-before-apply path over one `EscrowStore`.

    `audit` is an `AuditTrail` (or anything with its `record` method); audit
    failures are logged and never stop the flow, because the escrow record is
    the authoritative one.
    """

    def __init__(self, store: EscrowStore, *, user: str | None = None, audit: AuditSink | None = None,
                 min_versions: int = DEFAULT_MIN_VERSIONS) -> None:
        self.store = store
        self.user = user or os_user()
        self.audit = audit
        self.min_versions = min_versions

    # Pre-flight

    def preflight(self, token_id: TokenId | str, kind: SecretKind) -> PreflightReport:
        """Check that a value for `kind` can be escrowed now; raise a typed `EscrowError` if not."""
        data_path = self.store.data_path(token_id, kind)
        metadata_path = self.store.metadata_path(token_id, kind)
        location = self.store.kv_path(token_id, kind)

        health = self.store.health()
        if not health.initialized:
            raise VaultUninitializedError("Vault is not initialised (sys/health returned 501); nothing can be escrowed. Ask the Vault operators to initialise it.",
                                          api_path="/v1/sys/health")
        if health.sealed:
            raise VaultSealedError(f"Vault is sealed (sys/health returned {health.http_status}); the new {kind.label} cannot be escrowed, so it is not set. "
                                   "Ask an operator to unseal Vault, then retry.", api_path="/v1/sys/health")
        token = self.store.token_info()

        caps = self.store.capabilities([data_path, metadata_path])
        data_caps, metadata_caps = caps[data_path], caps[metadata_path]
        if "root" not in data_caps:
            missing = [c for c in ("create", "update") if c not in data_caps]
            if missing:
                raise _permission_error("POST", data_path, "/".join(missing))
        if "root" not in metadata_caps and "read" not in metadata_caps:
            raise _permission_error("GET", metadata_path, "read")

        metadata = self.store.read_metadata(token_id, kind)
        report = PreflightReport(
            data_path=data_path,
            metadata_path=metadata_path,
            kv_path=location,
            current_version=metadata.current_version if metadata else 0,
            metadata=metadata,
            token=token,
            can_update_metadata=bool(metadata_caps & {"update", "root"}),
            can_read_values=bool(data_caps & {"read", "root"}),
        )
        report.warnings.extend(self._version_warnings(metadata, location))
        return report

    def _version_warnings(self, metadata: SecretMetadata | None, location: str) -> list[str]:
        kept = metadata.max_versions if metadata and metadata.max_versions else 0
        source = "the record"
        if not kept:
            mount_value = self.store.mount_max_versions()
            if mount_value is None:
                return []
            kept = mount_value or VAULT_DEFAULT_MAX_VERSIONS
            source = f"the {self.store.mount} mount"
        if kept < self.min_versions:
            return [f"{source.capitalize()} keeps only {kept} versions (max_versions) for {location}; each change writes two, "
                    f"so the applied value can be pruned after a few failed attempts. Ask the Vault administrators for max_versions of at least {self.min_versions}."]
        return []

    # The four steps

    def set_secret(self, request: SetRequest, apply: ApplyCallback, *, confirmed_version: int | None = None) -> EscrowResult:
        """Escrow `request.value` as pending, call `apply`, and record the outcome.

        `confirmed_version` is the version a technician confirmed overwriting
        after a CONFLICT result; it is used as the check-and-set version.
        """
        kind = request.kind
        try:
            report = self.preflight(request.token_id, kind)
        except EscrowError as error:
            log.warning("Escrow pre-flight failed for %s %s: %s", request.token_id, kind.value, error)
            result = EscrowResult(Outcome.REFUSED, request, f"The new {kind.label} was not set: {error}", error=error,
                                  data_path=self.store.data_path(request.token_id, kind), kv_path=self.store.kv_path(request.token_id, kind))
            self._audit(result)
            return result

        cas = report.current_version if confirmed_version is None else confirmed_version
        set_by = f"{self.user} (Vault: {report.token.display_name})"
        pending = self._record(request, RecordState.PENDING, set_by)
        try:
            pending_version = self.store.write(request.token_id, kind, pending, request.value, cas=cas)
        except CasConflictError as error:
            return self._conflict(request, report, error, cas)
        except EscrowError as error:
            log.warning("Escrow pending write failed for %s: %s", report.data_path, error)
            result = EscrowResult(Outcome.NOT_ESCROWED, request,
                                  f"The new {kind.label} was not escrowed and was not sent to the token: {error}",
                                  error=error, warnings=report.warnings, data_path=report.data_path, kv_path=report.kv_path)
            self._audit(result)
            return result
        log.info("Escrowed %s for %s as pending, version %d", kind.value, request.token_id, pending_version)
        custom = dict(report.metadata.custom_metadata) if report.metadata else {}
        self._update_custom_metadata(request, report, custom, pending_version, pending)

        state, status, note = self._apply(apply, kind)
        outcome_record = self._record(request, state, set_by, status)
        result = EscrowResult(Outcome(state.value), request, note, pending_version=pending_version, status=status,
                              warnings=report.warnings, data_path=report.data_path, kv_path=report.kv_path)
        return self._write_outcome(result, report, custom, outcome_record)

    def _apply(self, apply: ApplyCallback, kind: SecretKind) -> tuple[RecordState, Status | None, str]:
        try:
            outcome = apply()
        except (TransmitLostError, PcscError) as error:
            log.warning("The response to the %s change was lost: %s", kind.label, error)
            return RecordState.UNKNOWN, None, f"The token's response was lost ({error}), so it may contain the new {kind.label}."
        except Exception as error:
            # The command may have reached the token before the failure, so
            # the value stays a candidate rather than being dropped.
            log.exception("Applying the %s failed with %s", kind.label, type(error).__name__)
            return RecordState.UNKNOWN, None, f"Applying the {kind.label} failed with {type(error).__name__}; the token may hold the new value."
        if outcome.success:
            return RecordState.APPLIED, outcome.status, f"The token accepted the new {kind.label}."
        words = outcome.status.words() if outcome.status else "no status word"
        sw = f" (status word {outcome.status.sw:04X})" if outcome.status else ""
        detail = f" {outcome.message}" if outcome.message else ""
        return RecordState.FAILED, outcome.status, f"The token rejected the new {kind.label}: {words}{sw}. The old value stays current.{detail}"

    def _write_outcome(self, result: EscrowResult, report: PreflightReport, custom: dict[str, str], record: EscrowRecord) -> EscrowResult:
        request = result.request
        try:
            version = self.store.write(request.token_id, request.kind, record, request.value, cas=result.pending_version or 0)
        except EscrowError as error:
            if isinstance(error, CasConflictError):
                # NOTE: after a lost response the newer version may be this
                # flow's own outcome write; without read access it cannot be
                # told apart from another writer's, so it is reported as a conflict.
                error.conflict = self._conflict_info(request, result.pending_version or 0)
            log.warning("Escrow outcome write failed for %s (%s): %s", report.data_path, record.state.value, error)
            result.confirmed = False
            result.error = error
            result.message = (f"{_outcome_sentence(result, request)} NOT CONFIRMED in Vault: the {record.state.value} record could not be written "
                              f"({error}). Keep the value on screen and retry the record.")
            result._retry = lambda: self._write_outcome(result, report, custom, record)
            self._audit(result)
            return result

        log.info("Recorded %s for %s as %s, version %d", request.kind.value, request.token_id, record.state.value, version)
        result.outcome_version = version
        result.confirmed = True
        result.error = None
        result._retry = None
        result.message = _outcome_sentence(result, request)
        self._update_custom_metadata(request, report, custom, version, record)
        self._audit(result)
        return result

    def _conflict(self, request: SetRequest, report: PreflightReport, error: CasConflictError, cas: int) -> EscrowResult:
        conflict = self._conflict_info(request, cas)
        error.conflict = conflict
        error.expected_version = cas
        who = conflict.words() if conflict else "a newer version"
        log.warning("Escrow check-and-set conflict on %s: expected version %d, found %s", report.data_path, cas, who)
        message = (f"Another technician wrote the {request.kind.label} record meanwhile ({who}). Nothing was sent to the token. "
                   "Check with them; to write anyway, confirm and the next write replaces that version.")
        result = EscrowResult(Outcome.CONFLICT, request, message, error=error, conflict=conflict, warnings=report.warnings,
                              data_path=report.data_path, kv_path=report.kv_path)
        self._audit(result)
        return result

    def _conflict_info(self, request: SetRequest, expected: int) -> ConflictInfo | None:
        try:
            metadata = self.store.read_metadata(request.token_id, request.kind)
        except EscrowError as error:
            log.warning("Cannot read metadata after a check-and-set conflict: %s", error)
            return None
        if metadata is None:
            return None
        custom = metadata.custom_metadata
        same_version = custom.get(META_LAST_VERSION) == str(metadata.current_version)
        return ConflictInfo(
            current_version=metadata.current_version,
            written_at=metadata.created_time(metadata.current_version) or (custom.get(META_LAST_SET_AT) if same_version else None),
            written_by=custom.get(META_LAST_SET_BY) if same_version else None,
            state=custom.get(META_LAST_STATE) if same_version else None,
        )

    def _record(self, request: SetRequest, state: RecordState, set_by: str, status: Status | None = None) -> EscrowRecord:
        return EscrowRecord(
            encoding=request.encoding,
            state=state,
            set_at=utc_now(),
            set_by=set_by,
            reason=request.reason,
            ticket=request.ticket,
            profile=request.profile,
            status_word=f"{status.sw:04X}" if status is not None and state is RecordState.FAILED else None,
            label=request.label,
        )

    def _update_custom_metadata(self, request: SetRequest, report: PreflightReport, custom: dict[str, str], version: int, record: EscrowRecord) -> None:
        if not report.can_update_metadata:
            return
        custom[META_LAST_VERSION] = str(version)
        custom[META_LAST_STATE] = record.state.value
        custom[META_LAST_SET_BY] = record.set_by
        custom[META_LAST_SET_AT] = record.set_at
        if record.state is RecordState.APPLIED:
            custom[META_APPLIED_VERSION] = str(version)
        try:
            self.store.update_custom_metadata(request.token_id, request.kind, custom)
        except EscrowError as error:
            # The versions themselves are the record; custom metadata is a
            # convenience for writers who cannot read values.
            log.warning("Cannot update custom metadata of %s: %s", report.metadata_path, error)

    def _audit(self, result: EscrowResult) -> None:
        if self.audit is None:
            return
        request = result.request
        try:
            self.audit.record(
                f"escrow-set-{request.kind.value}",
                result.outcome.value if not result.not_confirmed else f"{result.outcome.value}, not confirmed",
                token_id=str(request.token_id),
                profile=request.profile or None,
                status=result.status.sw if result.status else None,
                reason=request.reason or None,
                ticket=request.ticket or None,
                escrow_path=result.kv_path,
                escrow_version=result.version,
            )
        except KeytriageError as error:
            log.warning("Cannot write the audit record for %s: %s", request.token_id, error)

    # Reading what is on file

    def on_file(self, token_id: TokenId | str, kind: SecretKind) -> OnFile | None:
        """Return the record's state from metadata (no value read), None when nothing is on file."""
        metadata = self.store.read_metadata(token_id, kind)
        if metadata is None or not metadata.current_version:
            return None
        custom = metadata.custom_metadata
        applied = custom.get(META_APPLIED_VERSION)
        return OnFile(
            current_version=metadata.current_version,
            applied_version=int(applied) if applied and applied.isdigit() else None,
            last_state=custom.get(META_LAST_STATE) if custom.get(META_LAST_VERSION) == str(metadata.current_version) else None,
            last_set_at=custom.get(META_LAST_SET_AT),
            last_set_by=custom.get(META_LAST_SET_BY),
            version_count=len(metadata.versions),
        )

    def read_value_on_file(self, token_id: TokenId | str, kind: SecretKind) -> tuple[Secret, int] | None:
        """Return the current applied value and its version, or None when no version is applied.

        Needs read on the data path; raises `VaultPermissionError` naming the
        path when the policy does not allow it. The current value is the latest
        version whose state is `applied`.
        """
        metadata = self.store.read_metadata(token_id, kind)
        if metadata is None or not metadata.current_version:
            return None

        candidates = sorted((n for n, info in metadata.versions.items() if not info.deleted and not info.destroyed), reverse=True)
        for number in candidates:
            try:
                record, value, version = self.store.read_version(token_id, kind, number)
            except VaultPathError:
                continue
            if record.state is RecordState.APPLIED:
                return value, version
        return None


def _permission_error(method: str, acl_path: str, capability: str) -> VaultPermissionError:
    path = api_path(acl_path)
    return VaultPermissionError(
        f"Permission denied: {method} {path} needs the {capability} capability on {acl_path}. "
        "Ask the Vault administrators to grant it in your policy; KV v2 policies name the data/ and metadata/ paths.",
        api_path=path, capability=capability, method=method)


def _outcome_sentence(result: EscrowResult, request: SetRequest) -> str:
    kind = request.kind.label
    if result.outcome is Outcome.APPLIED:
        return f"The token accepted the new {kind}; it is escrowed as applied."
    if result.outcome is Outcome.FAILED:
        status = f" ({result.status})" if result.status else ""
        return f"The token rejected the new {kind}{status}; the previous value on file stays current."
    hint = request.check_hint or f"Check which {kind} the token holds before relying on either value."
    return f"The token's response was lost, so it may contain the new {kind}. It is escrowed as unknown (a candidate). {hint}"
