"""The key bar: the keys that work now, in one line that fits 80 columns, disabled keys left out."""

from __future__ import annotations

from test_ui_keys import lab_app, open_fido, settle, wait_until
from tui.fido.reset import ResetStep
from tui.lab.backend import LabBackend
from tui.settings import SiteSettings
from tui.ui.app import KeytriageApp
from tui.ui.fido_screens import ResetWizardScreen
from tui.ui.keybar import PALETTE_TEXT, KeyBar


def bar_text(screen) -> str:
    """Return the key bar's line as plain text."""
    return str(screen.query_one(KeyBar).render())


async def test_main_bar_fits_help_and_quit():
    app, _ = lab_app("healthy")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        text = bar_text(app.screen)

        assert text.startswith(" r Rescan  i Triage  v Verify  f FIDO  t Ticket  ? Help  q Quit ")
        assert text.endswith(PALETTE_TEXT)
        assert len(text) <= 80
        assert "Unblock" not in text


async def test_main_bar_leaves_out_read_only_keys():
    backend = LabBackend("pin-locked-puk")
    app = KeytriageApp(lambda: backend, SiteSettings(read_only=True), lab_scenario="pin-locked-puk")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        text = bar_text(app.screen)

        assert "v Verify" not in text
        assert "r Rescan" in text
        assert "? Help" in text


async def test_wizard_bar_follows_step():
    app, _ = lab_app("fido-blocked")
    async with app.run_test(size=(80, 24)) as pilot:
        await open_fido(pilot)
        await pilot.press("w")
        await wait_until(pilot, lambda: isinstance(app.screen, ResetWizardScreen), "the reset wizard")
        screen = app.screen
        for char in "RESET":
            await pilot.press(char)
        await pilot.press("enter")
        await pilot.pause()

        intro = bar_text(screen)
        assert "y Start reset" in intro
        assert "c Cancel" in intro
        assert "a Try again" not in intro
        assert "p Type new PIN" not in intro
        # The LAB keys are named on the wizard's own LAB controls line instead.
        assert "LAB" not in intro

        await pilot.press("y")
        await wait_until(pilot, lambda: screen.wizard.step is ResetStep.WAIT_REMOVE, "the removal step")
        await pilot.pause()
        removing = bar_text(screen)
        assert "y Start reset" not in removing
        assert "c Cancel" in removing
        assert "b Back" in removing


async def test_wizard_bar_hides_lab_keys_on_real_key():
    app, _ = lab_app("fido-blocked")
    async with app.run_test(size=(80, 24)) as pilot:
        await open_fido(pilot)
        await pilot.press("w")
        await wait_until(pilot, lambda: isinstance(app.screen, ResetWizardScreen), "the reset wizard")
        screen = app.screen

        # A served lab key reaches the wizard as a real key would: no LAB keys.
        app.session.lab_scenario = None
        screen.refresh_bindings()
        await pilot.pause()
        await pilot.pause()

        assert "LAB" not in bar_text(screen)
        assert app.screen.check_action("lab_remove", ()) is False


async def test_fido_bar_fits_back_help_quit():
    app, _ = lab_app("fido-healthy")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_fido(pilot)
        await pilot.pause()
        text = bar_text(screen)

        assert len(text) <= 80
        assert "…" not in text
        for entry in ("r Re-read", "l Credentials", "w Reset wizard", "b Back", "? Help", "q Quit"):
            assert entry in text

        await pilot.press("question_mark")
        help_text = str(app.screen.query_one("#help-text").render())
        assert "Keys of the FIDO screen:" in help_text
        assert "Generate a new FIDO PIN" in help_text


def assert_bar_fits(text: str, step: str) -> None:
    """Fail naming `step` when the bar is wider than 80 columns, cropped, or lacks help and quit."""
    assert len(text) <= 80, f"{step}: {len(text)} columns: {text!r}"
    assert "…" not in text, f"{step}: cropped: {text!r}"
    assert "? Help" in text, f"{step}: no help key: {text!r}"
    assert "q Quit" in text, f"{step}: no quit key: {text!r}"


async def test_wizard_bar_fits_every_step():
    app, _ = lab_app("fido-blocked")
    async with app.run_test(size=(80, 24)) as pilot:
        await open_fido(pilot)
        await pilot.press("w")
        await wait_until(pilot, lambda: isinstance(app.screen, ResetWizardScreen), "the reset wizard")
        screen = app.screen
        wizard = screen.wizard

        async def check(step: str) -> None:
            await pilot.pause()
            await pilot.pause()
            assert_bar_fits(bar_text(screen), step)

        for char in "RESET":
            await pilot.press(char)
        await pilot.press("enter")
        await check("intro after Enter")

        await pilot.press("y")
        await wait_until(pilot, lambda: wizard.step is ResetStep.WAIT_REMOVE, "the removal step")
        await check("wait remove")

        await pilot.press("x")
        await wait_until(pilot, lambda: wizard.step is ResetStep.WAIT_INSERT, "the insertion step")
        await check("wait insert")

        await pilot.press("i")
        await wait_until(pilot, lambda: wizard.step is ResetStep.WAIT_TOUCH, "the touch request")
        await check("wait touch")

        # A cancel while the key waits for the touch fails the reset and offers a retry.
        await pilot.press("c")
        await wait_until(pilot, lambda: wizard.step is ResetStep.FAILED, "the cancelled reset")
        await check("failed")

        await pilot.press("a")
        await wait_until(pilot, lambda: wizard.step is ResetStep.WAIT_REMOVE, "the removal step again")
        await pilot.press("x")
        await wait_until(pilot, lambda: wizard.step is ResetStep.WAIT_INSERT, "the insertion step again")
        await pilot.press("i")
        await wait_until(pilot, lambda: wizard.step is ResetStep.WAIT_TOUCH, "the touch request again")
        await pilot.press("t")
        await wait_until(pilot, lambda: wizard.step is ResetStep.DONE, "the finished reset")
        await check("done")

