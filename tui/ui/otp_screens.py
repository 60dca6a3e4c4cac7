"""The OTP slots screen (runbook Step 5) and the external-auth check screen (Step 11).

Both open over the main screen for the selected token and show what the last
scan read. Each has one deliberate action that talks to the token: generating
one HOTP code (it advances the token's counter) and testing the admin key
with exactly one EXTERNAL AUTHENTICATE. The device work runs on the
device-owner thread. Just before anything is sent, the reader is looked up
again by token ID in the latest scan. The admin key tested is by default the
one on file in escrow, read in a thread and never shown; the technician can
type another one instead.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from textual import work
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
from tui.xauth import XauthOutcome, XauthResult, admin_key_on_file, parse_admin_key, read_admin_key_on_file

if TYPE_CHECKING:
    from tui.escrow.flow import OnFile

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
#xauth-on-file {
    margin-top: 1;
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
    """Step 11: the admin key's state and one deliberate admin-key test (EXTERNAL AUTHENTICATE).

    `t` tests the admin key on file in escrow after a confirmation, or asks
    for the key when none is on file. `k` asks for a typed key instead. The
    escrow metadata is looked up in a thread when the screen opens, and the
    key's value is read in a thread only after the confirmation.
    """

    DEFAULT_CSS = SCREEN_CSS
    BINDINGS = [
        Binding("t", "test_key", "Test the admin key", id="xauth-test"),
        Binding("k", "type_key", "Type a key", id="xauth-type"),
        Binding("n,escape", "close", "Close", id="xauth-close"),
    ]

    def __init__(self, token: TokenScan) -> None:
        super().__init__()
        self.token = token
        self.testing = False
        self.result: XauthResult | None = None
        # The escrow metadata of the key on file, or why none can be used.
        self.on_file: OnFile | None = None
        self.on_file_problem: str | None = "not looked up yet"
        self._lookup_done = asyncio.Event()

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-dialog otp-dialog"):
            with VerticalScroll(classes="otp-content"):
                yield Static(self._state_text(), id="xauth-state", markup=False)
                yield Static("Key on file: looking it up in escrow...", id="xauth-on-file", markup=False)
                yield Static("", id="xauth-result", markup=False)
            status = READ_ONLY_XAUTH if is_read_only(self.app) else ""
            yield Static(status, id="xauth-status", classes="otp-status", markup=False)
            yield Static(self._keys_text(), id="xauth-keys", classes="modal-keys", markup=False)

    def on_mount(self) -> None:
        self.query_one(".modal-dialog").border_title = f"External auth (Step 11): {token_label(self.token)}"
        self._look_up_key_on_file()

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
            "encrypted under the admin key on file in escrow, or under a key you type. The key is checked "
            "against the key type before anything is sent. A failed test is never repeated automatically: "
            "repeating it with the same key gives the same answer.",
        ]
        return "\n".join(lines)

    def _keys_text(self) -> str:
        if is_read_only(self.app):
            return "[n] Close"
        if self._lookup_done.is_set() and self.on_file is None:
            return "[t] Type the admin key and test it    [n] Close"
        return "[t] Test the key on file    [k] Type a key instead    [n] Close"

    def _status(self, text: str) -> None:
        self.query_one("#xauth-status", Static).update(text)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Hide the admin-key test in read-only mode."""
        if action in ("test_key", "type_key") and is_read_only(self.app):
            return False
        return True

    def action_close(self) -> None:
        """Close, unless a test is running."""
        if self.testing:
            self._status("The test is running; wait for its answer.")
            return
        self.dismiss(None)

    # --- the key on file ----------------------------------------------------------

    @work(name="xauth-on-file", group="xauth-on-file", exclusive=True, exit_on_error=False)
    async def _look_up_key_on_file(self) -> None:
        """Read the escrow metadata of the admin key on file in a thread; the value is not read."""
        try:
            self.on_file, self.on_file_problem = await self._find_key_on_file()
        finally:
            self._lookup_done.set()
        if self.on_file is not None:
            line = f"Key on file: admin key {self.on_file.words()} in escrow; t tests it, the value is never shown."
        else:
            line = f"Key on file: none usable ({self.on_file_problem}); t asks you to type the key."
        self.query_one("#xauth-on-file", Static).update(line)
        self.query_one("#xauth-keys", Static).update(self._keys_text())

    async def _find_key_on_file(self) -> tuple[OnFile | None, str | None]:
        token_id = self.token.token_id
        if token_id is None:
            return None, "the token has no ID to look it up by"
        wait_ready = getattr(self.app, "escrow_wait_ready", None)
        if wait_ready is not None:
            await wait_ready()
        escrow = self.app.session.escrow
        if escrow is None:
            return None, "no escrow is configured for this session"
        try:
            on_file = await asyncio.to_thread(admin_key_on_file, escrow, str(token_id))
        except KeytriageError as exc:
            return None, f"escrow not readable: {exc}"
        if on_file is None:
            return None, "no admin key on file"
        if on_file.applied_version is None:
            return None, f"the record is {on_file.words()}, with no applied version"
        return on_file, None

    # --- the test ----------------------------------------------------------------------

    def _blocking_reason(self) -> str | None:
        """Return why no test may be sent for this token, None when one may."""
        if is_read_only(self.app):
            return READ_ONLY_XAUTH
        if self.token.profile is not Profile.HID_CRESCENDO:
            return "Not sent: Step 11 applies to HID Crescendo keys; a YubiKey's equivalent is the PIV management key."
        if self.token.smartcard.admin_key.present is False:
            return "Not sent: no admin key is set on this token, so external auth cannot be the failing path."
        return None

    def action_test_key(self) -> None:
        """Test the admin key on file after a confirmation, or ask for the key when none is on file."""
        if self.testing:
            return
        reason = self._blocking_reason()
        if reason:
            self._status(reason)
            return
        self._test_key_on_file()

    def action_type_key(self) -> None:
        """Ask for a typed key (after a warning when a test already failed), then test it once."""
        if self.testing:
            return
        reason = self._blocking_reason()
        if reason:
            self._status(reason)
            return
        self._ask_typed_key()

    @work(name="xauth-key-on-file", group="xauth-test", exclusive=True, exit_on_error=False)
    async def _test_key_on_file(self) -> None:
        from tui.recovery.unlock import AdminKeySource

        await self._lookup_done.wait()
        if self.on_file is None:
            self._status(f"No usable key on file ({self.on_file_problem}): type the admin key.")
            self._ask_typed_key()
            return
        if self._failed_before(AdminKeySource.ESCROW, self.on_file.applied_version):
            self._reject_same_key(self.on_file.applied_version)
            return

        body = (f"Sends GET CHALLENGE and one EXTERNAL AUTHENTICATE with the admin key on file in escrow "
                f"({self.on_file.words()}). The key is read from escrow now, used once and never shown.\n\n"
                "Cost: a wrong key may count against the admin key's retry limit. A failed test is not repeated.")
        if self._failed_before():
            body += "\n\nAn admin-key test with another key already failed on this token in this session."
        confirmed = await self.app.push_screen_wait(
            ConfirmModal("Test the admin key on file", body, confirm_key="s", confirm_label="Send"))
        if not confirmed:
            self._status("Not sent.")
            return

        escrow = self.app.session.escrow
        try:
            if escrow is None:
                raise KeytriageError("escrow is no longer configured for this session")
            key, version = await asyncio.to_thread(read_admin_key_on_file, escrow, str(self.token.token_id))
        except KeytriageError as exc:
            self._status("Not sent: the key on file could not be read. Press k to type the key.")
            self.app.push_screen(ErrorModal("Admin key not tested", f"The admin key on file could not be read: {exc}. "
                                                                    "Press k to type the key instead."))
            return
        # The record may have gained an applied version since the lookup.
        if self._failed_before(AdminKeySource.ESCROW, version):
            self._reject_same_key(version)
            return
        self._start_test(key, AdminKeySource.ESCROW, version)

    def _reject_same_key(self, version: int | None) -> None:
        self._status(f"Not sent: the key on file (version {version}) already failed on this token in this session, "
                     "and the same key gives the same answer. Press k to test a different key.")

    def _failed_before(self, source: Any = None, escrow_version: int | None = None) -> bool:
        """True when an admin-key test of this token failed in this session.

        With `source`, only a failure with a key from that source counts, and
        for the key on file only one with the same escrow version. A record
        without a source counts as typed.
        """
        from tui.recovery.unlock import AdminKeySource

        if source is None and self.result is not None and not self.result.succeeded:
            return True
        if self.token.token_id is None:
            return False
        audit = self.app.session.audit
        for record in audit.records(self.token.token_id):
            if record.operation != "xauth-test" or record.session != audit.session:
                continue
            if record.outcome == XauthOutcome.FUNCTIONAL.value:
                continue
            if source is None:
                return True
            recorded_source = record.details.get("source", AdminKeySource.TYPED.value)
            if recorded_source != source.value:
                continue
            if source is AdminKeySource.ESCROW and str(record.details.get("escrow_version")) != str(escrow_version):
                continue
            return True
        return False

    def _ask_typed_key(self) -> None:
        if self._failed_before():
            body = ("An admin-key test already failed on this token in this session. The same key gives the same "
                    "answer, and a wrong key may count against the admin key's retry limit.\n\n"
                    "Continue only with a different key.")
            self.app.push_screen(ConfirmModal("Test the admin key again", body, confirm_key="s", confirm_label="Continue"),
                                 self._ask_key)
            return
        self._ask_key(True)

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
        from tui.recovery.unlock import AdminKeySource

        if key is None:
            self._status("Not sent: no key entered.")
            return
        self._start_test(key, AdminKeySource.TYPED, None)

    def _start_test(self, key: Secret, source: Any, escrow_version: int | None) -> None:
        try:
            reader = locate_reader(self.app, self.token)
        except StaleTokenError as exc:
            self.app.push_screen(ErrorModal("Admin key not tested", str(exc)))
            return
        self.testing = True
        self._status("Sending GET CHALLENGE and EXTERNAL AUTHENTICATE...")
        self.run_worker(self._test(key, reader, source, escrow_version), name="xauth-test", group="device",
                        exit_on_error=False)

    async def _test(self, key: Secret, reader: str, source: Any, escrow_version: int | None) -> None:
        from tui.xauth import test_admin_key

        key_type = self.token.smartcard.admin_key.key_type

        def exchange(channel: Channel) -> XauthResult:
            return test_admin_key(channel, key, key_type=key_type)

        future = self.app.device.submit(run_on_token, self.app, self.token, reader, "admin key test", exchange)
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
        self._show_result(result, source, escrow_version)

    def _show_result(self, result: XauthResult, source: Any, escrow_version: int | None) -> None:
        self.result = result
        app = self.app
        token = self.token
        status = result.status.sw if result.status is not None else None
        app.session.audit.record("xauth-test", result.outcome.value, token_id=token.token_id,
                                 profile=token.profile.value, status=status, applet="external auth", step="11",
                                 result=result.verdict, source=source.value, escrow_version=escrow_version)
        app.session.add_event("xauth-test", result.verdict, token_id=token.token_id, applet="external auth")
        app.activity.add(f"Admin key test ({source.value}): {result.verdict}")

        lines = [f"Result: {result.verdict}", f"Key tested: {source.value}"
                 + (f", escrow version {escrow_version}" if escrow_version is not None else "")]
        if result.status is not None:
            lines.append(f"Status word: {result.status}")
        lines.append("")
        lines.extend(f"{number}. {step}" for number, step in enumerate(result.next_steps, start=1))
        self.query_one("#xauth-result", Static).update("\n".join(lines))
        self._status("Authentication succeeded." if result.succeeded else "Not retried: decide the next step below.")
