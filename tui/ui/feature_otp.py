"""Main-screen feature: OTP slots and HOTP drift guidance (Step 5) and the external-auth check (Step 11)."""

from __future__ import annotations

from tui.ui.actions import ActionSpec

# Entries of this feature in the action table (keys, footer, help, palette).
ACTIONS: tuple[ActionSpec, ...] = (
    ActionSpec("otp-slots", "otp_slots", "o", "OTP",
               "Step 5: list the OTP slots (read-only) with the HOTP drift guidance; "
               "generating one HOTP code is a separate, confirmed action."),
    ActionSpec("external-auth", "external_auth", "x", "Ext auth",
               "Step 11: show the admin key state and test the admin key with one EXTERNAL AUTHENTICATE."),
)


class OtpFeature:
    """Mixin of `KeytriageApp` with this feature's actions.

    Hooks the app calls on every feature mixin that defines them:
    `feature_ready()` once the main screen is mounted, and
    `feature_after_scan(result)` after each scan.
    """

    def _token_for_screen(self, what: str):
        token = self.selected_token()
        if token is None:
            self.notify(f"No token selected: rescan (r) before opening {what}.", severity="warning")
            return None
        if token.problem is not None:
            self.notify(f"The selected token was not readable ({token.problem.check}); rescan first.", severity="warning")
            return None
        return token

    def action_otp_slots(self) -> None:
        """Open the OTP slots screen (Step 5) for the selected token and record the drift verdict."""
        from tui.drift import assess_drift
        from tui.ui.otp_screens import OtpSlotsScreen

        token = self._token_for_screen("the OTP slots")
        if token is None:
            return
        if token.otp is not None:
            assessment = assess_drift(token.otp, token.smartcard)
            self.session.add_event("finding", assessment.title, token_id=token.token_id, applet="OATH")
            self.activity.add(f"OTP slots (Step 5): {assessment.title}")
        self.push_screen(OtpSlotsScreen(token))

    def action_external_auth(self) -> None:
        """Open the external-auth check (Step 11) for the selected token."""
        from tui.ui.otp_screens import ExternalAuthScreen

        token = self._token_for_screen("the external-auth check")
        if token is None:
            return
        self.push_screen(ExternalAuthScreen(token))
