"""`keytriage audit [--id ID]`: print the audit trail readably."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the audit options."""
    parser.add_argument("--id", dest="token_id", metavar="ID", help="only records of this token ID (source:value, e.g. cplc:1AB0...)")
    parser.add_argument("--file", metavar="PATH", help="read this audit file instead of the one in the XDG state directory")


def format_record(entry) -> str:
    """Format one record as a single line: time, user, token, operation, outcome, status, tries."""
    parts = [entry.time, entry.user, entry.token_id or "-", entry.operation, entry.outcome]
    if entry.status:
        parts.append(f"status {entry.status}")
    if entry.tries_before is not None or entry.tries_after is not None:
        before = "?" if entry.tries_before is None else entry.tries_before
        after = "?" if entry.tries_after is None else entry.tries_after
        parts.append(f"tries {before}->{after}")
    if entry.lab:
        parts.append("[LAB]")
    for key, value in sorted(entry.details.items()):
        parts.append(f"{key}={value}")
    return "  ".join(str(p) for p in parts)


def run(args: argparse.Namespace) -> int:
    """Print the records; exit 0 even when there are none (that is a finding)."""
    from tui.audit import AuditTrail
    from tui.model import TokenId

    if args.token_id:
        try:
            TokenId.parse(args.token_id)
        except ValueError as exc:
            print(f"keytriage audit: {exc}", file=sys.stderr)
            return 2
    trail = AuditTrail(Path(args.file) if args.file else None)
    count = 0
    for entry in trail.records(args.token_id):
        print(format_record(entry))
        count += 1
    if count == 0:
        scope = f" for {args.token_id}" if args.token_id else ""
        print(f"No audit records{scope} in {trail.path}.")
    return 0
