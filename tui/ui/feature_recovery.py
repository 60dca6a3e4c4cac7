"""Main-screen feature: Step 0 triage, Step 4 verify, Step 6 PUK reset, admin-key unlock and Step 10 reprovision."""

from __future__ import annotations

from tui.ui.actions import ActionSpec

# Entries of this feature in the action table (keys, footer, help, palette).
ACTIONS: tuple[ActionSpec, ...] = ()


class RecoveryFeature:
    """Mixin of `KeytriageApp` with this feature's actions.

    Hooks the app calls on every feature mixin that defines them:
    `feature_ready()` once the main screen is mounted, and
    `feature_after_scan(result)` after each scan.
    """
