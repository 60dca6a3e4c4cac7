"""The keytriage Textual app: one main screen over the device-owner thread.

The app never touches a card itself. Every scan is a job on the device-owner
thread (`tui.device.DeviceOwner`). An async worker awaits its future, so the
event loop stays free while the card works. The scan's exchange observer runs
on the device thread and collects the exchanges. The event loop writes them to
the activity log in batches (one repaint per `EXCHANGE_BATCH_SECONDS`), always
before any other activity line, so each APDU shows in order and before the
scan result.

Importing this module loads Textual, the main screen and the feature mixins,
but no feature screen, escrow, recovery, FIDO or lab module: those load when
an action or worker first needs them.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from textual.app import App
from textual.message import Message
from textual.screen import Screen
from textual.widgets import OptionList, Static

from tui.device import DeviceOwner
from tui.errors import KeytriageError, PcscError
from tui.audit import AuditTrail
from tui.model import ScanResult, TokenScan
from tui.session import Session
from tui.settings import SiteSettings
from tui.ui.actions import TOKEN_DIGIT_BINDINGS, all_actions
from tui.ui.commands import ActionsProvider
from tui.ui.feature_escrow import EscrowFeature
from tui.ui.feature_fido import FidoFeature
from tui.ui.feature_otp import OtpFeature
from tui.ui.feature_recovery import RecoveryFeature
from tui.ui.feature_ticket import TicketFeature
from tui.ui.screens import HelpScreen, MainScreen
from tui.ui.small_terminal import SmallTerminalGuard
from tui.ui.stylesheet import load_stylesheet
from tui.ui.widgets import (
    ActivityLog,
    HeaderBar,
    TokenList,
    render_counters,
    render_runbook_steps,
    render_token_detail,
    token_key,
)

if TYPE_CHECKING:
    from tui.apdu import Exchange
    from tui.runbook import RunbookResult
    from tui.transport import ReaderBackend

log = logging.getLogger("keytriage.ui")

BackendFactory = Callable[[], "ReaderBackend"]
ScanFunction = Callable[..., ScanResult]

# Exchanges observed on the device thread reach the activity log at most this
# often, so a scan of 17 APDUs costs a few repaints rather than one per APDU.
EXCHANGE_BATCH_SECONDS = 0.05

# How long after the first scan result the start-up heap is frozen: late
# enough that the first paint has settled, soon enough to precede most keys.
HEAP_FREEZE_DELAY_SECONDS = 1.0

# The name under which the one help screen is installed.
HELP_SCREEN_NAME = "help"

# Actions that are always allowed, whatever screen is active: help and quit,
# unless that screen binds the key itself (its bindings come first).
GLOBAL_ACTIONS = frozenset({"help", "quit"})


class ExchangeObserved(Message):
    """One APDU exchange of a running job, posted from the device thread."""

    def __init__(self, exchange: Exchange, when: datetime) -> None:
        super().__init__()
        self.exchange = exchange
        self.when = when


class ExchangesPending(Message):
    """Exchanges are waiting in the app's buffer; posted from the device thread once per batch."""


class ScanFinished(Message):
    """A scan ended: its result, or the error that stopped it."""

    def __init__(self, result: ScanResult | None, error: str | None = None) -> None:
        super().__init__()
        self.result = result
        self.error = error


def _default_scan(backend: ReaderBackend, settings: SiteSettings, *, observer=None) -> ScanResult:
    # Imported on first use: the scan pulls in every applet reader.
    from tui.scan import scan_all

    return scan_all(backend, settings, observer=observer)


def freeze_startup_heap() -> None:
    """Collect once, then exclude every object alive now from later full garbage collections.

    A full (generation 2) collection walks every tracked object, and the
    start-up heap (Textual, the widgets, the imported modules) makes that
    walk take 40 to 90 ms, long enough to stall a key press. Frozen objects
    are still freed by reference counting; only a reference cycle among
    them would stay, a bounded one-off cost.
    """
    gc.collect()
    gc.freeze()


class KeytriageApp(SmallTerminalGuard, RecoveryFeature, EscrowFeature, FidoFeature, OtpFeature, TicketFeature, App[int]):
    """The keytriage TUI.

    `backend_factory` builds the reader backend on the device thread, on the
    first scan. `scan` replaces `tui.scan.scan_all`, and tests pass a fake.
    `clock` stamps the activity log, and tests pass a fixed one. `device` is
    the device-owner thread, created here when not given.
    """

    TITLE = "keytriage"
    # `run_tui` and the benchmark set this; tests leave it off, since a freeze
    # would keep each test's app in the test process for good.
    freeze_heap_after_first_scan = False
    COMMANDS = {ActionsProvider}
    BINDINGS = [spec.binding() for spec in all_actions()] + TOKEN_DIGIT_BINDINGS
    # Actions of the main screen's keys (action table and digits), without their parameters.
    MAIN_SCREEN_ACTIONS = frozenset(binding.action.partition("(")[0] for binding in BINDINGS) - GLOBAL_ACTIONS

    def __init__(self, backend_factory: BackendFactory, settings: SiteSettings, lab_scenario: str | None = None, *,
                 scan: ScanFunction | None = None, device: DeviceOwner | None = None,
                 clock: Callable[[], datetime] | None = None, scan_on_start: bool = True,
                 session: Session | None = None) -> None:
        self.CSS, self.stylesheet_origin = load_stylesheet()
        super().__init__()
        self.backend_factory = backend_factory
        self.settings = settings
        self.lab_scenario = lab_scenario
        self.scan_function = scan or _default_scan
        self.device = device or DeviceOwner()
        self._owns_device = device is None
        self.clock = clock or datetime.now
        self.scan_on_start = scan_on_start
        self.session = session or Session(settings, AuditTrail(lab=lab_scenario is not None), lab_scenario=lab_scenario)

        self._backend: ReaderBackend | None = None
        self.scan_result: ScanResult | None = None
        self.scan_error: str | None = None
        self.runbook: RunbookResult | None = None
        self.scanning = False
        self.scan_count = 0

        # The selection is kept by token ID (or by reader for a token without
        # one), never by list index: a rescan can reorder the readers.
        self.selected_key: str | None = None

        # Exchanges observed on the device thread, not yet in the activity log.
        self._exchange_lock = threading.Lock()
        self._exchange_buffer: list[tuple[Exchange, datetime]] = []
        self._exchange_flush_pending = False

    # --- screens ---------------------------------------------------------

    def get_default_screen(self) -> Screen:
        """Return the main screen."""
        return MainScreen()

    def main_screen_ready(self) -> None:
        """Show the start state and start the first scan; the main screen calls this once mounted."""
        self._show_state("Not scanned yet" if not self.scan_on_start else "Scanning...")
        if self.lab_scenario is not None:
            self.activity.add(f"LAB mode: scenario {self.lab_scenario}, simulated key, no real token used")
        self.call_feature_hooks("feature_ready")
        if self.scan_on_start:
            self.action_rescan()

    def on_unmount(self) -> None:
        if self._owns_device:
            self.device.shutdown(wait=False)

    @property
    def main_screen(self) -> MainScreen:
        """The main screen, also while the help screen or the palette is on top."""
        return self.screen_stack[0]

    @property
    def activity(self) -> ActivityLog:
        """The activity log of the main screen, with every exchange observed so far already written to it.

        Writing the buffered exchanges first keeps the log in order: a line
        added after a device job (its result, "Scan finished") always comes
        after that job's APDUs.
        """
        log_widget = self.main_screen.query_one("#activity", ActivityLog)
        self._write_exchanges(log_widget)
        return log_widget

    # --- scanning ----------------------------------------------------------

    def action_rescan(self) -> None:
        """Start a read-only scan on the device thread, unless one is already running."""
        if self.scanning:
            self.activity.add("Rescan ignored: a scan is already running")
            return

        self.scanning = True
        self.scan_count += 1
        self._show_state("Scanning...")
        self.activity.add("Scan started (read-only)")
        self.run_worker(self._scan_worker(), name="scan", group="device", exit_on_error=False)

    async def _scan_worker(self) -> None:
        future = self.device.submit(self._scan_job)
        try:
            result = await asyncio.wrap_future(future)
        except PcscError as exc:
            self.post_message(ScanFinished(ScanResult(problem=exc.problem, problem_detail=str(exc))))
        except KeytriageError as exc:
            log.warning("scan failed: %s", exc)
            self.post_message(ScanFinished(None, str(exc)))
        except Exception as exc:  # noqa: BLE001 - the UI must stay up and say what broke
            log.exception("scan crashed")
            self.post_message(ScanFinished(None, f"{type(exc).__name__}: {exc}"))
        else:
            self.post_message(ScanFinished(result))

    def _scan_job(self) -> ScanResult:
        # Runs on the device thread, so the backend's PC/SC context is created there too.
        if self._backend is None:
            self._backend = self.backend_factory()
        return self.scan_function(self._backend, self.settings, observer=self._observe_exchange)

    def _observe_exchange(self, exchange: Exchange) -> None:
        # Runs on the device thread; the --trace writer is thread-safe. Only
        # the first exchange of a batch posts a message.
        if self.trace_writer is not None:
            self.trace_writer(exchange)
        with self._exchange_lock:
            self._exchange_buffer.append((exchange, self.clock()))
            if self._exchange_flush_pending:
                return
            self._exchange_flush_pending = True
        self.post_message(ExchangesPending())

    def on_exchanges_pending(self, message: ExchangesPending) -> None:
        self.set_timer(EXCHANGE_BATCH_SECONDS, self._flush_exchanges, name="exchange-batch")

    def _flush_exchanges(self) -> None:
        # A batch already written before another activity line leaves the buffer empty here.
        self._write_exchanges(self.main_screen.query_one("#activity", ActivityLog))

    def _write_exchanges(self, log_widget: ActivityLog) -> None:
        with self._exchange_lock:
            batch = self._exchange_buffer
            self._exchange_buffer = []
            self._exchange_flush_pending = False
        for exchange, when in batch:
            log_widget.add(exchange.describe(), when)

    def on_exchange_observed(self, message: ExchangeObserved) -> None:
        self.activity.add(message.exchange.describe(), message.when)

    def on_scan_finished(self, message: ScanFinished) -> None:
        self.scanning = False
        self.scan_error = message.error
        if message.error is not None:
            self.activity.add(f"Scan failed: {message.error}")
            self._show_state("Scan failed")
            self._refresh_panels()
            return

        self.scan_result = message.result
        # Before any feature writes a record about a served lab key, so that record has lab: true.
        self.session.note_scan(message.result.tokens)
        self.main_screen.query_one(HeaderBar).show_lab_key(any(token.is_lab for token in message.result.tokens))
        self._show_state(f"Scanned {self.clock():%H:%M:%S}")
        count = len(message.result.tokens)
        self.activity.add(f"Scan finished: {count} token{'s' if count != 1 else ''}, {message.result.apdu_count} APDUs")
        self.main_screen.query_one(TokenList).show_tokens(message.result, self.selected_key)
        self._sync_selection()
        self._refresh_panels()
        self.call_feature_hooks("feature_after_scan", message.result)
        if self.freeze_heap_after_first_scan:
            # Once, after the first scan that succeeded (a failed one may precede it).
            self.freeze_heap_after_first_scan = False
            self.set_timer(HEAP_FREEZE_DELAY_SECONDS, freeze_startup_heap, name="freeze-startup-heap")

    def call_feature_hooks(self, name: str, *args: Any) -> None:
        """Call hook `name` on every feature mixin that defines it, in method resolution order."""
        for cls in type(self).__mro__:
            hook = cls.__dict__.get(name)
            if hook is not None:
                hook(self, *args)

    # --- selection ---------------------------------------------------------

    def selected_token(self) -> TokenScan | None:
        """Return the selected token of the last scan, looked up by its ID (or reader)."""
        from tui.runbook import select_token

        if self.scan_result is None:
            return None
        key = self.selected_key or ""
        if key.startswith("reader:"):
            return select_token(self.scan_result, reader=key.removeprefix("reader:"))
        return select_token(self.scan_result, token_id=key or None)

    @property
    def selected_token_id(self) -> str | None:
        """The token ID that later actions target, `None` when the token has none."""
        token = self.selected_token()
        return str(token.token_id) if token is not None and token.token_id is not None else None

    def _sync_selection(self) -> None:
        token = self.selected_token()
        self.selected_key = token_key(token) if token is not None else None

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option_list.id != "token-list" or event.option.id in (None, "none"):
            return
        if event.option.id != self.selected_key:
            self.selected_key = event.option.id
            self._refresh_panels()

    def action_next_token(self) -> None:
        """Select the next token."""
        self.main_screen.query_one(TokenList).action_cursor_down()

    def action_previous_token(self) -> None:
        """Select the previous token."""
        self.main_screen.query_one(TokenList).action_cursor_up()

    def action_select_token(self, position: int) -> None:
        """Select the token shown with index `position`."""
        tokens = self.scan_result.tokens if self.scan_result else []
        if 0 <= position < len(tokens):
            self.main_screen.query_one(TokenList).highlighted = position
        else:
            self.notify(f"No token with index {position}; the list has {len(tokens)}.", severity="warning")

    # --- rendering ---------------------------------------------------------

    def _show_state(self, text: str) -> None:
        self.main_screen.query_one(HeaderBar).set_state(text)

    def _refresh_panels(self) -> None:
        screen = self.main_screen
        token = self.selected_token()

        if self.scan_result is not None:
            self.runbook = self.evaluate_runbook(self.scan_result, token)
        else:
            self.runbook = None

        screen.query_one("#token-detail", Static).update(render_token_detail(token))
        screen.query_one("#counters-text", Static).update(render_counters(token))
        screen.query_one("#runbook-steps", Static).update(render_runbook_steps(self.runbook, self._has_action))

        if self.scan_error is not None and self.scan_result is None:
            verdict = f"Scan failed: {self.scan_error}. Press r to rescan."
        elif self.runbook is not None:
            verdict = f"Verdict: {self.runbook.verdict}"
        else:
            verdict = ""
        screen.query_one("#verdict", Static).update(verdict)

    def _has_action(self, action: str) -> bool:
        return any(spec.action == action for spec in all_actions()) and action != "rescan"

    # --- help and quit -------------------------------------------------------

    def action_help(self) -> None:
        """Open the help screen, unless it is already open.

        One help screen is installed on first use and shown again after
        that: building it anew for each press made a cycle of garbage that
        later stalled a key press during a full garbage collection.
        """
        if any(isinstance(screen, HelpScreen) for screen in self.screen_stack):
            return
        if not self.is_screen_installed(HELP_SCREEN_NAME):
            self.install_screen(HelpScreen(), HELP_SCREEN_NAME)
        self.push_screen(HELP_SCREEN_NAME)

    async def action_quit(self) -> None:
        """Quit through `request_quit`, the one place that decides whether quitting may proceed."""
        await self.request_quit()

    async def request_quit(self) -> None:
        """Quit the app, unless work in flight or a pending FIDO reset would be lost.

        `escrow_allows_quit` waits for an escrowed write (and quits after it)
        or asks about a value NOT CONFIRMED in Vault. `fido_allows_quit` asks
        while a FIDO reset is under way. Any other write on the device thread
        (a verify, PUK reset, unlock, reprovision or new FIDO PIN) is waited
        for, then quitting is checked again.
        """
        if not self.escrow_allows_quit():
            return
        if not self.fido_allows_quit():
            return
        if self.write_in_flight():
            self.notify("Quit waits for the command in flight and its escrow record.", severity="warning")
            self.run_worker(self._quit_after_write(), name="quit-after-write", group="quit", exclusive=True,
                            exit_on_error=False)
            return
        self.exit(0)

    async def _quit_after_write(self) -> None:
        await self.finish_in_flight_work()
        await self.request_quit()

    def check_action(self, action: str, parameters: tuple[Any, ...]) -> bool | None:
        """Allow the main screen's keys only while it is the active screen; then apply what the features disable.

        App bindings also reach full-screen feature screens (FIDO, reset
        wizard, help) for every key the screen does not bind itself, so
        without this check `v` on the FIDO screen would open the verify
        dialog. Help and quit stay allowed everywhere. The token navigation
        keys are disabled when there is at most one token.
        """
        stack = self.screen_stack
        if action in self.MAIN_SCREEN_ACTIONS and stack and stack[-1] is not stack[0]:
            return False
        # Below 80x24 the panels are replaced by a notice, so no action may
        # start that the technician cannot read.
        if action in self.MAIN_SCREEN_ACTIONS and stack and stack[0].has_class("-too-small"):
            return False
        for cls in type(self).__mro__:
            hook = cls.__dict__.get("feature_check_action")
            if hook is not None:
                allowed = hook(self, action, parameters)
                if allowed is not True:
                    return allowed
        if action in ("next_token", "previous_token", "select_token"):
            tokens = self.scan_result.tokens if self.scan_result else []
            return len(tokens) > 1 or None
        return True
