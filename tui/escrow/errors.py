"""Typed escrow errors, and the one place that decodes hvac and HTTP failures into them.

Every message names the Vault API path that failed (for example
`/v1/secret/data/keytriage/tokens/cplc:4790516856781A2B3C4D/piv-puk`) and,
for a permission problem, the capability that is missing. Messages are built
from the path, the HTTP status and Vault's own `errors` list. Vault puts no
request data into that list, so no secret value and no Vault token reaches a
message.
"""

from __future__ import annotations

from dataclasses import dataclass

from tui.errors import KeytriageError

# Vault's error text for a stale or missing check-and-set version (KV v2 data write).
CAS_MISMATCH_TEXT = "check-and-set parameter did not match the current version"
CAS_REQUIRED_TEXT = "check-and-set parameter required"

# Maximum length of Vault's error text carried into a message. Vault's texts are
# short; a proxy in between can return a whole HTML page.
MAX_SERVER_TEXT = 200


class EscrowError(KeytriageError):
    """An escrow step failed; `api_path` is the Vault API path, `capability` the one missing."""

    def __init__(self, message: str, *, api_path: str | None = None, capability: str | None = None, method: str | None = None) -> None:
        self.api_path = api_path
        self.capability = capability
        self.method = method
        super().__init__(message)


class VaultNotConfiguredError(EscrowError):
    """No Vault address is configured, so nothing can be escrowed."""


class VaultUnavailableError(EscrowError):
    """Vault cannot serve requests now: unreachable, sealed, uninitialised or a standby without an active node."""


class VaultUnreachableError(VaultUnavailableError):
    """The connection to Vault failed or timed out."""


class VaultSealedError(VaultUnavailableError):
    """Vault is sealed (HTTP 503)."""


class VaultUninitializedError(VaultUnavailableError):
    """Vault is not initialised (HTTP 501)."""


class VaultStandbyError(VaultUnavailableError):
    """The address reaches a standby node that cannot forward to an active node."""


class VaultTokenError(EscrowError):
    """The Vault token is missing, invalid or expired."""


class VaultPermissionError(EscrowError):
    """The Vault token's policy lacks a capability on a path (HTTP 403)."""


class VaultPathError(EscrowError):
    """The path does not exist or no secrets engine is mounted there (HTTP 404)."""


class VaultMountError(VaultPathError):
    """No secrets engine is mounted at the path ("no handler for route")."""


class VaultRequestError(EscrowError):
    """Vault rejected the request as invalid (HTTP 400), other than a check-and-set mismatch."""


class VaultServerError(EscrowError):
    """Vault or a proxy in front of it failed (HTTP 5xx, 429 or an unexpected status)."""


@dataclass(frozen=True)
class ConflictInfo:
    """The writer and time of the version that made a check-and-set write fail, as far as metadata shows."""

    current_version: int
    written_at: str | None = None
    written_by: str | None = None
    state: str | None = None

    def words(self) -> str:
        """Return e.g. "version 4, written 2025-01-02T10:00:00Z by bob (Vault: ldap-bob) (pending)"."""
        text = f"version {self.current_version}"
        if self.written_at:
            text += f", written {self.written_at}"
        if self.written_by:
            text += f" by {self.written_by}"
        if self.state:
            text += f" ({self.state})"
        return text


class CasConflictError(EscrowError):
    """Another writer changed the secret since its version was read (check-and-set mismatch)."""

    def __init__(self, message: str, *, api_path: str | None = None, expected_version: int | None = None, conflict: ConflictInfo | None = None) -> None:
        self.expected_version = expected_version
        self.conflict = conflict
        super().__init__(message, api_path=api_path, capability=None, method="POST")


def _server_text(exc: BaseException) -> str:
    errors = getattr(exc, "errors", None)
    if errors:
        text = "; ".join(" ".join(str(e).split()) for e in errors)
    else:
        text = ""
    return text[:MAX_SERVER_TEXT]


def _status_of(exc: BaseException) -> int | None:
    import hvac.exceptions as hx

    table = {
        hx.InvalidRequest: 400, hx.Unauthorized: 401, hx.Forbidden: 403, hx.InvalidPath: 404,
        hx.RateLimitExceeded: 429, hx.InternalServerError: 500, hx.VaultNotInitialized: 501,
        hx.BadGateway: 502, hx.VaultDown: 503,
    }
    for cls, status in table.items():
        if isinstance(exc, cls):
            return status
    return None


def decode_vault_error(exc: BaseException, *, method: str, api_path: str, capability: str | None = None, address: str | None = None) -> EscrowError:
    """Translate an hvac or requests exception into a typed `EscrowError`.

    `method` and `api_path` (with `/v1/`, unquoted) name the request; `capability`
    is the ACL capability the request needs, named in a permission error.
    Returns the error for the caller to raise, so the traceback starts where it
    is raised.
    """
    import hvac.exceptions as hx
    import requests

    request = f"{method} {api_path}"
    where = f" at {address}" if address else ""

    if isinstance(exc, EscrowError):
        return exc

    if isinstance(exc, requests.exceptions.Timeout):
        return VaultUnreachableError(f"{request} to Vault{where} timed out. Check the network path to Vault, then retry.", api_path=api_path, method=method)
    if isinstance(exc, requests.exceptions.SSLError):
        return VaultUnreachableError(f"TLS verification failed for {request} on Vault{where}. Set VAULT_CACERT or [vault] ca_cert to the CA that signed Vault's certificate.", api_path=api_path, method=method)
    if isinstance(exc, requests.exceptions.RequestException):
        return VaultUnreachableError(f"Cannot connect to Vault{where} for {request}: {type(exc).__name__}. Check VAULT_ADDR and that Vault is running.", api_path=api_path, method=method)

    if not isinstance(exc, hx.VaultError):
        return EscrowError(f"{request} failed: {type(exc).__name__}.", api_path=api_path, method=method)

    status = _status_of(exc)
    text = _server_text(exc)
    detail = f" (Vault: {text})" if text else ""

    if isinstance(exc, hx.VaultDown):
        if "sealed" in text.lower() or not text:
            return VaultSealedError(f"Vault is sealed; {request} was rejected with HTTP 503. Escrow is unavailable until an operator unseals Vault.", api_path=api_path, method=method)
        if "standby" in text.lower() or "active" in text.lower():
            return VaultStandbyError(f"{request} reached a Vault standby node with no active node (HTTP 503){detail}. Ask the Vault operators to check the cluster.", api_path=api_path, method=method)
        return VaultSealedError(f"Vault is unavailable (HTTP 503) for {request}{detail}. Escrow is unavailable until it recovers.", api_path=api_path, method=method)
    if isinstance(exc, hx.VaultNotInitialized):
        return VaultUninitializedError(f"Vault is not initialised (HTTP 501) for {request}. Ask the Vault operators to initialise it.", api_path=api_path, method=method)

    if isinstance(exc, (hx.Unauthorized, hx.Forbidden)):
        lowered = text.lower()
        # NOTE: a bad token and a missing policy both return 403; only the
        # "invalid token" text tells them apart, and older Vault releases may omit it.
        if "invalid token" in lowered or "missing client token" in lowered or "expired" in lowered:
            return VaultTokenError(f"The Vault token is invalid or expired ({request} returned HTTP {status}). Log in to Vault again.", api_path=api_path, method=method)
        needed = f"the {capability} capability" if capability else "a capability"
        return VaultPermissionError(
            f"Permission denied: {request} needs {needed} on {api_path.removeprefix('/v1/')} (HTTP {status}). "
            "Ask the Vault administrators to grant it in your policy; KV v2 policies name the data/ and metadata/ paths.",
            api_path=api_path, capability=capability, method=method)

    if isinstance(exc, hx.InvalidPath):
        if "no handler for route" in text.lower() or "unsupported path" in text.lower():
            return VaultMountError(f"No secrets engine serves {api_path} (HTTP 404){detail}. Check the [vault] mount and base_path settings: the mount must be a KV version 2 engine.", api_path=api_path, method=method)
        return VaultPathError(f"Nothing is stored at {api_path} (HTTP 404).", api_path=api_path, method=method)

    if isinstance(exc, hx.InvalidRequest):
        if CAS_MISMATCH_TEXT in text:
            return CasConflictError(f"Another writer changed {api_path} since its version was read (check-and-set mismatch).", api_path=api_path)
        if CAS_REQUIRED_TEXT in text:
            return VaultRequestError(f"{request} was rejected because the secret requires check-and-set (cas_required){detail}.", api_path=api_path, method=method)
        return VaultRequestError(f"Vault rejected {request} as invalid (HTTP 400){detail}.", api_path=api_path, method=method)

    label = f"HTTP {status}" if status else "an unexpected HTTP status"
    return VaultServerError(f"Vault failed {request} with {label}{detail}. Retry later; if it persists, ask the Vault operators.", api_path=api_path, method=method)
