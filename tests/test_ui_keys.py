"""Key routing of the app: main-screen keys only on the main screen, and quit guarded during a FIDO reset.

App bindings reach every full-screen screen for the keys it does not bind
itself, so the app's `check_action` must keep the main screen's actions
(verify, unblock, reprovision...) from firing under the FIDO screen.
"""

from __future__ import annotations

import asyncio

from conftest import fixed_clock
from tui.fido.reset import ResetStep
from tui.lab.backend import LabBackend
from tui.settings import SiteSettings
from tui.ui.app import KeytriageApp
from tui.ui.fido_screens import FidoScreen, ResetWizardScreen
from tui.ui.modals import ConfirmModal, SecretPromptModal
from tui.ui.recovery_screens import OverrideModal
from tui.ui.screens import HelpScreen, MainScreen

VERIFY_SCREENS = (SecretPromptModal, OverrideModal)


def lab_app(scenario: str) -> tuple[KeytriageApp, LabBackend]:
    backend = LabBackend(scenario)
    return KeytriageApp(lambda: backend, SiteSettings(), lab_scenario=scenario, clock=fixed_clock), backend


async def settle(pilot) -> None:
    for _ in range(3):
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()


async def wait_until(pilot, condition, what: str, timeout: float = 15.0) -> None:
    """Let the app run until `condition()` holds; fail naming `what` otherwise."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


async def open_fido(pilot) -> FidoScreen:
    await settle(pilot)
    await pilot.press("f")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, FidoScreen), "the FIDO screen")
    screen = pilot.app.screen
    await wait_until(pilot, lambda: not screen.busy, "the FIDO state")
    return screen


async def test_verify_key_opens_verify_on_main_screen():
    app, _ = lab_app("fido-healthy")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, MainScreen)

        await pilot.press("v")
        await wait_until(pilot, lambda: isinstance(app.screen, VERIFY_SCREENS), "the verify prompt")

        assert app.recovery_running


async def test_verify_key_ignored_on_fido_screen():
    app, _ = lab_app("fido-healthy")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_fido(pilot)
        await pilot.press("v", "u", "a", "p", "1")
        await settle(pilot)

        assert app.screen is screen
        assert not app.recovery_running
        assert not any(event.kind == "verify" for event in app.session.events)
        assert app.check_action("verify", ()) is False
        assert app.check_action("select_token", (1,)) is False


async def test_help_and_quit_stay_global():
    app, _ = lab_app("fido-healthy")
    async with app.run_test(size=(80, 24)) as pilot:
        await open_fido(pilot)

        assert app.check_action("help", ()) is True
        assert app.check_action("quit", ()) is True
        await pilot.press("question_mark")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen), "the help screen")
        text = str(app.screen.query_one("#help-text").render())
        assert text.startswith("Keys of ")
        assert app.check_action("rescan", ()) is False


async def test_main_screen_keys_back_after_fido():
    app, _ = lab_app("fido-healthy")
    async with app.run_test(size=(80, 24)) as pilot:
        await open_fido(pilot)
        await pilot.press("b")
        await wait_until(pilot, lambda: isinstance(app.screen, MainScreen), "the main screen")

        assert app.check_action("verify", ()) is True


async def test_quit_during_pending_reset_asks():
    app, _ = lab_app("fido-blocked")
    async with app.run_test(size=(80, 24)) as pilot:
        await open_fido(pilot)
        await pilot.press("w")
        await wait_until(pilot, lambda: isinstance(app.screen, ResetWizardScreen), "the reset wizard")
        wizard_screen = app.screen
        await pilot.press(*"RESET", "enter", "y")
        await wait_until(pilot, lambda: wizard_screen.wizard.step is ResetStep.WAIT_REMOVE, "the removal step")

        await pilot.press("q")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal), "the quit question")
        assert app.is_running
        assert app.screen.id == "fido-reset-quit"
        assert "FIDO reset" in str(app.screen.query_one(".modal-body").render())

        await pilot.press("n")
        await pilot.pause()
        assert app.is_running
        assert app.screen is wizard_screen
        assert wizard_screen.wizard.step is ResetStep.WAIT_REMOVE

        # NOTE: the wizard screen focuses its hidden confirmation field again
        # when the question closes, and that field takes a typed q, so the
        # second quit goes through the action itself.
        await app.run_action("quit")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal), "the quit question again")
        await pilot.press("y")
        await pilot.pause()

    assert wizard_screen.wizard.step is ResetStep.CANCELLED
    assert app.return_code == 0


async def test_quit_without_reset_exits():
    app, _ = lab_app("fido-blocked")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("q")
        await pilot.pause()

    assert not app.is_running
    assert app.return_code == 0


async def test_quit_waits_for_write_in_flight():
    app, _ = lab_app("healthy")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.recovery_write_in_flight = True
        await pilot.press("q")
        await pilot.pause(0.2)
        assert app.is_running

        app.recovery_write_in_flight = False
        await wait_until(pilot, lambda: not app.is_running, "the quit after the write")

    assert app.return_code == 0


async def test_scan_exchanges_before_finish_line():
    app, _ = lab_app("healthy")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        entries = list(app.activity.entries)

    started = max(index for index, line in enumerate(entries) if "Scan started" in line)
    finished = max(index for index, line in enumerate(entries) if "Scan finished" in line)
    exchanges = entries[started + 1:finished]
    apdu_count = app.scan_result.apdu_count
    assert apdu_count > 0
    assert len([line for line in exchanges if "Escrow" not in line]) >= apdu_count
    assert "Scan finished" in entries[finished]
    assert not any("SELECT" in line for line in entries[finished + 1:])


async def test_actions_disabled_below_80x24(make_app):
    from tests.test_ui_app import FakeScanner, make_scan, make_token, settle

    app = make_app(FakeScanner([make_scan(make_token())]))
    async with app.run_test(size=(70, 20)) as pilot:
        await settle(app, pilot)
        assert app.check_action("verify", ()) is False
        assert app.check_action("rescan", ()) is False
        assert app.check_action("quit", ()) is not False
