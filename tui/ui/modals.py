"""The shared modals: confirmation, error, masked secret entry and the show-once view.

Every modal has a letter key for each way out, because a lone Escape can be
lost over slow SSH and tmux links. Enter never confirms an action that spends
a try or changes a token: it moves from the input to the buttons, and a named
letter (for example `s` for send) confirms.
"""

from __future__ import annotations

from collections.abc import Callable

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from tui.secret import Secret

SecretValidator = Callable[[Secret], str | None]


class ConfirmModal(ModalScreen[bool]):
    """Ask to confirm an action; dismiss with True only on the confirm key.

    `typed_confirmation`, when set, must be typed exactly before the confirm
    key works (destructive actions use the last characters of the token ID).
    """

    BINDINGS = [
        Binding("n,escape", "cancel", "Cancel", id="confirm-cancel"),
    ]

    def __init__(self, title: str, body: str, *, confirm_key: str = "s", confirm_label: str = "Send",
                 typed_confirmation: str | None = None, id: str | None = None) -> None:
        super().__init__(id=id)
        self.title_text = title
        self.body = body
        self.confirm_key = confirm_key
        self.confirm_label = confirm_label
        self.typed_confirmation = typed_confirmation
        self._bindings.bind(confirm_key, "confirm", confirm_label)

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-dialog"):
            yield Static(self.body, classes="modal-body", markup=False)
            if self.typed_confirmation is not None:
                yield Static(f"Type {self.typed_confirmation!r} to enable {self.confirm_label}:", classes="modal-prompt", markup=False)
                yield Input(id="typed-confirmation", classes="modal-input")
            yield Static("", id="modal-error", classes="modal-error", markup=False)
            yield Static(self._keys_text(), classes="modal-keys", markup=False)

    def on_mount(self) -> None:
        self.query_one(".modal-dialog").border_title = self.title_text
        if self.typed_confirmation is not None:
            self.query_one("#typed-confirmation", Input).focus()

    def _keys_text(self) -> str:
        return f"[{self.confirm_key}] {self.confirm_label}    [n] Cancel"

    @on(Input.Submitted, "#typed-confirmation")
    def _typed_submitted(self) -> None:
        # Enter leaves the field so the confirm letter reaches the screen.
        self.set_focus(None)

    def action_confirm(self) -> None:
        """Dismiss with True when the typed confirmation (if any) matches."""
        if self.typed_confirmation is not None:
            typed = self.query_one("#typed-confirmation", Input).value.strip()
            if typed != self.typed_confirmation:
                self.query_one("#modal-error", Static).update(
                    f"The confirmation does not match: type {self.typed_confirmation!r}, press Enter, then {self.confirm_key}.")
                return
        self.dismiss(True)

    def action_cancel(self) -> None:
        """Dismiss with False."""
        self.dismiss(False)


class ErrorModal(ModalScreen[None]):
    """The one way errors that stop an action are shown: what failed and what to do."""

    BINDINGS = [
        Binding("o,q,escape,enter", "close", "OK", id="error-close"),
    ]

    def __init__(self, title: str, message: str) -> None:
        super().__init__()
        self.title_text = title
        self.message = message

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-dialog modal-error-dialog"):
            yield Static(f"ERROR: {self.message}", classes="modal-body", markup=False)
            yield Static("[o] OK", classes="modal-keys", markup=False)

    def on_mount(self) -> None:
        self.query_one(".modal-dialog").border_title = self.title_text

    def action_close(self) -> None:
        """Close the error."""
        self.dismiss(None)


class SecretPromptModal(ModalScreen[Secret | None]):
    """Masked entry of a PIN, PUK or key; returns a `Secret`, or None when cancelled.

    `restrict` is a regular expression the whole value must match while typing
    (Textual rejects a keystroke or paste that would break it, so stray escape
    sequences cannot become part of a PIN). `validate` returns an error text or
    None; the value is sent only after it passes and the technician presses
    the confirm key. The screen shows how many characters were typed, never
    the characters.
    """

    BINDINGS = [
        Binding("n,escape", "cancel", "Cancel", id="secret-cancel"),
    ]

    def __init__(self, title: str, body: str, *, kind: str, restrict: str | None = None, max_length: int = 0,
                 validate: SecretValidator | None = None, confirm_key: str = "s", confirm_label: str = "Send") -> None:
        super().__init__()
        self.title_text = title
        self.body = body
        self.kind = kind
        self.restrict = restrict
        self.max_length = max_length
        self.validate_secret = validate
        self.confirm_key = confirm_key
        self.confirm_label = confirm_label
        self._accepted: Secret | None = None
        self._bindings.bind(confirm_key, "confirm", confirm_label)

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-dialog"):
            yield Static(self.body, classes="modal-body", markup=False)
            yield Input(password=True, restrict=self.restrict, max_length=self.max_length, id="secret-input",
                        classes="modal-input", placeholder=f"{self.kind} (hidden)")
            yield Static("0 characters typed", id="secret-length", classes="modal-prompt", markup=False)
            yield Static("", id="modal-error", classes="modal-error", markup=False)
            with Horizontal(classes="modal-keys-row"):
                yield Static(f"Enter: check    then [{self.confirm_key}] {self.confirm_label}    [n] Cancel (Escape)",
                             classes="modal-keys", markup=False)

    def on_mount(self) -> None:
        self.query_one(".modal-dialog").border_title = self.title_text
        self.query_one("#secret-input", Input).focus()

    @on(Input.Changed, "#secret-input")
    def _changed(self, event: Input.Changed) -> None:
        self._accepted = None
        count = len(event.value)
        self.query_one("#secret-length", Static).update(f"{count} character{'s' if count != 1 else ''} typed")
        self.query_one("#modal-error", Static).update("")

    @on(Input.Submitted, "#secret-input")
    def _submitted(self, event: Input.Submitted) -> None:
        secret = Secret(event.value, self.kind)
        error = self.validate_secret(secret) if self.validate_secret else None
        if error:
            self.query_one("#modal-error", Static).update(f"Not sent: {error}")
            return
        self._accepted = secret
        self.query_one("#modal-error", Static).update(f"Checked. Press {self.confirm_key} to {self.confirm_label.lower()}, n to cancel.")
        self.set_focus(None)  # the confirm letter now reaches the screen instead of the input

    def action_confirm(self) -> None:
        """Dismiss with the checked secret; before Enter has checked it, say so."""
        if self._accepted is None:
            self.query_one("#modal-error", Static).update("Press Enter in the field first to check the value.")
            return
        secret, self._accepted = self._accepted, None
        self.query_one("#secret-input", Input).value = ""
        self.dismiss(secret)

    def action_cancel(self) -> None:
        """Dismiss with None and clear the field."""
        self._accepted = None
        self.query_one("#secret-input", Input).value = ""
        self.dismiss(None)


class ShowOnceModal(ModalScreen[None]):
    """Show a newly set secret once, so the technician can pass it on; it is never shown again.

    The value is escrowed before this modal opens; the modal says where.
    """

    # Only the letter closes it: an Escape pressed out of habit (or a stray one
    # from a slow SSH link) must not throw away a value that is never shown again.
    BINDINGS = [
        Binding("d", "close", "Done", id="show-once-done"),
        Binding("escape", "remind", "Done is d", show=False, id="show-once-escape"),
    ]

    def __init__(self, title: str, label: str, secret: Secret, note: str) -> None:
        super().__init__()
        self.title_text = title
        self.label = label
        self._secret = secret
        self.note = note

    def compose(self) -> ComposeResult:
        value = self._secret.reveal()
        shown = value if isinstance(value, str) else value.hex().upper()
        with Vertical(classes="modal-dialog"):
            yield Static(f"{self.label}: {_group(shown)}", classes="modal-secret", markup=False)
            yield Static(self.note, classes="modal-body", markup=False)
            yield Static("This value is not shown again. [d] Done", classes="modal-keys", markup=False)

    def on_mount(self) -> None:
        self.query_one(".modal-dialog").border_title = self.title_text

    def action_remind(self) -> None:
        """Keep the value on screen and say which key closes it."""
        self.notify("This value is not shown again. Pass it on, then press d to close.", severity="warning")

    def action_close(self) -> None:
        """Close and drop the reference to the value."""
        self._secret = Secret("", self._secret.kind)
        self.dismiss(None)


def _group(text: str) -> str:
    # Groups of four are easier to read out over the phone.
    if len(text) <= 8:
        return text
    return " ".join(text[i:i + 4] for i in range(0, len(text), 4))


DIGITS_ONLY = r"[0-9]*"
HEX_ONLY = r"[0-9A-Fa-f :]*"
PRINTABLE_ASCII = r"[ -~]*"

__all__ = [
    "ConfirmModal", "ErrorModal", "SecretPromptModal", "ShowOnceModal",
    "DIGITS_ONLY", "HEX_ONLY", "PRINTABLE_ASCII",
]
