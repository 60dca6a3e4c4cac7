"""Start the TUI: load the settings, check the lab scenario, run the app, print the ticket at exit."""

from __future__ import annotations

import argparse
import sys
import threading
from typing import TextIO

from tui.errors import LabError, PolicyError


def _fail(message: str) -> int:
    print(f"keytriage: {message}", file=sys.stderr)
    return 2


def check_lab_scenario(name: str) -> None:
    """Raise `LabError` naming the valid scenarios when `name` is not one of them."""
    # Imported only with --lab, so a normal start does not load the lab key.
    from tui.lab.scenarios import get_scenario

    get_scenario(name)


def emit_ticket(text: str | None, ticket_file: str | None, *, out: TextIO | None = None,
                err: TextIO | None = None) -> int:
    """Print the ticket to `out` and, with `ticket_file`, write it there too (mode 0600).

    The ticket goes to standard output in every case, so it stays in the
    terminal's scrollback even when the file cannot be written. Returns 0,
    or 1 when the file could not be written (the reason goes to `err`).
    Nothing is printed when `text` is None (no token was scanned).
    """
    from tui.ticket import TicketFileError, write_ticket_file

    out = out or sys.stdout
    err = err or sys.stderr
    if text is None:
        return 0
    try:
        out.write(text)
        out.flush()
    except OSError:
        # The terminal is gone (SSH dropped); the ticket draft and the file keep the text.
        pass
    if not ticket_file:
        return 0
    try:
        write_ticket_file(ticket_file, text)
    except TicketFileError as exc:
        try:
            print(f"keytriage: {exc}", file=err)
        except OSError:
            pass
        return 1
    return 0


def run_tui(args: argparse.Namespace) -> int:
    """Run the TUI, print the ticket, and return the exit code.

    The code is 2 for a broken config, an unknown --lab scenario or a --trace
    file that cannot be created, and 129 after SIGHUP. It is 1 when
    --ticket-file could not be written, else the app's code.
    """
    from tui.settings import SiteSettings

    try:
        settings = SiteSettings.load()
    except PolicyError as exc:
        return _fail(str(exc))

    lab_scenario = getattr(args, "lab", None)
    if lab_scenario is not None:
        try:
            check_lab_scenario(lab_scenario)
        except LabError as exc:
            return _fail(str(exc))

    trace_writer = None
    if getattr(args, "trace", None):
        from tui.trace import TraceError, open_trace_writer

        try:
            trace_writer = open_trace_writer(args.trace)
        except TraceError as exc:
            return _fail(str(exc))

    def backend_factory():
        from tui.backends import open_backend

        backend = open_backend(lab_scenario)
        return trace_writer.wrap(backend) if trace_writer is not None else backend

    from tui.ui.app import KeytriageApp

    app = KeytriageApp(backend_factory, settings, lab_scenario=lab_scenario)
    # The Vault options are read where the escrow context is built, in a
    # thread after the first paint, so the escrow package is not imported here.
    app.escrow_arguments = args
    app.trace_writer = trace_writer
    app.ticket_file = getattr(args, "ticket_file", None)
    app.hangup_watchdog_enabled = True
    app.freeze_heap_after_first_scan = True
    app.app_run_returned = threading.Event()
    try:
        code = app.run()
    finally:
        app.app_run_returned.set()
        if trace_writer is not None:
            trace_writer.close()
    code = code if isinstance(code, int) else 0

    ticket_code = emit_ticket(app.final_ticket_text(), app.ticket_file)
    return code or ticket_code
