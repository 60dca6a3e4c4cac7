"""Below 80x24 a size notice covers every screen, and only quit and resizing work.

The main screen replaces its own panels by a size notice. A screen opened
over it (FIDO, OTP, recovery, ticket, help, a modal) does not. After the
terminal shrank, such a screen stayed clipped while its keys still ran, so
a confirm key could send a command whose text the technician cannot read.
`SmallTerminalGuard`, a mixin of `KeytriageApp`, covers such a screen with
the notice and drops key, mouse and paste input while the terminal is below
80x24. `q` and ctrl+q still quit through the app's quit action, which waits
for a write in flight. When quitting needs an answer first (a FIDO reset
under way, an escrow value NOT CONFIRMED), the quit action opens a question
that is covered like any other screen, so the notice on that cover asks for
a terminal of 80x24 to answer it. Work already running goes on, and a
screen it opens meanwhile is covered too. Enlarging the terminal removes the
covers, and each screen shows again with its focus where it was.
"""

from __future__ import annotations

from textual import events
from textual.geometry import Size
from textual.screen import Screen
from textual.widgets import Static

from tui.ui.screens import MIN_HEIGHT, MIN_WIDTH

# Keys that still work below 80x24: both quit the app through its quit action.
QUIT_KEYS = frozenset({"q", "ctrl+q"})


def too_small(size: Size) -> bool:
    """True when `size` is below the 80x24 the screens are designed for."""
    return size.width < MIN_WIDTH or size.height < MIN_HEIGHT


def size_notice(size: Size, quit_question: bool = False) -> str:
    """Word the size notice, e.g. "keytriage needs 80x24, has 60x20. ...".

    With `quit_question`, the covered screen is the question the quit action
    opened, so the notice asks for a larger terminal instead of offering q.
    """
    needs = f"keytriage needs {MIN_WIDTH}x{MIN_HEIGHT}, has {size.width}x{size.height}."
    if quit_question:
        return f"{needs} Quitting needs an answer: enlarge the terminal to {MIN_WIDTH}x{MIN_HEIGHT} to answer it."
    return f"{needs} Enlarge the terminal, or press q to quit."


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

    # The screen the quit action opened below 80x24 to ask before quitting, None before that.
    _quit_question: Screen | None = None

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
            notice = size_notice(size, quit_question=active is self._quit_question)
            covers = active.query(SizeCover)
            if covers:
                covers.first().update(notice)
            else:
                active.mount(SizeCover(notice))
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
                await self._quit_while_too_small()
            return
        await super().on_event(event)

    async def _quit_while_too_small(self) -> None:
        """Run the quit action, and mark the question it opens, so the notice over it explains why nothing quit."""
        stack = self.screen_stack
        before = stack[-1] if stack else None
        # The question is already open: a second quit would stack a second question under the cover.
        if before is not None and before is self._quit_question:
            return

        await self.run_action("quit")

        stack = self.screen_stack
        after = stack[-1] if stack else None
        if after is not None and after is not before:
            self._quit_question = after
            self.update_size_covers(self.size)
