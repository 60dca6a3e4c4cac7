"""The table of main-screen actions: one source for key bindings, help and the command palette.

Every action has a letter key, so Escape and function keys are never the only
way to reach it (Escape can be lost over slow SSH and tmux links). Each
binding has an id, so a site keymap can rebind it without code changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding


# The actions the main screen's key bar shows. At 80 columns the bar has room
# for about seven keys next to the palette key, and the rest would be cut off,
# where help and quit used to end up. The runbook panel names the key
# of the next step, and help and the palette (ctrl+p) list every action.
FOOTER_ACTION_IDS = frozenset({"rescan", "triage", "verify", "fido", "ticket", "help", "quit"})


@dataclass(frozen=True)
class ActionSpec:
    """One action: its binding id, Textual action string, keys, footer label and help text."""

    id: str
    action: str
    keys: str
    label: str
    help: str
    show: bool = True
    key_display: str | None = None

    def binding(self) -> Binding:
        """Return the Textual binding for this action; the footer shows it only if it is in `FOOTER_ACTION_IDS`."""
        show = self.show and self.id in FOOTER_ACTION_IDS
        return Binding(self.keys, self.action, self.label, show=show, key_display=self.key_display, id=self.id)


MAIN_ACTIONS: tuple[ActionSpec, ...] = (
    ActionSpec("rescan", "rescan", "r", "Rescan",
               "Read-only rescan of every reader; spends no PIN or PUK try."),
    ActionSpec("next-token", "next_token", "j", "Next token",
               "Select the next token (the down arrow does this in the list).", show=False),
    ActionSpec("previous-token", "previous_token", "k", "Previous token",
               "Select the previous token (the up arrow does this in the list).", show=False),
    ActionSpec("help", "help", "question_mark,f1", "Help",
               "Show this list of keys.", key_display="?"),
    ActionSpec("quit", "quit", "q", "Quit", "Quit keytriage."),
)

# Feature modules, each with an ACTIONS tuple and a mixin of the app.
FEATURE_MODULES = (
    "tui.ui.feature_recovery",
    "tui.ui.feature_escrow",
    "tui.ui.feature_fido",
    "tui.ui.feature_otp",
    "tui.ui.feature_ticket",
)


def all_actions() -> tuple[ActionSpec, ...]:
    """Return the core actions followed by every feature's actions, help and quit last."""
    import importlib

    core = [spec for spec in MAIN_ACTIONS if spec.id not in ("help", "quit")]
    features = [spec for module in FEATURE_MODULES for spec in importlib.import_module(module).ACTIONS]
    tail = [spec for spec in MAIN_ACTIONS if spec.id in ("help", "quit")]
    return tuple(core + features + tail)


# Number keys pick a token by the index shown in the Tokens panel.
TOKEN_DIGIT_BINDINGS: list[Binding] = [
    Binding(str(digit), f"select_token({digit})", f"Token {digit}", show=False, id=f"select-token-{digit}")
    for digit in range(10)
]


def key_text(spec: ActionSpec) -> str:
    """Return the keys of `spec` as the help screen shows them, e.g. "? / f1"."""
    names = {"question_mark": "?"}
    return " / ".join(names.get(key, key) for key in spec.keys.split(","))
