"""`keytriage scan`: the read-only triage (runbook Steps 1 to 3) without the TUI.

Stdout carries only the result (JSON with --json, else a table). Exit codes:
- 0: the scan ran, even when it found no reader or no token, because that
  is a finding.
- 2: the command could not start (unknown lab scenario, invalid config
  file, trace file not writable). A one-line reason goes to stderr.
- 3: the smart-card stack could not be used (pcscd missing or stopped,
  access refused). The reason goes to stderr and, with --json, the result
  with its problem to stdout too.
"""

from __future__ import annotations

import argparse
import json
import sys

# Listing failures that mean the scan did not run at all, as opposed to "no token".
STACK_FAILURE_EXIT = 3
START_FAILURE_EXIT = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --json."""
    parser.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")


def run_scan(lab: str | None, *, explain: bool = False, trace: str | None = None):
    """Open the backend and run the scan on a device-owner thread; return the `ScanResult`.

    With `trace`, every APDU exchange, the reader listing, each connect and
    the result go to that file, secret data fields replaced by their length.
    Raises `LabError` for an unknown scenario, `PolicyError` for an invalid
    config file and `TraceError` when the trace file cannot be created.
    """
    from tui.backends import open_backend
    from tui.device import DeviceOwner
    from tui.scan import scan_all
    from tui.settings import SiteSettings

    settings = SiteSettings.load()
    writer = None
    if trace is not None:
        from tui.trace import open_trace_writer

        writer = open_trace_writer(trace)
    owner = DeviceOwner()
    try:
        backend = owner.run(open_backend, lab)
        if writer is None:
            return owner.run(scan_all, backend, settings, explain=explain)
        result = owner.run(scan_all, writer.wrap(backend), settings, explain=explain, observer=writer)
        writer.record_result(result)
        return result
    finally:
        owner.shutdown()
        if writer is not None:
            writer.close()


def stack_failed(result) -> bool:
    """True when listing readers failed, so the scan did not run."""
    from tui.model import PcscProblem

    return result.problem is not None and result.problem not in (PcscProblem.NO_READERS, PcscProblem.NO_CARD)


def run(args: argparse.Namespace) -> int:
    """Run the scan and print it; return the exit code described in the module docstring."""
    from tui.errors import KeytriageError, PcscError
    from tui.scan_json import result_to_dict, result_to_text

    try:
        result = run_scan(args.lab, trace=args.trace)
    except PcscError as exc:
        print(f"keytriage scan: {exc}", file=sys.stderr)
        return STACK_FAILURE_EXIT
    except KeytriageError as exc:
        print(f"keytriage scan: {exc}", file=sys.stderr)
        return START_FAILURE_EXIT

    if args.json:
        print(json.dumps(result_to_dict(result), indent=2))
    if stack_failed(result):
        print(f"keytriage scan: {result.problem_detail or result.problem.message}", file=sys.stderr)
        return STACK_FAILURE_EXIT
    if not args.json:
        print(result_to_text(result), end="")
    return 0
