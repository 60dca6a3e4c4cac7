"""The site PUK manifest: a CSV file of PUKs keyed by token ID, from the original provisioning."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tui.errors import PolicyError
from tui.secret import Secret
from tui.settings import SiteSettings

HEADER = ("token_id", "puk", "encoding")


class ManifestError(PolicyError):
    """The PUK manifest cannot be used; the message names the file and line, never a PUK."""


@dataclass
class ManifestEntry:
    """One manifest row: token ID, PUK, its encoding and the line it came from."""

    token_id: str
    puk: Secret = field(repr=False)
    encoding: str
    line: int


def load_manifest(path: Path) -> dict[str, ManifestEntry]:
    """Parse the manifest strictly and return its rows by token ID; raise `ManifestError`."""
    raise NotImplementedError


def lookup_puk(settings: SiteSettings, token_id: object) -> ManifestEntry | None:
    """Return the manifest row of `token_id`, None when no manifest is set or it has no row."""
    raise NotImplementedError
