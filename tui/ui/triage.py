"""Step 0 triage: what the user was logging in to, what they saw, the tap action and the ticket number.

The answers only steer where the technician looks first. They never hold
back the read-only scan, which runs whatever is answered here. The screen is
keyboard-only: arrows and Enter or Space choose in a list, Tab moves between
fields, and Enter leaves a text field (from the notes to the ticket number,
from the ticket number to no field). Outside a text field `s` saves and `n` cancels.
In a text field those letters are text, so ctrl+s saves and Escape cancels
from anywhere. The chosen answer of each list shows as "(*)" and the others
as "( )", so the choice reads the same with NO_COLOR and on 16-colour
terminals.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import RadioSet, Static

from tui.runbook import SAW_CHOICES as RUNBOOK_SAW
from tui.runbook import TAP_CHOICES as RUNBOOK_TAP
from tui.runbook import TRYING_CHOICES as RUNBOOK_TRYING
from tui.session import TriageAnswers
from tui.ui.widgets import FieldInput, MarkedRadioButton

CANT_SAY = "cant-say"

TICKET_MAX_LENGTH = 64
NOTES_MAX_LENGTH = 300

# The key line of the dialog. In a text field `s` and `n` are letters, so the
# line explains how to save and cancel from there.
TRIAGE_KEYS = ("Arrows, Enter/Space choose   Tab next field   [s] Save   [n] Cancel\n"
               "In a text field: Enter, then s to save, or ctrl+s   Esc cancels")


@dataclass(frozen=True)
class Choice:
    """One answer of a triage question: the key stored in `TriageAnswers` and the label shown."""

    key: str
    label: str


# The keys are the runbook engine's (`tui.runbook.TRYING_CHOICES`); the labels
# are shortened to fit two columns at 80x24.
_SHORT_TRYING_LABELS = {
    "smart-card": "Smart card / Windows login",
    "passkey": "Passkey login",
    "vpn-otp": "VPN with hardware OTP",
    "vpn-cert": "VPN with cert-based auth",
    "tap": "Tap action / single touch code",
    "other-system": "Card login ok, VPN/other fails",
    CANT_SAY: "Can't say",
}
TRYING_CHOICES: tuple[Choice, ...] = tuple(Choice(key, _SHORT_TRYING_LABELS.get(key, label))
                                           for key, label in RUNBOOK_TRYING.items())
SAW_CHOICES: tuple[Choice, ...] = tuple(Choice(key, "Can't say" if key == CANT_SAY else label)
                                        for key, label in RUNBOOK_SAW.items())
TAP_CHOICES: tuple[Choice, ...] = tuple(Choice(key, label) for key, label in RUNBOOK_TAP.items())


def choice_for(choices: tuple[Choice, ...], key: str | None) -> Choice | None:
    """Return the choice with `key`, None for None or an unknown key."""
    return next((choice for choice in choices if choice.key == key), None)


def tap_question_relevant(trying: str | None, saw: str | None) -> bool:
    """True when the tap-action question helps: a tap code, or a touch that did nothing."""
    return trying == "tap" or saw == "touch-nothing"


def validate_ticket(text: str) -> str | None:
    """Return why `text` is not a usable ticket number, None when it is (empty means not known yet)."""
    if len(text) > TICKET_MAX_LENGTH:
        return f"the ticket number has {len(text)} characters; the maximum is {TICKET_MAX_LENGTH}"
    bad = [char for char in text if not (" " <= char <= "~")]
    if bad:
        return f"the ticket number contains {len(bad)} non-printable or non-ASCII character(s); type it again"
    return None


def validate_notes(text: str) -> str | None:
    """Return why the free-text notes are not accepted, None when they are."""
    if len(text) > NOTES_MAX_LENGTH:
        return f"the notes have {len(text)} characters; the maximum is {NOTES_MAX_LENGTH}"
    if not text.isprintable():
        return "the notes contain control characters (a stray escape sequence?); clear the field and type them again"
    return None


def triage_summary(answers: TriageAnswers) -> str:
    """Word the answers in one line for the activity log and the session events."""
    trying = choice_for(TRYING_CHOICES, answers.trying)
    parts = [trying.label if trying else "not asked"]
    saw = choice_for(SAW_CHOICES, answers.saw)
    if saw is not None and saw.key != CANT_SAY:
        parts.append(f'saw "{saw.label}"')
    tap = choice_for(TAP_CHOICES, answers.tap)
    if tap is not None:
        parts.append(f'tap: "{tap.label}"')
    return "; ".join(parts)


class TriageScreen(ModalScreen[TriageAnswers | None]):
    """Step 0: ask the user what they were doing; dismiss with the answers on `s` or ctrl+s, None on `n` or Escape.

    Saving never sends anything to a token.
    """

    DEFAULT_CSS = """
    TriageScreen .triage-dialog {
        width: 78;
        max-height: 24;
    }
    TriageScreen .triage-question {
        text-style: bold;
    }
    TriageScreen #triage-trying {
        layout: grid;
        grid-size: 2;
        grid-columns: 1fr 1fr;
        height: auto;
        width: 100%;
    }
    TriageScreen RadioSet {
        width: 100%;
    }
    TriageScreen .triage-row {
        height: 1;
    }
    TriageScreen .triage-row Static {
        width: 10;
    }
    TriageScreen .triage-row Input {
        width: 1fr;
    }
    TriageScreen #triage-tap-box {
        height: auto;
    }
    """

    # ctrl+s is a priority binding, so it saves with the focus in a text
    # field, where `s` is a letter of the ticket number or the notes.
    BINDINGS = [
        Binding("s", "save", "Save", id="triage-save"),
        Binding("ctrl+s", "save", "Save", priority=True, id="triage-save-anywhere"),
        Binding("n,escape", "cancel", "Cancel", id="triage-cancel"),
    ]

    def __init__(self, answers: TriageAnswers | None = None) -> None:
        super().__init__()
        self.initial = answers or TriageAnswers()

    def compose(self) -> ComposeResult:
        initial = self.initial
        with Vertical(classes="modal-dialog triage-dialog"):
            yield Static("What was the user trying to log in to?", classes="triage-question", markup=False)
            yield _radio_set("triage-trying", TRYING_CHOICES, initial.trying)
            yield Static("What exactly did they see?", classes="triage-question", markup=False)
            yield _radio_set("triage-saw", SAW_CHOICES, initial.saw)
            with Vertical(id="triage-tap-box"):
                yield Static("What happens when they tap the key?", classes="triage-question", markup=False)
                yield _radio_set("triage-tap", TAP_CHOICES, initial.tap)
            with Horizontal(classes="triage-row"):
                yield Static("Notes:", markup=False)
                yield FieldInput(initial.free_text, id="triage-notes", compact=True, max_length=NOTES_MAX_LENGTH,
                                 placeholder="free text, no PIN", enter_focus="#triage-ticket")
            with Horizontal(classes="triage-row"):
                yield Static("Ticket:", markup=False)
                yield FieldInput(initial.ticket, id="triage-ticket", compact=True, max_length=TICKET_MAX_LENGTH,
                                 restrict=r"[ -~]*", placeholder="ticket number, e.g. INC-4711")
            yield Static("", id="modal-error", classes="modal-error", markup=False)
            yield Static(TRIAGE_KEYS, classes="modal-keys", markup=False)

    def on_mount(self) -> None:
        self.query_one(".modal-dialog").border_title = "Step 0: what was the user doing?"
        self._show_tap_question()
        self.query_one("#triage-trying", RadioSet).focus()

    # --- reading the answers -------------------------------------------------

    def _pressed_key(self, selector: str, choices: tuple[Choice, ...]) -> str | None:
        index = self.query_one(selector, RadioSet).pressed_index
        return choices[index].key if 0 <= index < len(choices) else None

    def answers(self) -> TriageAnswers:
        """Return the answers as currently entered (the tap answer only when its question is shown)."""
        trying = self._pressed_key("#triage-trying", TRYING_CHOICES)
        saw = self._pressed_key("#triage-saw", SAW_CHOICES)
        tap = self._pressed_key("#triage-tap", TAP_CHOICES) if tap_question_relevant(trying, saw) else None
        return replace(
            self.initial,
            trying=trying,
            saw=saw,
            tap=tap,
            free_text=self.query_one("#triage-notes", FieldInput).value.strip(),
            ticket=self.query_one("#triage-ticket", FieldInput).value.strip(),
        )

    def _show_tap_question(self) -> None:
        trying = self._pressed_key("#triage-trying", TRYING_CHOICES)
        saw = self._pressed_key("#triage-saw", SAW_CHOICES)
        self.query_one("#triage-tap-box").display = tap_question_relevant(trying, saw)

    @on(RadioSet.Changed)
    def _choice_changed(self) -> None:
        self._show_tap_question()
        self.query_one("#modal-error", Static).update("")

    # --- keys ----------------------------------------------------------------

    def action_save(self) -> None:
        """Dismiss with the answers when the ticket number and notes pass their checks."""
        answers = self.answers()
        error = validate_ticket(answers.ticket) or validate_notes(answers.free_text)
        if error:
            self.query_one("#modal-error", Static).update(f"Not saved: {error}.")
            return
        self.dismiss(answers)

    def action_cancel(self) -> None:
        """Dismiss with None: the earlier answers stay."""
        self.dismiss(None)


def _radio_set(widget_id: str, choices: tuple[Choice, ...], selected: str | None) -> RadioSet:
    buttons = [MarkedRadioButton(choice.label, value=choice.key == selected) for choice in choices]
    return RadioSet(*buttons, id=widget_id, compact=True)
