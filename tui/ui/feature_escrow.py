"""Main-screen feature: Vault state in the header, Vault login and the set-PUK action.

The escrow context (`tui.escrow.context`) is built in a thread after the
main screen's first paint, because hvac does network I/O and the escrow
package takes a while to import. The header shows its state in words. Vault is checked at start, after a login and before every
secret-setting pre-flight. Between checks a 60-second timer only recounts the
token's TTL locally, so Vault is never polled.

Set a PUK (`p`) runs through the escrow flow: the new PUK is escrowed as
pending before PIV CHANGE REFERENCE DATA is sent, and its outcome is recorded
before the rescan. A result whose record could not be written stays in memory
under a NOT CONFIRMED banner until `e` writes it or the technician discards it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from tui.errors import KeytriageError, PcscError, TokenBusyError
from tui.model import PinState, Profile, ScanResult, TokenScan
from tui.secret import Secret
from tui.transport import Channel
from tui.ui.actions import ActionSpec

# The escrow package, the Vault screens and the modals load on first use, so
# importing the app (this mixin is one of its base classes) stays cheap.
if TYPE_CHECKING:
    from tui.escrow.context import EscrowContext
    from tui.escrow.flow import EscrowResult

log = logging.getLogger("keytriage.ui.escrow")

# Entries of this feature in the action table (keys, footer, help, palette).
ACTIONS: tuple[ActionSpec, ...] = (
    ActionSpec("set-puk", "set_puk", "p", "Set PUK",
               "Set a new PIV PUK where none is on file; it is escrowed to Vault before it is sent."),
    ActionSpec("vault-login", "vault_login", "l", "Vault login",
               "Log in to Vault with a token, userpass or LDAP; the token stays in memory only."),
    ActionSpec("escrow-retry", "escrow_retry", "e", "Escrow retry",
               "Retry the escrow record of a value NOT CONFIRMED in Vault, show it, or discard it.", show=False),
)

# The local TTL recount runs this often; it sends nothing to Vault.
HEADER_TICK_SECONDS = 60.0
# The PIV PUK a YubiKey ships with, which its GET METADATA reports as "default".
YUBIKEY_DEFAULT_PUK = "12345678"
PIV_REFERENCE_MIN, PIV_REFERENCE_MAX = 6, 8


class TokenNotFoundError(KeytriageError):
    """No attached token, or more than one, has the ID a write targets."""


def resolve_token(backend: Any, token_id: Any, settings: Any, *, reader_hint: str | None = None,
                  observer: Any = None) -> Channel:
    """Find the token whose ID is `token_id` again and return a connected channel to it. Blocking, device thread.

    Uses `tui.recovery.target.open_token` when it is implemented. Otherwise it
    reads every reader with the read-only scan and requires exactly one match.
    Raises `TokenNotFoundError` when the token is gone or ambiguous.
    """
    try:
        from tui.recovery.target import open_token

        _, channel = open_token(backend, token_id, settings)
        if observer is not None:
            channel.observers.append(observer)
        return channel
    except (ImportError, NotImplementedError):
        pass

    from tui.scan import scan_reader

    readers = list(backend.list_readers())
    if reader_hint in readers:
        readers.remove(reader_hint)
        readers.insert(0, reader_hint)
    matches = []
    for reader in readers:
        found = scan_reader(backend, reader, 0, settings, observer=observer)
        if found.problem is None and found.token_id == token_id:
            matches.append(reader)
    if not matches:
        raise TokenNotFoundError(f"No attached token has the ID {token_id}; it was removed or swapped. Reinsert it and rescan; nothing was sent.")
    if len(matches) > 1:
        raise TokenNotFoundError(f"{len(matches)} attached tokens report the ID {token_id} ({', '.join(matches)}); remove all but one and rescan.")

    # NOTE: the card could be swapped between this ID read and the connect
    # below; the PC/SC transaction of the write starts only after the connect.
    transport = backend.open(matches[0])
    transport.connect()
    return Channel(transport, [observer] if observer else [])


class EscrowFeature:
    """Mixin of `KeytriageApp` with this feature's actions.

    Hooks the app calls on every feature mixin that defines them:
    `feature_ready()` once the main screen is mounted, and
    `feature_after_scan(result)` after each scan. `request_quit` asks
    `escrow_allows_quit()` before it exits.
    """

    # Vault command-line overrides (`tui.escrow.context.vault_overrides_from_args`); set before the app runs.
    escrow_overrides: dict[str, Any] = {}
    # The parsed command line whose Vault options are read in the build
    # thread; `escrow_overrides` wins over it.
    escrow_arguments: Any = None
    escrow_context: EscrowContext | None = None
    escrow_write_in_flight: bool = False

    # --- start-up and header ------------------------------------------------

    def feature_ready(self) -> None:
        self.escrow_puk_on_file: dict[str, str | None] = {}
        self.escrow_unconfirmed: list[EscrowResult] = []
        self.escrow_block_reason: str | None = None
        self._escrow_ready = asyncio.Event()
        self._escrow_seeded: set[str] = set()
        self._escrow_quit_requested = False
        self._set_vault_header("Vault: checking...")
        self.set_interval(HEADER_TICK_SECONDS, self._escrow_tick, name="vault-ttl")

        # The lab store is in memory: building it is quick and does no I/O, so it
        # is ready before the first scan and its records are seeded by that scan.
        if self.lab_scenario is not None and not self.escrow_overrides.get("lab_vault") and not getattr(
                self.escrow_arguments, "lab_vault", False):
            self._escrow_built(self._escrow_build_context())
            return

        # The worker exists from here on, so `workers.wait_for_complete()`
        # covers it, but it starts building only after the first paint.
        painted = asyncio.Event()
        self.call_after_refresh(painted.set)
        self.run_worker(self._escrow_build(painted), name="escrow-build", group="escrow", exit_on_error=False)

    async def escrow_wait_ready(self) -> None:
        """Wait until the escrow context is built or has failed, so `session.escrow` is final."""
        ready = getattr(self, "_escrow_ready", None)
        if ready is not None:
            await ready.wait()

    def _escrow_build_context(self) -> EscrowContext | None:
        from tui.escrow.context import build_escrow_context, vault_overrides_from_args

        try:
            overrides = vault_overrides_from_args(self.escrow_arguments) if self.escrow_arguments is not None else {}
            overrides.update(self.escrow_overrides)
            return build_escrow_context(self.settings, self.lab_scenario, overrides, audit=self.session.audit)
        except KeytriageError as error:
            # Runs in a thread: the reason is shown by `_escrow_built` on the event loop.
            log.warning("Building the escrow context failed: %s", error)
            self._escrow_build_error = str(error)
            return None

    async def _escrow_build(self, painted: asyncio.Event) -> None:
        await painted.wait()
        self._escrow_built(await asyncio.to_thread(self._escrow_build_context))

    def _escrow_built(self, context: EscrowContext | None) -> None:
        if context is None:
            self.activity.add(f"Escrow unavailable: {getattr(self, '_escrow_build_error', 'unknown error')}")
            self._set_vault_header("Vault: not configured")
        else:
            self.escrow_context = context
            self.session.escrow = context
            self._escrow_show_status(announce=True)
            # A scan that finished while Vault was still being reached skipped
            # the records lookup: run it now.
            if getattr(self, "scan_result", None) is not None:
                EscrowFeature.feature_after_scan(self, self.scan_result)
        self._escrow_ready.set()

    def _set_vault_header(self, text: str) -> None:
        from tui.ui.widgets import HeaderBar

        self.main_screen.query_one(HeaderBar).set_vault(text)

    def _escrow_show_status(self, *, announce: bool = False) -> None:
        context = self.escrow_context
        if context is None:
            return
        self._set_vault_header(context.header_words())
        status = context.status
        if announce and status is not None:
            if context.memory:
                where = f"in-memory lab store under {context.store.base_path}"
            elif context.config is not None and context.config.address:
                where = context.config.address
            else:
                where = "no address"
            line = f"Escrow: {context.header_words()} [{where}]"
            if status.detail:
                line += f". {status.detail}"
            self.activity.add(line)

    def _escrow_tick(self) -> None:
        if self.escrow_context is not None:
            self._set_vault_header(self.escrow_context.header_words())

    # --- after each scan: lab seeding and what is on file -----------------------

    def feature_after_scan(self, result: ScanResult) -> None:
        from tui.escrow.errors import EscrowError

        context = self.escrow_context
        if context is not None and context.memory:
            # In memory: no I/O, so the lookup runs inline and is done before the next frame.
            try:
                found = self._escrow_lookup(context, result, self._lab_seeds(result))
            except EscrowError as error:
                self.activity.add(f"Escrow records not readable: {error}")
                return
            self._escrow_show_on_file(found)
            return
        self.run_worker(self._escrow_after_scan(result), name="escrow-after-scan", group="escrow", exit_on_error=False)

    async def _escrow_after_scan(self, result: ScanResult) -> None:
        from tui.escrow.errors import EscrowError

        await self._escrow_ready.wait()
        context = self.escrow_context
        if context is None or context.flow is None:
            return
        seeds = self._lab_seeds(result) if context.lab else {}
        try:
            found = await asyncio.to_thread(self._escrow_lookup, context, result, seeds)
        except EscrowError as error:
            self.activity.add(f"Escrow records not readable: {error}")
            return
        self._escrow_show_on_file(found)

    def _escrow_show_on_file(self, found: dict[str, str | None]) -> None:
        for token_id, words in found.items():
            self.escrow_puk_on_file[token_id] = words
            self.activity.add(f"Escrow: PIV PUK of {token_id} {words or 'not on file'}")

    def _lab_seeds(self, result: ScanResult) -> dict[str, dict[str, Secret]]:
        # Lab key -> reader -> the token ID the scan read from that reader.
        backend = getattr(self, "_backend", None)
        if not hasattr(backend, "key"):
            return {}
        seeds = {}
        for token in result.tokens:
            token_id = str(token.token_id) if token.token_id is not None else None
            if token_id is None or token_id in self._escrow_seeded:
                continue
            escrow = dict(backend.key(token.reader).escrow)
            self._escrow_seeded.add(token_id)
            if escrow:
                seeds[token_id] = escrow
        return seeds

    def _escrow_lookup(self, context: EscrowContext, result: ScanResult, seeds: dict[str, dict[str, Secret]]) -> dict[str, str | None]:
        from tui.escrow.records import SecretKind

        for token_id, escrow in seeds.items():
            seeded = context.seed_lab(token_id, escrow)
            if seeded:
                log.info("Lab values on file for %s: %s", token_id, ", ".join(kind.value for kind in seeded))
        found = {}
        for token in result.tokens:
            if token.token_id is None or not token.smartcard.piv_present:
                continue
            on_file = context.on_file(token.token_id, SecretKind.PIV_PUK)
            found[str(token.token_id)] = on_file.words() if on_file is not None else None
        return found

    # --- Vault login -------------------------------------------------------------

    def action_vault_login(self) -> None:
        """Choose a login method and open the Vault login form."""
        from tui.ui.modals import ErrorModal
        from tui.ui.vault_screens import LOGIN_METHOD_LABELS, Choice, ChoiceModal, VaultLoginScreen

        if not self._escrow_ready.is_set():
            self.notify("The Vault check is still running; try again in a moment.", severity="warning")
            return
        context = self.escrow_context
        if context is None or context.memory:
            self.push_screen(ErrorModal("Vault login", "The lab store needs no Vault login. Start with --lab-vault to escrow lab records to a Vault."))
            return
        if context.config is None or not context.config.configured:
            self.push_screen(ErrorModal("Vault login", "No Vault address is configured. Set VAULT_ADDR, --vault-addr or [vault] address in the config file, then log in."))
            return
        default = context.config.auth_method
        choices = [Choice("t", "Vault token", "token"), Choice("u", "userpass (user name and password)", "userpass"),
                   Choice("d", "LDAP (directory user name and password)", "ldap")]
        body = f"Log in to Vault at {context.config.address}. The site default is {LOGIN_METHOD_LABELS.get(default, default)}."

        def chosen(method: str | None) -> None:
            if method is None:
                return
            screen = VaultLoginScreen(method, context.config.address, context.login, username=context.config.username or "",
                                      mount=context.config.auth_mount)
            self.push_screen(screen, self._escrow_logged_in)

        self.push_screen(ChoiceModal("Vault login", body, choices, id="vault-login-method"), chosen)

    def _escrow_logged_in(self, info: Any) -> None:
        if info is None or self.escrow_context is None:
            return
        self.escrow_block_reason = None
        self._escrow_show_status()
        self.activity.add(f"Logged in to Vault as {info.display_name}; {self.escrow_context.header_words()}. The token is kept in memory only.")
        if self.scan_result is not None:
            self.feature_after_scan(self.scan_result)

    # --- set a PUK ---------------------------------------------------------------

    def action_set_puk(self) -> None:
        """Set a new PIV PUK on the selected token, escrowed before it is sent."""
        token = self.selected_token()
        problem = self._set_puk_problem(token)
        if problem:
            self._escrow_refuse("Set PUK", problem)
            return
        self.run_worker(self._escrow_guarded("Set PUK", self._set_puk_flow(token)), name="set-puk", group="escrow-write",
                        exclusive=True, exit_on_error=False)

    async def _escrow_guarded(self, title: str, flow: Any) -> None:
        try:
            await flow
        except Exception as error:  # noqa: BLE001 - the UI must stay up and say what broke
            log.exception("%s stopped with an unexpected error", title)
            self._escrow_refuse(title, f"{title} stopped: {type(error).__name__}: {error}")

    def feature_check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Hide and disable "set PUK" in read-only mode; it changes the token."""
        if action == "set_puk" and self.settings.read_only:
            return False
        return True

    def _set_puk_problem(self, token: TokenScan | None) -> str | None:
        if self.escrow_write_in_flight:
            return "A write is still running; wait for its outcome."
        if self.escrow_unconfirmed:
            return "A value is NOT CONFIRMED in Vault. Press e to retry its record or discard it first."
        if self.settings.read_only:
            return "read-only mode: this site runs keytriage read-only (tier 1), so no action changes a token."
        if token is None:
            return "No token is selected. Insert the token and press r to rescan."
        if token.problem is not None:
            return f"The token in {token.reader} is not readable ({token.problem.check} check failed); rescan first."
        if token.token_id is None:
            reason = f": {token.id_reason}" if token.id_reason else ""
            return f"The token has no ID{reason}, so nothing set on it could be escrowed under its ID."
        if not token.smartcard.piv_present:
            return f"{token.profile.label} {token.token_id} has no PIV applet, so it has no PIV PUK."
        if token.profile is Profile.HID_CRESCENDO:
            return ("HID publishes no PUK command for the Crescendo (it answers 6A88), so no PUK can be set. "
                    "A blocked PIN on this key is recovered with the admin-key unlock (a).")
        if token.smartcard.puk.state is PinState.BLOCKED:
            return f"The PUK of {token.token_id} is blocked ({token.smartcard.puk.text()}); it cannot be changed. Recovery needs a PIV reset (Step 10)."
        return None

    def _escrow_refuse(self, title: str, reason: str) -> None:
        from tui.ui.modals import ErrorModal

        self.escrow_block_reason = reason
        self.activity.add(f"{title} not run: {reason}")
        self.push_screen(ErrorModal(title, reason))

    async def _set_puk_flow(self, token: TokenScan) -> None:
        from tui.escrow.context import EscrowUnavailableError
        from tui.escrow.errors import EscrowError
        from tui.escrow.flow import Outcome
        from tui.escrow.records import SecretKind
        from tui.ui.modals import ConfirmModal

        await self._escrow_ready.wait()
        token_id = token.token_id

        # 1. Pre-flight: Vault state now, then the exact record path.
        try:
            on_file = await asyncio.to_thread(self._escrow_preflight, token_id)
        except (EscrowError, EscrowUnavailableError) as error:
            self._escrow_show_status()
            self._escrow_refuse("Set PUK", f"The PUK cannot be escrowed, so it is not set. {error}")
            return
        self._escrow_show_status()
        self.escrow_block_reason = None
        if on_file is not None:
            self.escrow_puk_on_file[str(token_id)] = on_file
            self._escrow_refuse("Set PUK", f"A PIV PUK is already {on_file} for {token_id}. Use it (Step 6); setting another would replace it.")
            return

        # 2. The current PUK: typed, or the factory default chosen explicitly.
        old_puk = await self._ask_current_puk(token)
        if old_puk is None:
            self.activity.add("Set PUK cancelled; nothing was sent")
            return

        # 3. Confirm what is sent.
        context = self.escrow_context
        path = context.store.kv_path(token_id, SecretKind.PIV_PUK)
        if not await self.push_screen_wait(ConfirmModal("Set PUK", self._set_puk_confirmation(token, path), confirm_key="s",
                                                        confirm_label="Send", id="set-puk-confirm")):
            self.activity.add("Set PUK cancelled; nothing was sent")
            return

        # 4. Escrow, send, record; a check-and-set conflict asks before writing again.
        confirmed_version = None
        while True:
            result = await self._escrow_run_write(token, old_puk, confirmed_version)
            if result is None:
                return
            if result.outcome is not Outcome.CONFLICT or self._escrow_quit_requested:
                break
            who = result.conflict.words() if result.conflict else "a newer version"
            body = (f"Another technician wrote the PIV PUK record of {token_id} meanwhile ({who}). Nothing was sent to the token.\n\n"
                    "Check with them first. Write anyway replaces that version with a new pending record, then sends the PUK.")
            if not await self.push_screen_wait(ConfirmModal("Escrow conflict", body, confirm_key="w", confirm_label="Write anyway",
                                                            id="escrow-conflict")):
                self.activity.add("Set PUK stopped after the escrow conflict; nothing was sent")
                return
            confirmed_version = result.conflict.current_version if result.conflict else None

        # 5. The outcome, then a rescan that shows the token's new state. A
        # quit requested during the write goes ahead now that the record is done.
        self._escrow_record_outcome(token, result)
        if self._escrow_quit_requested:
            self._escrow_quit_requested = False
            await self.request_quit()
            return
        await self._escrow_show_outcome(result)
        self.action_rescan()

    def _escrow_preflight(self, token_id: Any) -> str | None:
        from tui.escrow.context import EscrowUnavailableError
        from tui.escrow.records import SecretKind
        from tui.escrow.status import VaultState

        # Thread: refresh the status, run the flow's pre-flight on this token's
        # record (its error names the exact API path and capability), and
        # return what is on file.
        context = self.escrow_context
        if context is None:
            raise EscrowUnavailableError("Escrow unavailable: the escrow context is not built. Check the log file.")
        status = context.refresh_status()
        if context.flow is not None and status.state in (VaultState.OK, VaultState.NO_PERMISSION):
            context.flow.preflight(token_id, SecretKind.PIV_PUK)
        context.require_flow()
        on_file = context.on_file(token_id, SecretKind.PIV_PUK)
        return on_file.words() if on_file is not None else None

    async def _ask_current_puk(self, token: TokenScan) -> Secret | None:
        from tui.escrow.records import SecretKind
        from tui.ui.modals import PRINTABLE_ASCII, SecretPromptModal
        from tui.ui.vault_screens import Choice, ChoiceModal

        puk = token.smartcard.puk
        tries = f"{puk.remaining} PUK tries left" if puk.remaining is not None else "PUK tries not readable on this key"
        if token.profile is Profile.YUBIKEY:
            if puk.is_default is True:
                hint = "GET METADATA reports the factory default PUK is still set."
            elif puk.is_default is False:
                hint = "GET METADATA reports the PUK was changed from the factory default, so the default would spend a try."
            else:
                hint = "Whether the default PUK is still set could not be read."
            body = f"Which PUK does {token.token_id} hold now? ({tries}) {hint}\nA wrong PUK spends one try."
            choices = [Choice("t", "Type the current PUK", "typed"),
                       Choice("d", f"Use the factory default PUK {YUBIKEY_DEFAULT_PUK}", "default")]
            source = await self.push_screen_wait(ChoiceModal("Current PUK", body, choices, id="puk-source"))
            if source is None:
                return None
            if source == "default":
                self.activity.add("Current PUK: the factory default, chosen by the technician")
                return Secret(YUBIKEY_DEFAULT_PUK, SecretKind.PIV_PUK.label)

        def check(value: Secret) -> str | None:
            if not PIV_REFERENCE_MIN <= len(value) <= PIV_REFERENCE_MAX:
                return f"a PIV PUK has {PIV_REFERENCE_MIN} to {PIV_REFERENCE_MAX} characters, {len(value)} typed"
            return None

        body = f"Type the PUK {token.token_id} holds now ({tries}). A wrong PUK spends one try."
        return await self.push_screen_wait(SecretPromptModal("Current PUK", body, kind=SecretKind.PIV_PUK.label, restrict=PRINTABLE_ASCII,
                                                             max_length=PIV_REFERENCE_MAX, validate=check, confirm_label="Use"))

    def _set_puk_confirmation(self, token: TokenScan, path: str) -> str:
        puk = token.smartcard.puk
        cost = (f"A wrong current PUK spends one of the {puk.remaining} PUK tries left." if puk.remaining is not None
                else "PUK tries cannot be read on this key; a wrong current PUK spends a try.")
        shown = "It is shown once afterwards." if self.escrow_context.show_new_values else "It is not shown; it stays in Vault."
        return (f"Send PIV CHANGE REFERENCE DATA for the PUK (00 24 00 81) to {token.profile.label} {token.token_id} "
                f"in {token.reader}, with the current PUK and a new generated 8-digit PUK.\n\n"
                f"The new PUK reaches escrow first: it is written to {path} as pending before anything is sent, "
                f"and the outcome is recorded as the next version. {shown}\n\n{cost}")

    async def _escrow_run_write(self, token: TokenScan, old_puk: Secret, confirmed_version: int | None) -> EscrowResult | None:
        from tui.escrow.actions import SET_PUK_REASON, set_piv_puk

        flow = self.escrow_context.require_flow()
        ticket = self.session.triage.ticket
        observer = getattr(self, "_observe_exchange", None)
        settings = self.settings

        def job() -> EscrowResult:
            # Device thread: find the token by ID again, then escrow and send under its lock.
            with self.session.locks.hold(token.token_id, "set PUK"):
                channel = resolve_token(self._backend, token.token_id, settings, reader_hint=token.reader, observer=observer)
                try:
                    return set_piv_puk(channel, flow, token.token_id, old_puk, profile=token.profile.value, ticket=ticket,
                                       reason=SET_PUK_REASON, confirmed_version=confirmed_version)
                finally:
                    try:
                        channel.transport.disconnect()
                    except PcscError as error:
                        log.info("Disconnect after set PUK failed: %s", error)

        self.escrow_write_in_flight = True
        self.activity.add(f"Set PUK on {token.token_id}: escrow first, then CHANGE REFERENCE DATA")
        try:
            return await asyncio.wrap_future(self.device.submit(job))
        except (TokenBusyError, TokenNotFoundError, PcscError, KeytriageError) as error:
            self._escrow_refuse("Set PUK", f"The PUK was not set: {error}")
            return None
        finally:
            self.escrow_write_in_flight = False

    def _escrow_record_outcome(self, token: TokenScan, result: EscrowResult) -> None:
        from tui.escrow.flow import Outcome

        token_id = token.token_id
        version = result.version
        reference = result.reference()
        self.activity.add(f"Set PUK on {token_id}: {result.words()}")
        self.session.add_event("escrow", f"set PUK: {result.words()}", token_id=token_id, applet="smart card",
                               escrow_refs=[reference] if reference else [])
        if result.not_confirmed:
            self.escrow_unconfirmed.append(result)
            self._escrow_banner()
        elif result.outcome is Outcome.APPLIED:
            self.escrow_puk_on_file[str(token_id)] = f"on file (v{version})"

    async def _escrow_show_outcome(self, result: EscrowResult) -> None:
        from tui.escrow.flow import Outcome
        from tui.ui.modals import ErrorModal, ShowOnceModal
        from tui.ui.vault_screens import OutcomeModal

        path = result.kv_path or "the escrow record"
        version = result.version
        if result.not_confirmed:
            await self.push_screen_wait(ErrorModal("Set PUK: NOT CONFIRMED", f"{result.message}\n\nPress e to retry the record."))
        elif result.outcome is Outcome.APPLIED:
            message = f"The token accepted the new PUK. {result.escrow_sentence()}"
            if self.escrow_context.show_new_values:
                await self.push_screen_wait(ShowOnceModal("New PUK", "New PIV PUK", result.value, message))
            else:
                await self.push_screen_wait(OutcomeModal("Set PUK: applied", message + " It is not shown here; read it from Vault when needed.",
                                                         id="set-puk-outcome"))
        elif result.outcome is Outcome.FAILED:
            tries = result.status.tries if result.status is not None else None
            left = f" PUK tries left: {tries}." if tries is not None else ""
            await self.push_screen_wait(OutcomeModal("Set PUK: failed", f"{result.message}{left} Escrow records it as failed at {path}, version {version}.",
                                                     id="set-puk-outcome"))
        elif result.outcome is Outcome.UNKNOWN:
            await self.push_screen_wait(OutcomeModal("Set PUK: unknown", f"{result.message} The record at {path}, version {version}, is the candidate.",
                                                     id="set-puk-outcome"))
        else:
            self._escrow_refuse("Set PUK", result.message)

    # --- NOT CONFIRMED: retry, show, discard -------------------------------------

    def _escrow_banner(self) -> None:
        from textual.widgets import Static

        screen = self.main_screen
        existing = screen.query("#escrow-banner")
        if not self.escrow_unconfirmed:
            existing.remove()
            return
        result = self.escrow_unconfirmed[0]
        text = (f"NOT CONFIRMED in Vault: {result.request.kind.label} {result.outcome.value} on {result.request.token_id}, "
                "record not written. Press e to retry, show or discard.")
        if existing:
            existing.first(Static).update(text)
            return
        banner = Static(text, id="escrow-banner", markup=False)
        banner.styles.background = "darkred"
        banner.styles.color = "white"
        banner.styles.text_style = "bold"
        screen.query_one("#body").mount(banner, before="#panels")

    def action_escrow_retry(self) -> None:
        """Offer to retry, show or discard the oldest value NOT CONFIRMED in Vault."""
        if not self.escrow_unconfirmed:
            self.notify("No value is waiting for its escrow record.")
            return
        if self.escrow_write_in_flight:
            self.notify("A write is still running; wait for its outcome.", severity="warning")
            return
        self.run_worker(self._escrow_guarded("Escrow retry", self._escrow_retry_flow(self.escrow_unconfirmed[0])), name="escrow-retry", group="escrow-write",
                        exclusive=True, exit_on_error=False)

    async def _escrow_retry_flow(self, result: EscrowResult) -> None:
        from tui.ui.modals import ConfirmModal, ErrorModal, ShowOnceModal
        from tui.ui.vault_screens import Choice, ChoiceModal, OutcomeModal

        body = (f"{result.message}\n\nThe {result.request.kind.label} stays in memory until its record is written or you discard it.")
        choices = [Choice("w", "Write the record again", "retry"), Choice("v", "Show the value once", "show"),
                   Choice("x", "Discard it (typed confirmation)", "discard")]
        choice = await self.push_screen_wait(ChoiceModal("NOT CONFIRMED", body, choices, id="escrow-unconfirmed"))
        if choice == "retry":
            await asyncio.to_thread(self.escrow_context.refresh_status)
            self._escrow_show_status()
            self.escrow_write_in_flight = True
            try:
                retried = await asyncio.to_thread(result.retry_record)
            finally:
                self.escrow_write_in_flight = False
            if retried.confirmed:
                self.escrow_unconfirmed.remove(result)
                self._escrow_banner()
                self.activity.add(f"Escrow record written: {retried.words()}")
                await self.push_screen_wait(OutcomeModal("Escrow confirmed", retried.message, id="escrow-confirmed"))
            else:
                self.activity.add(f"Escrow record still NOT CONFIRMED: {retried.error}")
                await self.push_screen_wait(ErrorModal("Still NOT CONFIRMED", retried.message))
        elif choice == "show":
            note = f"Not recorded in Vault ({result.outcome.value} on the token). Write it down for the record, then retry with e."
            await self.push_screen_wait(ShowOnceModal("NOT CONFIRMED value", result.request.kind.label, result.value, note))
        elif choice == "discard":
            token_id = str(result.request.token_id)
            suffix = token_id[-4:]
            body = (f"Discard the {result.request.kind.label} of {token_id}? Vault has no {result.outcome.value} record of it, "
                    "so after this the value exists nowhere but on the token.")
            if await self.push_screen_wait(ConfirmModal("Discard value", body, confirm_key="x", confirm_label="Discard",
                                                        typed_confirmation=suffix, id="escrow-discard")):
                self.escrow_unconfirmed.remove(result)
                self._escrow_banner()
                self.activity.add(f"Discarded the NOT CONFIRMED {result.request.kind.label} of {token_id} at the technician's request")
                self.session.audit.record(f"escrow-discard-{result.request.kind.value}", "discarded", token_id=token_id)

    # --- quit ----------------------------------------------------------------------

    def escrow_allows_quit(self) -> bool:
        """Return True when quitting loses nothing; otherwise wait or ask, and return False.

        An in-flight write quits once it and its escrow record finish. A value
        NOT CONFIRMED in Vault asks first, because quitting drops it from memory.
        """
        if self.escrow_write_in_flight:
            self._escrow_quit_requested = True
            self.notify("Quit waits for the running write and its escrow record.", severity="warning")
            return False
        if getattr(self, "escrow_unconfirmed", None):
            from tui.ui.modals import ConfirmModal

            result = self.escrow_unconfirmed[0]
            body = (f"The {result.request.kind.label} of {result.request.token_id} is NOT CONFIRMED in Vault; quitting drops it from memory. "
                    "Press n, then e to retry the record or show the value.")

            def decided(quit_anyway: bool) -> None:
                if quit_anyway:
                    self.exit(0)

            self.push_screen(ConfirmModal("Quit", body, confirm_key="y", confirm_label="Quit anyway", id="escrow-quit"), decided)
            return False
        return True
