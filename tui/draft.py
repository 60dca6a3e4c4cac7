"""Ticket drafts on disk, so a dropped SSH session does not lose where the ticket stood.

The TUI rewrites its session's draft on every state change (scan finished,
session event added, Step 0 answered). Each draft is one JSON file per
session in `drafts/` under the XDG state directory, mode 0600 in a 0700
directory, replaced atomically so a hangup mid-write leaves the old draft
whole. The text is the ticket summary, which holds no secret.

A draft's `state` says how its session ended: "open" while it runs (or
after a crash), "interrupted" after SIGHUP, "closed" after a normal quit.
On start the TUI offers the newest recent draft of this OS user that did
not end with a normal quit.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import logging
import os
import socket
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from tui.errors import KeytriageError
from tui.settings import state_dir

log = logging.getLogger("keytriage.draft")

STATE_OPEN = "open"
STATE_INTERRUPTED = "interrupted"
STATE_CLOSED = "closed"

# A draft older than this is not offered on start: the ticket has moved on.
RECENT = dt.timedelta(hours=12)


class DraftError(KeytriageError):
    """A ticket draft could not be written; the message names the path."""


@dataclass
class TicketDraft:
    """One session's ticket draft: who, which token, when, how the session ended, and the text."""

    session: str
    user: str
    host: str
    token_id: str | None
    updated: str  # UTC, ISO 8601
    state: str
    lab: bool
    text: str

    @property
    def updated_at(self) -> dt.datetime:
        """`updated` as an aware datetime."""
        return dt.datetime.fromisoformat(self.updated)


def default_draft_dir() -> Path:
    """Return `drafts/` in the XDG state directory."""
    return state_dir() / "drafts"


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid-{os.getuid()}"


class DraftStore:
    """Reads and writes the ticket drafts of this OS user."""

    def __init__(self, directory: Path | None = None, *, user: str | None = None) -> None:
        self.directory = directory or default_draft_dir()
        self.user = user or _os_user()
        self.host = socket.gethostname()

    def path_for(self, session: str) -> Path:
        """Return the draft file of `session`."""
        safe = "".join(ch for ch in session if ch.isalnum() or ch in "-_") or "session"
        return self.directory / f"{safe}.json"

    def save(self, session: str, text: str, *, token_id: str | None, lab: bool,
             state: str = STATE_OPEN, now: dt.datetime | None = None) -> TicketDraft:
        """Write the draft of `session` atomically with mode 0600 and return it.

        Raises `DraftError` naming the path when it cannot be written.
        """
        draft = TicketDraft(
            session=session, user=self.user, host=self.host, token_id=token_id,
            updated=(now or dt.datetime.now(dt.timezone.utc)).isoformat(timespec="seconds"),
            state=state, lab=lab, text=text,
        )
        target = self.path_for(session)
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            # mkstemp creates the file with mode 0600; the rename replaces the old draft in one step.
            descriptor, temporary = tempfile.mkstemp(prefix=".draft-", suffix=".tmp", dir=self.directory)
        except OSError as exc:
            raise DraftError(f"cannot write the ticket draft in {self.directory}: {exc.strerror}") from exc
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                json.dump(asdict(draft), handle, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        except OSError as exc:
            Path(temporary).unlink(missing_ok=True)
            raise DraftError(f"cannot write the ticket draft {target}: {exc.strerror}") from exc
        return draft

    def mark(self, session: str, state: str) -> TicketDraft | None:
        """Set the state of the draft of `session`, keeping its text; None when it has none."""
        draft = self.load(self.path_for(session))
        if draft is None:
            return None
        return self.save(session, draft.text, token_id=draft.token_id, lab=draft.lab, state=state)

    def load(self, path: Path) -> TicketDraft | None:
        """Return the draft in `path`, or None when it is missing or damaged (damage is logged)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return TicketDraft(**data)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            log.warning("ticket draft %s is damaged and was skipped: %s", path, exc)
            return None

    def recent(self, *, exclude_session: str | None = None, within: dt.timedelta = RECENT,
               now: dt.datetime | None = None) -> list[TicketDraft]:
        """Return this user's drafts updated within `within` that did not end with a normal quit, newest first."""
        since = (now or dt.datetime.now(dt.timezone.utc)) - within
        found = []
        for path in sorted(self.directory.glob("*.json")):
            draft = self.load(path)
            if draft is None or draft.user != self.user or draft.session == exclude_session:
                continue
            if draft.state == STATE_CLOSED:
                continue
            try:
                updated = draft.updated_at
            except ValueError:
                continue
            if updated >= since:
                found.append(draft)
        return sorted(found, key=lambda d: d.updated, reverse=True)
