"""Site settings: the TOML file in the XDG config directory, then the environment.

The file is `$XDG_CONFIG_HOME/keytriage/config.toml` (default
`~/.config/keytriage/config.toml`), or the path in `KEYTRIAGE_CONFIG`. Each
feature reads its own table: `[site]` here, `[vault]` in the escrow layer.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from tui.errors import PolicyError

# Where a profile takes its token ID from, in order of preference. "cplc" is
# the GlobalPlatform CPLC as a 20-hex-digit CUID; "serial" a YubiKey serial;
# "guid" the PIV CHUID GUID.
DEFAULT_ID_SOURCES: dict[str, list[str]] = {
    "hid-crescendo": ["cplc", "guid"],
    "yubikey": ["cplc", "serial", "guid"],
    "piv": ["cplc", "guid"],
    "unknown": ["cplc"],
}
ID_SOURCES = frozenset({"cplc", "cplc-gp", "serial", "guid"})


def config_dir() -> Path:
    """Return keytriage's XDG config directory."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "keytriage"


def state_dir() -> Path:
    """Return keytriage's XDG state directory (audit trail, ticket drafts)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "keytriage"


def config_path() -> Path:
    """Return the config file path: `KEYTRIAGE_CONFIG`, else config.toml in `config_dir()`."""
    override = os.environ.get("KEYTRIAGE_CONFIG")
    return Path(override) if override else config_dir() / "config.toml"


def load_config_file(path: Path | None = None) -> dict:
    """Read the TOML config file; a missing default file is an empty config.

    A file named by `path` or `KEYTRIAGE_CONFIG` must exist.

    Raises `PolicyError` naming the file and the parse error for a broken one.
    """
    explicit = path is not None or bool(os.environ.get("KEYTRIAGE_CONFIG"))
    path = path or config_path()
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        if explicit:
            # A site that names its config file relies on it (read-only mode,
            # ID sources): running without it silently would drop those rules.
            raise PolicyError(f"config file {path} not found. Fix the path (KEYTRIAGE_CONFIG) or create the file.") from None
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"config file {path} is not valid TOML: {exc}. Fix or remove it.") from exc


@dataclass
class SiteSettings:
    """The `[site]` table of the config file.

    `allow_unverified_commands`: send commands that rest on unconfirmed
    behaviour (for example the ACA VERIFY status query) to real keys too; by
    default they go to the lab key only.
    `id_sources`: per profile, the ID sources to try in order.
    `read_only`: tier-1 mode, which hides every action that changes a token.
    `documented_default_pin`: a hint shown after a wrong PIN, never sent by the tool.
    """

    allow_unverified_commands: bool = False
    id_sources: dict[str, list[str]] = field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_ID_SOURCES.items()})
    read_only: bool = False
    documented_default_pin: str | None = None
    puk_manifest: str | None = None
    raw: dict = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, path: Path | None = None) -> SiteSettings:
        """Load `[site]` from the config file and validate it."""
        config = load_config_file(path)
        return cls.from_dict(config.get("site", {}), raw=config)

    @classmethod
    def from_dict(cls, site: dict, raw: dict | None = None) -> SiteSettings:
        """Build settings from a `[site]` table; raise `PolicyError` on bad values."""
        settings = cls(raw=raw or {})
        if "allow_unverified_commands" in site:
            value = site["allow_unverified_commands"]
            if not isinstance(value, bool):
                raise PolicyError(f"[site] allow_unverified_commands must be true or false, got {value!r}")
            settings.allow_unverified_commands = value
        if "read_only" in site:
            value = site["read_only"]
            if not isinstance(value, bool):
                raise PolicyError(f"[site] read_only must be true or false, got {value!r}")
            settings.read_only = value
        for profile, sources in site.get("id_sources", {}).items():
            if profile not in DEFAULT_ID_SOURCES:
                raise PolicyError(f"[site.id_sources] unknown profile {profile!r}; use one of {', '.join(sorted(DEFAULT_ID_SOURCES))}")
            bad = [s for s in sources if s not in ID_SOURCES]
            if bad or not isinstance(sources, list):
                raise PolicyError(f"[site.id_sources] {profile}: unknown source {bad or sources!r}; use a list of {', '.join(sorted(ID_SOURCES))}")
            settings.id_sources[profile] = list(sources)
        settings.documented_default_pin = site.get("documented_default_pin")
        settings.puk_manifest = site.get("puk_manifest")
        return settings
