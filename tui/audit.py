"""The audit trail: one JSON line per operation on a token, and the per-token attempt history.

Each record has the time (UTC), OS user, host, session, token ID, profile,
operation, outcome, status word or CTAP code, and tries before and after. It
never holds a secret or personal data (relying-party IDs, user names): records
are built from a fixed set of fields, and `record` rejects a `Secret` or an
unknown field instead of writing it.

The file is `audit.jsonl` in the XDG state directory, mode 0600. Because it
outlives the process, it is also the attempt history: "one verify per token
per session" still holds after a dropped SSH session and a restart.

A record has `lab: true` when the session runs on the in-process lab key or
when its token was marked as a lab key (`mark_lab_token`), such as an
emulated key served through pcscd. Lab and real records never count as
attempts for each other.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import getpass
import json
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tui.errors import KeytriageError
from tui.secret import Secret
from tui.settings import state_dir

log = logging.getLogger("keytriage.audit")

# Attempts within this window count as the same session for "one attempt per
# token per session" checks, so restarting the tool does not grant a new try.
DEFAULT_SESSION_WINDOW = dt.timedelta(hours=12)

ALLOWED_DETAIL_KEYS = frozenset({
    "reader", "method", "source", "reason", "ticket", "escrow_path", "escrow_version",
    "vault_state", "scenario", "message", "override", "result", "applet", "step", "count",
})


class AuditError(KeytriageError):
    """The audit trail could not be written or read."""


@dataclass
class AuditRecord:
    """One audit line."""

    time: str
    user: str
    host: str
    session: str
    operation: str
    outcome: str
    token_id: str | None = None
    profile: str | None = None
    status: str | None = None  # status word as 4 hex digits, or "CTAP 0x31"
    tries_before: int | None = None
    tries_after: int | None = None
    lab: bool = False
    details: dict = field(default_factory=dict)


def default_audit_path() -> Path:
    """Return `audit.jsonl` in the XDG state directory."""
    return state_dir() / "audit.jsonl"


class AuditTrail:
    """Append-only audit file with the queries the attempt rules need.

    `lab` is True for a session on the in-process lab key, where every record
    is a lab record. In a session on real readers, only the records about the
    tokens passed to `mark_lab_token` are.
    """

    def __init__(self, path: Path | None = None, *, session: str | None = None, lab: bool = False) -> None:
        self.path = path or default_audit_path()
        self.session = session or uuid.uuid4().hex[:12]
        self.lab = lab
        self._lab_tokens: set[str] = set()
        self._user = _os_user()
        self._host = socket.gethostname()

    def mark_lab_token(self, token_id: object) -> None:
        """Record that `token_id` is a lab key, so every later record about it has `lab: true`."""
        self._lab_tokens.add(str(token_id))

    def is_lab(self, token_id: object | None) -> bool:
        """Return whether records about `token_id` are lab records: a lab session, or a token marked as a lab key."""
        return self.lab or (token_id is not None and str(token_id) in self._lab_tokens)

    def record(
        self,
        operation: str,
        outcome: str,
        *,
        token_id: object | None = None,
        profile: str | None = None,
        status: str | int | None = None,
        tries_before: int | None = None,
        tries_after: int | None = None,
        **details: object,
    ) -> AuditRecord:
        """Append one record and return it.

        `status` is a status word (int, written as 4 hex digits) or a CTAP code
        text. Raises `AuditError` for a secret or an unknown detail field, and
        when the file cannot be written.
        """
        for key, value in details.items():
            if key not in ALLOWED_DETAIL_KEYS:
                raise AuditError(f"audit detail {key!r} is not an allowed field; allowed: {', '.join(sorted(ALLOWED_DETAIL_KEYS))}")
            if isinstance(value, (Secret, bytes)):
                raise AuditError(f"audit detail {key!r} holds a secret or raw bytes; audit records never hold secrets")

        if isinstance(status, int):
            status = f"{status:04X}"
        entry = AuditRecord(
            time=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            user=self._user,
            host=self._host,
            session=self.session,
            operation=operation,
            outcome=outcome,
            token_id=None if token_id is None else str(token_id),
            profile=profile,
            status=status,
            tries_before=tries_before,
            tries_after=tries_after,
            lab=self.is_lab(token_id),
            details={k: v for k, v in details.items() if v is not None},
        )
        self._append(json.dumps(asdict(entry), sort_keys=True))
        return entry

    def records(self, token_id: object | None = None) -> Iterator[AuditRecord]:
        """Yield the records, oldest first, optionally for one token ID.

        A line that does not parse is skipped with a warning that names its
        line number, so one damaged line does not hide the rest.
        """
        try:
            handle = self.path.open("r", encoding="utf-8")
        except FileNotFoundError:
            return
        wanted = None if token_id is None else str(token_id)
        with handle:
            for number, line in enumerate(handle, start=1):
                line = line.strip()
                if not line:
                    continue
                try:
                    entry = AuditRecord(**json.loads(line))
                except (ValueError, TypeError) as exc:
                    log.warning("audit trail %s line %d is damaged and was skipped: %s", self.path, number, exc)
                    continue
                if wanted is None or entry.token_id == wanted:
                    yield entry

    def attempts(self, token_id: object, operation: str, *, within: dt.timedelta = DEFAULT_SESSION_WINDOW, lab: bool | None = None) -> list[AuditRecord]:
        """Return the records of `operation` on `token_id` by this OS user within `within`.

        Lab and real records never count for each other. By default the
        records looked for are lab records when `is_lab(token_id)` is True.
        """
        lab = self.is_lab(token_id) if lab is None else lab
        since = dt.datetime.now(dt.timezone.utc) - within
        found = []
        for entry in self.records(token_id):
            if entry.operation != operation or entry.user != self._user or entry.lab != lab:
                continue
            if dt.datetime.fromisoformat(entry.time) >= since:
                found.append(entry)
        return found

    def _append(self, line: str) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise AuditError(f"cannot open the audit trail {self.path}: {exc.strerror}. Check the directory's permissions.") from exc
        try:
            # Another keytriage on the same jump host may append at the same time.
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, (line + "\n").encode("utf-8"))
        except OSError as exc:
            raise AuditError(f"cannot write the audit trail {self.path}: {exc.strerror}") from exc
        finally:
            os.close(fd)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid-{os.getuid()}"
