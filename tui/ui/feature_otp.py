"""Main-screen feature: OTP slots and HOTP drift guidance (Step 5) and the external-auth check (Step 11)."""

from __future__ import annotations

from tui.ui.actions import ActionSpec

# Entries of this feature in the action table (keys, footer, help, palette).
ACTIONS: tuple[ActionSpec, ...] = ()


class OtpFeature:
    """Mixin of `KeytriageApp` with this feature's actions.

    Hooks the app calls on every feature mixin that defines them:
    `feature_ready()` once the main screen is mounted, and
    `feature_after_scan(result)` after each scan.
    """
