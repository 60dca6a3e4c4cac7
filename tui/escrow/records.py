"""Escrow record layout: one KV v2 secret per secret kind under the token ID.

The record of a token's PIV PUK lives at `<base>/<token ID>/piv-puk`. Each KV
version is one event: the value written as `pending` before it is sent to the
token, then the same value again as `applied`, `failed` or `unknown` once the
token responded. The current value of a kind is therefore the latest version
whose state is `applied`, not simply the latest version.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field
from typing import Any

from tui.model import TokenId
from tui.secret import Secret

# custom_metadata keys the escrow flow maintains when the policy allows a
# metadata update. They let a writer without read access see which version is
# applied, because the state lives inside each version's data.
META_APPLIED_VERSION = "applied_version"
META_LAST_VERSION = "last_version"
META_LAST_STATE = "last_state"
META_LAST_SET_BY = "last_set_by"
META_LAST_SET_AT = "last_set_at"

# Reason written for a user PIN that the help desk sets for the user.
INITIAL_PIN_REASON = "initial PIN issued by the help desk"


class SecretKind(str, enum.Enum):
    """The kind of secret in a record; the enum value is the last path segment."""

    PIV_PIN = "piv-pin"
    PIV_PUK = "piv-puk"
    FIDO_PIN = "fido-pin"
    ADMIN_KEY = "admin-key"

    @property
    def label(self) -> str:
        """The field term shown to technicians."""
        return {
            SecretKind.PIV_PIN: "PIV PIN",
            SecretKind.PIV_PUK: "PIV PUK",
            SecretKind.FIDO_PIN: "FIDO PIN",
            SecretKind.ADMIN_KEY: "admin key",
        }[self]


class Encoding(str, enum.Enum):
    """The mapping from the stored value to the bytes the token receives."""

    ASCII_FF_PADDED = "ascii-ff-padded"  # PIV PIN/PUK: ASCII, right-padded with FF to 8 bytes
    HEX_8_BYTES = "hex-8-bytes"  # an 8-byte key or PIN given as 16 hex digits
    UTF8 = "utf-8"  # FIDO clientPin: UTF-8 text
    HEX = "hex"  # a key of any length as hex digits


class RecordState(str, enum.Enum):
    """The state of an escrowed value relative to the token."""

    PENDING = "pending"  # escrowed, not yet sent
    APPLIED = "applied"  # the token accepted it: it is the current value
    FAILED = "failed"  # the token rejected it: the previous applied value stays current
    UNKNOWN = "unknown"  # sent, but the response was lost, so the token may contain it


def utc_now() -> str:
    """Return the current UTC time as ISO 8601 with a Z suffix, to the second."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class EscrowRecord:
    """The non-secret fields of one record version (the value travels separately as a `Secret`)."""

    encoding: str
    state: RecordState
    set_at: str
    set_by: str
    reason: str = ""
    ticket: str = ""
    profile: str = ""
    status_word: str | None = None
    label: str = ""

    def to_payload(self, value: Secret) -> dict[str, str]:
        """Return the KV data dict for this version, the value included."""
        raw = value.reveal()
        payload = {
            "value": raw.hex() if isinstance(raw, bytes) else raw,
            "encoding": self.encoding,
            "state": self.state.value,
            "set_at": self.set_at,
            "set_by": self.set_by,
            "reason": self.reason,
            "ticket": self.ticket,
            "profile": self.profile,
        }
        if self.label:
            payload["label"] = self.label
        if self.status_word is not None:
            payload["status_word"] = self.status_word
        return payload

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> EscrowRecord:
        """Build the record from a KV data dict, ignoring the value."""
        try:
            state = RecordState(data.get("state", "unknown"))
        except ValueError:
            state = RecordState.UNKNOWN
        return cls(
            encoding=str(data.get("encoding", "")),
            state=state,
            set_at=str(data.get("set_at", "")),
            set_by=str(data.get("set_by", "")),
            reason=str(data.get("reason", "")),
            ticket=str(data.get("ticket", "")),
            profile=str(data.get("profile", "")),
            status_word=data.get("status_word"),
            label=str(data.get("label", "")),
        )


def value_from_payload(data: dict[str, Any], kind: SecretKind) -> Secret:
    """Return the stored value as a `Secret`, bytes for the hex encodings."""
    raw = str(data.get("value", ""))
    if data.get("encoding") in (Encoding.HEX.value, Encoding.HEX_8_BYTES.value):
        return Secret(bytes.fromhex(raw), kind.label)
    return Secret(raw, kind.label)


def record_path(base_path: str, token_id: TokenId | str, kind: SecretKind) -> str:
    """Return the path under the mount, e.g. `keytriage/tokens/cplc:4790.../piv-puk`."""
    return f"{base_path.strip('/')}/{token_id}/{kind.value}"


def kv_path(mount: str, base_path: str, token_id: TokenId | str, kind: SecretKind) -> str:
    """Return the record's KV path `<mount>/<base_path>/<token ID>/<kind>`.

    This is the one form the UI, tickets, the audit trail and the activity log
    show, because it is what `vault kv get -version=N <path>` takes. The API
    paths with `data/` and `metadata/` after the mount are for HTTP requests
    and policies only.
    """
    return f"{mount.strip('/')}/{record_path(base_path, token_id, kind)}"


def kv_reference(path: str, version: int) -> str:
    """Return a reference to one version of a record, `<KV path> v<version>`."""
    return f"{path} v{version}"


@dataclass(frozen=True)
class VersionInfo:
    """One version as metadata describes it."""

    version: int
    created_time: str | None = None
    deleted: bool = False
    destroyed: bool = False


@dataclass
class SecretMetadata:
    """A record's KV v2 metadata: versions and settings, no values."""

    current_version: int
    versions: dict[int, VersionInfo] = field(default_factory=dict)
    max_versions: int = 0
    cas_required: bool = False
    custom_metadata: dict[str, str] = field(default_factory=dict)
    updated_time: str | None = None

    def created_time(self, version: int) -> str | None:
        """Return when `version` was written, if metadata still lists it."""
        info = self.versions.get(version)
        return info.created_time if info else None
