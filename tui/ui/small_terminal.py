"""Below 80x24 a size notice covers every screen, and only quit and resizing work.

The main screen replaces its own panels by a size notice. A screen opened
over it (FIDO, OTP, recovery, ticket, help, a modal) does not. After the
terminal shrank, such a screen stayed clipped while its keys still ran, so
a confirm key could send a command whose text the technician cannot read.
`SmallTerminalGuard`, a mixin of `KeytriageApp`, covers such a screen with
the notice and drops key, mouse and paste input while the terminal is below
80x24. `q` and ctrl+q still quit through the app's quit action, which waits
for a write in flight. Work already running goes on, and a screen it opens
meanwhile is covered too. Enlarging the terminal removes the covers, and
each screen shows again with its focus where it was.
"""

from __future__ import annotations

from textual import events
from textual.geometry import Size
from textual.widgets import Static

from tui.ui.screens import MIN_HEIGHT, MIN_WIDTH

# Keys that still work below 80x24: both quit the app through its quit action.
QUIT_KEYS = frozenset({"q", "ctrl+q"})


def too_small(size: Size) -> bool:
    """True when `size` is below the 80x24 the screens are designed for."""
    return size.width < MIN_WIDTH or size.height < MIN_HEIGHT


def size_notice(size: Size) -> str:
    """Word the size notice, e.g. "keytriage needs 80x24, has 60x20. ..."."""
    return (f"keytriage needs {MIN_WIDTH}x{MIN_HEIGHT}, has {size.width}x{size.height}. "
            "Enlarge the terminal, or press q to quit.")


class SizeCover(Static):
    """The size notice drawn over a whole screen other than the main one."""

    DEFAULT_CSS = """
    SizeCover {
        overlay: screen;
        position: absolute;
        offset: 0 0;
        width: 100%;
        height: 100%;
        background: $background;
        content-align: center middle;
        text-align: center;
    }
    """


class SmallTerminalGuard:
    """Mixin of `KeytriageApp`: below 80x24, cover the active screen and drop all input but quit.

    It must precede `App` in the class's bases, because its `on_event`
    filters input before `App.on_event` dispatches it.
    """

    def feature_ready(self) -> None:
        """Cover each screen that becomes active while the terminal is too small."""
        self.screen_change_signal.subscribe(self, lambda _screen: self.update_size_covers(self.size))

    def on_resize(self, event: events.Resize) -> None:
        # This handler runs before `App._on_resize` records the size, so the
        # event's size is the current one.
        self.update_size_covers(event.size)

    def update_size_covers(self, size: Size) -> None:
        """Cover the active screen (unless it is the main screen) when `size` is too small; else remove every cover."""
        stack = self.screen_stack
        if not stack:
            return
        active = stack[-1]
        if too_small(size) and active is not stack[0]:
            covers = active.query(SizeCover)
            if covers:
                covers.first().update(size_notice(size))
            else:
                active.mount(SizeCover(size_notice(size)))
            return

        # An installed screen (help) keeps its widgets while not shown, so a
        # cover from its last showing is removed when it is pushed again.
        for screen in stack:
            screen.query(SizeCover).remove()

    async def on_event(self, event: events.Event) -> None:
        """Drop key, mouse and paste input below 80x24, except the quit keys; pass every other event on."""
        is_input = isinstance(event, (events.Key, events.MouseEvent, events.Paste))
        if is_input and not event.is_forwarded and too_small(self.size):
            if isinstance(event, events.Key) and event.key in QUIT_KEYS:
                await self.run_action("quit")
            return
        await super().on_event(event)
