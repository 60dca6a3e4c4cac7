"""The start-up reference: a minimal Textual app with a header, one static and a footer."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.widgets import Footer, Header, Static

MARKER = "keytriage benchmark reference"


class MinimalApp(App[None]):
    """Header, one Static and a Footer with a quit key; nothing else."""

    BINDINGS = [("q", "quit", "Quit")]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(MARKER)
        yield Footer()


if __name__ == "__main__":
    MinimalApp().run()
