"""Below 80x24 a size notice covers every screen and only quit works, also on screens opened before the shrink."""

from __future__ import annotations

from textual import events
from textual.widgets import Input

from conftest import FakeScanner, fixed_clock, make_scan, make_token
from tui.settings import SiteSettings
from tui.ui.app import KeytriageApp
from tui.ui.modals import ConfirmModal, ErrorModal, SecretPromptModal
from tui.ui.otp_screens import ExternalAuthScreen
from tui.ui.screens import HelpScreen
from tui.ui.small_terminal import SizeCover, too_small
from tui.ui.ticket_screens import TicketScreen
from tui.ui.triage import TriageScreen

SMALL = (70, 20)
FULL = (80, 24)


async def settle(app, pilot) -> None:
    """Wait for the workers and the messages they posted."""
    await app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


async def resize(pilot, size: tuple[int, int]) -> None:
    """Resize the terminal and let the screens and the covers follow."""
    await pilot.resize_terminal(*size)
    await pilot.pause()
    await pilot.pause()


def cover_text(screen) -> str | None:
    """Return the notice covering `screen`, None when it is not covered."""
    covers = screen.query(SizeCover)
    return str(covers.first().render()) if covers else None


def lab_app(scenario: str) -> KeytriageApp:
    from tui.lab.backend import LabBackend

    return KeytriageApp(lambda: LabBackend(scenario), SiteSettings(), lab_scenario=scenario, clock=fixed_clock)


def test_too_small_bounds():
    from textual.geometry import Size

    assert too_small(Size(79, 24))
    assert too_small(Size(80, 23))
    assert not too_small(Size(80, 24))
    assert not too_small(Size(120, 36))


async def test_shrink_covers_external_auth_keys():
    app = lab_app("xauth-stale")
    async with app.run_test(size=FULL) as pilot:
        await settle(app, pilot)
        await pilot.press("x")
        await settle(app, pilot)
        screen = app.screen
        assert isinstance(screen, ExternalAuthScreen)
        assert cover_text(screen) is None

        await resize(pilot, SMALL)
        assert cover_text(screen) == "keytriage needs 80x24, has 70x20. Enlarge the terminal, or press q to quit."

        # Neither the test keys nor the close key run while the screen cannot be read.
        await pilot.press("k", "t", "n", "escape")
        await settle(app, pilot)
        assert app.screen is screen
        assert screen.result is None
        assert not [record for record in app.session.audit.records() if record.operation == "xauth-test"]

        await resize(pilot, FULL)
        assert cover_text(screen) is None
        await pilot.press("k")
        await pilot.pause()
        assert isinstance(app.screen, SecretPromptModal)


async def test_shrink_blocks_triage_save_and_typing(make_app):
    app = make_app(FakeScanner([make_scan(make_token())]))
    async with app.run_test(size=FULL) as pilot:
        await settle(app, pilot)
        await pilot.press("i", "tab", "tab")
        screen = app.screen
        assert isinstance(screen, TriageScreen)
        notes = screen.query_one("#triage-notes", Input)
        assert screen.focused is notes

        await resize(pilot, SMALL)
        await pilot.press(*"abc", "enter", "s")
        app.post_message(events.Paste("pasted"))
        await pilot.pause()
        assert app.screen is screen
        assert notes.value == ""
        assert app.session.triage.trying is None

        # Enlarged again, the focus is where it was and typing reaches the field.
        await resize(pilot, FULL)
        assert screen.focused is notes
        await pilot.press(*"ok")
        assert notes.value == "ok"


async def test_screen_opened_while_small_covered(make_app):
    app = make_app(FakeScanner([make_scan(make_token())]))
    async with app.run_test(size=FULL) as pilot:
        await settle(app, pilot)
        await resize(pilot, SMALL)
        assert app.main_screen.has_class("-too-small")
        assert cover_text(app.main_screen) is None

        # A worker may open a result while the terminal is small.
        app.push_screen(ErrorModal("Admin key not tested", "the token was removed"))
        await settle(app, pilot)
        modal = app.screen
        assert isinstance(modal, ErrorModal)
        assert cover_text(modal).startswith("keytriage needs 80x24, has 70x20.")
        await pilot.press("o", "enter", "escape")
        await pilot.pause()
        assert app.screen is modal

        await resize(pilot, FULL)
        assert cover_text(modal) is None


async def test_main_screen_keys_dropped_when_small(make_app):
    app = make_app(FakeScanner([make_scan(make_token())]))
    async with app.run_test(size=SMALL) as pilot:
        await settle(app, pilot)
        await pilot.press("ctrl+p", "question_mark", "t", "i")
        await pilot.pause()

        assert app.screen is app.main_screen
        assert app.is_running


async def test_q_quits_from_covered_ticket(make_app):
    app = make_app(FakeScanner([make_scan(make_token())]))
    async with app.run_test(size=FULL) as pilot:
        await settle(app, pilot)
        await pilot.press("t")
        await pilot.pause()
        assert isinstance(app.screen, TicketScreen)

        await resize(pilot, SMALL)
        await pilot.press("q")
        await pilot.pause()

        assert not app.is_running
    assert app.return_code == 0


async def test_help_cover_removed_when_shown_again(make_app):
    app = make_app(FakeScanner([make_scan(make_token())]))
    async with app.run_test(size=FULL) as pilot:
        await settle(app, pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        help_screen = app.screen
        assert isinstance(help_screen, HelpScreen)

        await resize(pilot, SMALL)
        assert cover_text(help_screen) is not None
        await resize(pilot, FULL)
        await pilot.press("q")
        await pilot.pause()
        assert app.screen is app.main_screen

        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        assert cover_text(app.screen) is None


async def wait_until(pilot, condition, what: str, timeout: float = 15.0) -> None:
    """Let the app run until `condition()` holds; fail naming `what` otherwise."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


async def start_fido_reset(pilot):
    """Open the FIDO screen and start the reset wizard up to its removal step; return the wizard screen."""
    from tui.fido.reset import ResetStep
    from tui.ui.fido_screens import FidoScreen, ResetWizardScreen

    app = pilot.app
    await settle(app, pilot)
    await pilot.press("f")
    await wait_until(pilot, lambda: isinstance(app.screen, FidoScreen) and not app.screen.busy, "the FIDO screen")
    await pilot.press("w")
    await wait_until(pilot, lambda: isinstance(app.screen, ResetWizardScreen), "the reset wizard")
    wizard_screen = app.screen
    await pilot.press(*"RESET", "enter", "y")
    await wait_until(pilot, lambda: wizard_screen.wizard.step is ResetStep.WAIT_REMOVE, "the removal step")
    return wizard_screen


async def test_covered_quit_question_explained():
    app = lab_app("fido-blocked")
    async with app.run_test(size=FULL) as pilot:
        wizard_screen = await start_fido_reset(pilot)

        await resize(pilot, SMALL)
        assert cover_text(wizard_screen).endswith("Enlarge the terminal, or press q to quit.")
        await pilot.press("q")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal), "the quit question")
        await pilot.pause()
        question = app.screen

        assert app.is_running
        assert cover_text(question) == ("keytriage needs 80x24, has 70x20. Quitting needs an answer: "
                                        "enlarge the terminal to 80x24 to answer it.")

        # Another q neither quits nor stacks a second question under the cover.
        await pilot.press("q")
        await pilot.pause()
        assert app.is_running
        assert app.screen is question
        assert sum(isinstance(screen, ConfirmModal) for screen in app.screen_stack) == 1

        # Enlarged, the question shows and n goes back to the wizard, whose reset goes on.
        await resize(pilot, FULL)
        assert cover_text(question) is None
        await pilot.press("n")
        await wait_until(pilot, lambda: app.screen is wizard_screen, "the wizard again")
        assert wizard_screen.wizard.step.name == "WAIT_REMOVE"

