"""Terminals: 80x24 works, smaller sizes say so, colour settings change nothing, resizes leave a correct screen.

The app runs over the in-process lab key (scenario "healthy") at each size
and colour setting. Screens are compared as their characters, so a colour
or style difference does not count, but a clipped or stale panel does.
"""

from __future__ import annotations

import datetime as dt

import pytest
from textual.events import Resize
from textual.geometry import Size

from sweep.helpers import STATS
from tui.settings import SiteSettings

SCENARIO = "healthy"
RESIZES = 50

# Texts the main screen shows for the healthy lab key once scanned: panel
# titles, the PIN counter, the verdict line and the rescan key.
MAIN_SCREEN_TEXTS = ("Tokens", "Counters", "Runbook", "Activity", "Smart-card PIN", "8/8", "Verdict", "Rescan")


def make_app():
    from tui.backends import open_backend
    from tui.ui.app import KeytriageApp

    return KeytriageApp(lambda: open_backend(SCENARIO), SiteSettings(), lab_scenario=SCENARIO,
                        clock=lambda: dt.datetime(2025, 3, 14, 20, 1, 2))


def screen_text(app) -> str:
    """Return the characters on the app's screen, one line per row, the activity panel's rows blanked.

    The activity panel follows its newest line as messages arrive, so which
    lines it shows depends on timing; its content is compared as
    `app.activity.entries` instead.
    """
    rows = ["".join(segment.text for segment in strip) for strip in app.screen._compositor.render_strips()]
    inside = False
    for index, row in enumerate(rows):
        if "─ Activity ─" in row:
            inside = True
            continue
        if inside and row.lstrip().startswith("╰"):
            inside = False
        elif inside:
            rows[index] = "(activity row)"
    return "\n".join(rows)


async def settle(app, pilot) -> None:
    await app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


async def scanned_screen(size: tuple[int, int]) -> str:
    app = make_app()
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        return screen_text(app)


async def test_main_screen_usable_at_80x24():
    text = await scanned_screen((80, 24))
    missing = [expected for expected in MAIN_SCREEN_TEXTS if expected not in text]
    assert not missing, f"at 80x24 the screen lacks {missing}:\n{text}"
    assert "needs 80x24" not in text
    STATS.add("terminals")


@pytest.mark.parametrize("size", [(79, 24), (80, 23), (60, 20), (40, 10), (20, 5)])
async def test_small_terminal_says_needed_size(size):
    width, height = size
    text = await scanned_screen(size)
    assert f"needs 80x24, has {width}x{height}" in " ".join(text.split()), f"at {width}x{height}:\n{text}"
    for panel_text in ("Smart-card PIN", "Verdict"):
        assert panel_text not in text, f"at {width}x{height} the clipped panels still show {panel_text!r}:\n{text}"
    STATS.add("terminals")


@pytest.mark.parametrize("setting", ["NO_COLOR", "TERM=screen-256color", "16 colours", "monochrome TERM=dumb"])
async def test_colour_settings_keep_the_screen(setting, monkeypatch):
    import textual.constants

    reference = await scanned_screen((80, 24))
    if setting == "NO_COLOR":
        monkeypatch.setenv("NO_COLOR", "1")
    elif setting.startswith("TERM="):
        monkeypatch.setenv("TERM", setting.removeprefix("TERM="))
    elif setting == "16 colours":
        monkeypatch.setattr(textual.constants, "COLOR_SYSTEM", "standard")
    else:
        monkeypatch.setenv("TERM", "dumb")
        monkeypatch.setenv("NO_COLOR", "1")
        monkeypatch.setattr(textual.constants, "COLOR_SYSTEM", "standard")

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        text = screen_text(app)
        svg = app.export_screenshot()
        if setting == "NO_COLOR":
            assert app.no_color
    assert text == reference, f"with {setting} the screen differs from the default one:\n{text}"
    assert "Smart-card" in svg, "the exported screenshot lacks the counters panel"
    STATS.add("terminals")


async def test_fifty_resizes_leave_correct_screen():
    sizes = [(80 + (i * 7) % 60, 24 + (i * 5) % 20) for i in range(RESIZES - 1)] + [(97, 31)]
    sizes[10] = (60, 20)  # one pass below the minimum, so the notice comes and goes
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        for width, height in sizes:
            # No pause between resizes (Pilot.resize_terminal pauses after each): all 50 land
            # in one burst, as a window being dragged sends them.
            app._driver._size = Size(width, height)
            app.post_message(Resize(Size(width, height), Size(width, height)))
        await settle(app, pilot)
        final = screen_text(app)
        assert app.return_code is None, "the app exited during the resizes"
    fresh = await scanned_screen(sizes[-1])
    assert final == fresh, f"after {RESIZES} resizes the screen differs from a fresh one at {sizes[-1]}:\n{final}\n---\n{fresh}"
    STATS.add("terminals", RESIZES)
