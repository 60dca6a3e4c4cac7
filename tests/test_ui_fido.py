"""The FIDO screen and the reset wizard in the TUI, driven over the in-process lab key with its LAB controls."""

from __future__ import annotations

import asyncio
import threading

import pytest

from conftest import fixed_clock
from tui.audit import AuditTrail
from tui.escrow.context import EscrowContext
from tui.escrow.flow import EscrowFlow
from tui.escrow.memory import MemoryStore
from tui.escrow.records import RecordState, SecretKind
from tui.fido.reset import TOO_LATE_TEXT, ResetStep
from tui.lab.backend import LabBackend
from tui.lab.fido_applet import FidoApplet
from tui.lab.soft_fido import CMD_RESET, PIN_GET_TOKEN_LEGACY, PIN_GET_TOKEN_WITH_PERMISSIONS
from tui.session import Session
from tui.settings import SiteSettings
from tui.ui.app import KeytriageApp
from tui.ui.fido_screens import STEP_TITLES, FidoScreen, ResetWizardScreen
from tui.ui.modals import ConfirmModal, ErrorModal, SecretPromptModal, ShowOnceModal

HEALTHY_PIN = "975310"


class LabSetup:
    """The app over one lab scenario, its backend, and a lab escrow store."""

    def __init__(self, scenario: str, settings: SiteSettings | None = None) -> None:
        settings = settings or SiteSettings()
        self.backend = LabBackend(scenario)
        self.reader = self.backend.list_readers()[0]
        session = Session(settings, AuditTrail(lab=True), lab_scenario=scenario)
        # The escrow UI replaces this with its own lab store at start-up, when it builds one.
        session.escrow = EscrowContext(EscrowFlow(MemoryStore(), user="tech", audit=session.audit), label="lab store")
        self.app = KeytriageApp(lambda: self.backend, settings, lab_scenario=scenario, clock=fixed_clock, session=session)

    @property
    def store(self) -> MemoryStore:
        return self.app.session.escrow.flow.store

    @property
    def authenticator(self):
        return self.backend.key(self.reader).card.applet(FidoApplet).authenticator

    def pins_sent(self) -> int:
        subs = self.authenticator.client_pin_subcommands()
        return sum(1 for sub in subs if sub in (PIN_GET_TOKEN_LEGACY, PIN_GET_TOKEN_WITH_PERMISSIONS))


async def settle(pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


async def wait_until(pilot, condition, what: str, timeout: float = 15.0) -> None:
    """Let the app run until `condition()` holds; fail naming `what` otherwise."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


def text(screen, selector: str) -> str:
    return str(screen.query_one(selector).render())


async def open_fido(pilot) -> FidoScreen:
    await settle(pilot)
    await pilot.press("f")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, FidoScreen), "the FIDO screen")
    screen = pilot.app.screen
    await wait_until(pilot, lambda: not screen.busy and "tries left" in text(screen, "#fido-state") or "no PIN set" in text(screen, "#fido-state"),
                     "the FIDO state")
    return screen


async def type_secret(pilot, value: str) -> None:
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, SecretPromptModal), "the PIN prompt")
    for char in value:
        await pilot.press(char)
    await pilot.press("enter")
    await pilot.press("s")


async def test_fido_screen_shows_state():
    lab = LabSetup("fido-healthy")
    async with lab.app.run_test(size=(80, 24)) as pilot:
        screen = await open_fido(pilot)

        assert "FIDO PIN: 8 tries left, ok" in text(screen, "#fido-state")
        assert "getInfo clientPin: true" in text(screen, "#fido-state")
        assert "Step 8" in text(screen, "#fido-guidance")
        assert lab.pins_sent() == 0


async def test_list_credentials_with_pin():
    lab = LabSetup("fido-healthy")
    async with lab.app.run_test(size=(80, 24)) as pilot:
        screen = await open_fido(pilot)
        await pilot.press("l")
        await type_secret(pilot, HEALTHY_PIN)
        await wait_until(pilot, lambda: screen.attempt is not None and not screen.busy, "the listing")

        listing = text(screen, "#fido-credentials")
        assert "example.com: alice, bob" in listing
        assert "example.org: alice" in listing
        assert lab.pins_sent() == 1
        audit = lab.app.session.audit.path.read_text()
        assert "example.com" not in audit
        assert HEALTHY_PIN not in audit
        assert all("example" not in event.summary for event in lab.app.session.events)


async def test_second_attempt_shows_tries_and_needs_override():
    lab = LabSetup("fido-healthy")
    async with lab.app.run_test(size=(80, 24)) as pilot:
        screen = await open_fido(pilot)
        await pilot.press("l")
        await type_secret(pilot, "000000")
        await wait_until(pilot, lambda: screen.attempt is not None and not screen.busy, "the wrong-PIN result")
        assert "7 tries left" in text(screen, "#fido-credentials")

        await pilot.press("l")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, ConfirmModal), "the override question")
        modal = pilot.app.screen
        assert "7 tries left" in str(modal.query_one(".modal-body").render())
        await pilot.press("enter")
        await pilot.press("o")  # without the typed word the override does nothing
        assert isinstance(pilot.app.screen, ConfirmModal)
        assert "does not match" in str(modal.query_one("#modal-error").render())
        await pilot.press("n")
        await wait_until(pilot, lambda: not screen.busy, "the cancelled override")

        assert lab.pins_sent() == 1
        assert lab.authenticator.pin_retries == 7


async def test_blocked_key_gets_no_pin_prompt():
    lab = LabSetup("fido-blocked")
    async with lab.app.run_test(size=(80, 24)) as pilot:
        screen = await open_fido(pilot)
        assert "BLOCKED (reset only)" in text(screen, "#fido-state")
        await pilot.press("l")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, ErrorModal), "the refusal")

        assert "only a FIDO reset recovers" in str(pilot.app.screen.query_one(".modal-body").render())
        assert lab.pins_sent() == 0


def view_caught_up(pilot) -> bool:
    """Return True when the wizard on screen shows its current step.

    The step changes on the device thread before the screen has handled the
    message that redraws it, so a test that reads the screen waits for both.
    """
    screen = pilot.app.screen
    if not isinstance(screen, ResetWizardScreen) or screen.wizard is None:
        return True
    return STEP_TITLES[screen.wizard.step] in text(screen, "#wizard-title")


async def start_wizard(pilot) -> ResetWizardScreen:
    await pilot.press("w")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, ResetWizardScreen), "the reset wizard")
    wizard_screen = pilot.app.screen
    for char in "RESET":
        await pilot.press(char)
    await pilot.press("enter")
    await pilot.press("y")
    await wait_until(pilot, lambda: wizard_screen.wizard.step is ResetStep.WAIT_REMOVE and view_caught_up(pilot), "the removal step")
    return wizard_screen


async def test_wizard_y_right_after_enter_reaches_the_screen():
    # A fast typist's keys arrive before the screen has handled the field's
    # submission; the y must still start the wizard, not land in the field.
    from textual import events

    lab = LabSetup("fido-blocked")
    async with lab.app.run_test(size=(80, 24)) as pilot:
        await open_fido(pilot)
        await pilot.press("w")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, ResetWizardScreen), "the reset wizard")
        wizard_screen = pilot.app.screen
        for key, char in [(c, c) for c in "RESET"] + [("enter", "\r"), ("y", "y")]:
            event = events.Key(key, char)
            event.set_sender(pilot.app)
            pilot.app._driver.send_message(event)
        await wait_until(pilot, lambda: wizard_screen.wizard.step is ResetStep.WAIT_REMOVE and view_caught_up(pilot), "the removal step")

        assert wizard_screen.query_one("#wizard-confirmation").value == "RESET"


async def test_wizard_end_to_end_with_lab_controls():
    lab = LabSetup("fido-blocked")
    async with lab.app.run_test(size=(80, 24)) as pilot:
        await open_fido(pilot)
        screen = await start_wizard(pilot)
        wizard = screen.wizard
        assert "Remove the key" in text(screen, "#wizard-message")
        assert "LAB controls" in text(screen, "#wizard-lab")

        await pilot.press("x")
        await wait_until(pilot, lambda: wizard.step is ResetStep.WAIT_INSERT and view_caught_up(pilot), "the insertion step")
        assert "within 5 s of insertion" in text(screen, "#wizard-countdown")
        await pilot.press("i")
        await wait_until(pilot, lambda: wizard.step is ResetStep.WAIT_TOUCH and view_caught_up(pilot), "the touch request")
        assert "TOUCH THE KEY" in text(screen, "#wizard-title")
        assert text(screen, "#wizard-countdown") == "Touch the key now (up to 30 s)."
        await pilot.press("t")
        await wait_until(pilot, lambda: wizard.step is ResetStep.DONE and view_caught_up(pilot), "the finished reset")

        assert not lab.authenticator.pin_is_set
        assert lab.authenticator.credentials == []
        events = [event for event in lab.app.session.events if event.kind == "fido-reset"]
        assert events[0].user_actions[0] == "re-register the key with every relying party"
        assert "FIDO PIN not set" in events[0].user_actions[1]
        assert "[p] type a new FIDO PIN" in text(screen, "#wizard-keys")

        await pilot.press("g")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, ShowOnceModal), "the new PIN")
        token_id = wizard.token_id
        record, value, version = lab.store.read_version(token_id, SecretKind.FIDO_PIN)
        assert record.state is RecordState.APPLIED
        assert version == 2
        assert lab.authenticator.pin_is_set
        assert lab.authenticator.pin_hash == __import__("hashlib").sha256(value.reveal_text().encode()).digest()[:16]
        await pilot.press("d")
        await wait_until(pilot, lambda: pilot.app.screen is screen, "the wizard again")
        # The key reports its new FIDO PIN, so the ticket drops the no-PIN to-do.
        await settle(pilot)
        assert events[0].user_actions == ["re-register the key with every relying party"]

        # The hidden confirmation field must not take the focus back and swallow b.
        await pilot.press("b")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, FidoScreen), "the FIDO screen")


def main_fido_line(app) -> str:
    """Return the main screen's line about the FIDO PIN of the selected token."""
    from textual.widgets import Static

    lines = [line for widget in app.main_screen.query(Static) for line in str(widget.render()).splitlines()]
    return next((line.strip() for line in lines if "FIDO PIN" in line), "")


async def test_main_screen_rescans_after_reset_and_pin():
    lab = LabSetup("fido-blocked")
    async with lab.app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert "BLOCKED (reset only)" in main_fido_line(lab.app)
        scans_before = lab.app.scan_count
        await open_fido(pilot)
        screen = await start_wizard(pilot)
        wizard = screen.wizard
        await pilot.press("x")
        await wait_until(pilot, lambda: wizard.step is ResetStep.WAIT_INSERT and view_caught_up(pilot), "the insertion step")
        await pilot.press("i")
        await wait_until(pilot, lambda: wizard.step is ResetStep.WAIT_TOUCH and view_caught_up(pilot), "the touch request")
        await pilot.press("t")
        await wait_until(pilot, lambda: wizard.step is ResetStep.DONE and view_caught_up(pilot), "the finished reset")
        await settle(pilot)
        await pilot.press("g")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, ShowOnceModal), "the new PIN")
        await pilot.press("d")
        await wait_until(pilot, lambda: pilot.app.screen is screen, "the wizard again")
        await settle(pilot)

        # No rescan while the FIDO screens are open; one on the way back, without r.
        assert lab.app.scan_count == scans_before
        await pilot.press("b")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, FidoScreen), "the FIDO screen")
        await pilot.press("b")
        await wait_until(pilot, lambda: lab.app.scan_count == scans_before + 1 and not lab.app.scanning, "the rescan")
        await settle(pilot)

        line = main_fido_line(lab.app)
        assert "BLOCKED" not in line
        assert "8/8 ok" in line


async def test_rescan_waits_for_running_scan():
    lab = LabSetup("fido-healthy")
    async with lab.app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = await open_fido(pilot)
        await pilot.press("l")
        await type_secret(pilot, "000000")
        await wait_until(pilot, lambda: screen.attempt is not None and not screen.busy, "the wrong-PIN result")
        scans_before = lab.app.scan_count

        # A scan that started before the FIDO change is still running when the screen closes.
        lab.app.scanning = True
        await pilot.press("b")
        await settle(pilot)
        assert lab.app.scan_count == scans_before

        lab.app.scanning = False
        lab.app.action_rescan()
        await wait_until(pilot, lambda: lab.app.scan_count == scans_before + 2 and not lab.app.scanning,
                         "the rescan after the running one")
        await settle(pilot)
        assert "7/8 ok" in main_fido_line(lab.app)


async def test_main_screen_no_rescan_without_change():
    lab = LabSetup("fido-healthy")
    async with lab.app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        scans_before = lab.app.scan_count
        await open_fido(pilot)
        await pilot.press("b")
        await settle(pilot)

        assert pilot.app.screen is lab.app.main_screen
        assert lab.app.scan_count == scans_before


def without_escrow(app) -> None:
    """Give the running app an escrow context without a store, as when no Vault address is configured."""
    context = EscrowContext(None, label="Vault", unavailable_reason="no Vault address is configured")
    app.escrow_context = context
    app.session.escrow = context


async def confirm_reset(pilot, before_typing=None) -> ResetWizardScreen:
    """Open the wizard, type RESET and press y. Return the screen once the wizard is armed or was held.

    `before_typing(screen)` runs on the confirmation page before anything is typed.
    """
    await pilot.press("w")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, ResetWizardScreen), "the reset wizard")
    screen = pilot.app.screen
    if before_typing is not None:
        before_typing(screen)
    for char in "RESET":
        await pilot.press(char)
    await pilot.press("enter")
    await pilot.press("y")
    await wait_until(pilot, lambda: screen.wizard.step is not ResetStep.INTRO or "not started" in screen.wizard.message,
                     "the arming or its refusal")
    await settle(pilot)
    return screen


async def test_wizard_needs_escrow_before_reset():
    lab = LabSetup("fido-blocked")
    async with lab.app.run_test(size=(80, 24)) as pilot:
        await open_fido(pilot)
        without_escrow(lab.app)
        screen = await confirm_reset(pilot)
        message = text(screen, "#wizard-message")

        assert screen.wizard.step is ResetStep.INTRO
        assert "no Vault address is configured" in message
        assert "FIDO reset was not started" in message
        assert "l on the main screen" in message
        # The key never left the reader and no reset reached it.
        await pilot.press("x", "i")
        await settle(pilot)
        assert screen.wizard.step is ResetStep.INTRO
        assert not any(command == CMD_RESET for command, _ in lab.authenticator.requests)
        assert lab.authenticator.pin_retries == 0


async def test_wizard_rechecks_expired_vault_token():
    from tui.escrow.errors import VaultTokenError

    lab = LabSetup("fido-blocked")
    async with lab.app.run_test(size=(80, 24)) as pilot:
        await open_fido(pilot)
        # The status read at start-up is ok, but the token expires before the reset.
        assert lab.app.session.escrow.status.usable
        lab.store.fail_next("token_info", VaultTokenError("The Vault token has expired (HTTP 403). Press l to log in again."))
        screen = await confirm_reset(pilot)

        assert screen.wizard.step is ResetStep.INTRO
        assert "The Vault token has expired" in text(screen, "#wizard-message")
        assert not any(command == CMD_RESET for command, _ in lab.authenticator.requests)


async def test_wizard_user_sets_pin_without_escrow():
    from tui.ticket import ticket_text

    settings = SiteSettings.from_dict({}, raw={"site": {"fido_pin_set_by_user": True}})
    lab = LabSetup("fido-blocked", settings)
    prompts = []
    async with lab.app.run_test(size=(80, 24)) as pilot:
        await open_fido(pilot)
        without_escrow(lab.app)
        screen = await confirm_reset(pilot, before_typing=lambda wizard_screen: prompts.append(
            text(wizard_screen, "#wizard-prompt")))
        assert "the user sets it at the first registration" in prompts[0]
        wizard = screen.wizard
        assert wizard.step is ResetStep.WAIT_REMOVE
        await pilot.press("x")
        await wait_until(pilot, lambda: wizard.step is ResetStep.WAIT_INSERT and view_caught_up(pilot), "the insertion step")
        await pilot.press("i")
        await wait_until(pilot, lambda: wizard.step is ResetStep.WAIT_TOUCH and view_caught_up(pilot), "the touch request")
        await pilot.press("t")
        await wait_until(pilot, lambda: wizard.step is ResetStep.DONE and view_caught_up(pilot), "the finished reset")
        await settle(pilot)

        assert not lab.authenticator.pin_is_set
        assert screen.check_action("new_pin", (True,)) is False
        assert "first registration" in text(screen, "#wizard-keys")
        reset = next(event for event in lab.app.session.events if event.kind == "fido-reset")
        assert any("first registration" in action for action in reset.user_actions)
        ticket = " ".join(ticket_text(lab.app.session, lab.app.scan_result, lab.app.selected_token()).split())
        assert "Set a FIDO PIN at the first registration" in ticket


async def test_wizard_shows_too_late_refusal():
    lab = LabSetup("fido-blocked")
    async with lab.app.run_test(size=(80, 24)) as pilot:
        await open_fido(pilot)
        lab.authenticator.reset_window_s = -1  # the key refuses every reset as too late
        screen = await start_wizard(pilot)
        await pilot.press("x")
        await wait_until(pilot, lambda: screen.wizard.step is ResetStep.WAIT_INSERT and view_caught_up(pilot), "the insertion step")
        await pilot.press("i")
        await wait_until(pilot, lambda: screen.wizard.step is ResetStep.FAILED and view_caught_up(pilot), "the refusal")

        assert "Too late after insertion" in text(screen, "#wizard-message")
        assert screen.wizard.message == TOO_LATE_TEXT
        assert lab.authenticator.pin_is_set
        await pilot.press("a")
        assert screen.wizard.step is ResetStep.WAIT_REMOVE


async def test_wizard_says_window_closed_during_slow_check():
    # A card that takes seconds per APDU keeps the identity check running past
    # the reset window: the countdown must say so at once, not "0 s left".
    lab = LabSetup("fido-blocked")
    now = [1000.0]
    lab.app.fido_clock = lambda: now[0]
    release = threading.Event()
    async with lab.app.run_test(size=(80, 24)) as pilot:
        await open_fido(pilot)
        screen = await start_wizard(pilot)
        wizard = screen.wizard
        real_checker = screen.runner.identity_checker

        def slow_checker(*args):
            release.wait(timeout=10)
            return real_checker(*args)

        screen.runner.identity_checker = slow_checker
        await pilot.press("x")
        await wait_until(pilot, lambda: wizard.step is ResetStep.WAIT_INSERT and view_caught_up(pilot), "the insertion step")
        await pilot.press("i")
        await wait_until(pilot, lambda: wizard.step is ResetStep.CHECKING and view_caught_up(pilot), "the identity check")
        await wait_until(pilot, lambda: "s left" in text(screen, "#wizard-countdown"), "the countdown")

        now[0] += wizard.window_s + 1
        await wait_until(pilot, lambda: "closed" in text(screen, "#wizard-countdown"), "the closed window")
        countdown = text(screen, "#wizard-countdown")
        assert "no reset will be sent" in countdown
        assert "identity check is finishing" in countdown
        assert "0 s left" not in countdown
        assert "sending the reset" not in text(screen, "#wizard-message")

        release.set()
        await wait_until(pilot, lambda: wizard.step is ResetStep.WAIT_REMOVE and view_caught_up(pilot), "the refusal")
        assert "Too late after insertion" in text(screen, "#wizard-message")
        assert not any(command == CMD_RESET for command, _ in lab.authenticator.requests)


async def test_wizard_cancel_before_send():
    lab = LabSetup("fido-blocked")
    async with lab.app.run_test(size=(80, 24)) as pilot:
        await open_fido(pilot)
        screen = await start_wizard(pilot)
        await pilot.press("x")
        await wait_until(pilot, lambda: screen.wizard.step is ResetStep.WAIT_INSERT and view_caught_up(pilot), "the insertion step")
        await pilot.press("c")
        assert screen.wizard.step is ResetStep.CANCELLED
        await pilot.press("i")
        await settle(pilot)
        await pilot.pause(0.5)

        assert screen.wizard.step is ResetStep.CANCELLED
        assert not any(command == CMD_RESET for command, _ in lab.authenticator.requests)
        assert lab.authenticator.pin_retries == 0


async def test_wizard_wrong_confirmation_sends_nothing():
    lab = LabSetup("fido-blocked")
    async with lab.app.run_test(size=(80, 24)) as pilot:
        await open_fido(pilot)
        await pilot.press("w")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, ResetWizardScreen), "the reset wizard")
        screen = pilot.app.screen
        for char in "reset":
            await pilot.press(char)
        await pilot.press("enter")
        await pilot.press("y")
        await settle(pilot)

        assert screen.wizard.step is ResetStep.INTRO
        assert "does not match" in text(screen, "#wizard-message")


async def test_site_lets_user_set_pin():
    settings = SiteSettings.from_dict({}, raw={"site": {"fido_pin_set_by_user": True}})
    lab = LabSetup("fido-not-set", settings)
    async with lab.app.run_test(size=(80, 24)) as pilot:
        screen = await open_fido(pilot)
        await pilot.press("g")
        await wait_until(pilot, lambda: not screen.busy, "the new-PIN check")

        assert "first registration" in text(screen, "#fido-status")
        assert not lab.authenticator.pin_is_set


async def test_new_pin_on_key_without_one_warns_first():
    lab = LabSetup("fido-not-set")
    async with lab.app.run_test(size=(80, 24)) as pilot:
        screen = await open_fido(pilot)
        await pilot.press("p")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, ConfirmModal), "the warning")
        assert "cannot be removed again without a FIDO reset" in str(pilot.app.screen.query_one(".modal-body").render())
        await pilot.press("s")
        await type_secret(pilot, "24681357")
        await type_secret(pilot, "24681357")
        await wait_until(pilot, lambda: not screen.busy, "the new PIN")

        assert lab.authenticator.pin_is_set
        record, _, _ = lab.store.read_version(str(lab.app.selected_token().token_id), SecretKind.FIDO_PIN)
        assert record.state is RecordState.APPLIED
        assert "24681357" not in lab.app.session.audit.path.read_text()


async def test_read_only_hides_fido_writes():
    lab = LabSetup("fido-healthy", SiteSettings(read_only=True))
    async with lab.app.run_test(size=(80, 24)) as pilot:
        screen = await open_fido(pilot)
        assert text(screen, "#fido-status").startswith("read-only mode:")
        for action in ("list_credentials", "reset_wizard", "new_pin"):
            assert screen.check_action(action, ()) is False
        assert screen.check_action("reread", ()) is True

        # The keys do nothing, and the actions reject when called directly.
        await pilot.press("l", "w", "p", "g")
        await settle(pilot)
        assert pilot.app.screen is screen
        screen.action_list_credentials()
        screen.action_reset_wizard()
        screen.action_new_pin(True)
        await settle(pilot)
        assert pilot.app.screen is screen
        assert text(screen, "#fido-status").startswith("read-only mode:")
        assert lab.pins_sent() == 0
        assert not any(command == CMD_RESET for command, _ in lab.authenticator.requests)


async def test_read_only_wizard_sends_nothing():
    lab = LabSetup("fido-blocked", SiteSettings(read_only=True))
    async with lab.app.run_test(size=(80, 24)) as pilot:
        fido_screen = await open_fido(pilot)
        # The w key is hidden in read-only mode, so the wizard is opened directly to test its own guard.
        wizard_screen = ResetWizardScreen(fido_screen.token_key)
        await pilot.app.push_screen(wizard_screen)
        await settle(pilot)
        assert wizard_screen.check_action("confirm", ()) is False
        assert wizard_screen.check_action("new_pin", ()) is False
        assert "[y]" not in text(wizard_screen, "#wizard-keys")
        assert text(wizard_screen, "#wizard-message").startswith("read-only mode:")

        wizard_screen.query_one("#wizard-confirmation").value = "RESET"
        wizard_screen.action_confirm()
        await settle(pilot)
        assert wizard_screen.wizard.step is ResetStep.INTRO
        assert not any(command == CMD_RESET for command, _ in lab.authenticator.requests)


async def test_quit_during_reset_names_step():
    lab = LabSetup("fido-blocked")
    async with lab.app.run_test(size=(80, 24)) as pilot:
        await open_fido(pilot)
        screen = await start_wizard(pilot)
        await pilot.press("x")
        await wait_until(pilot, lambda: screen.wizard.step is ResetStep.WAIT_INSERT and view_caught_up(pilot), "the insertion step")
        await pilot.press("q")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, ConfirmModal), "the quit question")
        body = str(pilot.app.screen.query_one(".modal-body").render())

        assert "3/4 Re-insert the key" in body
        assert "wait insert" not in body
        assert "wait_insert" not in body
        await pilot.press("n")
        await wait_until(pilot, lambda: pilot.app.screen is screen, "the wizard again")
        assert screen.wizard.step is ResetStep.WAIT_INSERT


# --- snapshots at 80x24 ------------------------------------------------------------------------------


def snapshot_app(scenario: str) -> KeytriageApp:
    return LabSetup(scenario).app


async def fido_open(pilot) -> None:
    await open_fido(pilot)
    await settle(pilot)


async def wizard_intro(pilot) -> None:
    await open_fido(pilot)
    await pilot.press("w")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, ResetWizardScreen), "the reset wizard")
    await settle(pilot)


async def wizard_remove(pilot) -> None:
    await open_fido(pilot)
    await start_wizard(pilot)
    await settle(pilot)


@pytest.mark.parametrize("scenario", ["fido-healthy", "fido-blocked"])
def test_fido_screen_snapshot(snap_compare, scenario):
    assert snap_compare(snapshot_app(scenario), terminal_size=(80, 24), run_before=fido_open)


def test_wizard_intro_snapshot(snap_compare):
    assert snap_compare(snapshot_app("fido-blocked"), terminal_size=(80, 24), run_before=wizard_intro)


def test_wizard_remove_snapshot(snap_compare):
    assert snap_compare(snapshot_app("fido-blocked"), terminal_size=(80, 24), run_before=wizard_remove)
