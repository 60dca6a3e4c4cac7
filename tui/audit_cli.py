"""`keytriage audit [--id ID] [--since WHEN] [--json]`: print the audit trail readably.

The table has one line per record, in aligned columns: time (UTC), OS user,
token ID, operation, outcome, status word or CTAP code, tries before and
after, LAB for lab records, then the detail fields. `--json` prints the
records as a JSON array instead, with the same fields as the audit file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from dataclasses import asdict
from pathlib import Path

COLUMNS = ("TIME (UTC)", "USER", "TOKEN", "OPERATION", "OUTCOME", "STATUS", "TRIES", "LAB")
_RELATIVE = re.compile(r"^(\d+)\s*([mhdw])$")
_UNIT = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the audit options."""
    parser.add_argument("--id", dest="token_id", metavar="ID", help="only records of this token ID (source:value, e.g. cplc:1AB0...)")
    parser.add_argument("--since", metavar="WHEN",
                        help="only records from WHEN on: a duration back from now (30m, 12h, 7d, 2w) "
                             "or a UTC date or time (2025-03-14, 2025-03-14T09:30)")
    parser.add_argument("--json", action="store_true", help="print the records as a JSON array instead of a table")
    parser.add_argument("--file", metavar="PATH", help="read this audit file instead of the one in the XDG state directory")


def parse_since(text: str, *, now: dt.datetime | None = None) -> dt.datetime:
    """Return the aware UTC instant `text` names; raise ValueError with the accepted forms."""
    now = now or dt.datetime.now(dt.timezone.utc)
    match = _RELATIVE.match(text.strip().lower())
    if match:
        return now - dt.timedelta(**{_UNIT[match.group(2)]: int(match.group(1))})
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--since {text!r} is not a duration (30m, 12h, 7d, 2w) "
                         "or a date or time (2025-03-14, 2025-03-14T09:30)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment


def _tries(entry) -> str:
    if entry.tries_before is None and entry.tries_after is None:
        return ""
    before = "?" if entry.tries_before is None else entry.tries_before
    after = "?" if entry.tries_after is None else entry.tries_after
    return f"{before}->{after}"


def _cells(entry) -> list[str]:
    time = entry.time.replace("+00:00", "Z").replace("T", " ")
    return [time, entry.user, entry.token_id or "-", entry.operation, entry.outcome,
            entry.status or "", _tries(entry), "LAB" if entry.lab else ""]


def _details(entry) -> str:
    return "  ".join(f"{key}={value}" for key, value in sorted(entry.details.items()))


def format_table(entries: list) -> str:
    """Return the records as aligned columns with a header line, details last on each line."""
    rows = [list(COLUMNS)] + [_cells(entry) for entry in entries]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = []
    for number, row in enumerate(rows):
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths))
        if number > 0:
            details = _details(entries[number - 1])
            if details:
                line = f"{line}  {details}"
        else:
            line = f"{line}  DETAILS"
        lines.append(line.rstrip())
    return "\n".join(lines) + "\n"


def format_record(entry) -> str:
    """Format one record as a single line: time, user, token, operation, outcome, status, tries, details."""
    time, user, token, operation, outcome, status, tries, lab = _cells(entry)
    parts = [time, user, token, operation, outcome]
    if status:
        parts.append(f"status {status}")
    if tries:
        parts.append(f"tries {tries}")
    if lab:
        parts.append("[LAB]")
    details = _details(entry)
    if details:
        parts.append(details)
    return "  ".join(parts)


def run(args: argparse.Namespace) -> int:
    """Print the records; exit 0 even when there are none (that is a finding), 2 for an invalid option."""
    from tui.audit import AuditTrail
    from tui.model import TokenId

    if args.token_id:
        try:
            TokenId.parse(args.token_id)
        except ValueError as exc:
            print(f"keytriage audit: {exc}", file=sys.stderr)
            return 2
    since = None
    if getattr(args, "since", None):
        try:
            since = parse_since(args.since)
        except ValueError as exc:
            print(f"keytriage audit: {exc}", file=sys.stderr)
            return 2

    trail = AuditTrail(Path(args.file) if args.file else None)
    entries = []
    for entry in trail.records(args.token_id):
        if since is not None and dt.datetime.fromisoformat(entry.time) < since:
            continue
        entries.append(entry)

    if getattr(args, "json", False):
        print(json.dumps([asdict(entry) for entry in entries], indent=2, sort_keys=True))
        return 0
    if not entries:
        scope = f" for {args.token_id}" if args.token_id else ""
        window = f" since {since.isoformat(timespec='minutes')}" if since else ""
        print(f"No audit records{scope}{window} in {trail.path}.")
        return 0
    print(format_table(entries), end="")
    return 0
