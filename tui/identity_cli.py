"""`keytriage id`: print each token's ID, and with --explain every ID candidate.

One line per token on stdout: the ID as `source:value`, or "none". With
--explain, each token gets a block listing every candidate (the CPLC CUID
in both byte orders, the YubiKey serial, the CHUID GUID), so a site can
compare them once with the vendor's token CUID and set `[site.id_sources]`.
Exit 0 when every token has an ID; 1 when there is no token or a token has
no ID (the reason goes to stderr); 2 and 3 as for `keytriage scan`.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --explain."""
    parser.add_argument("--explain", action="store_true",
                        help="list every ID candidate (CPLC in both byte orders, serial, GUID) and which one was chosen")


def run(args: argparse.Namespace) -> int:
    """Scan, then print the IDs; see the module docstring for the exit codes."""
    from tui.errors import KeytriageError, PcscError
    from tui.scan import next_step_for
    from tui.scan_cli import START_FAILURE_EXIT, STACK_FAILURE_EXIT, run_scan, stack_failed

    try:
        result = run_scan(args.lab, explain=args.explain, trace=args.trace)
    except PcscError as exc:
        print(f"keytriage id: {exc}", file=sys.stderr)
        return STACK_FAILURE_EXIT
    except KeytriageError as exc:
        print(f"keytriage id: {exc}", file=sys.stderr)
        return START_FAILURE_EXIT

    if stack_failed(result):
        print(f"keytriage id: {result.problem_detail or result.problem.message}", file=sys.stderr)
        return STACK_FAILURE_EXIT
    if not result.tokens:
        print(f"keytriage id: no token. {next_step_for(None, result.problem)}", file=sys.stderr)
        return 1

    status = 0
    for token in result.tokens:
        if args.explain:
            print(f"token {token.index} in {token.reader} ({token.profile.label})")
            print(f"  chosen: {token.token_id or 'none'}")
            for candidate in token.id_candidates:
                print(f"  {candidate.source:<8} {candidate.value:<32}  {candidate.description}")
            if not token.id_candidates:
                print("  no candidate could be read")
        else:
            print(str(token.token_id) if token.token_id else "none")

        if token.token_id is None:
            status = 1
            reason = token.error or next((n for n in token.smartcard.notes if n.startswith("no token ID")), "no ID source answered")
            print(f"keytriage id: token {token.index} in {token.reader}: {reason}", file=sys.stderr)
    return status
