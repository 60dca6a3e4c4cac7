"""Screenshots of the main screen over the lab key, compared with the baselines in snapshots/.

The scan is the real read-only scan against the in-process lab key, and the
activity log uses a fixed clock, so the screens are the same on every run.
Regenerate the baselines with `--snapshot-update` after a deliberate change,
and look at the SVG files before committing them.
"""

from __future__ import annotations

import pytest

from conftest import fixed_clock
from tui.settings import SiteSettings
from tui.ui.app import KeytriageApp

LARGE = (120, 36)


def lab_app(scenario: str) -> KeytriageApp:
    """Return the app over the lab key of `scenario`, with the real scan and the fixed clock."""
    from tui.lab.backend import LabBackend

    return KeytriageApp(lambda: LabBackend(scenario), SiteSettings(), lab_scenario=scenario, clock=fixed_clock)


async def scan_done(pilot) -> None:
    """Wait for the start-up scan and the messages it posted."""
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


@pytest.mark.parametrize("scenario", ["pin-locked-puk", "healthy", "no-token", "no-pin", "two-tokens"])
def test_main_screen_80x24(snap_compare, scenario):
    assert snap_compare(lab_app(scenario), terminal_size=(80, 24), run_before=scan_done)


def test_second_token_selected(snap_compare):
    assert snap_compare(lab_app("two-tokens"), press=["j"], terminal_size=(80, 24), run_before=scan_done)


@pytest.mark.parametrize("scenario", ["pin-locked-puk", "two-tokens"])
def test_main_screen_120x36(snap_compare, scenario):
    assert snap_compare(lab_app(scenario), terminal_size=LARGE, run_before=scan_done)


def test_help_screen(snap_compare):
    assert snap_compare(lab_app("healthy"), press=["question_mark"], terminal_size=(80, 24), run_before=scan_done)


def test_tiny_terminal(snap_compare):
    assert snap_compare(lab_app("healthy"), terminal_size=(70, 20), run_before=scan_done)
