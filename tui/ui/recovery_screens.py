"""Modals of the recovery actions that the shared modals do not cover.

`ResultModal` shows an outcome that is not an error, `OverrideModal` asks for
the typed override of a refused verify, `SourceModal` chooses where a PUK or
admin key comes from and how the new PIN is made, `NotConfirmedModal` keeps a
value on screen while its escrow record is missing, and `ReprovisionWizard`
collects what Step 10 needs before anything is sent. Like the shared modals,
each has a letter key for every way out and never confirms on Enter. Their
choices draw "(*)" and "[x]" for the chosen answer and the ticked box, so the
state reads the same with NO_COLOR.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, RadioSet, Static

from tui.secret import Secret
from tui.ui.widgets import MarkedCheckbox, MarkedRadioButton

OVERRIDE_WORD = "OVERRIDE"
OVERRIDE_REASON_MIN = 8
OVERRIDE_REASON_MAX = 200


class ResultModal(ModalScreen[None]):
    """Show the outcome of an action in words; closes with `o`, Enter or Escape."""

    BINDINGS = [
        Binding("o,escape,enter", "close", "OK", id="result-close"),
    ]

    def __init__(self, title: str, text: str) -> None:
        super().__init__()
        self.title_text = title
        self.text = text

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-dialog"):
            with VerticalScroll(classes="recovery-scroll"):
                yield Static(self.text, classes="modal-body", id="result-text", markup=False)
            yield Static("[o] OK", classes="modal-keys", markup=False)

    def on_mount(self) -> None:
        self.query_one(".modal-dialog").border_title = self.title_text

    def action_close(self) -> None:
        """Close the result."""
        self.dismiss(None)


class OverrideModal(ModalScreen[str | None]):
    """Ask for the typed word OVERRIDE and a reason; dismiss with the reason, or None on `n`."""

    BINDINGS = [
        Binding("s", "confirm", "Override", id="override-confirm"),
        Binding("n,escape", "cancel", "Cancel", id="override-cancel"),
    ]

    def __init__(self, title: str, body: str) -> None:
        super().__init__()
        self.title_text = title
        self.body = body

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-dialog"):
            yield Static(self.body, classes="modal-body", markup=False)
            yield Static(f"Type {OVERRIDE_WORD} to override:", classes="modal-prompt", markup=False)
            yield Input(id="override-word", classes="modal-input", max_length=len(OVERRIDE_WORD), restrict=r"[A-Za-z]*")
            yield Static("Reason (recorded in the audit trail):", classes="modal-prompt", markup=False)
            yield Input(id="override-reason", max_length=OVERRIDE_REASON_MAX, restrict=r"[ -~]*")
            yield Static("", id="modal-error", classes="modal-error", markup=False)
            yield Static("Enter: next field    then [s] Override    [n] Cancel", classes="modal-keys", markup=False)

    def on_mount(self) -> None:
        self.query_one(".modal-dialog").border_title = self.title_text
        self.query_one("#override-word", Input).focus()

    @on(Input.Submitted, "#override-word")
    def _word_submitted(self) -> None:
        self.query_one("#override-reason", Input).focus()

    @on(Input.Submitted, "#override-reason")
    def _reason_submitted(self) -> None:
        self.set_focus(None)

    def action_confirm(self) -> None:
        """Dismiss with the reason once the word matches and the reason is long enough."""
        word = self.query_one("#override-word", Input).value.strip()
        reason = self.query_one("#override-reason", Input).value.strip()
        error = self.query_one("#modal-error", Static)
        if word != OVERRIDE_WORD:
            error.update(f"Type {OVERRIDE_WORD} exactly in the first field.")
            return
        if len(reason) < OVERRIDE_REASON_MIN:
            error.update(f"Give a reason of at least {OVERRIDE_REASON_MIN} characters.")
            return
        self.dismiss(reason)

    def action_cancel(self) -> None:
        """Dismiss with None: nothing is sent."""
        self.dismiss(None)


@dataclass(frozen=True)
class SourceOption:
    """One way to get the PUK or admin key: its key, its label, and why it is unavailable (None when it is available)."""

    key: str
    label: str
    unavailable: str | None = None


@dataclass(frozen=True)
class SourceChoice:
    """The choices of a `SourceModal`: where the secret comes from and whether the new PIN is generated."""

    source: str
    generate_pin: bool


class SourceModal(ModalScreen[SourceChoice | None]):
    """Choose the PUK or admin key source and how the new PIN is made; nothing is sent yet.

    Options that cannot be used are listed, disabled, with the reason, so
    the technician sees what the escrow and the manifest hold.
    """

    BINDINGS = [
        Binding("s", "confirm", "Continue", id="source-continue"),
        Binding("n,escape", "cancel", "Cancel", id="source-cancel"),
    ]

    def __init__(self, title: str, body: str, options: list[SourceOption], *, question: str) -> None:
        super().__init__()
        self.title_text = title
        self.body = body
        self.options = options
        self.question = question

    def compose(self) -> ComposeResult:
        usable = [option for option in self.options if option.unavailable is None]
        first = usable[0].key if usable else None
        with Vertical(classes="modal-dialog"):
            yield Static(self.body, classes="modal-body", markup=False)
            yield Static(self.question, classes="modal-prompt", markup=False)
            buttons = []
            for option in self.options:
                label = option.label if option.unavailable is None else f"{option.label} (unavailable: {option.unavailable})"
                buttons.append(MarkedRadioButton(label, value=option.key == first, disabled=option.unavailable is not None))
            yield RadioSet(*buttons, id="source-set", compact=True)
            yield Static("New PIN:", classes="modal-prompt", markup=False)
            yield RadioSet(MarkedRadioButton("Generate a random PIN (recommended)", value=True),
                           MarkedRadioButton("Type the new PIN"), id="pin-set", compact=True)
            yield Static("", id="modal-error", classes="modal-error", markup=False)
            yield Static("Arrows, Enter/Space choose, Tab next list   [s] Continue   [n] Cancel",
                         classes="modal-keys", markup=False)

    def on_mount(self) -> None:
        self.query_one(".modal-dialog").border_title = self.title_text
        self.query_one("#source-set", RadioSet).focus()

    def action_confirm(self) -> None:
        """Dismiss with the chosen source and PIN mode."""
        index = self.query_one("#source-set", RadioSet).pressed_index
        if not 0 <= index < len(self.options) or self.options[index].unavailable is not None:
            self.query_one("#modal-error", Static).update("Choose an available source first (arrows, then Enter).")
            return
        generate = self.query_one("#pin-set", RadioSet).pressed_index != 1
        self.dismiss(SourceChoice(self.options[index].key, generate))

    def action_cancel(self) -> None:
        """Dismiss with None: nothing is sent."""
        self.dismiss(None)


class NotConfirmedModal(ModalScreen[str]):
    """Keep a value on screen while its escrow record is NOT CONFIRMED.

    The token may already contain the value and Vault does not record it,
    so it stays visible until the record is written (`r` retries it) or the
    technician has recorded it elsewhere and closes with `d`.
    Dismisses with "retry" or "done".
    """

    BINDINGS = [
        Binding("r", "retry", "Retry record", id="not-confirmed-retry"),
        Binding("d", "done", "Done", id="not-confirmed-done"),
    ]

    def __init__(self, title: str, label: str, secret: Secret, message: str) -> None:
        super().__init__()
        self.title_text = title
        self.label = label
        self._secret = secret
        self.message = message

    def compose(self) -> ComposeResult:
        value = self._secret.reveal()
        shown = value if isinstance(value, str) else value.hex().upper()
        with Vertical(classes="modal-dialog modal-error-dialog"):
            yield Static(f"{self.label}: {shown}", classes="modal-secret", markup=False)
            yield Static(f"NOT CONFIRMED: {self.message}", classes="modal-body", markup=False)
            yield Static("[r] Retry the escrow record    [d] Done (value recorded elsewhere)", classes="modal-keys", markup=False)

    def on_mount(self) -> None:
        self.query_one(".modal-dialog").border_title = self.title_text

    def action_retry(self) -> None:
        """Dismiss so the caller writes the escrow record again."""
        self.dismiss("retry")

    def action_done(self) -> None:
        """Dismiss and drop the reference to the value."""
        self._secret = Secret("", self._secret.kind)
        self.dismiss("done")


@dataclass(frozen=True)
class WizardChoice:
    """What the reprovision wizard collected: the typed confirmation and the chosen reset authorisation."""

    confirmation: str
    user_accepted: bool
    auth: object | None  # a tui.recovery.reprovision.ResetAuth, None when the method needs none


class ReprovisionWizard(ModalScreen[WizardChoice | None]):
    """Step 10: list what is lost, record that the user accepts it, and take the typed confirmation.

    Nothing is sent from here. `s` dismisses with the choice only when the
    acceptance box is ticked and the last characters of the token ID match.
    """

    DEFAULT_CSS = """
    ReprovisionWizard .recovery-scroll {
        height: auto;
        max-height: 8;
    }
    ReprovisionWizard MarkedCheckbox {
        width: 100%;
    }
    """

    BINDINGS = [
        Binding("s", "confirm", "Wipe and reprovision", id="reprovision-confirm"),
        Binding("n,escape", "cancel", "Cancel", id="reprovision-cancel"),
    ]

    def __init__(self, title: str, body: str, confirmation: str, auth_options: list[tuple[object, str]]) -> None:
        super().__init__()
        self.title_text = title
        self.body = body
        self.confirmation = confirmation
        self.auth_options = auth_options

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-dialog"):
            with VerticalScroll(classes="recovery-scroll"):
                yield Static(self.body, classes="modal-body", id="wizard-body", markup=False)
            if self.auth_options:
                yield RadioSet(*(MarkedRadioButton(label, value=index == 0) for index, (_, label) in enumerate(self.auth_options)),
                               id="auth-set", compact=True)
            yield MarkedCheckbox("The user accepts that all of this is lost", id="user-accepts", compact=True)
            yield Static(f"Type the last {len(self.confirmation)} characters of the token ID:", classes="modal-prompt", markup=False)
            yield Input(id="typed-confirmation", classes="modal-input", max_length=len(self.confirmation) + 4,
                        restrict=r"[ -~]*", compact=True, placeholder="last characters of the token ID")
            yield Static("", id="modal-error", classes="modal-error", markup=False)
            yield Static("Space ticks, Tab next field   [s] Wipe and reprovision   [n] Cancel",
                         classes="modal-keys", markup=False)

    def on_mount(self) -> None:
        self.query_one(".modal-dialog").border_title = self.title_text
        self.query_one("#user-accepts", MarkedCheckbox).focus()

    @on(Input.Submitted, "#typed-confirmation")
    def _typed_submitted(self) -> None:
        self.set_focus(None)

    def action_confirm(self) -> None:
        """Dismiss with the choice when the box is ticked and the confirmation matches."""
        error = self.query_one("#modal-error", Static)
        if not self.query_one("#user-accepts", MarkedCheckbox).value:
            error.update("Tick the box first (Space): the user must accept the loss.")
            return
        typed = self.query_one("#typed-confirmation", Input).value.strip()
        if typed != self.confirmation:
            error.update(f"The confirmation does not match the last {len(self.confirmation)} characters of the token ID. Nothing was sent.")
            return
        auth = None
        if self.auth_options:
            index = self.query_one("#auth-set", RadioSet).pressed_index
            auth = self.auth_options[max(index, 0)][0]
        self.dismiss(WizardChoice(typed, True, auth))

    def action_cancel(self) -> None:
        """Dismiss with None: nothing is sent."""
        self.dismiss(None)
