"""Start the TUI: load the settings, check the lab scenario, run the app."""

from __future__ import annotations

import argparse
import sys

from tui.errors import LabError, PolicyError


def _fail(message: str) -> int:
    print(f"keytriage: {message}", file=sys.stderr)
    return 2


def check_lab_scenario(name: str) -> None:
    """Raise `LabError` naming the valid scenarios when `name` is not one of them."""
    # Imported only with --lab, so a normal start does not load the lab key.
    from tui.lab.scenarios import get_scenario

    get_scenario(name)


def run_tui(args: argparse.Namespace) -> int:
    """Run the TUI and return the exit code: 2 for a broken config or an unknown --lab scenario."""
    from tui.settings import SiteSettings

    try:
        settings = SiteSettings.load()
    except PolicyError as exc:
        return _fail(str(exc))

    lab_scenario = getattr(args, "lab", None)
    if lab_scenario is not None:
        try:
            check_lab_scenario(lab_scenario)
        except LabError as exc:
            return _fail(str(exc))

    def backend_factory():
        from tui.backends import open_backend

        return open_backend(lab_scenario)

    from tui.ui.app import KeytriageApp

    app = KeytriageApp(backend_factory, settings, lab_scenario=lab_scenario)
    code = app.run()
    return code if isinstance(code, int) else 0
