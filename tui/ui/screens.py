"""The main screen and the help screen."""

from __future__ import annotations

import textwrap

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Static

from tui.ui.actions import all_actions, key_text
from tui.ui.keybar import KeyBar
from tui.ui.widgets import MARK_DONE, MARK_NEXT, MARK_PROBLEM, MARK_STOP, ActivityLog, HeaderBar, TokensPanel

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
        yield KeyBar()

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


# The runbook in one line per step, for the help screen.
RUNBOOK_SUMMARY = (
    ("0", "Ask what the user was logging in to and saw; note the ticket."),
    ("1", "Confirm the token is detected (none: hardware, not a lockout)."),
    ("2", "Capture the token ID: it keys the ticket and escrow records."),
    ("3", "Read the smart-card PIN and PUK tries without spending one."),
    ("4", "Verify the PIN the user claims, once."),
    ("5", "List the OTP slots without calculating HOTP codes."),
    ("6", "Reset the PIN with the PUK on file (new PIN escrowed first)."),
    ("6a", "Unlock the PIN with the admin key on file (HID Crescendo)."),
    ("7", "Quick FIDO check: clientPin option of authenticatorGetInfo."),
    ("8", "FIDO PIN retries, then list credentials with the FIDO PIN."),
    ("9", "FIDO reset (destructive): the user re-registers everywhere."),
    ("10", "Full reprovision (destructive): new PIN and PUK, escrowed."),
    ("11", "External authentication check with the admin key on file."),
)

# The help screen's legend of the Runbook and Counters panels' marks.
RUNBOOK_LEGEND = (
    f"Marks: {MARK_DONE} done, nothing wrong   {MARK_PROBLEM} done, found a problem   {MARK_NEXT} next step",
    f"       {MARK_STOP} the runbook stops here   [v] the key that starts the step",
    "Tries: 3/8 means 3 tries left of 8; 3/? means the maximum is not",
    "       readable on this key.",
)

GROUND_RULES = (
    "1. Never burn a retry you did not choose to spend: read-only first,",
    "   one deliberate verify next, destructive recovery last.",
    "2. Every PIN, PUK or key the tool sets is escrowed to Vault, keyed by",
    "   the token ID, before it is applied to the token.",
)

# The dialog is 78 columns: border, padding and the scroll bar leave 73 for text.
HELP_WIDTH = 72

_KEY_NAMES = {"question_mark": "?", "escape": "Esc", "space": "Space", "pagedown": "PgDn", "pageup": "PgUp"}


def _screen_key_lines(screen: Screen) -> list[str]:
    """Return "keys  description" lines for the bindings `screen` defines itself."""
    bindings = getattr(getattr(screen, "_bindings", None), "key_to_bindings", {}) or {}
    by_action: dict[str, tuple[list[str], str]] = {}
    for key, entries in bindings.items():
        for binding in entries:
            if not binding.description:
                continue
            # The tooltip, where a screen gives one, is the longer text its key bar has no room for.
            keys, _ = by_action.setdefault(binding.action, ([], binding.tooltip or binding.description))
            keys.append(_KEY_NAMES.get(key, key))
    return [line for keys, description in by_action.values() for line in _key_line(" / ".join(keys), description)]


def _key_line(keys: str, text: str) -> list[str]:
    """Return `keys` and `text` wrapped to the help dialog's width, continuation lines indented."""
    return textwrap.wrap(f"{keys:<10} {text}", HELP_WIDTH, subsequent_indent=" " * 11) or [keys]


class HelpScreen(Screen[None]):
    """The keys of the current screen and the runbook in brief; closes with q, n, ? or Escape.

    The keys come from the action table (`all_actions`, features included).
    Opened over another screen than the main one, it lists that screen's own
    keys first.

    It is an opaque full screen, not a modal: a modal dims the screen below,
    so opening it re-sent every cell of the main screen in new colours (about
    47 KB at 80x24), which is slow over SSH. The app's `check_action` keeps
    the main screen's keys from firing under it.
    """

    DEFAULT_CSS = """
    HelpScreen {
        align: center middle;
    }
    HelpScreen #help-view {
        width: 78;
        height: auto;
        max-height: 22;
        border: round $accent;
        border-title-align: left;
        padding: 0 1;
        background: $surface;
    }
    HelpScreen #help-scroll {
        height: auto;
        max-height: 19;
        scrollbar-size-vertical: 1;
    }
    HelpScreen #help-text {
        text-wrap: nowrap;
    }
    HelpScreen #help-keys {
        text-style: bold;
    }
    """

    BINDINGS = [
        Binding("q,n,question_mark,escape,f1", "close", "Close", id="help-close"),
        Binding("j,down", "scroll_lines(1)", "Down", show=False),
        Binding("k,up", "scroll_lines(-1)", "Up", show=False),
        Binding("space,pagedown", "scroll_page(1)", "Page down", show=False),
        Binding("b,pageup", "scroll_page(-1)", "Page up", show=False),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(id="help-view"):
            with VerticalScroll(id="help-scroll"):
                yield Static(Text("\n".join(self.help_lines())), id="help-text")
            yield Static(Text("[q] Close    j/k, space/b: scroll"), id="help-keys")

    def help_lines(self) -> list[str]:
        """Return the help text: keys of the screen below, main-screen keys, runbook, ground rules."""
        lines: list[str] = []
        stack = self.app.screen_stack
        below = stack[-2] if len(stack) >= 2 and stack[-1] is self else stack[-1]
        if below is not stack[0] and not isinstance(below, HelpScreen):
            title = getattr(below, "title_text", "") or type(below).__name__
            lines.append(f"Keys of {title}:")
            lines += _screen_key_lines(below)
            lines.append("")

        lines.append("Keys of the main screen:")
        for spec in all_actions():
            if spec.keys:
                lines += _key_line(key_text(spec), spec.help)
        lines += _key_line("0-9", "Select the token shown with this index.")
        lines += _key_line("ctrl+p", "Command palette: every action by name.")
        lines.append("")
        lines.append("Runbook:")
        lines += [f"{step:>3}  {text}" for step, text in RUNBOOK_SUMMARY]
        lines.append("")
        lines += RUNBOOK_LEGEND
        lines.append("")
        lines.append("Ground rules:")
        lines += GROUND_RULES
        return lines

    def on_mount(self) -> None:
        self.query_one("#help-view").border_title = "Help: keys and runbook"

    def on_screen_resume(self) -> None:
        # The app installs one help screen and shows it again each time, so
        # the text is rebuilt here, because the screen below may have changed.
        self.query_one("#help-text", Static).update(Text("\n".join(self.help_lines())))
        scroll = self.query_one("#help-scroll", VerticalScroll)
        scroll.scroll_home(animate=False)
        scroll.focus()

    def action_scroll_lines(self, lines: int) -> None:
        """Scroll the help by `lines` lines."""
        self.query_one("#help-scroll", VerticalScroll).scroll_relative(y=lines, animate=False)

    def action_scroll_page(self, pages: int) -> None:
        """Scroll the help by `pages` pages."""
        scroll = self.query_one("#help-scroll", VerticalScroll)
        scroll.scroll_relative(y=pages * max(1, scroll.size.height - 1), animate=False)

    def action_close(self) -> None:
        """Close the help screen."""
        self.dismiss(None)
