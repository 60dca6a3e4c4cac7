"""The FIDO screen (runbook Steps 7-9) and the guided FIDO reset wizard.

Both screens only render state and dispatch: every CTAP exchange runs on the
device-owner thread through `FidoFeature.fido_call`. The wizard's logic is
`tui.fido.reset.ResetWizard`; this screen feeds it key presses and polls the
readers through `ResetRunner.poll` on the device thread.
"""

from __future__ import annotations

import logging
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Input, Static

from tui.errors import KeytriageError, PolicyError
from tui.fido.actions import (
    OUTCOME_ACCEPTED,
    FidoPinRefused,
    PinAttemptResult,
    pin_attempts,
    refusal_for_state,
    site_lets_user_set_pin,
    validate_fido_pin,
)
from tui.fido.reset import WIPE_TEXT, ResetAction, ResetRunner, ResetStep, ResetWizard, reset_window_for
from tui.fido.state import AAGUID_NOTE, FidoPinState, FidoState
from tui.model import Profile
from tui.ui.keybar import KeyBar
from tui.ui.modals import ConfirmModal, ErrorModal, SecretPromptModal
from tui.ui.widgets import FieldInput

log = logging.getLogger("keytriage.ui")

POLL_INTERVAL_S = 0.2
OVERRIDE_WORD = "OVERRIDE"
# CTAP2 authenticators wait about 30 s for the touch that confirms a reset (YubiKey documentation).
TOUCH_WAIT_S = 30

# Actions that change the key or spend a FIDO PIN try; read-only mode hides and rejects them.
FIDO_WRITE_ACTIONS = frozenset({"list_credentials", "reset_wizard", "new_pin"})
WIZARD_WRITE_ACTIONS = frozenset({"confirm", "again", "new_pin"})

# The wizard's keys that work at each step, so the key bar names only those;
# the same step rules are also checked inside each action.
WIZARD_FINISHED_ACTIONS = frozenset({"back"})
WIZARD_STEP_ACTIONS = {
    ResetStep.INTRO: frozenset({"confirm", "cancel", "back"}),
    ResetStep.REFUSED: frozenset({"confirm", "cancel", "back"}),
    ResetStep.WAIT_REMOVE: frozenset({"cancel", "back"}),
    ResetStep.WAIT_INSERT: frozenset({"cancel", "back"}),
    ResetStep.CHECKING: frozenset({"cancel"}),
    ResetStep.SENDING: frozenset({"cancel"}),
    ResetStep.WAIT_TOUCH: frozenset({"cancel"}),
    ResetStep.DONE: frozenset({"new_pin", "back"}),
    ResetStep.FAILED: frozenset({"again", "back"}),
}
WIZARD_STEP_BOUND_ACTIONS = frozenset({"confirm", "cancel", "again", "new_pin", "back"})
WIZARD_LAB_ACTIONS = frozenset({"lab_remove", "lab_insert", "lab_touch"})
READ_ONLY_FIDO = ("read-only mode: the credential list (spends a FIDO PIN try), the reset wizard and a new FIDO PIN "
                  "are disabled ([site] read_only = true).")
READ_ONLY_WIZARD = "read-only mode: the FIDO reset and a new FIDO PIN are disabled ([site] read_only = true)."
USER_SETS_PIN = ("Site policy (fido_pin_set_by_user): keytriage sets no FIDO PIN after the reset; "
                 "the user sets it at the first registration.")
CHECKING_ESCROW = "Checking that escrow can take a new FIDO PIN after the reset... Nothing was sent."


def is_read_only(app: Any) -> bool:
    """True when the site runs keytriage read-only (`[site] read_only = true`)."""
    return bool(getattr(app.settings, "read_only", False))

GUIDANCE = (
    "Step 7: getInfo clientPin is the authoritative signal. false: no FIDO PIN, no lockout possible, so a "
    "passkey failure lies with the relying party. Option missing: no FIDO PIN support; escalate.\n"
    "Step 8: with a healthy PIN and a user who knows it, list the credentials with one deliberate attempt. "
    "Credentials listed: FIDO works. Wrong PIN: stop; only a reset recovers a forgotten FIDO PIN. "
    "Blocked: Step 9, the reset (tell the user first: every relying party needs the key registered again)."
)

SCREEN_CSS = """
FidoScreen, ResetWizardScreen {
    layout: vertical;
}
.fido-title {
    text-style: bold;
    padding: 0 1;
}
.fido-body {
    height: 1fr;
    border: round $accent;
    border-title-align: left;
    padding: 0 1;
}
.fido-section {
    margin-bottom: 1;
}
.fido-status {
    text-style: bold;
    padding: 0 1;
}
.fido-keys {
    padding: 0 1;
}
.fido-lab {
    padding: 0 1;
    color: $warning;
    text-style: bold;
}
#wizard-confirmation, #wizard-typed-id {
    width: 40;
}
"""


def render_fido_state(state: FidoState | None) -> str:
    """Word the FIDO state of one token for the FIDO screen."""
    if state is None:
        return "FIDO state: not read yet. Press r to read it (getInfo and getPINRetries only, no PIN sent)."
    pin = state.pin
    lines = [f"FIDO PIN: {pin.text()}"]
    if pin.explanation:
        lines.append(pin.explanation)
    if state.transport:
        lines.append(f"Read over: {state.transport}")
    if state.versions:
        client_pin = "missing" if state.client_pin_option is None else str(state.client_pin_option).lower()
        lines.append(f"getInfo clientPin: {client_pin}; versions: {', '.join(state.versions)}")
    if state.min_pin_length is not None:
        lines.append(f"Minimum FIDO PIN length: {state.min_pin_length}")
    if state.remaining_discoverable_credentials is not None:
        lines.append(f"Remaining discoverable credential slots: {state.remaining_discoverable_credentials}")
    if state.aaguid:
        lines.append(f"AAGUID {state.aaguid} ({AAGUID_NOTE})")
    lines.extend(state.notes)
    return "\n".join(lines)


def render_attempt(result: PinAttemptResult | None) -> str:
    """Word the last FIDO PIN attempt; relying parties and user names appear here and nowhere else."""
    if result is None:
        return "Credentials: not listed (needs the user's FIDO PIN: one deliberate attempt)."
    lines = [result.message]
    if result.outcome == OUTCOME_ACCEPTED and result.listing is not None:
        if not result.listing.relying_parties:
            lines.append("No discoverable credentials are stored (non-discoverable ones never show in a listing).")
        for party in result.listing.relying_parties:
            title = f"{party.rp_id} ({party.name})" if party.name and party.name != party.rp_id else party.rp_id
            lines.append(f"  {title}: {', '.join(party.user_names)}")
    return "\n".join(lines)


class FidoScreen(Screen):
    """The FIDO state of the selected token, Step 7/8 guidance and the FIDO actions."""

    title_text = "the FIDO screen"  # the help screen's name for it

    DEFAULT_CSS = SCREEN_CSS
    BINDINGS = [
        # Short descriptions so the key bar fits 80 columns; help shows the tooltips.
        Binding("r", "reread", "Re-read", id="fido-reread", tooltip="Re-read the FIDO state (no PIN sent)"),
        Binding("l", "list_credentials", "Credentials", id="fido-list",
                tooltip="List the credentials with the user's FIDO PIN (one attempt)"),
        Binding("w", "reset_wizard", "Reset wizard", id="fido-reset-wizard", tooltip="Open the guided FIDO reset"),
        Binding("p", "new_pin(False)", "New PIN", id="fido-new-pin",
                tooltip="Type a new FIDO PIN for a key without one (escrowed first)"),
        Binding("g", "new_pin(True)", "Generate PIN", id="fido-generate-pin", show=False,
                tooltip="Generate a new FIDO PIN for a key without one (escrowed first)"),
        Binding("b,escape", "back", "Back", id="fido-back"),
    ]

    def __init__(self, token_key: str) -> None:
        super().__init__()
        self.token_key = token_key
        self.attempt: PinAttemptResult | None = None
        self.busy = False

    def compose(self) -> ComposeResult:
        yield Static("", id="fido-title", classes="fido-title", markup=False)
        with VerticalScroll(id="fido-body", classes="fido-body"):
            yield Static("", id="fido-state", classes="fido-section", markup=False)
            yield Static("", id="fido-credentials", classes="fido-section", markup=False)
            yield Static(GUIDANCE, id="fido-guidance", classes="fido-section", markup=False)
        yield Static("", id="fido-status", classes="fido-status", markup=False)
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#fido-body").border_title = "FIDO2 (Steps 7-9)"
        if is_read_only(self.app):
            self.query_one("#fido-status", Static).update(READ_ONLY_FIDO)
        self.refresh_view()
        if self.app.fido_state_for(self.token_key) is None:
            self.action_reread()

    def on_screen_resume(self) -> None:
        # Back from the reset wizard: the state may have changed underneath.
        self.refresh_view()

    @property
    def token(self) -> Any:
        """The token this screen is about, from the last scan (None when it left)."""
        return self.app.fido_token(self.token_key)

    def refresh_view(self) -> None:
        """Render the state, the last attempt and the title."""
        token = self.token
        where = f" in {token.reader}" if token is not None else " (not in the last scan)"
        self.query_one("#fido-title", Static).update(f"FIDO2 of token {self.token_key}{where}")
        self.query_one("#fido-state", Static).update(render_fido_state(self.app.fido_state_for(self.token_key)))
        self.query_one("#fido-credentials", Static).update(render_attempt(self.attempt))

    def say(self, text: str) -> None:
        """Show a status line (and log it in the activity panel)."""
        self.query_one("#fido-status", Static).update(text)
        self.app.activity.add(text)

    # -- actions ---------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Hide the actions that change the key or spend a try in read-only mode."""
        if action in FIDO_WRITE_ACTIONS and is_read_only(self.app):
            return False
        return True

    def _refuse_read_only(self) -> bool:
        if not is_read_only(self.app):
            return False
        self.say(READ_ONLY_FIDO)
        return True

    def action_back(self) -> None:
        """Return to the main screen, which rescans when the key's FIDO state changed here."""
        if self.busy:
            self.say("A FIDO operation is running; wait for it to finish.")
            return
        self.app.pop_screen()
        self.app.fido_screen_closed(self.token_key)

    def action_reread(self) -> None:
        """Read the FIDO state again (getInfo and getPINRetries, no PIN)."""
        if self._start("Reading the FIDO state (no PIN sent)..."):
            self._reread_worker()

    def action_list_credentials(self) -> None:
        """List credentials with the user's FIDO PIN: the session's one attempt."""
        if self._refuse_read_only():
            return
        if self._start("Credential list: checking the FIDO state first..."):
            self._list_worker()

    def action_reset_wizard(self) -> None:
        """Open the guided FIDO reset; nothing is sent before its typed confirmation."""
        if self._refuse_read_only():
            return
        token = self.token
        if token is None:
            self.say("The token is not in the last scan; press b, rescan, then open FIDO again.")
            return
        self.app.push_screen(ResetWizardScreen(self.token_key))

    def action_new_pin(self, generated: bool) -> None:
        """Set a new FIDO PIN on a key without one, escrowed before it is sent."""
        if self._refuse_read_only():
            return
        if self._start("New FIDO PIN: checking the key..."):
            self._new_pin_worker(generated, explain_permanence=True)

    def _start(self, text: str) -> bool:
        if self.busy:
            self.say("A FIDO operation is already running; wait for it to finish.")
            return False
        if self.token is None:
            self.say("The token is not in the last scan; press b, rescan, then open FIDO again.")
            return False
        self.busy = True
        self.say(text)
        return True

    # -- workers ----------------------------------------------------------------

    @work(group="fido", exit_on_error=False)
    async def _reread_worker(self) -> None:
        try:
            await self.app.fido_reread(self.token_key)
            self.say("FIDO state read (no PIN sent).")
        except KeytriageError as error:
            self.say(f"Reading the FIDO state failed: {error}")
        finally:
            self.busy = False
            self.refresh_view()

    @work(group="fido", exit_on_error=False)
    async def _list_worker(self) -> None:
        try:
            await self._list_flow()
        except KeytriageError as error:
            await self.app.push_screen_wait(ErrorModal("FIDO credential list", str(error)))
            self.say(f"Credential list stopped: {error}")
        finally:
            self.busy = False
            self.refresh_view()

    async def _list_flow(self) -> None:
        app = self.app
        state = app.fido_state_for(self.token_key) or await app.fido_reread(self.token_key)
        refusal = refusal_for_state(state)
        if refusal is not None:
            await app.push_screen_wait(ErrorModal("No FIDO PIN sent", str(refusal)))
            self.say(f"No FIDO PIN sent: {state.pin.text()}.")
            return
        if state.pin.state is FidoPinState.NOT_SET:
            self.say("No FIDO PIN is set (clientPin false): nothing to list with a PIN, and no lockout is possible.")
            return

        override = False
        used = pin_attempts(app.session.audit, self.token_key)
        if used:
            # Show the tries left (read without a PIN) before offering a second attempt.
            state = await app.fido_reread(self.token_key)
            refusal = refusal_for_state(state)
            if refusal is not None:
                await app.push_screen_wait(ErrorModal("No FIDO PIN sent", str(refusal)))
                return
            body = (f"A FIDO PIN attempt was already made on this token in this session ({used[-1].outcome}). "
                    f"The key reports {state.pin.retries} tries left. Every wrong PIN costs one; three in a row block "
                    "the PIN until the key is re-inserted, and 0 tries means only a reset recovers it.")
            if not await app.push_screen_wait(ConfirmModal("Second FIDO PIN attempt", body, confirm_key="o",
                                                           confirm_label="Override", typed_confirmation=OVERRIDE_WORD)):
                self.say("Second FIDO PIN attempt not made.")
                return
            override = True

        minimum = state.min_pin_length

        def check(secret: Any) -> str | None:
            return validate_fido_pin(secret, minimum)

        body = (f"The user's FIDO PIN ({state.pin.text()}). This is one deliberate attempt: a wrong PIN costs a try "
                "and keytriage stops after it.")
        pin = await app.push_screen_wait(SecretPromptModal("FIDO PIN attempt", body, kind="FIDO PIN", validate=check))
        if pin is None:
            self.say("FIDO PIN attempt cancelled; nothing sent.")
            return
        self.say("Sending the FIDO PIN (one attempt)...")
        try:
            result = await app.fido_list(self.token_key, pin, state, override)
        except FidoPinRefused as refused:
            await app.push_screen_wait(ErrorModal("No FIDO PIN sent", str(refused)))
            return
        except PolicyError as error:
            await app.push_screen_wait(ErrorModal("No FIDO PIN sent", str(error)))
            return
        self.attempt = result
        self.say(result.message if result.listing is None else f"FIDO PIN correct: {result.listing.counts_text()}.")

    @work(group="fido", exit_on_error=False)
    async def _new_pin_worker(self, generated: bool, explain_permanence: bool) -> None:
        try:
            await self.app.fido_new_pin_flow(self.token_key, generated, explain_permanence=explain_permanence,
                                             say=self.say)
        except KeytriageError as error:
            await self.app.push_screen_wait(ErrorModal("New FIDO PIN", str(error)))
            self.say(f"New FIDO PIN not set: {error}")
        finally:
            self.busy = False
            self.refresh_view()


class WizardChanged(Message):
    """The reset wizard changed step; posted from the device thread."""


STEP_TITLES = {
    ResetStep.INTRO: "1/4 Confirm the reset",
    ResetStep.REFUSED: "Refused: more than one token",
    ResetStep.WAIT_REMOVE: "2/4 Remove the key",
    ResetStep.WAIT_INSERT: "3/4 Re-insert the key",
    ResetStep.CHECKING: "4/4 Sending the reset",
    ResetStep.SENDING: "4/4 Reset sent",
    ResetStep.WAIT_TOUCH: "4/4 TOUCH THE KEY",
    ResetStep.DONE: "Done: FIDO reset",
    ResetStep.FAILED: "Reset not done",
    ResetStep.CANCELLED: "Cancelled",
}


class ResetWizardScreen(Screen):
    """The guided FIDO reset; it advances only on the technician's confirmation and the key's insertion."""

    title_text = "the FIDO reset wizard"  # the help screen's name for it

    # Focus returning to the (hidden) confirmation field after a modal would
    # swallow the wizard's letter keys, so nothing takes focus by itself.
    AUTO_FOCUS = None

    DEFAULT_CSS = SCREEN_CSS
    BINDINGS = [
        Binding("y", "confirm", "Start reset", id="wizard-confirm"),
        Binding("c,escape", "cancel", "Cancel", id="wizard-cancel"),
        Binding("a", "again", "Try again", id="wizard-again"),
        Binding("p", "new_pin(False)", "Type new PIN", id="wizard-new-pin"),
        Binding("g", "new_pin(True)", "Generate PIN", id="wizard-generate-pin"),
        Binding("b,n", "back", "Back", id="wizard-back"),
        # The LAB keys stay off the key bar so that help and quit fit in 80
        # columns. The wizard's "LAB controls" line names them on the lab key.
        Binding("x", "lab_remove", "LAB remove", id="wizard-lab-remove", show=False),
        Binding("i", "lab_insert", "LAB insert", id="wizard-lab-insert", show=False),
        Binding("t", "lab_touch", "LAB touch", id="wizard-lab-touch", show=False),
    ]

    def __init__(self, token_key: str) -> None:
        super().__init__()
        self.token_key = token_key
        self.wizard: ResetWizard | None = None
        self.runner: ResetRunner | None = None
        self.polling = False
        self.buttons: list[Any] = []
        self._recorded = False
        self._pin_flow_running = False
        self._arming = False

    def compose(self) -> ComposeResult:
        yield Static("", id="wizard-title", classes="fido-title", markup=False)
        with Vertical(id="wizard-body", classes="fido-body"):
            yield Static(WIPE_TEXT, id="wizard-wipe", classes="fido-section", markup=False)
            yield Static("", id="wizard-prompt", markup=False)
            yield FieldInput(id="wizard-confirmation", placeholder="confirmation")
            yield FieldInput(id="wizard-typed-id", placeholder="printed ID")
            yield Static("", id="wizard-message", classes="fido-section", markup=False)
            yield Static("", id="wizard-countdown", classes="fido-status", markup=False)
        yield Static("", id="wizard-keys", classes="fido-keys", markup=False)
        yield Static("", id="wizard-lab", classes="fido-lab", markup=False)
        yield KeyBar()

    def on_mount(self) -> None:
        app = self.app
        token = app.fido_token(self.token_key)
        state = app.fido_state_for(self.token_key)
        firmware = state.firmware_version if state is not None else None
        is_yubikey = token is not None and (token.profile is Profile.YUBIKEY or "yubi" in token.reader.lower())
        self.wizard = ResetWizard(
            token_label=self.token_key, token_id=str(token.token_id) if token.token_id is not None else None,
            reader=token.reader, window_s=reset_window_for(firmware, is_yubikey=is_yubikey), clock=app.fido_clock)
        self.runner = app.fido_reset_runner(self.wizard, on_change=lambda: self.post_message(WizardChanged()))
        self.query_one("#wizard-body").border_title = "FIDO reset (Step 9)"
        self.query_one("#wizard-typed-id").display = self.wizard.token_id is None
        self.query_one("#wizard-confirmation", Input).focus()
        if app.session.is_lab:
            self.buttons = app.fido_lab_touch_buttons(token.reader)
        self.set_interval(POLL_INTERVAL_S, self._tick)
        self.refresh_view()

    # -- rendering -------------------------------------------------------------

    def refresh_view(self) -> None:
        """Render the wizard's step, message, countdown and the keys that work now."""
        wizard = self.wizard
        step = wizard.step
        self.query_one("#wizard-title", Static).update(f"FIDO reset of {wizard.token_label}: {STEP_TITLES[step]}")
        intro = step in (ResetStep.INTRO, ResetStep.REFUSED)
        self.query_one("#wizard-wipe").display = intro
        for field_id, shown in (("#wizard-confirmation", intro), ("#wizard-typed-id", intro and wizard.token_id is None)):
            field = self.query_one(field_id, Input)
            field.display = shown
            # A hidden field must not take the focus back (after a modal closes), or it eats b and n.
            field.disabled = not shown
        prompt = (f"Type {wizard.confirmation_hint}" + (" and the ID printed on the key" if wizard.token_id is None else "")
                  + ", press Enter, then y.") if intro else ""
        if intro and self._user_sets_pin():
            prompt += f"\n{USER_SETS_PIN}"
        self.query_one("#wizard-prompt", Static).update(prompt)
        self.query_one("#wizard-message", Static).update(self._message_text())
        self.query_one("#wizard-countdown", Static).update(self._countdown_text())
        self.query_one("#wizard-keys", Static).update(self._keys_text())
        lab = "LAB controls (simulated key): x remove   i insert   t touch" if self.app.session.is_lab else ""
        self.query_one("#wizard-lab", Static).update(lab)
        self.refresh_bindings()

    def _message_text(self) -> str:
        wizard = self.wizard
        step = wizard.step
        if step in (ResetStep.INTRO, ResetStep.REFUSED) and is_read_only(self.app):
            return READ_ONLY_WIZARD
        if step is ResetStep.INTRO and wizard.message == WIPE_TEXT:
            return ""
        if wizard.window_closed():
            # The step's own message still promises the reset, which is no longer true.
            return "Key inserted: checking it is the same key."
        return wizard.message

    def _countdown_text(self) -> str:
        wizard = self.wizard
        if wizard.window_closed():
            # A slow identity check outlived the window, so the countdown reports it now, not once the check ends.
            return (f"The {wizard.window_s:g} s window after insertion has closed: no reset will be sent. "
                    "The identity check is finishing.")
        left = wizard.seconds_left()
        if wizard.step is ResetStep.WAIT_INSERT:
            return f"Waiting for the key. The key allows the reset only within {wizard.window_s:g} s of insertion."
        if wizard.step in (ResetStep.SENDING, ResetStep.WAIT_TOUCH):
            # The insertion window closed once the reset went out; the key now waits for its touch.
            return f"Touch the key now (up to {TOUCH_WAIT_S} s)."
        if left is not None:
            return f"Within {wizard.window_s:g} s of insertion: {left:.0f} s left"
        return ""

    def _keys_text(self) -> str:
        step = self.wizard.step
        if step in (ResetStep.INTRO, ResetStep.REFUSED):
            if is_read_only(self.app):
                return "[c] cancel"
            return "[y] start (after Enter)   [c] cancel"
        if step in (ResetStep.WAIT_REMOVE, ResetStep.WAIT_INSERT, ResetStep.CHECKING):
            return "[c] cancel (nothing sent yet)"
        if step in (ResetStep.SENDING, ResetStep.WAIT_TOUCH):
            return "[c] cancel (asks the key to stop)"
        if step is ResetStep.DONE:
            if self._user_sets_pin():
                return "[b] back (the user sets the FIDO PIN at the first registration)"
            if is_read_only(self.app):
                return "[b] back"
            return "[p] type a new FIDO PIN   [g] generate one   [b] back"
        if step is ResetStep.FAILED:
            return "[a] try again (remove and re-insert)   [b] back"
        return "[b] back"

    def _tick(self) -> None:
        if self.wizard.step is ResetStep.CHECKING:
            self.query_one("#wizard-message", Static).update(self._message_text())
        self.query_one("#wizard-countdown", Static).update(self._countdown_text())
        if self.wizard.pending_action is ResetAction.WATCH_PRESENCE and not self.polling:
            self.polling = True
            self._poll_worker()

    @work(group="fido-wizard", exit_on_error=False)
    async def _poll_worker(self) -> None:
        try:
            await self.app.fido_call(self.runner.poll)
        except KeytriageError as error:
            log.warning("FIDO reset poll failed: %s", error)
            self.query_one("#wizard-message", Static).update(f"Reading the readers failed: {error}. Retrying.")
        finally:
            self.polling = False

    def on_wizard_changed(self, message: WizardChanged) -> None:
        self.refresh_view()
        wizard = self.wizard
        self.app.activity.add(f"FIDO reset: {STEP_TITLES[wizard.step]}")
        if wizard.step is ResetStep.DONE and not self._recorded:
            self._recorded = True
            self.app.fido_reset_done(self.token_key, wizard)

    # -- keys ------------------------------------------------------------------

    @on(Input.Submitted)
    def _submitted(self) -> None:
        # Enter leaves the field, so y reaches the screen.
        self.set_focus(None)

    def _user_sets_pin(self) -> bool:
        return site_lets_user_set_pin(self.app.settings)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Allow only the keys of the current step, the LAB keys only on the lab key, and no write key in read-only mode.

        When the site lets the user set the FIDO PIN, the new-PIN keys are hidden too.
        """
        if action in WIZARD_WRITE_ACTIONS and is_read_only(self.app):
            return False
        if action == "new_pin" and self._user_sets_pin():
            return False
        if action in WIZARD_LAB_ACTIONS:
            return self.app.session.is_lab
        if action in WIZARD_STEP_BOUND_ACTIONS and self.wizard is not None:
            return action in WIZARD_STEP_ACTIONS.get(self.wizard.step, WIZARD_FINISHED_ACTIONS)
        return True

    def _refuse_read_only(self) -> bool:
        if not is_read_only(self.app):
            return False
        self.query_one("#wizard-message", Static).update(READ_ONLY_WIZARD)
        return True

    def action_confirm(self) -> None:
        """Check the typed confirmation and arm the wizard (presence read on the device thread)."""
        if self._refuse_read_only():
            return
        if self.wizard.step not in (ResetStep.INTRO, ResetStep.REFUSED):
            return
        if self._arming:
            return
        typed = self.query_one("#wizard-confirmation", Input).value
        typed_id = self.query_one("#wizard-typed-id", Input).value or None
        self._arming = True
        self._arm_worker(typed, typed_id)

    @work(group="fido-wizard", exit_on_error=False)
    async def _arm_worker(self, typed: str, typed_id: str | None) -> None:
        # Escrow first: a reset that no new FIDO PIN can follow must not start.
        try:
            self.query_one("#wizard-message", Static).update(CHECKING_ESCROW)
            refusal = await self.app.fido_reset_escrow_refusal()
            if refusal is not None:
                self.wizard.hold(refusal)
                self.app.activity.add(f"FIDO reset not started: {refusal}")
                return
            await self.app.fido_call(self.runner.arm, typed, typed_id=typed_id)
        except KeytriageError as error:
            self.wizard.hold(f"Reading the readers failed: {error}. Nothing was sent.")
        finally:
            self._arming = False
            self.refresh_view()

    def action_cancel(self) -> None:
        """Cancel the reset; while the key waits for a touch, ask it to stop."""
        wizard = self.wizard
        if wizard.finished:
            self.action_back()
            return
        wizard.cancel()
        self.app.activity.add(f"FIDO reset: {wizard.message}")
        if wizard.step is ResetStep.CANCELLED:
            self.app.fido_reset_cancelled(self.token_key, wizard)
        self.refresh_view()

    def action_again(self) -> None:
        """Arm the wizard again after a failed reset."""
        if self._refuse_read_only():
            return
        self.wizard.retry()
        self.refresh_view()

    def action_back(self) -> None:
        """Leave the wizard, unless a reset is in flight or a new FIDO PIN is being set."""
        if self._pin_flow_running:
            self.query_one("#wizard-message", Static).update("A new FIDO PIN is being set; wait for its outcome.")
            return
        if self.wizard.step in (ResetStep.SENDING, ResetStep.WAIT_TOUCH, ResetStep.CHECKING):
            self.query_one("#wizard-message", Static).update("A reset is in flight: press c to cancel it first.")
            return
        if not self.wizard.finished and self.wizard.step not in (ResetStep.INTRO, ResetStep.REFUSED):
            self.wizard.cancel()
            self.app.fido_reset_cancelled(self.token_key, self.wizard)
        self.app.pop_screen()

    def action_new_pin(self, generated: bool) -> None:
        """After a reset, set a new FIDO PIN (escrowed first)."""
        if self._refuse_read_only():
            return
        if self.wizard.step is not ResetStep.DONE or self._pin_flow_running:
            return
        self._pin_flow_running = True
        self._new_pin_worker(generated)

    @work(group="fido-wizard", exit_on_error=False)
    async def _new_pin_worker(self, generated: bool) -> None:
        def say(text: str) -> None:
            self.query_one("#wizard-message", Static).update(text)
            self.app.activity.add(text)

        try:
            await self.app.fido_new_pin_flow(self.token_key, generated, explain_permanence=False, say=say)
        except KeytriageError as error:
            await self.app.push_screen_wait(ErrorModal("New FIDO PIN", str(error)))
        finally:
            self._pin_flow_running = False
            self.set_focus(None)

    def action_lab_remove(self) -> None:
        """LAB: pull the simulated key out of its reader."""
        self._lab_worker("remove")

    def action_lab_insert(self) -> None:
        """LAB: put the simulated key back (a FIDO power-up)."""
        self._lab_worker("insert")

    def action_lab_touch(self) -> None:
        """LAB: touch the simulated key while it waits for user presence."""
        if not self.app.session.is_lab:
            return
        waiting = [button for button in self.buttons if button.waiting.is_set()]
        for button in waiting:
            button.press()
        self.app.activity.add("LAB: key touched" if waiting else "LAB: touch ignored, the key is not waiting for one")

    @work(group="fido-lab", exit_on_error=False)
    async def _lab_worker(self, command: str) -> None:
        if not self.app.session.is_lab:
            return
        try:
            await self.app.fido_lab_control(command, self.wizard.reader)
            self.app.activity.add(f"LAB: key {'removed' if command == 'remove' else 'inserted'}")
        except KeytriageError as error:
            self.app.activity.add(f"LAB {command} failed: {error}")
