"""The key bar: one line at the bottom of a screen naming the keys that work there now.

It replaces Textual's Footer, which builds one widget per key and builds
them all again each time the bindings change (focus moves, a screen opens or
closes, a check_action result changes). That happened three times before the
main screen's first scan result was painted. The key bar redraws one line of
text instead.

A key whose action is disabled is left out rather than drawn dim, so the
line reads the same without colour (NO_COLOR, 16-colour terminals).
"""

from __future__ import annotations

from rich.text import Text
from textual import events
from textual.screen import Screen
from textual.widgets import Static

PALETTE_TEXT = "^p palette"


class KeyBar(Static):
    """The shown, enabled bindings of the screen, then the command palette key on the right."""

    COMPONENT_CLASSES = {"keybar--key", "keybar--description"}

    DEFAULT_CSS = """
    KeyBar {
        dock: bottom;
        height: 1;
        width: 100%;
        background: $footer-background;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    KeyBar > .keybar--key {
        color: $footer-key-foreground;
        background: $footer-key-background;
        text-style: bold;
    }
    KeyBar > .keybar--description {
        color: $footer-description-foreground;
        background: $footer-description-background;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id, markup=False)
        self._redraw_pending = False

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)
        self.show_keys()

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def on_resize(self, event: events.Resize) -> None:
        # The palette key sits at the right edge, so a new width moves it.
        self.show_keys()

    def _bindings_changed(self, screen: Screen) -> None:
        # Several changes in one refresh (focus and screen stack) redraw once.
        if screen is not self.screen or self._redraw_pending:
            return
        self._redraw_pending = True
        self.call_after_refresh(self.show_keys)

    def key_entries(self) -> list[tuple[str, str]]:
        """Return (key, description) for each shown and enabled action, one entry per action, in binding order."""
        entries: list[tuple[str, str]] = []
        seen: set[str] = set()
        for _node, binding, enabled, _tooltip in self.screen.active_bindings.values():
            if not binding.show or not enabled or binding.action in seen:
                continue
            seen.add(binding.action)
            entries.append((self.app.get_key_display(binding), binding.description))
        return entries

    def show_keys(self) -> None:
        """Draw the line: each key and its description, and the palette key at the right edge."""
        self._redraw_pending = False
        if not self.is_attached:
            # A redraw queued just before the screen closed.
            return
        key_style = self.get_component_rich_style("keybar--key")
        description_style = self.get_component_rich_style("keybar--description")

        line = Text(no_wrap=True, overflow="ellipsis")
        for key, description in self.key_entries():
            line.append(f" {key} ", key_style)
            line.append(f"{description} ", description_style)

        if self.app.ENABLE_COMMAND_PALETTE:
            room = self.size.width - line.cell_len - len(PALETTE_TEXT) - 1
            if room >= 1:
                line.append(" " * room)
                line.append(PALETTE_TEXT, description_style)
        self.update(line)
