"""The OTP slots screen (runbook Step 5) and the external-auth check screen (Step 11).

Both open over the main screen for the selected token and show what the last
scan read. Each has one deliberate action that talks to the token: generating
one HOTP code (it advances the token's counter) and testing the admin key
with exactly one EXTERNAL AUTHENTICATE. The device work runs on the
device-owner thread. Just before anything is sent, the reader is looked up
again by token ID in the latest scan.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Static

from tui.drift import assess_drift
from tui.errors import KeytriageError, PolicyError
from tui.model import Profile, TokenScan
from tui.oath import HID_BUTTON_SLOT, HotpGeneration, HotpOutcome, OtpSlots
from tui.secret import Secret
from tui.transport import Channel
from tui.ui.modals import HEX_ONLY, ConfirmModal, ErrorModal, SecretPromptModal, ShowOnceModal
from tui.xauth import XauthOutcome, XauthResult, parse_admin_key

SCREEN_CSS = """
.otp-dialog {
    width: 78;
    height: 22;
    max-height: 22;
}
.otp-content {
    height: 1fr;
}
.otp-status {
    text-style: bold;
}
"""


class StaleTokenError(KeytriageError):
    """The token is no longer where the last scan saw it; the technician must rescan."""


def token_label(token: TokenScan) -> str:
    """Return the token ID, or the reader for a token without one."""
    return str(token.token_id) if token.token_id is not None else f"token in {token.reader}"


def locate_reader(app: Any, token: TokenScan) -> str:
    """Return the reader that contains `token` in the app's latest scan, looked up by token ID.

    Raises `StaleTokenError` when the latest scan no longer lists the token.
    """
    from tui.runbook import select_token

    result = app.scan_result
    if result is None:
        raise StaleTokenError("no scan result; press r on the main screen to rescan")
    if token.token_id is not None:
        current = select_token(result, token_id=str(token.token_id))
    else:
        current = select_token(result, reader=token.reader)
    if current is None or current.problem is not None:
        raise StaleTokenError(f"{token_label(token)} is not in the latest scan; reinsert it and rescan")
    return current.reader


def run_on_token(app: Any, token: TokenScan, reader: str, operation: str, work: Callable[[Channel], Any]) -> Any:
    """Open `reader`, check the ATR, and run `work(channel)`; blocking, device thread only.

    The card in the reader must show the ATR the scan read, so another card
    put into the same reader is never sent the command. The per-token lock is
    held for the whole exchange. Every exchange is posted to the activity log.
    """
    from tui.ui.app import ExchangeObserved

    backend = app._backend if app._backend is not None else app.backend_factory()

    def observe(exchange) -> None:
        app.post_message(ExchangeObserved(exchange, app.clock()))

    lock_key = token.token_id if token.token_id is not None else f"reader:{reader}"
    with app.session.locks.hold(lock_key, operation):
        transport = backend.open(reader)
        atr = transport.connect().hex().upper()
        try:
            if token.atr and atr != token.atr:
                raise StaleTokenError(f"the card in {reader} returned another ATR than the scanned token; rescan")
            return work(Channel(transport, [observe]))
        finally:
            transport.disconnect()


def format_slots(otp: OtpSlots | None) -> list[str]:
    """Word each listed slot with every field, "unknown" where the token does not report it."""
    if otp is None:
        return ["The OTP slots were not read: the smart-card scan of this token failed. Rescan first."]
    lines = []
    for slot in otp.slots:
        fields = slot.field_texts()
        lines.append(f"{fields['slot']}: {fields['state']}")
        lines.append(f"  mode {fields['mode']}, algorithm {fields['algorithm']}, digits {fields['digits']}, "
                     f"counter {fields['counter']}")
        lines.append(f"  name {fields['name']}, types on touch {fields['types on touch']}")
    if not otp.slots:
        lines.append("No OTP slot is listed.")
    for note in otp.notes:
        lines.append(f"Note: {note}")
    return lines


def format_guidance(token: TokenScan) -> list[str]:
    """Word the Step 5 verdict from `tui.drift.assess_drift` and its steps, in order."""
    if token.otp is None:
        return []
    assessment = assess_drift(token.otp, token.smartcard)
    lines = [f"Verdict: {assessment.title}"]
    lines.extend(f"Note: {note}" for note in assessment.notes)
    lines.extend(f"{number}. {step}" for number, step in enumerate(assessment.steps, start=1))
    if assessment.reseed_steps:
        lines.append("If a re-seed is needed:")
        lines.extend(f"{number}. {step}" for number, step in enumerate(assessment.reseed_steps, start=1))
    return lines


def is_read_only(app: Any) -> bool:
    """True when the site runs keytriage read-only (`[site] read_only = true`)."""
    return bool(getattr(app.settings, "read_only", False))


READ_ONLY_GENERATE = ("read-only mode: generating an HOTP code is disabled, because it advances the token's counter "
                      "([site] read_only = true).")
READ_ONLY_XAUTH = ("read-only mode: the admin-key test is disabled, because a wrong key can spend an unlock try "
                   "([site] read_only = true).")
GENERATE_CONFIRM_KEY = "y"


def can_generate(token: TokenScan) -> bool:
    """True when one HOTP code can be generated: an HID Crescendo whose button slot is present and not empty."""
    if token.profile is not Profile.HID_CRESCENDO or token.otp is None:
        return False
    slot = token.otp.button_slot()
    return slot is not None and bool(slot.present) and slot.configured is not False


class ButtonPrompted(Message):
    """The key answered 6985: it waits for its button (prompt `number`)."""

    def __init__(self, number: int) -> None:
        super().__init__()
        self.number = number


class OtpSlotsScreen(ModalScreen[None]):
    """Step 5: the OTP slot listing, the drift guidance, and the confirmed one-code HOTP generation.

    Generating is a deliberate action with a cost (one counter step), so it is
    confirmed with another key than the one that opens the confirmation, and it
    is hidden and rejected in read-only mode.
    """

    DEFAULT_CSS = SCREEN_CSS
    BINDINGS = [
        Binding("g", "generate", "Generate one HOTP code", id="otp-generate"),
        Binding("c", "cancel_wait", "Cancel waiting", id="otp-cancel-wait"),
        Binding("n,escape", "close", "Close", id="otp-close"),
    ]

    def __init__(self, token: TokenScan) -> None:
        super().__init__()
        self.token = token
        self.generating = False
        self._cancel = threading.Event()

    def compose(self) -> ComposeResult:
        lines = format_slots(self.token.otp)
        guidance = format_guidance(self.token)
        if guidance:
            lines.append("")
            lines.extend(guidance)
        keys = "[n] Close"
        status = ""
        if can_generate(self.token):
            if is_read_only(self.app):
                status = READ_ONLY_GENERATE
            else:
                keys = "[g] Generate one code to submit (costs a counter step)    " + keys
        with Vertical(classes="modal-dialog otp-dialog"):
            yield VerticalScroll(Static("\n".join(lines), id="otp-listing", markup=False), classes="otp-content")
            yield Static(status, id="otp-status", classes="otp-status", markup=False)
            yield Static(keys, id="otp-keys", classes="modal-keys", markup=False)

    def on_mount(self) -> None:
        self.query_one(".modal-dialog").border_title = f"OTP slots (Step 5): {token_label(self.token)}"

    def _status(self, text: str) -> None:
        self.query_one("#otp-status", Static).update(text)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Hide the generate binding in read-only mode."""
        if action == "generate" and is_read_only(self.app):
            return False
        return True

    def action_close(self) -> None:
        """Close, unless a generation is running (cancel it with c first)."""
        if self.generating:
            self._status("A code generation is running: press c to cancel it first.")
            return
        self.dismiss(None)

    def action_cancel_wait(self) -> None:
        """Stop waiting for the key's button."""
        if self.generating:
            self._cancel.set()
            self._status("Cancelling: the key stops waiting at its next answer.")

    def action_generate(self) -> None:
        """Ask to confirm, then generate one HOTP code on the button slot."""
        if self.generating:
            return
        if is_read_only(self.app):
            self._status(READ_ONLY_GENERATE)
            return
        if not can_generate(self.token):
            self._status("Generating a code is available for an HID Crescendo key whose OTP slot 1 is present.")
            return
        body = (
            f"This sends HOTP AUTHENTICATE to OTP slot {HID_BUTTON_SLOT} of {token_label(self.token)}.\n\n"
            "It advances the token's HOTP counter by one, which widens a counter drift if the code is not "
            "submitted to the validation server. Generate a code only when you will submit it, for example "
            "as the first code of a resynchronisation; never generate one just to test the key.\n\n"
            "The key may wait for its button: ask the user to press it when the screen says so. "
            "The code is shown once and is never logged."
        )
        self.app.push_screen(ConfirmModal("Generate one HOTP code", body, confirm_key=GENERATE_CONFIRM_KEY,
                                          confirm_label="Generate"),
                             self._confirmed)

    def _confirmed(self, confirmed: bool | None) -> None:
        if not confirmed:
            self._status("Not generated: nothing was sent.")
            return
        try:
            reader = locate_reader(self.app, self.token)
        except StaleTokenError as exc:
            self.app.push_screen(ErrorModal("HOTP code not generated", str(exc)))
            return
        self.generating = True
        self._cancel.clear()
        self._status("Sending HOTP AUTHENTICATE...")
        self.run_worker(self._generate(reader), name="hotp-generate", group="device", exit_on_error=False)

    async def _generate(self, reader: str) -> None:
        from tui.oath import generate_hotp_code

        def prompt(number: int) -> bool:
            # Runs on the device thread; posting a message is thread-safe.
            self.post_message(ButtonPrompted(number))
            return not self._cancel.is_set()

        def work(channel: Channel) -> HotpGeneration:
            return generate_hotp_code(channel, HID_BUTTON_SLOT, acknowledge_counter_advance=True, on_button_prompt=prompt)

        future = self.app.device.submit(run_on_token, self.app, self.token, reader, "HOTP generation", work)
        try:
            generation = await asyncio.wrap_future(future)
        except KeytriageError as exc:
            self._finish_failed(str(exc))
            return
        finally:
            self.generating = False
        self._finish(generation)

    def on_button_prompted(self, message: ButtonPrompted) -> None:
        self._status(f"Press the key's button now (the key is waiting, prompt {message.number}). Press c to cancel.")

    def _finish_failed(self, reason: str) -> None:
        self._status(f"Not generated: {reason}")
        self.app.session.audit.record("hotp-generate", "failed", token_id=self.token.token_id,
                                      profile=self.token.profile.value, applet="OATH", step="5", reason=reason)
        self.app.push_screen(ErrorModal("HOTP code not generated", f"{reason}. Rescan, then try again."))

    def _finish(self, generation: HotpGeneration) -> None:
        app = self.app
        token = self.token
        status = generation.status.sw if generation.status is not None else None
        # The audit and the activity log record that a code was generated, never the code.
        app.session.audit.record("hotp-generate", generation.outcome.value, token_id=token.token_id,
                                 profile=token.profile.value, status=status, applet="OATH", step="5",
                                 count=generation.button_prompts)
        app.activity.add(f"OTP slot {HID_BUTTON_SLOT}: {generation.message()}")
        self._status(generation.message())
        if generation.outcome is not HotpOutcome.CODE:
            return

        app.session.add_event("hotp-generate", generation.message(), token_id=token.token_id, applet="OATH")
        code = generation.code or Secret("", "OTP code")
        note = ("Type this code only into the validation server (for example its resynchronisation form), "
                "never into the ticket. The token's counter advanced by one.")
        app.push_screen(ShowOnceModal("HOTP code", f"OTP slot {HID_BUTTON_SLOT} code", code, note))


class ExternalAuthScreen(ModalScreen[None]):
    """Step 11: the admin key's state and one deliberate admin-key test (EXTERNAL AUTHENTICATE)."""

    DEFAULT_CSS = SCREEN_CSS
    BINDINGS = [
        Binding("t", "test_key", "Test the admin key", id="xauth-test"),
        Binding("n,escape", "close", "Close", id="xauth-close"),
    ]

    def __init__(self, token: TokenScan) -> None:
        super().__init__()
        self.token = token
        self.testing = False
        self.result: XauthResult | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-dialog otp-dialog"):
            with VerticalScroll(classes="otp-content"):
                yield Static(self._state_text(), id="xauth-state", markup=False)
                yield Static("", id="xauth-result", markup=False)
            status = READ_ONLY_XAUTH if is_read_only(self.app) else ""
            keys = "[t] Test the admin key (typed, one EXTERNAL AUTHENTICATE)    [n] Close"
            yield Static(status, id="xauth-status", classes="otp-status", markup=False)
            yield Static("[n] Close" if status else keys, id="xauth-keys", classes="modal-keys", markup=False)

    def on_mount(self) -> None:
        self.query_one(".modal-dialog").border_title = f"External auth (Step 11): {token_label(self.token)}"

    def _state_text(self) -> str:
        admin_key = self.token.smartcard.admin_key
        if admin_key.present is None:
            configured = "unknown (not read)"
        elif admin_key.present:
            configured = f"configured, {admin_key.key_type or 'type unknown'} (from {admin_key.source.value})"
        else:
            configured = "not configured (XAUTH1 not initialised)"
        lines = [
            f"Admin key (XAUTH1): {configured}",
            "",
            "The test sends GET CHALLENGE, then exactly one EXTERNAL AUTHENTICATE with the challenge "
            "encrypted under the key you type. The key is checked against the key type before anything is "
            "sent. A failed test is never repeated automatically: repeating it with the same key gives the "
            "same answer.",
            # NOTE: the key on file in escrow is not offered yet; the technician types it.
            "Key on file: type the admin key from the escrow record.",
        ]
        return "\n".join(lines)

    def _status(self, text: str) -> None:
        self.query_one("#xauth-status", Static).update(text)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Hide the admin-key test in read-only mode."""
        if action == "test_key" and is_read_only(self.app):
            return False
        return True

    def action_close(self) -> None:
        """Close, unless a test is running."""
        if self.testing:
            self._status("The test is running; wait for its answer.")
            return
        self.dismiss(None)

    def action_test_key(self) -> None:
        """Ask for the key (after a warning when a test already failed), then test it once."""
        if self.testing:
            return
        if is_read_only(self.app):
            self._status(READ_ONLY_XAUTH)
            return
        token = self.token
        if token.profile is not Profile.HID_CRESCENDO:
            self._status("Not sent: Step 11 applies to HID Crescendo keys; a YubiKey's equivalent is the PIV management key.")
            return
        if token.smartcard.admin_key.present is False:
            self._status("Not sent: no admin key is set on this token, so external auth cannot be the failing path.")
            return
        if self._failed_before():
            body = ("An admin-key test already failed on this token in this session. The same key gives the same "
                    "answer, and a wrong key may count against the admin key's retry limit.\n\n"
                    "Continue only with a different key.")
            self.app.push_screen(ConfirmModal("Test the admin key again", body, confirm_key="s", confirm_label="Continue"),
                                 self._ask_key)
            return
        self._ask_key(True)

    def _failed_before(self) -> bool:
        if self.result is not None and not self.result.succeeded:
            return True
        audit = self.app.session.audit
        if self.token.token_id is None:
            return False
        return any(record.operation == "xauth-test" and record.outcome != XauthOutcome.FUNCTIONAL.value
                   and record.session == audit.session for record in audit.records(self.token.token_id))

    def _ask_key(self, proceed: bool | None) -> None:
        if not proceed:
            self._status("Not sent.")
            return
        key_type = self.token.smartcard.admin_key.key_type

        def validate(secret: Secret) -> str | None:
            try:
                parse_admin_key(secret, key_type)
            except PolicyError as exc:
                return str(exc)
            return None

        body = ("Type the admin key in hex. It is checked locally against the key type first; "
                "then GET CHALLENGE and one EXTERNAL AUTHENTICATE are sent.")
        self.app.push_screen(SecretPromptModal("Test the admin key", body, kind="admin key", restrict=HEX_ONLY,
                                               max_length=80, validate=validate), self._key_entered)

    def _key_entered(self, key: Secret | None) -> None:
        if key is None:
            self._status("Not sent: no key entered.")
            return
        try:
            reader = locate_reader(self.app, self.token)
        except StaleTokenError as exc:
            self.app.push_screen(ErrorModal("Admin key not tested", str(exc)))
            return
        self.testing = True
        self._status("Sending GET CHALLENGE and EXTERNAL AUTHENTICATE...")
        self.run_worker(self._test(key, reader), name="xauth-test", group="device", exit_on_error=False)

    async def _test(self, key: Secret, reader: str) -> None:
        from tui.xauth import test_admin_key

        key_type = self.token.smartcard.admin_key.key_type

        def work(channel: Channel) -> XauthResult:
            return test_admin_key(channel, key, key_type=key_type)

        future = self.app.device.submit(run_on_token, self.app, self.token, reader, "admin key test", work)
        try:
            result = await asyncio.wrap_future(future)
        except PolicyError as exc:
            # The key did not fit the token's challenge; nothing was authenticated.
            self._status("Not sent: the key does not fit the token's admin key type.")
            self.app.push_screen(ErrorModal("Admin key not tested", str(exc)))
            return
        except KeytriageError as exc:
            self._status(f"Not tested: {exc}")
            self.app.push_screen(ErrorModal("Admin key not tested", f"{exc}. Rescan, then try again."))
            return
        finally:
            self.testing = False
        self._show_result(result)

    def _show_result(self, result: XauthResult) -> None:
        self.result = result
        app = self.app
        token = self.token
        status = result.status.sw if result.status is not None else None
        app.session.audit.record("xauth-test", result.outcome.value, token_id=token.token_id,
                                 profile=token.profile.value, status=status, applet="external auth", step="11",
                                 result=result.verdict)
        app.session.add_event("xauth-test", result.verdict, token_id=token.token_id, applet="external auth")
        app.activity.add(f"Admin key test: {result.verdict}")

        lines = [f"Result: {result.verdict}"]
        if result.status is not None:
            lines.append(f"Status word: {result.status}")
        lines.append("")
        lines.extend(f"{number}. {step}" for number, step in enumerate(result.next_steps, start=1))
        self.query_one("#xauth-result", Static).update("\n".join(lines))
        self._status("Authentication succeeded." if result.succeeded else "Not retried: decide the next step below.")
