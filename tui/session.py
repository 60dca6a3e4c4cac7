"""The state of one technician session beyond the last scan: triage answers, services, findings.

Plain Python, shared by the UI and the headless paths. The UI keeps one
`Session`; every action reads its services (audit trail, per-token locks,
escrow) from here and appends what it did to `events`, which the ticket
summary is built from.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tui.audit import AuditTrail
from tui.locks import TokenLocks
from tui.settings import SiteSettings

if TYPE_CHECKING:
    from tui.model import TokenScan


@dataclass
class TriageAnswers:
    """Step 0: what the user was trying to log into and what they saw, plus the ticket number."""

    trying: str | None = None  # a key of the runbook's Step 0 table, "cant-say" or None
    saw: str | None = None  # a key of the runbook's user phrases, "cant-say" or None
    tap: str | None = None  # the tap-action question: "types-code", "touch-box", "nothing"
    free_text: str = ""
    ticket: str = ""


@dataclass
class SessionEvent:
    """One thing done or found in this session, for the ticket and the history view.

    Never holds a secret: escrow references are Vault paths and versions.
    """

    time: dt.datetime
    token_id: str | None
    kind: str  # e.g. "finding", "verify", "puk-reset", "fido-reset", "escrow"
    summary: str
    applet: str | None = None  # "smart card", "FIDO", "OATH", "external auth"
    resolved_by: str | None = None
    escrow_refs: list[str] = field(default_factory=list)
    user_actions: list[str] = field(default_factory=list)


@dataclass
class Session:
    """The services and findings of one keytriage run."""

    settings: SiteSettings
    audit: AuditTrail
    locks: TokenLocks = field(default_factory=TokenLocks)
    lab_scenario: str | None = None
    triage: TriageAnswers = field(default_factory=TriageAnswers)
    events: list[SessionEvent] = field(default_factory=list)
    escrow: object | None = None  # the escrow context built by the escrow UI layer

    @property
    def is_lab(self) -> bool:
        """True when the session runs on the lab key."""
        return self.lab_scenario is not None

    def note_scan(self, tokens: Iterable[TokenScan]) -> None:
        """Mark each scanned lab key (`TokenScan.is_lab`) in the audit trail, so its records have `lab: true`.

        A lab key served through pcscd looks like hardware to this session,
        whose trail is not a lab trail. Only its reserved ID marks it as a lab key.
        """
        for token in tokens:
            if token.is_lab and token.token_id is not None:
                self.audit.mark_lab_token(token.token_id)

    def add_event(self, kind: str, summary: str, *, token_id: object | None = None, **fields: object) -> SessionEvent:
        """Append an event stamped now (UTC) and return it."""
        event = SessionEvent(dt.datetime.now(dt.timezone.utc), None if token_id is None else str(token_id), kind, summary, **fields)
        self.events.append(event)
        return event
