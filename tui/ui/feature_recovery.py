"""Main-screen feature: Step 0 triage, Step 4 verify, Step 6 PUK reset, admin-key unlock and Step 10 reprovision.

Each action that spends a try or changes a token runs as one async worker:
it asks through modals (the key to confirm is a letter, never Enter), then
awaits its device job on the device-owner thread, so the event loop never
waits for the card. The job finds the token again by its ID just before the
write (`tui.recovery.target.open_token`). After the job the worker shows the
result, records the finding for the runbook and starts a read-only rescan.

In read-only (tier-1) mode the actions that change a token are filtered out
of `ACTIONS` (help and palette) and `feature_check_action` disables their
keys, so they are neither shown in the footer nor run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tui.errors import KeytriageError, PolicyError
from tui.model import ScanResult, TokenScan
from tui.secret import Secret
from tui.ui.actions import ActionSpec

# The runbook, the escrow package, the recovery modules and the screens load
# on first use, so importing the app (this mixin is one of its base classes)
# stays cheap.
if TYPE_CHECKING:
    from tui.runbook import RunbookFindings, RunbookResult
    from tui.ui.recovery_screens import SourceChoice, SourceOption

log = logging.getLogger("keytriage.ui")

PIN_MAX_LENGTH = 8
PUK_MAX_LENGTH = 16
ADMIN_KEY_MAX_LENGTH = 64 + 16  # 32 bytes as hex, with room for the spaces HEX_ONLY allows

COUNTER_CAVEAT = ("The counter shows only consecutive failures since the last correct PIN: a correct verify "
                  "resets it to the maximum, so a full counter does not mean the user never failed.")

TRIAGE_ACTION = ActionSpec("triage", "triage", "i", "Triage",
                           "Step 0: ask what the user was logging in to and what they saw; record the ticket number. Sends nothing.")
WRITE_ACTION_SPECS: tuple[ActionSpec, ...] = (
    ActionSpec("verify", "verify", "v", "Verify",
               "Step 4: one deliberate smart-card PIN verify with the PIN the user claims; a wrong PIN spends one try."),
    ActionSpec("unblock-puk", "unblock_puk", "u", "Unblock",
               "Step 6: reset the smart-card PIN with the PUK; the new PIN is escrowed first; a wrong PUK spends a PUK try."),
    ActionSpec("admin-unlock", "admin_unlock", "a", "Admin unlock",
               "Unlock a Crescendo PIN with the admin key (external authentication); the new PIN is escrowed first.",
               show=False),
    ActionSpec("reprovision", "reprovision", "w", "Full reprovision (destructive)",
               "Step 10: open the reprovision wizard; it lists what is lost and sends nothing until you confirm.",
               show=False),
)
READ_ONLY_TRIAGE_ACTION = dataclasses.replace(
    TRIAGE_ACTION, help=TRIAGE_ACTION.help + " Read-only mode: verify, unblock, admin unlock and reprovision are hidden.")

# Actions that spend a try or change a token; hidden in read-only mode.
WRITE_ACTIONS = frozenset(spec.action for spec in WRITE_ACTION_SPECS)


def recovery_actions(read_only: bool) -> tuple[ActionSpec, ...]:
    """Return this feature's actions: every one, or in read-only mode triage only, its help naming the mode."""
    if read_only:
        return (READ_ONLY_TRIAGE_ACTION,)
    return (TRIAGE_ACTION, *WRITE_ACTION_SPECS)


def __getattr__(name: str) -> Any:
    # `ACTIONS` depends on the running app's settings, so it is computed on
    # access. Without a running app (the key bindings are built when the app
    # class is defined) every action is listed; `feature_check_action`
    # disables the hidden ones.
    if name == "ACTIONS":
        return recovery_actions(_running_app_read_only())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _running_app_read_only() -> bool:
    # NOTE: Textual has no public accessor for the running app outside a
    # widget; `textual._context.active_app` is the context variable it sets.
    from textual._context import active_app

    app = active_app.get(None)
    settings = getattr(app, "settings", None)
    return bool(getattr(settings, "read_only", False))


class RecoveryFeature:
    """Mixin of `KeytriageApp` with this feature's actions.

    Hooks the app calls on every feature mixin that defines them:
    `feature_ready()` once the main screen is mounted, and
    `feature_after_scan(result)` after each scan. `feature_check_action`
    and `evaluate_runbook` are called by the app's `check_action` and by
    its panel refresh.
    """

    recovery_running: bool = False
    # True while a recovery job (verify, PUK reset, unlock, reprovision) runs on the device thread.
    recovery_write_in_flight: bool = False

    # --- hooks -------------------------------------------------------------

    def feature_ready(self) -> None:
        """Show the read-only note in the header and the activity log when the site runs tier-1 mode."""
        self.recovery_findings: dict[str, RunbookFindings] = {}
        if not self.settings.read_only:
            return

        from textual.widgets import Static

        from tui.ui.widgets import HeaderBar

        header = self.main_screen.query_one(HeaderBar)
        header.mount(Static(" read-only mode ", id="read-only-banner"), before="#vault-state")
        self.activity.add("Read-only mode: verify, unblock, admin unlock and reprovision are hidden")

    def feature_check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Return False for an action that changes a token in read-only mode, so it is hidden and not run."""
        if action in WRITE_ACTIONS and self.settings.read_only:
            return False
        return True

    def evaluate_runbook(self, scan: ScanResult, token: TokenScan | None) -> RunbookResult:
        """Evaluate the runbook with the Step 0 answers and this session's findings for `token`."""
        from tui.runbook import evaluate

        return evaluate(scan, token, id_sources=self.settings.id_sources, triage=self.session.triage,
                        findings=self.findings_for(token))

    def findings_for(self, token: TokenScan | None) -> RunbookFindings:
        """Return this session's findings for `token` (empty for a token without ID)."""
        from tui.runbook import RunbookFindings

        findings = getattr(self, "recovery_findings", None)
        if findings is None:
            findings = self.recovery_findings = {}
        if token is None or token.token_id is None:
            return RunbookFindings()
        return findings.setdefault(str(token.token_id), RunbookFindings())

    # --- Step 0 ----------------------------------------------------------------

    def action_triage(self) -> None:
        """Open the Step 0 triage screen; saving sends nothing and re-evaluates the runbook."""
        from tui.ui.triage import TriageScreen

        self.push_screen(TriageScreen(self.session.triage), self._triage_saved)

    def _triage_saved(self, answers) -> None:
        from tui.ui.triage import triage_summary

        if answers is None:
            self.activity.add("Triage cancelled; earlier answers kept")
            return

        self.session.triage = answers
        summary = triage_summary(answers)
        token_id = self.selected_token_id
        self.session.add_event("triage", f"Step 0: {summary}", token_id=token_id)
        try:
            self.session.audit.record("triage", "recorded", token_id=token_id, step="0",
                                      result=answers.trying or "not answered", ticket=answers.ticket or None)
        except KeytriageError as error:
            log.warning("Cannot write the triage audit record: %s", error)
            self.notify(f"Triage saved, but the audit record failed: {error}", severity="warning")

        ticket = f", ticket {answers.ticket}" if answers.ticket else ""
        self.activity.add(f"Triage saved: {summary}{ticket}")
        self._refresh_panels()

    # --- shared plumbing -----------------------------------------------------

    def _start_recovery(self, name: str, flow) -> None:
        if self.settings.read_only:
            flow.close()
            self.notify("Read-only mode: this action is not available.", severity="warning")
            return
        if self.recovery_running or self.scanning:
            flow.close()
            busy = "a recovery action" if self.recovery_running else "a scan"
            self.notify(f"Wait: {busy} is running. Try again when it has finished.", severity="warning")
            return
        self.recovery_running = True
        self.run_worker(self._guarded(flow), name=name, group="recovery", exit_on_error=False)

    async def _guarded(self, flow) -> None:
        from tui.ui.modals import ErrorModal

        try:
            await flow
        except Exception as error:  # noqa: BLE001 - the UI must stay up and say what broke
            log.exception("recovery action crashed")
            await self.push_screen_wait(ErrorModal("Action failed", f"{type(error).__name__}: {error}. Press r to rescan."))
        finally:
            self.recovery_running = False

    def _target_token(self, purpose: str) -> tuple[TokenScan | None, str | None]:
        """Return the selected token, or None and why `purpose` cannot target it."""
        token = self.selected_token()
        if token is None:
            return None, f"No token is selected, so {purpose} has nothing to target. Press r to rescan."
        if token.problem is not None or token.error:
            return None, f"The token in {token.reader} is not readable, so {purpose} is not offered. Press r to rescan."
        if token.token_id is None:
            reason = token.id_reason or "no ID source returned a value"
            return None, (f"The token in {token.reader} has no token ID ({reason}), so it cannot be found again "
                          f"before {purpose}. Nothing was sent.")
        return token, None

    async def _escrow_refusal(self) -> str | None:
        """Return why no secret can be set now (escrow unavailable), None when escrow is usable.

        Waits for the escrow context first: it is built in a thread after the
        first paint, so a flow started right after the first scan may beat it.
        """
        from tui.escrow.context import EscrowUnavailableError

        await self.escrow_wait_ready()
        context = self.session.escrow
        if context is None:
            return "Escrow unavailable: no escrow is configured for this session; no secret can be set."
        try:
            context.require_flow()
        except EscrowUnavailableError as error:
            return str(error)
        return None

    def _escrow_words(self) -> str:
        context = self.session.escrow
        if context is None:
            return "none"
        status = getattr(context, "status", None)
        state = status.words() if status is not None and hasattr(status, "words") else "ready"
        return f"{context.label or 'escrow'} ({state})"

    async def _on_device(self, work: Callable[..., Any], token: TokenScan, *args: Any) -> Any:
        """Run `work(channel, token, *args)` on the device thread against the re-resolved token."""
        self.recovery_write_in_flight = True
        try:
            return await asyncio.wrap_future(self.device.submit(self._device_job, work, token, *args))
        finally:
            self.recovery_write_in_flight = False

    def _device_job(self, work: Callable[..., Any], token: TokenScan, *args: Any) -> Any:
        # Runs on the device thread, like the scan, so the backend is created there.
        from tui.recovery.target import open_token

        if self._backend is None:
            self._backend = self.backend_factory()
        _, channel = open_token(self._backend, token.token_id, self.settings)
        channel.observers.append(self._observe_exchange)
        try:
            return work(channel, token, *args)
        finally:
            channel.transport.disconnect()

    def _record_event(self, before: int, kind: str, summary: str, token: TokenScan, **fields: object) -> None:
        # The recovery functions append their own session event; add one only when they did not.
        if len(self.session.events) == before:
            self.session.add_event(kind, summary, token_id=token.token_id, **fields)

    async def _stop(self, title: str, message: str) -> None:
        from tui.ui.modals import ErrorModal

        self.activity.add(f"{title}: {message}")
        await self.push_screen_wait(ErrorModal(title, message))

    async def _pin_input(self, token: TokenScan, title: str, body: str, validate, *, numeric: bool) -> Secret | None:
        from tui.ui.modals import DIGITS_ONLY, PRINTABLE_ASCII, SecretPromptModal

        return await self.push_screen_wait(SecretPromptModal(
            title, body, kind="PIV PIN", restrict=DIGITS_ONLY if numeric else PRINTABLE_ASCII,
            max_length=PIN_MAX_LENGTH, validate=validate, confirm_key="s", confirm_label="Use"))

    def _new_pin_validator(self, token: TokenScan):
        from tui.recovery.generate import check_new_pin

        def validate(pin: Secret) -> str | None:
            try:
                check_new_pin(pin, token, self.settings)
            except PolicyError as error:
                return str(error)
            return None

        return validate

    # --- Step 4 -----------------------------------------------------------------

    def action_verify(self) -> None:
        """Step 4: open the one deliberate verify, when the rules allow it."""
        self._start_recovery("verify", self._verify_flow())

    async def _verify_flow(self) -> None:
        from tui.recovery.verify import claimed_pin_policy, validate_claimed_pin, verify_permission, verify_pin
        from tui.ui.recovery_screens import OverrideModal, ResultModal

        token, refusal = self._target_token("the verify")
        if token is None:
            await self._stop("Verify not possible", refusal)
            return

        permission = verify_permission(token, self.session)
        override = False
        if not permission.allowed:
            await self._stop("Verify refused", permission.reason)
            return
        if permission.needs_override:
            reason = await self.push_screen_wait(OverrideModal(
                "Step 4: override needed",
                f"{permission.reason}\n\nAnother verify spends a try the user may need. Override only when the "
                "user has a new, certain PIN to try."))
            if reason is None:
                self.activity.add("Verify override cancelled; nothing sent")
                return
            self.session.audit.record("verify-override", "granted", token_id=token.token_id, profile=token.profile.value,
                                      override=True, reason=reason, ticket=self.session.triage.ticket or None)
            self.activity.add("Verify override granted; reason recorded in the audit trail")
            override = True

        body = verify_cost_text(token, permission.tries_left)
        numeric = claimed_pin_policy(token, self.settings).numeric_only
        pin = await self._pin_input(token, "Step 4: verify the PIN once", body,
                                    lambda secret: validate_claimed_pin(secret, token, self.settings), numeric=numeric)
        if pin is None:
            self.activity.add("Verify cancelled; nothing sent")
            return

        before = len(self.session.events)
        self.activity.add(f"Verify: sending one VERIFY to {token.token_id}")
        try:
            result = await self._on_device(lambda channel, target: verify_pin(channel, target, pin, self.session, override=override), token)
        except KeytriageError as error:
            await self._stop("Verify not sent", f"{error}")
            self.action_rescan()
            return

        findings = self.findings_for(token)
        findings.verify = result.outcome.value
        findings.verify_tries = result.tries_after
        self._record_event(before, "verify", f"Step 4 verify: {result.outcome.value}", token, applet="smart card")
        self.activity.add(f"Verify result: {result.outcome.value}; {result.verdict}")
        await self.push_screen_wait(ResultModal("Step 4: verify result", verify_result_text(result, self.settings)))
        self.action_rescan()

    # --- Step 6 -----------------------------------------------------------------

    def action_unblock_puk(self) -> None:
        """Step 6: reset the smart-card PIN with the PUK."""
        self._start_recovery("unblock_puk", self._puk_flow())

    async def _puk_flow(self) -> None:
        from tui.recovery import puk_reset
        from tui.ui.modals import ConfirmModal
        from tui.ui.recovery_screens import SourceModal

        token, refusal = self._target_token("the PUK reset")
        if token is None:
            await self._stop("PUK reset not possible", refusal)
            return
        unsupported = puk_reset.unsupported_reason(token)
        if unsupported:
            await self._stop("PUK reset not possible", unsupported)
            return
        escrow_refusal = await self._escrow_refusal()
        if escrow_refusal:
            await self._stop("PUK reset refused", escrow_refusal)
            return

        # The escrow metadata and the policy check are Vault calls, so they run in a thread.
        self.activity.add(f"PUK reset: checking escrow and the site manifest for a PUK of {token.token_id}")
        availability = await asyncio.to_thread(puk_reset.puk_availability, token, self.session)
        options = puk_source_options(availability)
        body = (f"Token {token.token_id} in {token.reader}\nPUK tries: {token.smartcard.puk.text()}   "
                f"Escrow: {self._escrow_words()}")
        if availability.notes:
            body += "\n" + "\n".join(availability.notes)
        choice: SourceChoice | None = await self.push_screen_wait(
            SourceModal("Step 6: reset the PIN with the PUK", body, options, question="PUK source (never shown):"))
        if choice is None:
            self.activity.add("PUK reset cancelled; nothing sent")
            return

        puk = await self._resolve_puk(token, choice.source)
        if puk is None:
            return
        new_pin = await self._new_pin(token, choice.generate_pin)
        if new_pin is False:
            return

        confirmed = await self.push_screen_wait(ConfirmModal(
            "Step 6: confirm the PUK reset", puk_confirm_text(token, puk, new_pin, self._escrow_words()),
            confirm_key="s", confirm_label="Send"))
        if not confirmed:
            self.activity.add("PUK reset cancelled at confirmation; nothing sent")
            return

        confirmed_version = None
        while True:
            before = len(self.session.events)
            try:
                result = await self._on_device(
                    lambda channel, target: puk_reset.reset_pin_with_puk(channel, target, self.session, puk, new_pin=new_pin or None,
                                                                        confirmed_version=confirmed_version), token)
            except KeytriageError as error:
                await self._stop("PUK reset not sent", str(error))
                self.action_rescan()
                return
            confirmed_version = await self._conflict_version(result.escrow)
            if confirmed_version is None:
                break

        findings = self.findings_for(token)
        findings.puk_reset = result.outcome.value
        findings.puk_tries = result.puk_tries_left
        self._record_event(before, "puk-reset", f"Step 6 PUK reset: {result.outcome.value}", token, applet="smart card")
        self.activity.add(f"PUK reset result: {result.outcome.value}; {result.verdict}")
        await self._show_pin_result("Step 6: PIN reset", result.outcome.value == "reset", result.verdict, result.escrow,
                                    result.new_pin, puk_tries=result.puk_tries_left)
        self.action_rescan()

    async def _resolve_puk(self, token: TokenScan, source: str):
        from tui.recovery.puk_reset import puk_from_escrow, puk_from_manifest, typed_puk
        from tui.ui.modals import PRINTABLE_ASCII, SecretPromptModal

        if source == "typed":
            typed = await self.push_screen_wait(SecretPromptModal(
                "Step 6: type the PUK", "Type the PUK from the provisioning records. It is sent once and never shown.",
                kind="PIV PUK", restrict=PRINTABLE_ASCII, max_length=PUK_MAX_LENGTH,
                validate=validate_typed_puk, confirm_key="s", confirm_label="Use"))
            if typed is None:
                self.activity.add("PUK reset cancelled; nothing sent")
                return None
            return typed_puk(token, self.session, typed)

        reader = puk_from_escrow if source == "escrow" else puk_from_manifest
        try:
            return await asyncio.to_thread(reader, token, self.session)
        except KeytriageError as error:
            await self._stop("PUK not available", str(error))
            return None

    async def _new_pin(self, token: TokenScan, generate: bool) -> Secret | None | bool:
        """Return a typed new PIN, None to let the action generate one, or False when cancelled."""
        if generate:
            return None
        from tui.recovery.generate import new_pin_policy

        typed = await self._pin_input(token, "Type the new PIN",
                                      "Type the new PIN the user will receive. It is escrowed before it is set.",
                                      self._new_pin_validator(token), numeric=new_pin_policy(token, self.settings).numeric_only)
        if typed is None:
            self.activity.add("Cancelled at the new PIN; nothing sent")
            return False
        return typed

    async def _conflict_version(self, escrow) -> int | None:
        """Ask whether to overwrite after a check-and-set conflict; return the version to overwrite, else None."""
        from tui.ui.modals import ConfirmModal

        if escrow is None or getattr(getattr(escrow, "outcome", None), "value", None) != "conflict" or escrow.conflict is None:
            return None
        overwrite = await self.push_screen_wait(ConfirmModal(
            "Escrow conflict", f"{escrow.message}\n\nNothing was sent to the token.",
            confirm_key="s", confirm_label="Write anyway"))
        return escrow.conflict.current_version if overwrite else None

    async def _show_pin_result(self, title: str, success: bool, verdict: str, escrow, new_pin: Secret | None, *,
                               puk_tries: int | None = None, unlock_tries: int | None = None) -> None:
        from tui.ui.modals import ErrorModal

        if success and new_pin is not None:
            await self._present_secret(escrow, "New PIN", new_pin,
                                       "The user must change this PIN to one only they know.")
            return

        lines = [verdict]
        if puk_tries is not None:
            lines.append(f"PUK tries left: {puk_tries}. The PUK is not retried.")
        if unlock_tries is not None:
            lines.append(f"Unlock tries left: {unlock_tries}. The unlock is not retried.")
        if escrow is not None and getattr(escrow, "message", ""):
            lines.append(f"Escrow: {escrow.message}")
        if escrow is not None and getattr(escrow, "not_confirmed", False) and new_pin is not None:
            # The token may contain the value while Vault has no outcome record.
            await self._present_secret(escrow, "New PIN", new_pin, verdict)
            return
        await self.push_screen_wait(ErrorModal(title, "\n".join(lines)))

    async def _present_secret(self, escrow, label: str, secret: Secret, reminder: str) -> None:
        """Show a value that was set: once when escrow confirmed it, else kept on screen with a retry."""
        from tui.ui.modals import ShowOnceModal
        from tui.ui.recovery_screens import NotConfirmedModal

        while escrow is not None and getattr(escrow, "not_confirmed", False):
            choice = await self.push_screen_wait(NotConfirmedModal(f"{label}: escrow NOT CONFIRMED", label, secret, escrow.message))
            if choice != "retry":
                self.activity.add(f"{label} escrow record NOT CONFIRMED; technician recorded the value elsewhere")
                return
            try:
                escrow = await asyncio.to_thread(escrow.retry_record)
            except KeytriageError as error:
                escrow.message = f"Retry failed: {error}"
                continue
            if escrow.confirmed:
                self.activity.add(f"{label} escrow record written: {escrow_where(escrow)}")
                self.notify(f"Escrow record written: {escrow_where(escrow)}")
                return

        note = f"{reminder}\n{escrow.escrow_sentence()}" if escrow is not None else reminder
        await self.push_screen_wait(ShowOnceModal(f"{label} (shown once)", label, secret, note))

    # --- admin-key unlock ---------------------------------------------------

    def action_admin_unlock(self) -> None:
        """Unlock a Crescendo PIN with the admin key (external authentication, then UNLOCK PIN)."""
        self._start_recovery("admin_unlock", self._unlock_flow())

    async def _unlock_flow(self) -> None:
        from tui.recovery import unlock
        from tui.ui.modals import HEX_ONLY, ConfirmModal, SecretPromptModal
        from tui.ui.recovery_screens import SourceModal

        token, refusal = self._target_token("the admin-key unlock")
        if token is None:
            await self._stop("Admin-key unlock not possible", refusal)
            return
        unsupported = unlock.unsupported_reason(token)
        if unsupported:
            await self._stop("Admin-key unlock not possible", unsupported)
            return
        escrow_refusal = await self._escrow_refusal()
        if escrow_refusal:
            await self._stop("Admin-key unlock refused", escrow_refusal)
            return

        # The escrow metadata read is a Vault call, so it runs in a thread and the modal opens with its result.
        self.activity.add(f"Admin-key unlock: checking escrow for an admin key of {token.token_id}")
        options = await asyncio.to_thread(admin_key_source_options, self.session.escrow, token)
        body = (f"Token {token.token_id} in {token.reader}\nAdmin key: {token.smartcard.admin_key.text()}   "
                f"Escrow: {self._escrow_words()}")
        choice = await self.push_screen_wait(SourceModal("Admin-key unlock", body, options, question="Admin key source (never shown):"))
        if choice is None:
            self.activity.add("Admin-key unlock cancelled; nothing sent")
            return

        if choice.source == "escrow":
            source = unlock.AdminKeySource.ESCROW
            try:
                admin_key = await asyncio.to_thread(unlock.admin_key_from_escrow, token, self.session)
            except KeytriageError as error:
                await self._stop("Admin key not available", str(error))
                return
        else:
            source = unlock.AdminKeySource.TYPED
            admin_key = await self.push_screen_wait(SecretPromptModal(
                "Type the admin key", "Type the admin key in hex (16, 24 or 32 bytes). It is used once and never shown.",
                kind="admin key", restrict=HEX_ONLY, max_length=ADMIN_KEY_MAX_LENGTH, validate=validate_typed_admin_key,
                confirm_key="s", confirm_label="Use"))
            if admin_key is None:
                self.activity.add("Admin-key unlock cancelled; nothing sent")
                return
            admin_key = normalise_admin_key(admin_key)
        new_pin = await self._new_pin(token, choice.generate_pin)
        if new_pin is False:
            return

        confirmed = await self.push_screen_wait(ConfirmModal(
            "Confirm the admin-key unlock", unlock_confirm_text(token, source.value, new_pin, self._escrow_words()),
            confirm_key="s", confirm_label="Send"))
        if not confirmed:
            self.activity.add("Admin-key unlock cancelled at confirmation; nothing sent")
            return

        confirmed_version = None
        while True:
            before = len(self.session.events)
            try:
                result = await self._on_device(
                    lambda channel, target: unlock.unlock_pin(channel, target, self.session, admin_key, key_source=source,
                                                              new_pin=new_pin or None, confirmed_version=confirmed_version), token)
            except KeytriageError as error:
                await self._stop("Admin-key unlock not sent", str(error))
                self.action_rescan()
                return
            confirmed_version = await self._conflict_version(result.escrow)
            if confirmed_version is None:
                break

        findings = self.findings_for(token)
        findings.unlock = result.outcome.value
        findings.unlock_tries = result.unlock_tries_left
        self._record_event(before, "admin-unlock", f"Admin-key unlock: {result.outcome.value}", token, applet="smart card")
        self.activity.add(f"Admin-key unlock result: {result.outcome.value}; {result.verdict}")
        verdict = " ".join([result.verdict, *result.next_steps])
        await self._show_pin_result("Admin-key unlock", result.outcome.value == "unlocked", verdict, result.escrow,
                                    result.new_pin, unlock_tries=result.unlock_tries_left)
        self.action_rescan()

    # --- Step 10 ----------------------------------------------------------------

    def action_reprovision(self) -> None:
        """Step 10: open the reprovision wizard; nothing is sent until its typed confirmation."""
        self._start_recovery("reprovision", self._reprovision_flow())

    async def _reprovision_flow(self) -> None:
        from tui.recovery import reprovision as step10
        from tui.ui.modals import DIGITS_ONLY, HEX_ONLY, SecretPromptModal
        from tui.ui.recovery_screens import ReprovisionWizard

        token, refusal = self._target_token("the reprovision")
        if token is None:
            await self._stop("Reprovision not possible", refusal)
            return
        scan = self.scan_result
        if len(scan.tokens) > 1:
            readers = ", ".join(candidate.reader for candidate in scan.tokens)
            await self._stop("Reprovision refused",
                             f"{len(scan.tokens)} tokens are attached ({readers}). A wipe needs exactly one attached token: "
                             "remove the others, then rescan (r).")
            return
        escrow_refusal = await self._escrow_refusal()
        if escrow_refusal:
            await self._stop("Reprovision refused", escrow_refusal)
            return

        plan = step10.plan_reprovision(token, scan, self.settings)
        if plan.refusals or not plan.ready:
            reasons = plan.refusals or [plan.precondition]
            await self._stop("Reprovision refused", " ".join(reasons))
            return

        auth_options = [(auth, auth.value) for auth in plan.auth_options]
        choice = await self.push_screen_wait(ReprovisionWizard(
            "Step 10: full reprovision (destructive)", reprovision_plan_text(plan, token, self._escrow_words()),
            plan.confirmation, auth_options))
        if choice is None:
            self.activity.add("Reprovision cancelled; nothing sent")
            return
        self.activity.add("Reprovision: the user accepted the loss; confirmation typed")

        secret = None
        if choice.auth in (step10.ResetAuth.ADMIN_KEY_TYPED, step10.ResetAuth.PIN_TYPED):
            is_key = choice.auth is step10.ResetAuth.ADMIN_KEY_TYPED
            secret = await self.push_screen_wait(SecretPromptModal(
                "Reset authorisation", f"Type the {'admin key in hex' if is_key else 'current PIN'} that allows the reset.",
                kind="admin key" if is_key else "PIV PIN", restrict=HEX_ONLY if is_key else DIGITS_ONLY,
                max_length=ADMIN_KEY_MAX_LENGTH if is_key else PIN_MAX_LENGTH,
                validate=validate_typed_admin_key if is_key else None, confirm_key="s", confirm_label="Use"))
            if secret is None:
                self.activity.add("Reprovision cancelled; nothing sent")
                return
            if is_key:
                secret = normalise_admin_key(secret)

        before = len(self.session.events)
        try:
            result = await self._on_device(
                lambda channel, target: step10.reprovision(channel, target, scan, self.session, confirmation=choice.confirmation,
                                                           user_accepted=choice.user_accepted, auth=choice.auth, secret=secret),
                token)
        except KeytriageError as error:
            await self._stop("Reprovision not sent", str(error))
            self.action_rescan()
            return

        if result.wiped:
            self.findings_for(token).reprovisioned = True
        self._record_event(before, "reprovision", f"Step 10 reprovision: {'wiped' if result.wiped else 'not wiped'}", token,
                           applet="smart card", user_actions=list(result.follow_up))
        self.activity.add(f"Reprovision result: {result.verdict}")
        await self._show_reprovision_result(result)
        self.action_rescan()

    async def _show_reprovision_result(self, result) -> None:
        from tui.ui.recovery_screens import ResultModal

        escrow_by_kind = {getattr(item.request.kind, "value", ""): item for item in result.escrow if hasattr(item, "request")}
        if result.new_pin is not None:
            await self._present_secret(escrow_by_kind.get("piv-pin"), "New PIN", result.new_pin,
                                       "The user must change this PIN to one only they know.")
        if result.new_puk is not None:
            await self._present_secret(escrow_by_kind.get("piv-puk"), "New PUK", result.new_puk,
                                       "Keep it for the next PUK reset; do not give it to the user.")
        lines = [result.verdict, *result.steps]
        if result.follow_up:
            lines.append("Follow-up actions (recorded for the ticket):")
            lines.extend(f"- {action}" for action in result.follow_up)
        await self.push_screen_wait(ResultModal("Step 10: reprovision result", "\n".join(lines)))


# --- wording -------------------------------------------------------------------


def verify_cost_text(token: TokenScan, tries_left: int | None) -> str:
    """Word the tries left and what the one verify costs, before the PIN is typed."""
    pin = token.smartcard.pin
    total = pin.total
    left = tries_left if tries_left is not None else pin.remaining
    if left is None:
        tries = f"Smart-card PIN tries left: not readable ({pin.text()}); a wrong PIN might spend the last one."
        after = "A wrong PIN spends one try."
    else:
        tries = f"Smart-card PIN tries left: {left}{f' of {total}' if total else ''} (source: {pin.source.value})."
        after = (f"A wrong PIN spends one try: {left - 1} left after it." if left > 1
                 else "A wrong PIN spends the LAST try and blocks the PIN.")
    reset = f" A correct PIN resets the counter to {total}." if total else " A correct PIN resets the counter."
    return (f"{tries}\n{after}{reset}\nToken {token.token_id} in {token.reader}.\n"
            "Type the PIN the user claims. It is checked locally, then sent once, never shown or logged.")


def verify_result_text(result, settings) -> str:
    """Word the verify result as the runbook does, with the counter caveat and the documented default as a hint."""
    from tui.runbook import STEPS

    lines = [result.verdict]
    if result.status is not None:
        lines.append(f"Status word {result.status.sw:04X}: {result.status.words()}.")
    if result.tries_before is not None or result.tries_after is not None:
        before = "?" if result.tries_before is None else result.tries_before
        after = "?" if result.tries_after is None else result.tries_after
        lines.append(f"Tries: {before} before, {after} after.")
    lines.extend(result.hints)
    if not any("consecutive" in hint for hint in result.hints):
        lines.append(COUNTER_CAVEAT)
    if result.outcome.value == "wrong" and settings.documented_default_pin and not any("default" in hint.lower() for hint in result.hints):
        lines.append(f"Hint only: the site records a documented default PIN ({settings.documented_default_pin}). "
                     "keytriage never sends it; Step 4 allows no second guess.")
    if result.next_step:
        lines.append(f"Next: Step {result.next_step}, {STEPS[result.next_step].title[0].lower()}{STEPS[result.next_step].title[1:]}.")
    return "\n".join(lines)


def puk_source_options(availability) -> list[SourceOption]:
    """Return the PUK sources with the reason for each that cannot be used."""
    from tui.ui.recovery_screens import SourceOption

    if availability.escrow is None:
        escrow_unavailable = "no PUK on file"
    elif not availability.escrow_readable:
        escrow_unavailable = "your Vault policy cannot read values"
    else:
        escrow_unavailable = None
    escrow_label = f"Use the PUK on file in escrow, {availability.escrow}" if availability.escrow else "Use the PUK on file in escrow"
    manifest_label = f"Site PUK manifest, {availability.manifest}" if availability.manifest else "Site PUK manifest"
    return [
        SourceOption("escrow", escrow_label, escrow_unavailable),
        SourceOption("manifest", manifest_label, None if availability.manifest else "no row for this token"),
        SourceOption("typed", "Type the PUK (masked)"),
    ]


def admin_key_source_options(context, token: TokenScan) -> list[SourceOption]:
    """Return the admin-key sources; the escrow one is unavailable when nothing is on file.

    Blocking: it reads the escrow metadata (an HTTP call to Vault), so the UI
    calls it in a thread.
    """
    from tui.ui.recovery_screens import SourceOption

    unavailable = None
    label = "Use the admin key on file in escrow"
    try:
        from tui.escrow.records import SecretKind

        on_file = context.require_flow().on_file(token.token_id, SecretKind.ADMIN_KEY)
    except KeytriageError as error:
        on_file, unavailable = None, f"escrow not readable: {error}"
    if on_file is None and unavailable is None:
        unavailable = "no admin key on file"
    elif on_file is not None:
        label = f"{label}, {on_file.words()}"
    return [SourceOption("escrow", label, unavailable), SourceOption("typed", "Type the admin key (masked, hex)")]


def puk_confirm_text(token: TokenScan, puk, new_pin: Secret | None, escrow: str) -> str:
    """Word exactly what the PUK reset sends and what it may cost."""
    pin_words = "generated by keytriage" if new_pin is None else f"typed, {len(new_pin)} digits"
    return (f"Token {token.token_id} in {token.reader}\n"
            f"Sends one RESET RETRY COUNTER (00 2C 00 80) with the PUK from the {puk.source.value} "
            f"and a new PIN ({pin_words}).\n"
            f"First the new PIN is escrowed to {escrow} as pending; nothing is sent if that fails.\n"
            "Cost: a wrong PUK spends one PUK try and is not retried. "
            f"PUK tries now: {token.smartcard.puk.text()}. On success the PIN tries return to the maximum.")


def unlock_confirm_text(token: TokenScan, source: str, new_pin: Secret | None, escrow: str) -> str:
    """Word exactly what the admin-key unlock sends and what it may cost."""
    pin_words = "generated by keytriage" if new_pin is None else f"typed, {len(new_pin)} digits"
    return (f"Token {token.token_id} in {token.reader}\n"
            f"Sends GET CHALLENGE and one EXTERNAL AUTHENTICATE with the admin key ({source}), then one UNLOCK PIN "
            f"with a new PIN ({pin_words}).\n"
            f"First the new PIN is escrowed to {escrow} as pending; nothing is sent if that fails.\n"
            "Cost: a wrong admin key fails the authentication and UNLOCK PIN spends one unlock try; neither is retried.")


def reprovision_plan_text(plan, token: TokenScan, escrow: str) -> str:
    """Word what Step 10 does and everything it loses."""
    # The losses come first, so they are on screen without scrolling.
    lines = [f"Token {token.token_id} in {token.reader}", "LOST, cannot be undone:"]
    lines.extend(f"- {loss}" for loss in plan.losses)
    lines.append(f"Method: {plan.method.value}. {plan.precondition}")
    if plan.untouched:
        lines.append("Untouched: " + "; ".join(plan.untouched))
    lines.append(f"Then a new PIN (and a PUK where the token has one) is set, escrowed to {escrow} first.")
    if plan.follow_up:
        lines.append("Follow-up: " + "; ".join(plan.follow_up))
    lines.extend(plan.notes)
    return "\n".join(lines)


def escrow_where(escrow) -> str:
    """Word where an escrow result was written: path and version, never the value."""
    if escrow is None:
        return "escrow (no record)"
    version = escrow.outcome_version or escrow.pending_version
    return f"{escrow.kv_path or 'escrow'}, version {version if version else '?'}"


def validate_typed_puk(puk: Secret) -> str | None:
    """Return why a typed PUK has the wrong form (6-8 characters, or 16 hex digits), None when it fits."""
    length = len(puk)
    if 6 <= length <= 8:
        return None
    if length == 16 and all(char in "0123456789abcdefABCDEF" for char in puk.reveal_text()):
        return None
    return f"a PUK has 6 to 8 characters, or 16 hex digits; this one has {length}"


def validate_typed_admin_key(key: Secret) -> str | None:
    """Return why a typed admin key is not 16, 24 or 32 bytes of hex, None when it is."""
    digits = "".join(char for char in key.reveal_text() if char not in " :")
    if len(digits) % 2 or len(digits) // 2 not in (16, 24, 32):
        return f"an admin key is 16, 24 or 32 bytes (32, 48 or 64 hex digits); this one has {len(digits)} hex digits"
    return None


def normalise_admin_key(key: Secret) -> Secret:
    """Return the typed admin key as upper-case hex digits without the spaces or colons typed between bytes."""
    digits = "".join(char for char in key.reveal_text() if char not in " :")
    return Secret(digits.upper(), key.kind)
