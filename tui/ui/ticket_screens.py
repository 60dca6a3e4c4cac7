"""Scrollable text views: the ticket summary and the token history.

Both fit 80x24 and scroll with the arrow keys, j/k and space. Every way out
has a letter key (`o`, `q`) because a lone Escape can be lost over slow SSH
and tmux links.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static


class TextViewScreen(ModalScreen[None]):
    """A titled, scrollable plain-text view with a line of keys under it."""

    # 78 columns leave 73 for text (border, padding, a 1-column scroll bar), so a
    # 72-column ticket line is never wrapped; wider lines scroll sideways.
    DEFAULT_CSS = """
    TextViewScreen {
        align: center middle;
    }
    TextViewScreen .text-view-dialog {
        width: 78;
        height: auto;
        max-height: 22;
        border: round $accent;
        border-title-align: left;
        padding: 0 1;
        background: $surface;
    }
    TextViewScreen .text-view-scroll {
        height: auto;
        max-height: 19;
        scrollbar-size-vertical: 1;
        overflow-x: auto;
    }
    TextViewScreen #text-view-body {
        width: auto;
        text-wrap: nowrap;
    }
    TextViewScreen .text-view-keys {
        text-style: bold;
    }
    """

    BINDINGS = [
        # n and Escape close like every other box; o and q are kept for the technicians who learned them.
        Binding("q,n,escape,o", "close", "Close", id="text-view-close"),
        # App keys do not reach a modal screen, so help is bound here as well.
        Binding("question_mark,f1", "app.help", "Help", id="text-view-help"),
        Binding("j,down", "scroll_lines(1)", "Down", show=False),
        Binding("k,up", "scroll_lines(-1)", "Up", show=False),
        Binding("space,pagedown", "scroll_page(1)", "Page down", show=False),
        Binding("b,pageup", "scroll_page(-1)", "Page up", show=False),
    ]

    keys_text = "[q] Close    j/k, space/b: scroll"

    def __init__(self, title: str, text: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.title_text = title
        self.text = text

    def compose(self) -> ComposeResult:
        with Vertical(classes="text-view-dialog"):
            with VerticalScroll(classes="text-view-scroll"):
                # Text, not markup: a ticket line such as "[x]" must show as typed.
                yield Static(Text(self.text), id="text-view-body")
            yield Static(Text(self.keys_text), id="text-view-keys", classes="text-view-keys")

    def on_mount(self) -> None:
        self.query_one(".text-view-dialog").border_title = self.title_text
        self.query_one(".text-view-scroll").focus()

    def show_text(self, title: str, text: str) -> None:
        """Replace the text and title and scroll back to the top."""
        self.title_text = title
        self.text = text
        self.query_one(".text-view-dialog").border_title = title
        self.query_one("#text-view-body", Static).update(Text(text))
        self.query_one(".text-view-scroll", VerticalScroll).scroll_home(animate=False)

    def action_scroll_lines(self, lines: int) -> None:
        """Scroll the text by `lines` lines."""
        scroll = self.query_one(".text-view-scroll", VerticalScroll)
        scroll.scroll_relative(y=lines, animate=False)

    def action_scroll_page(self, pages: int) -> None:
        """Scroll the text by `pages` pages."""
        scroll = self.query_one(".text-view-scroll", VerticalScroll)
        scroll.scroll_relative(y=pages * max(1, scroll.size.height - 1), animate=False)

    def action_close(self) -> None:
        """Close the view."""
        self.dismiss(None)


class TicketScreen(TextViewScreen):
    """The ticket summary: `c` copies it, `d` switches to the draft of an interrupted session.

    With `lab` set (a lab run, or a lab key served through pcscd) the title
    contains LAB TEST, as the ticket's first line does.
    """

    BINDINGS = [
        Binding("c", "copy", "Copy", id="ticket-copy"),
        Binding("d", "toggle_draft", "Draft", id="ticket-draft", show=False),
    ]

    def __init__(self, text: str, *, draft_text: str | None = None, draft_title: str = "",
                 show_draft: bool = False, lab: bool = False) -> None:
        self.ticket_text = text
        self.ticket_title = "Ticket summary (LAB TEST)" if lab else "Ticket summary"
        self.draft_text = draft_text
        self.draft_title = draft_title
        self.showing_draft = show_draft and draft_text is not None
        if draft_text is not None:
            self.keys_text = "[c] Copy    [d] Draft/current    [q] Close    j/k, space/b: scroll"
        else:
            self.keys_text = "[c] Copy    [q] Close    j/k, space/b: scroll"
        if self.showing_draft:
            super().__init__(draft_title, draft_text, id="ticket-screen")
        else:
            super().__init__(self.ticket_title, text, id="ticket-screen")

    def action_copy(self) -> None:
        """Send the text shown to the clipboard."""
        self.app.copy_ticket(self.text)

    def action_toggle_draft(self) -> None:
        """Switch between this session's ticket and the interrupted session's draft."""
        if self.draft_text is None:
            self.app.notify("No draft of an interrupted session was found.", severity="information")
            return
        self.showing_draft = not self.showing_draft
        if self.showing_draft:
            self.show_text(self.draft_title, self.draft_text)
        else:
            self.show_text(self.ticket_title, self.ticket_text)


class HistoryScreen(TextViewScreen):
    """The token's history: earlier sessions from the audit trail and escrow versions."""

    def __init__(self, token_id: str, text: str) -> None:
        super().__init__(f"History: {token_id}", text, id="history-screen")
