"""Step 0 triage: what the user was logging in to, what they saw, the tap action and the ticket number.

The answers only steer where the technician looks first. They never hold
back the read-only scan, which runs whatever is answered here. The screen is
keyboard-only: arrows and Enter or Space choose in a list, Tab moves between
fields, Enter in a text field moves on, `s` saves and `n` cancels.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, RadioButton, RadioSet, Static

from tui.drift import TAP_HINTS, TapHint
from tui.session import TriageAnswers

CANT_SAY = "cant-say"

TICKET_MAX_LENGTH = 64
NOTES_MAX_LENGTH = 300


@dataclass(frozen=True)
class Choice:
    """One answer of a triage question: its stored key, its label and where it points the technician."""

    key: str
    label: str
    focus: str


# The Step 0 table: what the user was trying, and where to focus. The keys
# match the outcome ids of Step 0 in `tui.runbook.STEPS`, except "can't say",
# which the runbook calls "unknown".
TRYING_CHOICES: tuple[Choice, ...] = (
    Choice("smart_card", "Smart card / Windows login", "smart card (ACA and PIV): Steps 3-4"),
    Choice("passkey", "Passkey login", "FIDO2: Steps 7-9"),
    Choice("otp", "VPN with hardware OTP", "OATH: Step 5"),
    Choice("certificate_vpn", "VPN with cert-based auth", "PIV or external auth: Steps 4 and 10"),
    Choice("tap", "Tap action / single touch code", "OATH HOTP or FIDO2: ask what happens on a tap"),
    Choice(CANT_SAY, "Can't say", "unknown: follow Steps 1-3, all read-only, and let the token's state decide"),
)

# The user phrases that help triage, with the applet each points to.
SAW_CHOICES: tuple[Choice, ...] = (
    Choice("pin-rejected", "It asked for my PIN and rejected it", "smart-card PIN or FIDO PIN"),
    Choice("code-wrong", "It didn't ask for anything, just said the code was wrong", "OATH"),
    Choice("touch-nothing", "It asked me to touch the key and nothing happened",
           "FIDO user presence, or an OATH tap without PIN"),
    Choice(CANT_SAY, "Can't say", "unknown: do not speculate, the read-only steps decide"),
)

# The tap-action question, worded as `tui.drift.TAP_HINTS` words the answers.
TAP_KEYS = ("types-code", "touch-box", "nothing")
TAP_CHOICES: tuple[Choice, ...] = tuple(
    Choice(key, hint.answer, f"{hint.meaning} First check: {hint.first_check}")
    for key, hint in zip(TAP_KEYS, TAP_HINTS)
)

# Step 0 outcome id for each "trying" answer.
RUNBOOK_OUTCOMES = {choice.key: choice.key for choice in TRYING_CHOICES} | {CANT_SAY: "unknown"}


def choice_for(choices: tuple[Choice, ...], key: str | None) -> Choice | None:
    """Return the choice with `key`, None for None or an unknown key."""
    return next((choice for choice in choices if choice.key == key), None)


def tap_hint_for(key: str | None) -> TapHint | None:
    """Return the `TapHint` of a tap answer key, None when there is none."""
    if key not in TAP_KEYS:
        return None
    return TAP_HINTS[TAP_KEYS.index(key)]


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
    """Word the answers in one line for the runbook panel and the session events, e.g. "Smart card / Windows login"."""
    trying = choice_for(TRYING_CHOICES, answers.trying)
    parts = [trying.label if trying else "not asked"]
    saw = choice_for(SAW_CHOICES, answers.saw)
    if saw is not None and saw.key != CANT_SAY:
        parts.append(f'saw "{saw.label}"')
    tap = choice_for(TAP_CHOICES, answers.tap)
    if tap is not None:
        parts.append(f'tap: "{tap.label}"')
    return "; ".join(parts)


def triage_focus(answers: TriageAnswers) -> list[str]:
    """Return where the answers point, one line per answer, for the runbook panel."""
    lines = []
    for choices, key in ((TRYING_CHOICES, answers.trying), (SAW_CHOICES, answers.saw)):
        choice = choice_for(choices, key)
        if choice is not None:
            lines.append(f"Focus: {choice.focus}")
    hint = tap_hint_for(answers.tap)
    if hint is not None:
        lines.append(f"Tap: {hint.meaning} Next: Step {hint.runbook_step}.")
    return lines


def triage_answered(answers: TriageAnswers) -> bool:
    """True once the technician saved any answer or a ticket number."""
    return any((answers.trying, answers.saw, answers.tap, answers.free_text, answers.ticket))


class TriageScreen(ModalScreen[TriageAnswers | None]):
    """Step 0: ask the user what they were doing; dismiss with the answers on `s`, None on `n`.

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
    TriageScreen #triage-tap {
        layout: grid;
        grid-size: 2;
        grid-columns: 1fr 1fr;
        height: auto;
    }
    """

    BINDINGS = [
        Binding("s", "save", "Save", id="triage-save"),
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
                yield Input(initial.free_text, id="triage-notes", compact=True, max_length=NOTES_MAX_LENGTH,
                            placeholder="free text, no PIN")
            with Horizontal(classes="triage-row"):
                yield Static("Ticket:", markup=False)
                yield Input(initial.ticket, id="triage-ticket", compact=True, max_length=TICKET_MAX_LENGTH,
                            restrict=r"[ -~]*", placeholder="ticket number, e.g. INC-4711")
            yield Static("", id="modal-error", classes="modal-error", markup=False)
            yield Static("Arrows move, Enter/Space choose, Tab next field    [s] Save    [n] Cancel",
                         classes="modal-keys", markup=False)

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
            free_text=self.query_one("#triage-notes", Input).value.strip(),
            ticket=self.query_one("#triage-ticket", Input).value.strip(),
        )

    def _show_tap_question(self) -> None:
        trying = self._pressed_key("#triage-trying", TRYING_CHOICES)
        saw = self._pressed_key("#triage-saw", SAW_CHOICES)
        self.query_one("#triage-tap-box").display = tap_question_relevant(trying, saw)

    @on(RadioSet.Changed)
    def _choice_changed(self) -> None:
        self._show_tap_question()
        self.query_one("#modal-error", Static).update("")

    @on(Input.Submitted)
    def _field_submitted(self, event: Input.Submitted) -> None:
        # Enter moves on from a text field; after the ticket it leaves the
        # fields so `s` and `n` reach the screen instead of the input.
        if event.input.id == "triage-notes":
            self.query_one("#triage-ticket", Input).focus()
        else:
            self.set_focus(None)

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
    buttons = [RadioButton(choice.label, value=choice.key == selected) for choice in choices]
    return RadioSet(*buttons, id=widget_id, compact=True)
