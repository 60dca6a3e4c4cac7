"""Main-screen feature: Vault state in the header, Vault login and the set-PUK action."""

from __future__ import annotations

from tui.ui.actions import ActionSpec

# Entries of this feature in the action table (keys, footer, help, palette).
ACTIONS: tuple[ActionSpec, ...] = ()


class EscrowFeature:
    """Mixin of `KeytriageApp` with this feature's actions.

    Hooks the app calls on every feature mixin that defines them:
    `feature_ready()` once the main screen is mounted, and
    `feature_after_scan(result)` after each scan.
    """
