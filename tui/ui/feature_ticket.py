"""Main-screen feature: ticket summary, clipboard, token history, and surviving a dropped SSH session.

`t` shows the ticket summary, `c` copies the selected token ID, `h` shows
the token's history. The ticket draft on disk (`tui.draft`) follows every
state change, and SIGHUP (the SSH session dropped) lets the command in
flight and its escrow record finish, saves the draft and exits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from tui.draft import STATE_CLOSED, STATE_INTERRUPTED, STATE_OPEN, DraftError, DraftStore, TicketDraft
from tui.model import ScanResult, TokenScan
from tui.ui.actions import ActionSpec

# tui.ticket and tui.clipboard load on first use (after the first scan), so
# importing the app (this mixin is one of its base classes) stays cheap.

log = logging.getLogger("keytriage.ui.ticket")

# Shell convention for a process ended by SIGHUP: 128 + signal number.
HANGUP_EXIT_CODE = 128 + signal.SIGHUP
# Seconds the normal exit gets after a SIGHUP, once no command is in flight.
HANGUP_GRACE_S = 10.0

# How often the draft is compared with the session: events and Step 0
# answers are added by other features, which do not call this one.
DRAFT_CHECK_SECONDS = 1.0

# Entries of this feature in the action table (keys, footer, help, palette).
ACTIONS: tuple[ActionSpec, ...] = (
    ActionSpec("ticket", "ticket", "t", "Ticket",
               "Show the ticket summary to paste into the ticket (c copies it)."),
    ActionSpec("copy-id", "copy_token_id", "c", "Copy ID",
               "Send the selected token ID to the clipboard (OSC 52); check by pasting.", show=False),
    ActionSpec("history", "history", "h", "History",
               "Show the token's history: earlier sessions and escrow versions.", show=False),
)


class TicketFeature:
    """Mixin of `KeytriageApp` with this feature's actions.

    Hooks the app calls on every feature mixin that defines them:
    `feature_ready()` once the main screen is mounted, and
    `feature_after_scan(result)` after each scan.

    `trace_writer` (a `tui.trace.TraceWriter`, set by `--trace`) receives
    every APDU exchange. `ticket_file` is the `--ticket-file` path, checked
    at start so the technician learns early when it cannot be written.
    """

    # Set by `run_tui`: the watchdog may end the process, and `App.run` returned.
    hangup_watchdog_enabled = False
    app_run_returned = threading.Event()

    trace_writer: Any = None
    ticket_file: str | None = None
    draft_store: DraftStore | None = None
    recovered_draft: TicketDraft | None = None
    hung_up = False
    _ticket_scan: ScanResult | None = None
    _ticket_key: str | None = None
    _draft_fingerprint: tuple | None = None
    _draft_failed = False
    _hangup_handler_installed = False

    # --- hooks ---------------------------------------------------------------------

    def feature_ready(self) -> None:
        if self.draft_store is None:
            self.draft_store = DraftStore()
        self._install_hangup_handler()
        self._check_ticket_file()
        self.set_interval(DRAFT_CHECK_SECONDS, self.save_draft_if_changed, name="ticket-draft")

        # The draft folder is read in a thread after the first paint; the
        # worker exists from here on, so `workers.wait_for_complete()` covers it.
        painted = asyncio.Event()
        self.call_after_refresh(painted.set)
        self.run_worker(self._offer_recovered_draft(painted), name="draft-check", group="ticket-draft", exit_on_error=False)

    def feature_after_scan(self, result: ScanResult) -> None:
        if result.tokens:
            self._ticket_scan = result
            self._ticket_key = self.selected_key
            self._record_locked_findings(result)
        if self.trace_writer is not None:
            self.trace_writer.record_result(result)
        # After the repaint, so the scan result is on screen before the ticket is built and written.
        self.call_after_refresh(self.save_draft_if_changed)

    def on_unmount(self) -> None:
        # Textual calls this handler of every class in the app's MRO.
        if self._hangup_handler_installed:
            try:
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            except RuntimeError:
                pass
            self._hangup_handler_installed = False
        if not self.hung_up and self.return_code == 0:
            self.save_draft(STATE_CLOSED)

    # --- the ticket ---------------------------------------------------------------

    def _ticket_source(self) -> tuple[ScanResult | None, TokenScan | None, object | None]:
        """Return the scan, selected token and runbook the ticket is built from.

        The last scan that found a token stays the source when a later scan
        finds none (the key was unplugged after the fix), so the ticket keeps it.
        """
        if self.scan_result is not None and self.scan_result.tokens:
            return self.scan_result, self.selected_token(), self.runbook
        if self._ticket_scan is not None:
            from tui.runbook import select_token

            key = self._ticket_key or ""
            if key.startswith("reader:"):
                token = select_token(self._ticket_scan, reader=key.removeprefix("reader:"))
            else:
                token = select_token(self._ticket_scan, token_id=key or None)
            return self._ticket_scan, token, None
        return self.scan_result, None, self.runbook

    def build_session_ticket(self):
        """Build the `tui.ticket.Ticket` of this session now."""
        from tui.ticket import build_ticket

        scan, token, runbook = self._ticket_source()
        return build_ticket(self.session, scan, token, runbook=runbook)

    def ticket_summary(self) -> str:
        """Return the ticket summary text of this session now."""
        from tui.ticket import render_ticket

        return render_ticket(self.build_session_ticket())

    def final_ticket_text(self) -> str | None:
        """Return the ticket to print at exit, None when no scan of this session found a token."""
        if self._ticket_scan is None:
            return None
        return self.ticket_summary()

    def action_ticket(self) -> None:
        """Open the ticket summary (or, before any scan, the draft of an interrupted session)."""
        from tui.ticket import render_ticket
        from tui.ui.ticket_screens import TicketScreen

        if isinstance(self.screen, TicketScreen):
            return
        draft = self.recovered_draft
        draft_text = draft.text if draft is not None else None
        draft_title = f"Draft of {draft.updated[:16].replace('T', ' ')} UTC ({draft.state})" if draft else ""
        show_draft = draft is not None and self._ticket_scan is None
        ticket = self.build_session_ticket()
        self.push_screen(TicketScreen(render_ticket(ticket), draft_text=draft_text, draft_title=draft_title,
                                      show_draft=show_draft, lab=ticket.is_lab))

    # --- clipboard ----------------------------------------------------------------

    def action_copy_token_id(self) -> None:
        """Send the selected token ID to the clipboard."""
        token_id = self.selected_token_id
        if token_id is None:
            token = self.selected_token()
            reason = token.id_reason if token is not None and token.id_reason else "no token is selected"
            self.notify(f"Nothing copied: the selected token has no ID ({reason}).", severity="warning")
            return
        self._copy("Token ID", token_id)

    def copy_ticket(self, text: str) -> None:
        """Send the ticket summary to the clipboard."""
        self._copy("Ticket summary", text)

    def _copy(self, what: str, text: str) -> None:
        from tui.clipboard import copy_text

        result = copy_text(self, text, what)
        self.activity.add(result.message)
        self.notify(result.message, severity="warning" if result.warning else "information", timeout=10)

    # --- history ------------------------------------------------------------------

    def action_history(self) -> None:
        """Show the selected token's history; Vault is read on a worker thread."""
        token_id = self.selected_token_id
        if token_id is None:
            self.notify("No history: the selected token has no ID to look it up by.", severity="warning")
            return
        self.run_worker(self._history_worker(token_id), name="history", group="history", exclusive=True,
                        exit_on_error=False)

    async def _history_worker(self, token_id: str) -> None:
        from tui.ticket import history_text
        from tui.ui.ticket_screens import HistoryScreen

        store = self._escrow_store()
        text = await asyncio.to_thread(history_text, self.session.audit, token_id,
                                       current_session=self.session.audit.session, store=store)
        self.push_screen(HistoryScreen(token_id, text))

    def _escrow_store(self) -> object | None:
        # The escrow context belongs to the escrow feature; its shape is read defensively.
        escrow = getattr(self.session, "escrow", None)
        flow = getattr(escrow, "flow", None)
        store = getattr(flow, "store", None) or getattr(escrow, "store", None)
        return store if hasattr(store, "read_metadata") else None

    # --- the draft ----------------------------------------------------------------

    def _fingerprint(self) -> tuple:
        triage = self.session.triage
        return (len(self.session.events), triage.trying, triage.saw, triage.tap, triage.free_text, triage.ticket,
                self.scan_count, self.selected_key, self._ticket_scan is not None)

    def save_draft_if_changed(self) -> None:
        """Rewrite the draft when the session changed since the last write."""
        fingerprint = self._fingerprint()
        if fingerprint != self._draft_fingerprint:
            self.save_draft()

    def save_draft(self, state: str = STATE_OPEN) -> None:
        """Write this session's ticket draft; a write failure is logged and shown once instead of raised."""
        if self.draft_store is None or (self._ticket_scan is None and not self.session.events):
            return
        from tui.ticket import render_ticket

        ticket = self.build_session_ticket()
        text = render_ticket(ticket) + self._unconfirmed_note()
        _, token, _ = self._ticket_source()
        token_id = str(token.token_id) if token is not None and token.token_id is not None else None
        try:
            # A served lab key makes the draft a lab one too, like the ticket's first line.
            self.draft_store.save(self.session.audit.session, text, token_id=token_id,
                                  lab=self.session.is_lab or ticket.is_lab, state=state)
        except DraftError as exc:
            # Said once; the next change tries again.
            if not self._draft_failed:
                log.warning("%s", exc)
                self.activity.add(f"Ticket draft not saved: {exc}")
            self._draft_failed = True
            self._draft_fingerprint = self._fingerprint()
            return
        self._draft_failed = False
        self._draft_fingerprint = self._fingerprint()

    def _unconfirmed_note(self) -> str:
        # Escrow values NOT CONFIRMED in Vault live only in memory and die with the process.
        notes = []
        for result in getattr(self, "escrow_unconfirmed", None) or []:
            request = getattr(result, "request", None)
            kind = getattr(getattr(request, "kind", None), "label", "secret")
            notes.append(f"WARNING: the {kind} of {getattr(request, 'token_id', '?')} was NOT CONFIRMED "
                         "in Vault when this session ended. Check the Vault record before closing.")
        return "".join(f"\n{note}\n" for note in notes)

    async def _offer_recovered_draft(self, painted: asyncio.Event) -> None:
        await painted.wait()
        try:
            drafts = await asyncio.to_thread(self.draft_store.recent, exclude_session=self.session.audit.session)
        except OSError as exc:
            log.warning("cannot list ticket drafts in %s: %s", self.draft_store.directory, exc)
            return
        if not drafts:
            return
        draft = drafts[0]
        self.recovered_draft = draft
        ended = "was interrupted (SIGHUP)" if draft.state == STATE_INTERRUPTED else "did not end with a quit"
        token = draft.token_id or "no token ID"
        self.activity.add(f"A session at {draft.updated[11:16]} UTC ({token}) {ended}: "
                          "press t, then d, to see its ticket draft")

    def _record_locked_findings(self, result: ScanResult) -> None:
        """Add a "finding" event for each applet a scan shows locked, once per token, applet and state."""
        from tui.ticket import KIND_FINDING, locked_findings

        for token in result.tokens:
            token_id = str(token.token_id) if token.token_id is not None else None
            for applet, summary in locked_findings(token):
                known = any(e.kind == KIND_FINDING and e.token_id == token_id and e.applet == applet
                            and e.summary == summary for e in self.session.events)
                if not known:
                    self.session.add_event(KIND_FINDING, summary, token_id=token_id, applet=applet)

    def _check_ticket_file(self) -> None:
        if not self.ticket_file:
            return
        path = Path(self.ticket_file)
        directory = path.parent if str(path.parent) else Path(".")
        if path.is_dir() or not directory.is_dir() or not os.access(directory, os.W_OK) \
                or (path.exists() and not os.access(path, os.W_OK)):
            self.activity.add(f"--ticket-file {path} is not writable; the ticket is printed to standard output at exit only")

    # --- dropped SSH session ------------------------------------------------------

    def _install_hangup_handler(self) -> None:
        # The loop runs the handler as an ordinary callback, so it may touch Textual.
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.handle_hangup)
        except (NotImplementedError, RuntimeError, ValueError) as exc:
            log.warning("no SIGHUP handler, so a dropped SSH session may end a write midway: %s", exc)
            return
        self._hangup_handler_installed = True

    def handle_hangup(self) -> None:
        """React to SIGHUP: save the draft, let the in-flight work finish, then exit."""
        if self.hung_up:
            return
        self.hung_up = True
        log.warning("SIGHUP received: finishing the command in flight and its escrow record, then exiting")
        self.save_draft(STATE_INTERRUPTED)
        self.run_worker(self._exit_after_hangup(), name="hangup", group="hangup", exit_on_error=False)
        threading.Thread(target=self._hangup_watchdog, name="keytriage-hangup-watchdog", daemon=True).start()

    def _hangup_watchdog(self) -> None:
        # Once the terminal is gone, Textual's teardown can block for good on
        # the dead tty, leaving an orphan that holds the reader. The draft is
        # saved; wait for the device job and any write, then give the normal
        # exit a grace period and end the process. Only `run_tui` enables it:
        # an app under test or embedded elsewhere is never ended this way.
        if not self.hangup_watchdog_enabled:
            return
        while self.device.busy or self.write_in_flight():
            time.sleep(0.2)
        if self.app_run_returned.wait(HANGUP_GRACE_S):
            return
        log.warning("exit after SIGHUP did not complete within %s s; ending the process", HANGUP_GRACE_S)
        os._exit(HANGUP_EXIT_CODE)

    async def _exit_after_hangup(self) -> None:
        await self.finish_in_flight_work()
        self.save_draft(STATE_INTERRUPTED)
        self.exit(HANGUP_EXIT_CODE, return_code=HANGUP_EXIT_CODE)

    def write_in_flight(self) -> bool:
        """True while a token write or its escrow record is under way (flags of the escrow, recovery and FIDO features)."""
        return any(getattr(self, flag, False)
                   for flag in ("escrow_write_in_flight", "recovery_write_in_flight", "fido_write_in_flight"))

    async def finish_in_flight_work(self) -> None:
        """Wait until the device job in flight and any escrow write have finished."""
        if self.device.busy or self.write_in_flight():
            self.activity.add("Waiting for the command in flight and its escrow record before exiting")
        try:
            # The device thread runs jobs in order: this empty job ends after every job queued before it.
            await asyncio.wrap_future(self.device.submit(lambda: None))
        except RuntimeError as exc:
            log.info("device thread already stopped: %s", exc)
        while self.write_in_flight():
            await asyncio.sleep(0.05)
