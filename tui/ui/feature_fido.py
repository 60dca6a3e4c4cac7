"""Main-screen feature: FIDO2 checks, credential list, reset wizard and new FIDO PIN (Steps 7-9).

`f` opens the FIDO screen for the selected token. Device work runs on the
device-owner thread (`fido_call`); the screens in `tui.ui.fido_screens`
only render and dispatch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tui.errors import PolicyError
from tui.secret import Secret
from tui.ui.actions import ActionSpec

# tui.fido (and python-fido2 behind it) loads on first use, so importing the
# app (this mixin is one of its base classes) stays cheap.
if TYPE_CHECKING:
    from tui.fido.actions import PinAttemptResult
    from tui.fido.reset import ResetRunner, ResetWizard
    from tui.fido.state import FidoState

log = logging.getLogger("keytriage.ui")

# Entries of this feature in the action table (keys, footer, help, palette).
ACTIONS: tuple[ActionSpec, ...] = (
    ActionSpec("fido", "fido", "f", "FIDO",
               "FIDO2 screen (Steps 7-9): FIDO PIN state, credential list with one FIDO PIN attempt, "
               "guided FIDO reset, new FIDO PIN (escrowed first)."),
)

NO_FIDO_DEVICE = ("No FIDO authenticator is reachable on this token (USB HID or PC/SC). "
                  "Read the FIDO state again; it says why.")
# The ticket's user to-do after a reset, until the key reports a FIDO PIN again.
NO_PIN_USER_SETS = "Set a FIDO PIN at the first registration: the FIDO reset left the key without one"
NO_PIN_HELP_DESK_SETS = ("FIDO PIN not set since the FIDO reset: the help desk sets one (keytriage FIDO screen, p) "
                         "once escrow is available")


class FidoFeature:
    """Mixin of `KeytriageApp` with this feature's actions.

    Hooks the app calls on every feature mixin that defines them:
    `feature_ready()` once the main screen is mounted, and
    `feature_after_scan(result)` after each scan.
    """

    # Seconds for the reset window; tests replace it to control the countdown.
    fido_clock: Callable[[], float] = staticmethod(time.monotonic)
    # True while clientPin setPIN and its escrow record run on the device thread.
    fido_write_in_flight: bool = False
    # The wizard of the last reset runner handed out; quit asks while it is under way.
    fido_active_wizard: ResetWizard | None = None

    # -- state kept between screens -----------------------------------------------

    def _fido_states(self) -> dict[str, FidoState]:
        # The mixin has no __init__ of its own, so its state lives in the instance dict on first use.
        return self.__dict__.setdefault("_fido_state_cache", {})

    def _fido_changed_keys(self) -> set[str]:
        # Tokens whose FIDO state changed since the last scan (reset, new PIN, PIN sent).
        return self.__dict__.setdefault("_fido_changed_key_set", set())

    def _fido_no_pin_events(self) -> dict[str, Any]:
        # Token key -> the reset event whose user to-do states that the key has no FIDO PIN.
        return self.__dict__.setdefault("_fido_no_pin_event_by_key", {})

    def fido_token(self, key: str) -> Any:
        """Return the token of the last scan with `key` (its ID, or "reader:<name>"), or None."""
        from tui.ui.widgets import token_key

        result = self.scan_result
        if result is None:
            return None
        return next((token for token in result.tokens if token_key(token) == key), None)

    def fido_state_for(self, key: str) -> FidoState | None:
        """Return the newest FIDO state of token `key`: a re-read one, else the scan's."""
        from tui.fido.state import FidoState

        cached = self._fido_states().get(key)
        if cached is not None:
            return cached
        token = self.fido_token(key)
        return token.fido if token is not None and isinstance(token.fido, FidoState) else None

    def feature_after_scan(self, result: Any) -> None:
        """Drop re-read FIDO states once a scan carries a newer one, and run a rescan left waiting for this one."""
        from tui.fido.state import FidoState
        from tui.ui.widgets import token_key

        states = self._fido_states()
        for token in result.tokens:
            if isinstance(token.fido, FidoState):
                states.pop(token_key(token), None)
        if self.__dict__.pop("_fido_rescan_waiting", False):
            # The scan that just ended started before the FIDO change, so its result is stale.
            self.action_rescan()

    def fido_screen_closed(self, key: str) -> None:
        """Rescan when the FIDO screen of token `key` closes after a change, so the main screen shows the new FIDO state.

        A FIDO reset, a new FIDO PIN or a FIDO PIN attempt changes what the
        main screen and the runbook show, like the PUK and admin-key fixes,
        which rescan after their write. A scan already running started before
        the change, so the rescan waits for it to end.
        """
        changed = self._fido_changed_keys()
        if key not in changed:
            return
        changed.discard(key)
        if self.scanning:
            self.__dict__["_fido_rescan_waiting"] = True
            return
        self.action_rescan()

    # -- the screen ---------------------------------------------------------------

    def action_fido(self) -> None:
        """Open the FIDO screen of the selected token."""
        from tui.ui.fido_screens import FidoScreen
        from tui.ui.widgets import token_key

        token = self.selected_token()
        if token is None:
            self.notify("No token selected: insert a key and rescan (r).", severity="warning")
            return
        self.push_screen(FidoScreen(token_key(token)))

    # -- device work (each job runs on the device thread) ----------------------------

    async def fido_call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run `fn` on the device-owner thread and await its result without blocking the event loop."""
        return await asyncio.wrap_future(self.device.submit(fn, *args, **kwargs))

    def _fido_backend(self) -> Any:
        # Device thread only, like the scan that normally creates the backend.
        if self._backend is None:
            self._backend = self.backend_factory()
        return self._backend

    def _fido_discovery(self, reader: str) -> Any:
        from tui.fido.discovery import find_fido_devices

        return find_fido_devices(reader, self._fido_backend())

    def _fido_read_job(self, reader: str) -> FidoState:
        from tui.fido.state import read_discovered_state

        discovery = self._fido_discovery(reader)
        try:
            return read_discovered_state(discovery)
        finally:
            discovery.close()

    async def fido_reread(self, key: str) -> FidoState:
        """Read the FIDO state of token `key` again (getInfo and getPINRetries, no PIN) and keep it."""
        token = self._fido_require_token(key)
        state = await self.fido_call(self._fido_read_job, token.reader)
        self._fido_states()[key] = state
        self.activity.add(f"FIDO state of {key}: {state.pin.text()} (read without a PIN)")
        if state.client_pin_option:
            self._fido_clear_no_pin_todo(key)
        return state

    def _fido_clear_no_pin_todo(self, key: str) -> None:
        # The key reports a FIDO PIN again, so the ticket must no longer ask for one.
        event = self._fido_no_pin_events().pop(key, None)
        if event is not None:
            event.user_actions[:] = [action for action in event.user_actions
                                     if action not in (NO_PIN_USER_SETS, NO_PIN_HELP_DESK_SETS)]

    def _fido_list_job(self, key: str, reader: str, pin: Secret, state: FidoState, override: bool) -> PinAttemptResult:
        from tui.fido.actions import FidoActionError, list_credentials

        with self.session.locks.hold(key, "FIDO PIN attempt"):
            discovery = self._fido_discovery(reader)
            try:
                endpoint = discovery.best()
                if endpoint is None or endpoint.device is None:
                    raise FidoActionError(NO_FIDO_DEVICE)
                return list_credentials(endpoint.device, pin, token_key=key, audit=self.session.audit, state=state,
                                        transport=endpoint.transport, override=override)
            finally:
                discovery.close()

    async def fido_list(self, key: str, pin: Secret, state: FidoState, override: bool) -> PinAttemptResult:
        """Spend the FIDO PIN attempt on token `key` and list its credentials; record the finding."""
        token = self._fido_require_token(key)
        result = await self.fido_call(self._fido_list_job, key, token.reader, pin, state, override)
        if result.pin_sent:
            self._fido_changed_keys().add(key)
        if result.state is not None:
            self._fido_states()[key] = result.state
        summary = result.error.message if result.error is not None else result.message
        if result.listing is not None:
            summary = f"FIDO PIN correct; {result.listing.counts_text()}. FIDO works on the key."
        # Counts only: relying parties and user names never reach the session events or the ticket.
        self.session.add_event(kind="fido-cred-list", summary=summary, token_id=key, applet="FIDO")
        return result

    def _fido_set_pin_job(self, key: str, reader: str, pin: Secret, flow: Any, confirmed_version: int | None) -> Any:
        from tui.fido.actions import FidoActionError, set_new_fido_pin

        with self.session.locks.hold(key, "new FIDO PIN"):
            discovery = self._fido_discovery(reader)
            try:
                endpoint = discovery.best()
                if endpoint is None or endpoint.device is None:
                    raise FidoActionError(NO_FIDO_DEVICE)
                return set_new_fido_pin(endpoint.device, flow, key, pin, transport=endpoint.transport,
                                        ticket=self.session.triage.ticket, confirmed_version=confirmed_version)
            finally:
                discovery.close()

    async def fido_new_pin_flow(self, key: str, generated: bool, *, explain_permanence: bool,
                                say: Callable[[str], None]) -> None:
        """Set a new FIDO PIN on token `key`: typed twice or generated, escrowed before clientPin setPIN."""
        from tui.escrow.context import EscrowContext
        from tui.escrow.flow import Outcome
        from tui.fido.actions import generate_fido_pin, site_lets_user_set_pin
        from tui.ui.modals import ConfirmModal, ErrorModal, ShowOnceModal

        if site_lets_user_set_pin(self.settings):
            say("Site policy (fido_pin_set_by_user): the user sets the FIDO PIN at their first registration; "
                "keytriage sets none.")
            return
        token = self._fido_require_token(key)
        state = await self.fido_reread(key)
        if state.client_pin_option is None:
            raise PolicyError("the key reports no clientPin option, so it takes no FIDO PIN")
        if state.client_pin_option:
            say("The key already has a FIDO PIN; keytriage sets a new one only on a key without one (after a reset).")
            return
        await self.escrow_wait_ready()
        context = self.session.escrow if isinstance(self.session.escrow, EscrowContext) else EscrowContext(None)
        flow = context.require_flow()

        if explain_permanence:
            body = ("This key has no FIDO PIN. Once a FIDO PIN is set it cannot be removed again without a FIDO reset, "
                    "which erases every FIDO credential. The PIN is escrowed before it is sent.")
            if not await self.push_screen_wait(ConfirmModal("New FIDO PIN", body, confirm_key="s", confirm_label="Set")):
                say("New FIDO PIN not set.")
                return

        pin = generate_fido_pin(state.min_pin_length) if generated else await self._fido_prompt_new_pin(state, say)
        if pin is None:
            return

        result = await self._fido_set_pin(key, token.reader, pin, flow, None)
        if result.outcome is Outcome.CONFLICT:
            body = f"{result.message}\n\nWrite anyway and replace that version?"
            if await self.push_screen_wait(ConfirmModal("Escrow conflict", body, confirm_key="o", confirm_label="Overwrite")):
                result = await self._fido_set_pin(key, token.reader, pin, flow,
                                                  result.conflict.current_version if result.conflict else None)
        say(result.message)
        if result.sent:
            self._fido_changed_keys().add(key)
        escrow = [result.reference()] if result.reference() else []
        self.session.add_event(kind="fido-pin-set", summary=result.words(), token_id=key, applet="FIDO", escrow_refs=escrow)

        if result.sent and (generated or result.not_confirmed):
            note = f"{result.message} Escrow: {', '.join(escrow) or 'none'}."
            await self.push_screen_wait(ShowOnceModal("New FIDO PIN", "FIDO PIN", pin, note))
        elif result.outcome is not Outcome.APPLIED:
            await self.push_screen_wait(ErrorModal("New FIDO PIN", result.message))
        await self.fido_reread(key)

    async def _fido_set_pin(self, key: str, reader: str, pin: Secret, flow: Any, confirmed_version: int | None) -> Any:
        # Marked in flight, so a quit waits for the PIN and its escrow record.
        self.fido_write_in_flight = True
        try:
            return await self.fido_call(self._fido_set_pin_job, key, reader, pin, flow, confirmed_version)
        finally:
            self.fido_write_in_flight = False

    async def _fido_prompt_new_pin(self, state: FidoState, say: Callable[[str], None]) -> Secret | None:
        from tui.fido.actions import validate_fido_pin
        from tui.ui.modals import SecretPromptModal

        minimum = state.min_pin_length

        def check(secret: Secret) -> str | None:
            return validate_fido_pin(secret, minimum)

        rules = f"at least {max(4, minimum or 0)} characters, at most 63 bytes"
        first = await self.push_screen_wait(SecretPromptModal(
            "New FIDO PIN", f"Type the new FIDO PIN ({rules}).", kind="FIDO PIN", validate=check, confirm_label="Next"))
        if first is None:
            say("New FIDO PIN not set.")
            return None
        second = await self.push_screen_wait(SecretPromptModal(
            "New FIDO PIN", "Type the new FIDO PIN again.", kind="FIDO PIN", validate=check, confirm_label="Set"))
        if second is None or second != first:
            say("New FIDO PIN not set: the two entries differ." if second is not None else "New FIDO PIN not set.")
            return None
        return first

    # -- the reset wizard -------------------------------------------------------------

    async def fido_reset_escrow_refusal(self) -> str | None:
        """Return why the reset wizard must not arm, or None when it may.

        A reset erases the FIDO PIN, and keytriage sets a new one only
        through escrow. So unless the site lets the user set the FIDO PIN
        (`[site] fido_pin_set_by_user = true`), the reset waits until escrow
        can take the new PIN. The Vault status is checked again in a thread,
        because the token may have expired since the last check.
        """
        from tui.escrow.context import EscrowContext
        from tui.fido.actions import site_lets_user_set_pin

        if site_lets_user_set_pin(self.settings):
            return None
        await self.escrow_wait_ready()
        context = self.session.escrow
        # A context without a flow keeps its reason (not configured, invalid settings), so Vault is not asked.
        if isinstance(context, EscrowContext) and context.flow is not None:
            await asyncio.to_thread(context.refresh_status)
        refusal = await self._escrow_refusal()
        if refusal is None:
            return None
        return (f"{refusal} The FIDO reset was not started, because it erases the FIDO PIN and keytriage could not "
                "escrow a new one. Log in to Vault with l on the main screen (or configure Vault), then confirm "
                "again. Nothing was sent to the key.")

    def fido_reset_runner(self, wizard: ResetWizard, *, on_change: Callable[[], None]) -> ResetRunner:
        """Return the runner that does the wizard's device work with this app's backend."""
        from tui.fido.reset import ResetRunner

        self.fido_active_wizard = wizard
        return ResetRunner(wizard, _LazyBackend(self), self.settings, audit=self.session.audit, on_change=on_change)

    def fido_pending_reset(self) -> ResetWizard | None:
        """Return the wizard of a FIDO reset that is armed and not finished, else None."""
        from tui.fido.reset import ResetStep

        wizard = self.fido_active_wizard
        if wizard is None or wizard.finished or wizard.step in (ResetStep.INTRO, ResetStep.REFUSED):
            return None
        return wizard

    def fido_allows_quit(self) -> bool:
        """Return True when no FIDO reset is under way; otherwise ask before quitting and return False.

        Quit anyway cancels the reset. A key that already received
        authenticatorReset is erased if the user touches it before the
        cancel reaches it, so the question says so.
        """
        from tui.fido.reset import ResetStep
        from tui.ui.fido_screens import STEP_TITLES
        from tui.ui.modals import ConfirmModal

        wizard = self.fido_pending_reset()
        if wizard is None:
            return True
        if wizard.step in (ResetStep.SENDING, ResetStep.WAIT_TOUCH):
            body = (f"The FIDO reset of {wizard.token_label} was sent and the key waits for the user's touch. "
                    "Quit anyway cancels it; a touch before the cancel still erases every FIDO credential. "
                    "Press n to stay and let the reset finish.")
        else:
            # The step in the words of the wizard's title, e.g. "3/4 Re-insert the key".
            body = (f"A FIDO reset of {wizard.token_label} is under way (step {STEP_TITLES[wizard.step]}). "
                    "Nothing was sent yet. Quit anyway cancels it. Press n to stay.")

        def decided(quit_anyway: bool) -> None:
            if quit_anyway:
                wizard.cancel()
                self.exit(0)

        self.push_screen(ConfirmModal("Quit during FIDO reset", body, confirm_key="y", confirm_label="Quit anyway",
                                      id="fido-reset-quit"), decided)
        return False

    def fido_lab_touch_buttons(self, reader: str) -> list[Any]:
        """LAB: give the lab key's authenticators a touch button and return the buttons."""
        from tui.lab.fido_applet import install_touch_buttons

        backend = self._backend
        if backend is None or not getattr(backend, "is_lab", False) or not hasattr(backend, "key"):
            return []
        return install_touch_buttons(backend.key(reader))

    async def fido_lab_control(self, command: str, reader: str) -> None:
        """LAB: remove or insert the lab key in `reader` (on the device thread)."""
        from tui.fido.actions import FidoActionError

        backend = self._backend
        if backend is None or not hasattr(backend, command):
            raise FidoActionError(f"the lab backend has no {command} control")
        await self.fido_call(getattr(backend, command), reader)

    def fido_reset_done(self, key: str, wizard: ResetWizard) -> None:
        """Record a completed FIDO reset in the session and read the state again.

        The event carries a user to-do stating that the key has no FIDO PIN,
        until a re-read shows that one was set (see `fido_reread`).
        """
        from tui.fido.actions import site_lets_user_set_pin

        self._fido_states().pop(key, None)
        self._fido_changed_keys().add(key)
        method = wizard.identity.method if wizard.identity else "unknown"
        no_pin = NO_PIN_USER_SETS if site_lets_user_set_pin(self.settings) else NO_PIN_HELP_DESK_SETS
        event = self.session.add_event(
            kind="fido-reset", token_id=key, applet="FIDO", resolved_by="FIDO reset",
            summary=f"FIDO reset: every FIDO credential and the FIDO PIN erased (key confirmed by {method}).",
            user_actions=["re-register the key with every relying party", no_pin])
        self._fido_no_pin_events()[key] = event
        self.run_worker(self._fido_reread_quietly(key), group="fido", exit_on_error=False)

    def fido_reset_cancelled(self, key: str, wizard: ResetWizard) -> None:
        """Record a FIDO reset cancelled before anything was sent."""
        try:
            self.session.audit.record("fido-reset", "cancelled", token_id=key, reader=wizard.reader, applet="FIDO")
        except Exception as error:  # noqa: BLE001 - a lost audit line must not break the UI
            log.warning("Cannot write the fido-reset audit record: %s", error)

    async def _fido_reread_quietly(self, key: str) -> None:
        try:
            await self.fido_reread(key)
        except Exception as error:  # noqa: BLE001 - the reset result stays on screen either way
            self.activity.add(f"Reading the FIDO state after the reset failed: {error}")

    def _fido_require_token(self, key: str) -> Any:
        from tui.fido.actions import FidoActionError

        token = self.fido_token(key)
        if token is None:
            raise FidoActionError(f"token {key} is not in the last scan; rescan (r) and open FIDO again")
        return token


class _LazyBackend:
    """The app's reader backend, created on the device thread on first use like the scan's."""

    def __init__(self, app: Any) -> None:
        self._app = app

    def __getattr__(self, name: str) -> Any:
        return getattr(self._app._fido_backend(), name)
