"""The ticket summary: what the help desk must record before closing the ticket, as plain text.

The summary is built from the last scan, the runbook and the session
(`Session.events` and `Session.triage`). Per token it lists the token ID and
CUID, the profile, and the applet found locked (or why it was not a
lockout). Then come the action that resolved it, the escrow references
(Vault path and version, never a value) and what the user still has to do.
The Step 0 answers and the ticket number head the text.

The text pastes cleanly into a ticket system: ASCII only, at most 72 columns,
no control characters or colour codes, with one exception: an escrow Vault
path longer than a line stays whole on its own line, so it can be copied.
The first line of a lab run's ticket starts with LAB TEST, and so does that
of a ticket about a lab key served through pcscd: the scan flags such a key
(`TokenScan.is_lab`) by its token ID in the lab's reserved range.

Event vocabulary. Actions append `SessionEvent`s, and this module reads them:
- `kind` "finding" with `applet` set: that applet was found locked.
- `kind` "not-lockout": the summary says why this was not a lockout.
- `resolved_by` set: this event resolved the ticket, in those words. Its
  `kind` selects the follow-up user actions in `FOLLOW_UP` ("puk-reset",
  "admin-unlock", "fido-reset", "reprovision", "otp-reprovision").
- `escrow_refs` ("<path> v<version>") are shown as KV paths, the way a
  technician types them in `vault kv get`. `user_actions` are merged with the
  follow-up actions, one line per meaning.
- Step 4 verifies sent with the technician's typed override are read from the
  audit trail of this session, because the verify event does not carry them.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import re
import socket
import textwrap
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tui import runbook as runbook_table
from tui.errors import KeytriageError
from tui.model import PinState, ScanResult, TokenScan
from tui.session import Session, SessionEvent, TriageAnswers

WIDTH = 72
LABEL_WIDTH = 14

KIND_FINDING = "finding"
KIND_NOT_LOCKOUT = "not-lockout"

PIN_CHANGE = "Change the smart-card PIN at the next login (the help desk set it)."
FIDO_REREGISTER = "Register the key again with every FIDO relying party (the reset deleted all passkeys)."
OATH_REENROL = "Re-enrol the OATH/HOTP slot with the OTP server (PSKC workflow)."
IDP_REENROL = "Re-enrol the key in the IdP (new certificates)."

# User actions a resolution always leaves behind, by the kind of the resolving event.
FOLLOW_UP: dict[str, tuple[str, ...]] = {
    "puk-reset": (PIN_CHANGE,),
    "admin-unlock": (PIN_CHANGE,),
    "fido-reset": (FIDO_REREGISTER,),
    "reprovision": (IDP_REENROL, OATH_REENROL, FIDO_REREGISTER, PIN_CHANGE),
    "otp-reprovision": (OATH_REENROL,),
}

VALUES_NOTE = "New PIN, PUK and key values are in Vault at the paths above, never in this ticket."
UNRESOLVED = "not resolved in this session"
STILL_OPEN_USER = "nothing yet: the case is still open (see Still open)"
VERIFY_OPERATION = "verify-pin"

# User actions that mean the same thing, whatever their wording: the first one found is kept.
_ACTION_MEANINGS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("fido-register", re.compile(r"re-?register|register the key again|fido2? relying part", re.IGNORECASE)),
    ("oath-slot", re.compile(r"\b(oath|hotp)\b", re.IGNORECASE)),
    ("idp-enrol", re.compile(r"\bidp\b|new (piv )?certificate", re.IGNORECASE)),
    ("smart-card-pin", re.compile(r"\bchange the (smart-card )?pin\b", re.IGNORECASE)),
)
# A KV version 2 ACL or API path: optional "/v1/", the mount, "data/", then the secret's path.
_API_PREFIX = re.compile(r"^/?v1/")
_REF_VERSION = re.compile(r"^(?P<path>\S+) v(?P<version>\d+)$")

_PUNCTUATION = str.maketrans({
    "\u2014": "-", "\u2013": "-", "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
    "\u2026": "...", "\u2192": "->", "\u2714": "[x]", "\u25b6": ">", "\u00a0": " ",
})
# ANSI CSI sequences (colours, cursor moves) first, then any other control character but newline.
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x08\x0b-\x1f\x7f]")


class TicketFileError(KeytriageError):
    """The ticket file could not be written; the message names the path and the reason."""


@dataclass
class TokenSection:
    """The ticket's part about one token."""

    token_id: str | None
    cuid: str | None = None
    profile: str = ""
    reader: str = ""
    locked: list[str] = field(default_factory=list)
    not_lockout: str | None = None
    open_finding: str | None = None
    resolution: str = ""
    steps: list[str] = field(default_factory=list)
    escrow_refs: list[str] = field(default_factory=list)
    user_actions: list[str] = field(default_factory=list)
    # True when the scan flagged the token as a lab key, in process or served through pcscd.
    lab: bool = False


@dataclass
class Ticket:
    """Everything the summary shows, before it is turned into text."""

    lab_scenario: str | None
    ticket_number: str
    created: dt.datetime
    user: str
    host: str
    triage: list[tuple[str, str]]
    tokens: list[TokenSection]

    @property
    def is_lab(self) -> bool:
        """True for a lab run, or when any token in the ticket is a lab key."""
        return self.lab_scenario is not None or any(section.lab for section in self.tokens)

    @property
    def served_lab_keys(self) -> list[str]:
        """The token IDs of the lab keys in a run without a lab scenario: keys served through pcscd."""
        if self.lab_scenario is not None:
            return []
        return [section.token_id or f"token in {section.reader}" for section in self.tokens if section.lab]


# --- building --------------------------------------------------------------------------------

def build_ticket(session: Session, scan: ScanResult | None, selected: TokenScan | None, *,
                 runbook: object | None = None, now: dt.datetime | None = None) -> Ticket:
    """Build the ticket of `session` for the `selected` token of `scan`.

    `runbook` is the `RunbookResult` for `selected`, as the main screen shows
    it. Other tokens with events in the session get their own section,
    built from their scan and events only.
    """
    sections: list[TokenSection] = []
    for token, token_id in _tokens_in_ticket(session.events, scan, selected):
        is_selected = selected is not None and token is selected
        events = _events_of(session.events, token_id, is_selected=is_selected)
        overrides = _verify_overrides(session, token_id)
        sections.append(_section(token, token_id, events, runbook if is_selected else None, overrides))
    if not sections and scan is not None:
        sections.append(_no_token_section(scan, session.events, runbook))

    return Ticket(
        lab_scenario=session.lab_scenario,
        ticket_number=session.triage.ticket.strip(),
        created=now or dt.datetime.now(dt.timezone.utc),
        user=_os_user(),
        host=socket.gethostname(),
        triage=triage_lines(session.triage),
        tokens=sections,
    )


def _tokens_in_ticket(events: list[SessionEvent], scan: ScanResult | None,
                      selected: TokenScan | None) -> list[tuple[TokenScan | None, str | None]]:
    """Return (token, token ID) pairs: the selected token first, then every other token with events."""
    pairs: list[tuple[TokenScan | None, str | None]] = []
    seen: set[str | None] = set()
    if selected is not None:
        selected_id = str(selected.token_id) if selected.token_id is not None else None
        pairs.append((selected, selected_id))
        seen.add(selected_id)

    scanned = {str(t.token_id): t for t in (scan.tokens if scan else []) if t.token_id is not None}
    for event in events:
        if event.token_id is None or event.token_id in seen:
            continue
        seen.add(event.token_id)
        pairs.append((scanned.get(event.token_id), event.token_id))
    return pairs


def _events_of(events: list[SessionEvent], token_id: str | None, *, is_selected: bool) -> list[SessionEvent]:
    # Events without a token ID (a token that has none, or a session-wide note) belong to the selected token.
    return [e for e in events if e.token_id == token_id or (e.token_id is None and is_selected)]


def _section(token: TokenScan | None, token_id: str | None, events: list[SessionEvent],
             runbook: object | None, overrides: list[tuple[dt.datetime, str]] | None = None) -> TokenSection:
    section = TokenSection(token_id=token_id)
    if token is not None:
        section.cuid = token.cuid
        section.profile = token.profile.label
        section.reader = token.reader
        section.lab = token.is_lab

    # The runbook result is read through getattr: it gains fields as the runbook's later steps arrive.
    verdict = str(getattr(runbook, "verdict", "") or "")
    locked = [f"{e.applet}: {e.summary}" for e in events if e.kind == KIND_FINDING and e.applet]
    locked += locked_applets(token)
    applet = getattr(runbook, "applet", None)
    if applet and not any(entry.lower().startswith(str(applet).lower()) for entry in locked):
        locked.append(f"{applet}: {verdict}" if verdict else str(applet))
    section.locked = _unique(locked)

    not_lockout = [e.summary for e in events if e.kind == KIND_NOT_LOCKOUT]
    runbook_reason = getattr(runbook, "not_lockout", None)
    if not section.locked:
        if not_lockout:
            section.not_lockout = not_lockout[-1]
        elif runbook_reason:
            section.not_lockout = not_lockout_text(str(runbook_reason), verdict)
        elif runbook is not None and getattr(runbook, "stopped", False):
            section.not_lockout = verdict
        elif runbook is not None:
            section.open_finding = verdict

    resolving = [e for e in events if e.resolved_by]
    if resolving:
        section.resolution = resolving[-1].resolved_by or ""
    elif section.not_lockout:
        section.resolution = "no token change needed (not a lockout)"
    else:
        section.resolution = UNRESOLVED

    section.steps = _step_lines(events, overrides)
    section.escrow_refs = _unique(kv_reference(ref) for e in events for ref in e.escrow_refs)
    follow_up = [action for e in resolving for action in FOLLOW_UP.get(e.kind, ())]
    section.user_actions = user_actions([*follow_up, *(action for e in events for action in e.user_actions)])
    return section


def not_lockout_text(reason: str, verdict: str) -> str:
    """Word why this is not a lockout once: `reason`, then the verdict without repeating either."""
    text = verdict.strip()
    if text.lower().startswith("not a lockout:"):
        # The renderer puts "not a lockout:" in front already.
        text = text[len("not a lockout:"):].strip()
    if reason.strip().lower().rstrip(".") in text.lower():
        return text
    return f"{reason.strip().rstrip('.')}. {text}".strip()


def user_actions(actions: Iterable[str]) -> list[str]:
    """Return one sentence per meaning, capitalised and ending with a full stop, in first-seen order."""
    kept: dict[str, str] = {}
    for action in actions:
        text = action.strip()
        if not text:
            continue
        text = text[0].upper() + text[1:]
        if not text.endswith((".", "!", "?")):
            text += "."
        meaning = next((name for name, pattern in _ACTION_MEANINGS if pattern.search(text)), text.lower())
        kept.setdefault(meaning, text)
    return list(kept.values())


def kv_reference(ref: str) -> str:
    """Return an escrow reference ("<path> v<version>") as "<KV path> v<version>".

    The KV path is `<mount>/<base>/<id>/<kind>`, what `vault kv get` takes.
    `EscrowResult.reference()` already returns that form. A reference built
    from an ACL or API path loses the "/v1/" prefix and the KV version 2
    "data/" segment after the mount. A reference in another form is returned
    unchanged.
    """
    match = _REF_VERSION.match(ref.strip())
    if match is None:
        return ref
    path = _API_PREFIX.sub("", match["path"])
    # NOTE: the mount is taken to be the part before the first "/data/", so a mount path containing a
    # "data" segment itself would be cut in the wrong place.
    mount, separator, rest = path.partition("/data/")
    kv_path = f"{mount}/{rest}" if separator else path
    return f"{kv_path} v{match['version']}"


def _verify_overrides(session: Session, token_id: str | None) -> list[tuple[dt.datetime, str]]:
    """Return (time, step line) for each Step 4 verify this session sent with the typed override."""
    if token_id is None:
        return []
    found = []
    for record in session.audit.records(token_id):
        if record.session != session.audit.session or record.operation != VERIFY_OPERATION:
            continue
        if not record.details.get("override"):
            continue
        try:
            when = dt.datetime.fromisoformat(record.time)
        except ValueError:
            continue
        tries = "" if record.tries_before is None else f", {record.tries_before} tries left before it"
        found.append((when, f"{when:%H:%M} Step 4 verify sent with the technician's typed override{tries}"))
    return found


def _step_lines(events: list[SessionEvent], overrides: list[tuple[dt.datetime, str]] | None = None) -> list[str]:
    timed = [(e.time, f"{e.time:%H:%M} {e.summary}") for e in events if e.kind != KIND_FINDING]
    # The sort is stable, so an override recorded in the same second stays before its verify event.
    return [line for _, line in sorted([*(overrides or []), *timed], key=lambda pair: pair[0])]


def _no_token_section(scan: ScanResult, events: list[SessionEvent], runbook: object | None) -> TokenSection:
    verdict = str(getattr(runbook, "verdict", "") or "")
    if not verdict:
        verdict = scan.problem.message if scan.problem else "no token was detected"
    section = TokenSection(token_id=None, not_lockout=verdict,
                           resolution="no token change possible (no token detected)")
    section.steps = _step_lines(events)
    return section


def locked_applets(token: TokenScan | None) -> list[str]:
    """Return the applets the scan shows locked, with the counter and how it was read."""
    if token is None:
        return []
    found = []
    pin = token.smartcard.pin
    if pin.state is PinState.BLOCKED or pin.remaining == 0:
        found.append(f"smart card: PIN {pin.text()} ({pin.source.value})")
    puk = token.smartcard.puk
    if puk.state is PinState.BLOCKED or puk.remaining == 0:
        found.append(f"smart card: PUK {puk.text()} ({puk.source.value})")

    fido_pin = getattr(token.fido, "pin", None)
    state = getattr(getattr(fido_pin, "state", None), "value", None)
    if state in ("temporarily_blocked", "permanently_blocked"):
        found.append(f"FIDO: PIN {fido_pin.text()}")
    return found


def locked_findings(token: TokenScan) -> list[tuple[str, str]]:
    """Return (applet, summary) pairs for the applets the scan shows locked, for "finding" events."""
    pairs = []
    for text in locked_applets(token):
        applet, _, summary = text.partition(": ")
        pairs.append((applet, summary))
    return pairs


def triage_lines(triage: TriageAnswers) -> list[tuple[str, str]]:
    """Return the Step 0 answers as (label, text) pairs, in the runbook's wording where it has one."""
    if triage.trying is None and triage.saw is None and triage.tap is None and not triage.free_text.strip():
        return [("Trying", "not asked (Step 0 skipped)")]
    lines = [("Trying", _choice("TRYING_CHOICES", triage.trying) if triage.trying else "not answered")]
    if triage.saw:
        lines.append(("User saw", _choice("SAW_CHOICES", triage.saw)))
    if triage.tap:
        lines.append(("Tap", _choice("TAP_CHOICES", triage.tap)))
    if triage.free_text.strip():
        lines.append(("Note", triage.free_text.strip()))
    return lines


def _choice(table: str, key: str) -> str:
    labels = getattr(runbook_table, table, None) or {}
    if key in labels:
        return labels[key]
    if key == "cant-say":
        return "The user cannot say"
    return key.replace("-", " ").replace("_", " ")


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid-{os.getuid()}"


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(item for item in items if item))


# --- rendering -------------------------------------------------------------------------------

def ascii_text(text: str) -> str:
    """Return `text` as printable ASCII: punctuation mapped, accents dropped, control codes removed."""
    text = _CONTROL.sub("", text.translate(_PUNCTUATION))
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return folded.replace("\t", " ")


def _field(label: str, value: str) -> list[str]:
    """Wrap `value` after `label:` padded to the label column, continuation lines indented."""
    head = f"{label + ':':<{LABEL_WIDTH}}"
    return textwrap.wrap(ascii_text(value), WIDTH, initial_indent=head, subsequent_indent=" " * LABEL_WIDTH,
                         break_on_hyphens=False) or [head.rstrip()]


def _bullets(label: str, items: list[str], empty: str, *, split_long_words: bool = True) -> list[str]:
    # Vault paths pass split_long_words=False: a path is copied whole, so it may run past the line instead.
    if not items:
        return _field(label, empty)
    lines = [f"{label}:"]
    for item in items:
        lines += textwrap.wrap(ascii_text(item), WIDTH, initial_indent="  - ", subsequent_indent="    ",
                               break_on_hyphens=False, break_long_words=split_long_words)
    return lines


def render_ticket(ticket: Ticket) -> str:
    """Return the ticket as plain ASCII text, at most 72 columns, ending with a newline."""
    number = ticket.ticket_number or "(no ticket number)"
    prefix = "LAB TEST - " if ticket.is_lab else ""
    lines = textwrap.wrap(ascii_text(f"{prefix}keytriage ticket summary {number}"), WIDTH, break_on_hyphens=False)

    lines += _field("Ticket", number)
    if ticket.lab_scenario is not None:
        lines += _field("Lab", f"scenario {ticket.lab_scenario}: simulated key, no real token was changed")
    served = ticket.served_lab_keys
    if served:
        keys = ", ".join(served)
        lines += _field("Lab", f"{keys}: emulated lab key{'s' if len(served) > 1 else ''} served through pcscd "
                               "(token ID in the lab's reserved range), no real token was changed")
    lines += _field("Date", f"{ticket.created.astimezone(dt.timezone.utc):%Y-%m-%d %H:%M} UTC")
    if ticket.user:
        lines += _field("Technician", f"{ticket.user} on {ticket.host}" if ticket.host else ticket.user)
    lines.append("")
    lines.append("Step 0 (what the user was doing):")
    for label, text in ticket.triage:
        lines += _field(f"  {label}", text)

    for section in ticket.tokens:
        lines.append("")
        lines += _render_section(section)

    if any(section.escrow_refs for section in ticket.tokens):
        lines.append("")
        lines += textwrap.wrap(VALUES_NOTE, WIDTH)
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _render_section(section: TokenSection) -> list[str]:
    lines = _field("Token ID", section.token_id or "none captured (no ID source returned a value)")
    if section.cuid:
        lines += _field("CUID", section.cuid)
    if section.profile:
        lines += _field("Profile", f"{section.profile} in {section.reader}" if section.reader else section.profile)

    still_open = False
    if section.locked:
        lines += _bullets("Locked", section.locked, "")
    elif section.not_lockout:
        lines += _field("Locked", f"not a lockout: {section.not_lockout}")
    else:
        # The runbook's next step is not a finding: it goes under "Still open", not under "Locked".
        lines += _field("Locked", "none found so far")
        still_open = section.resolution == UNRESOLVED
        if still_open:
            lines += _field("Still open", section.open_finding or "runbook not evaluated")

    lines += _field("Resolved by", section.resolution)
    lines += _bullets("Steps taken", section.steps, "read-only checks only")
    lines += _bullets("Escrow", section.escrow_refs, "nothing set, nothing escrowed", split_long_words=False)
    lines += _bullets("User to do", section.user_actions, STILL_OPEN_USER if still_open else "nothing")
    return lines


def ticket_text(session: Session, scan: ScanResult | None, selected: TokenScan | None, **kwargs) -> str:
    """Build and render the ticket in one call; keyword arguments go to `build_ticket`."""
    return render_ticket(build_ticket(session, scan, selected, **kwargs))


# --- the ticket file -------------------------------------------------------------------------

def write_ticket_file(path: str | os.PathLike[str], text: str) -> Path:
    """Write `text` to `path` with mode 0600 (also when the file existed) and return the path.

    Raises `TicketFileError` naming the path and the reason when it cannot be written.
    """
    target = Path(path)
    try:
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise TicketFileError(f"cannot write the ticket file {target}: {exc.strerror}. "
                              "The ticket is printed to standard output instead.") from exc
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            # O_CREAT's mode applies only to a new file; an existing one keeps its own.
            os.fchmod(handle.fileno(), 0o600)
            handle.write(text)
    except OSError as exc:
        raise TicketFileError(f"cannot write the ticket file {target}: {exc.strerror}. "
                              "The ticket is printed to standard output instead.") from exc
    return target


# --- the token history -----------------------------------------------------------------------

def history_text(audit, token_id: str, *, current_session: str | None = None, store: object | None = None) -> str:
    """Return the token's history as text: sessions from the audit trail, then escrow versions.

    `store` is an escrow store with `read_metadata`. Only metadata is read
    (who set which kind, when, in which state), so no value is ever fetched.
    Blocking: it reads the audit file and, with a store, calls Vault.
    """
    lines = [f"Token {token_id}", "", "Sessions in the audit trail (oldest first):"]
    lines += _audit_sessions(audit, token_id, current_session)
    lines += ["", "Escrow versions (Vault metadata; values are never shown):"]
    lines += _escrow_versions(store, token_id)
    return "\n".join(lines) + "\n"


def _audit_sessions(audit, token_id: str, current_session: str | None) -> list[str]:
    sessions: dict[str, list] = {}
    for entry in audit.records(token_id):
        sessions.setdefault(entry.session, []).append(entry)
    if not sessions:
        return [f"  none in {audit.path}"]

    lines = []
    for session, entries in sessions.items():
        first, last = entries[0], entries[-1]
        span = f"{first.time[:16].replace('T', ' ')} to {last.time[11:16]} UTC"
        marks = [" (this session)" if session == current_session else "", " LAB" if first.lab else ""]
        lines.append(f"  {span}  {first.user}@{first.host}  session {session}{''.join(marks)}")
        for entry in entries:
            status = f" {entry.status}" if entry.status else ""
            tries = ""
            if entry.tries_before is not None or entry.tries_after is not None:
                tries = f" tries {'?' if entry.tries_before is None else entry.tries_before}->" \
                        f"{'?' if entry.tries_after is None else entry.tries_after}"
            lines.append(f"    {entry.time[11:19]} {entry.operation}: {entry.outcome}{status}{tries}")
    return lines


def _escrow_versions(store: object | None, token_id: str) -> list[str]:
    if store is None or not hasattr(store, "read_metadata"):
        return ["  not available: escrow is not set up in this session"]
    from tui.escrow.records import (
        META_APPLIED_VERSION,
        META_LAST_SET_AT,
        META_LAST_SET_BY,
        META_LAST_STATE,
        META_LAST_VERSION,
        SecretKind,
    )

    lines = []
    for kind in SecretKind:
        try:
            metadata = store.read_metadata(token_id, kind)
        except Exception as exc:  # noqa: BLE001 - any store failure is shown, the rest of the history stays
            lines.append(f"  {kind.label}: metadata not readable: {exc}")
            continue
        if metadata is None:
            lines.append(f"  {kind.label}: nothing escrowed")
            continue

        custom = metadata.custom_metadata
        applied = custom.get(META_APPLIED_VERSION)
        path = store.kv_path(token_id, kind) if hasattr(store, "kv_path") else kind.value
        lines.append(f"  {kind.label}: {path}")
        for number in sorted(metadata.versions):
            info = metadata.versions[number]
            flags = []
            if applied is not None and str(number) == str(applied):
                flags.append("applied")
            if info.deleted:
                flags.append("deleted")
            if info.destroyed:
                flags.append("destroyed")
            suffix = f" ({', '.join(flags)})" if flags else ""
            lines.append(f"    v{number} written {info.created_time or 'at an unknown time'}{suffix}")
        if custom.get(META_LAST_STATE):
            lines.append(f"    last: v{custom.get(META_LAST_VERSION, '?')} {custom[META_LAST_STATE]}"
                         f" by {custom.get(META_LAST_SET_BY, '?')} at {custom.get(META_LAST_SET_AT, '?')}")
    return lines
