"""Load the Textual stylesheet from the installed package, or from the source tree."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

STYLESHEET = "keytriage.tcss"

# When run from a source checkout, styles/ sits beside the tui package; an
# install maps it to the package tui.styles instead.
SOURCE_STYLES = Path(__file__).resolve().parents[2] / "styles"


def load_stylesheet(name: str = STYLESHEET) -> tuple[str, str]:
    """Return the stylesheet text and where it came from ("package tui.styles" or its path).

    Raises FileNotFoundError naming both places when neither has the file.
    """
    try:
        resource = importlib.resources.files("tui.styles").joinpath(name)
        if resource.is_file():
            return resource.read_text(encoding="utf-8"), "package tui.styles"
    except ModuleNotFoundError:
        pass

    path = SOURCE_STYLES / name
    if path.is_file():
        return path.read_text(encoding="utf-8"), str(path)
    raise FileNotFoundError(f"stylesheet {name} not found in package tui.styles nor in {SOURCE_STYLES}; reinstall keytriage")
