"""The main screen and the help screen."""

from __future__ import annotations

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Static

from tui.ui.actions import all_actions, key_text
from tui.ui.widgets import ActivityLog, HeaderBar, TokensPanel

MIN_WIDTH = 80
MIN_HEIGHT = 24


class MainScreen(Screen):
    """Everything the technician decides from, on one 80x24 screen."""

    def compose(self) -> ComposeResult:
        app = self.app
        yield HeaderBar(app.lab_scenario)
        with Vertical(id="body"):
            with Horizontal(id="panels"):
                with Vertical(id="left"):
                    tokens = TokensPanel(id="tokens")
                    tokens.border_title = "Tokens"
                    yield tokens
                    counters = VerticalScroll(Static("", id="counters-text"), id="counters")
                    counters.border_title = "Counters"
                    yield counters
                with VerticalScroll(id="runbook"):
                    yield Static("", id="runbook-steps")
                    yield Static("", id="verdict")
            activity = ActivityLog(app.clock, id="activity")
            activity.border_title = "Activity"
            yield activity
        yield Static("", id="size-notice")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#runbook").border_title = "Runbook"
        self.query_one("#token-list").focus()
        self.check_size(self.size.width, self.size.height)
        self.app.main_screen_ready()

    def on_resize(self, event: events.Resize) -> None:
        self.check_size(event.size.width, event.size.height)

    def check_size(self, width: int, height: int) -> None:
        """Replace the panels by a notice when the terminal is below 80x24, so nothing is clipped."""
        too_small = width < MIN_WIDTH or height < MIN_HEIGHT
        self.set_class(too_small, "-too-small")
        notice = f"keytriage needs {MIN_WIDTH}x{MIN_HEIGHT}, has {width}x{height}. Enlarge the terminal, or press q to quit."
        self.query_one("#size-notice", Static).update(notice if too_small else "")


class HelpScreen(ModalScreen[None]):
    """The keys of the main screen; closes with q, n, ? or Escape."""

    BINDINGS = [
        Binding("q,n,question_mark,escape,f1", "close", "Close", id="help-close"),
    ]

    def compose(self) -> ComposeResult:
        lines = [f"{key_text(spec):<8} {spec.help}" for spec in all_actions()]
        lines.append(f"{'0-9':<8} Select the token shown with this index.")
        lines.append(f"{'ctrl+p':<8} Command palette: every action by name.")
        lines.append("")
        lines.append("Close this help with q, n, ? or Escape.")
        with Vertical(id="help-dialog"):
            yield Static("\n".join(lines), id="help-text")

    def on_mount(self) -> None:
        self.query_one("#help-dialog").border_title = "Help: keys"

    def action_close(self) -> None:
        """Close the help screen."""
        self.dismiss(None)
