"""Recovery lanes of the main screen on the lab key: verify, PUK reset, admin unlock, reprovision.

Each test runs the real read-only scan and the real recovery functions
against an in-process lab key, with an in-memory escrow store, and reads
the lab card's APDU recording to prove which PIN, PUK or key was sent.
Secrets typed here are lab values; the snapshots use fixed demo values.
"""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from textual import events
from textual.widgets import Input

from conftest import fixed_clock
from tui.escrow.context import EscrowContext
from tui.escrow.flow import EscrowFlow
from tui.escrow.memory import MemoryStore
from tui.escrow.records import RecordState, SecretKind
from tui.lab.backend import LabBackend
from tui.secret import Secret
from tui.settings import SiteSettings
from tui.ui.app import KeytriageApp
from tui.ui.feature_recovery import admin_key_source_options, puk_source_options
from tui.ui.modals import ConfirmModal, ErrorModal, SecretPromptModal, ShowOnceModal
from tui.ui.recovery_screens import NotConfirmedModal, OverrideModal, ReprovisionWizard, ResultModal, SourceModal
from tui.ui.triage import TriageScreen

VERIFY = 0x20
RESET_RETRY_COUNTER = 0x2C


class Lab:
    """One lab scenario served to the app, with the card's APDU recording and an escrow store."""

    def __init__(self, scenario: str, *, settings: SiteSettings | None = None, mutate=None, scan=None) -> None:
        self.backend = LabBackend(scenario)
        if mutate is not None:
            mutate(self.backend)
        self.reader = self.backend.list_readers()[0]
        self.key = self.backend.key(self.reader)
        self.recording = self.key.card.start_recording() if self.key.card is not None else []
        self.store = MemoryStore()
        kwargs = {"scan": scan} if scan is not None else {}
        self.app = KeytriageApp(lambda: self.backend, settings or SiteSettings(), lab_scenario=scenario,
                                clock=fixed_clock, **kwargs)

    def use_escrow(self) -> None:
        """Replace the session's escrow with this test's store, seeded with the key's values on file."""
        token_id = self.app.selected_token_id
        kinds = {"piv-puk": (SecretKind.PIV_PUK, "ascii-ff-padded"), "admin-key": (SecretKind.ADMIN_KEY, "hex")}
        for name, value in self.key.escrow.items():
            kind, encoding = kinds[name]
            if encoding == "hex":
                value = Secret(bytes.fromhex(value.reveal_text()), kind.label)
            self.store.seed(token_id, kind, value, encoding=encoding)
        flow = EscrowFlow(self.store, user="technician", audit=self.app.session.audit)
        self.app.session.escrow = EscrowContext(flow, label="test store", store=self.store)

    def commands(self, ins: int, *, with_data: bool = True) -> list[bytes]:
        """Return the recorded commands with instruction `ins` (by default only those carrying data)."""
        return [command for command, _ in self.recording if command[1] == ins and (len(command) > 5 or not with_data)]


async def settle(pilot) -> None:
    """Wait for the workers, the messages they posted and the screens they pushed."""
    app = pilot.app
    for _ in range(3):
        await app.workers.wait_for_complete()
        await pilot.pause()


async def wait_for_screen(pilot, kind, attempts: int = 50):
    """Wait until a screen of class `kind` is on top and return it."""
    for _ in range(attempts):
        if isinstance(pilot.app.screen, kind):
            await pilot.pause()  # let the screen mount and focus its first field
            return pilot.app.screen
        await pilot.pause(0.05)
    raise AssertionError(f"{kind.__name__} never opened; top screen is {type(pilot.app.screen).__name__}")


def text(screen, selector: str = ".modal-body") -> str:
    return "\n".join(str(widget.render()) for widget in screen.query(selector))


def verdict(app) -> str:
    return str(app.main_screen.query_one("#verdict").render())


def runbook(app) -> str:
    return str(app.main_screen.query_one("#runbook-steps").render())


async def triage(pilot, downs: int, ticket: str = "INC-7") -> None:
    """Answer Step 0: the `downs`-th "trying" answer and a ticket number."""
    await pilot.press("i")
    await wait_for_screen(pilot, TriageScreen)
    await pilot.press(*(["down"] * downs), "enter", "tab", "tab", "tab", *ticket, "enter", "s")
    await pilot.pause()


async def type_secret(pilot, value: str) -> None:
    """Type `value` into the open secret prompt, check it with Enter and send it with s."""
    await wait_for_screen(pilot, SecretPromptModal)
    await pilot.press(*value, "enter", "s")


# --- Step 4 ------------------------------------------------------------------------------


async def test_wrong_pin_one_verify_then_override():
    lab = Lab("wrong-pin")
    app = lab.app
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await triage(pilot, 0)
        assert "Step 4" in verdict(app)

        await pilot.press("v")
        prompt = await wait_for_screen(pilot, SecretPromptModal)
        assert "tries left: 3 (source" in text(prompt)
        assert "2 left after it" in text(prompt)
        await type_secret(pilot, "11223344")
        result = await wait_for_screen(pilot, ResultModal)
        shown = str(result.query_one("#result-text").render())
        assert "wrong PIN, 2 tries left" in shown
        assert "consecutive failures" in shown
        await pilot.press("o")
        await settle(pilot)

        assert len(lab.commands(VERIFY)) == 1
        assert lab.commands(VERIFY)[0][5:] == b"11223344"
        assert "Smart-card PIN 2/? ok" in str(app.main_screen.query_one("#counters-text").render())
        assert "Wrong PIN, 2 tries left" in runbook(app)
        assert [event.kind for event in app.session.events].count("verify") == 1

        # A second verify needs the typed override and a reason.
        await pilot.press("v")
        await wait_for_screen(pilot, OverrideModal)
        await pilot.press(*"OVERRID", "enter", *"user found the PIN letter", "enter", "s")
        assert "Type OVERRIDE" in str(app.screen.query_one("#modal-error").render())
        app.screen.query_one("#override-word", Input).value = "OVERRIDE"
        await pilot.press("s")
        await type_secret(pilot, "24681357")
        result = await wait_for_screen(pilot, ResultModal)
        assert "9000" in str(result.query_one("#result-text").render())
        await pilot.press("o")
        await settle(pilot)

        sent = [command[5:] for command in lab.commands(VERIFY)]
        assert sent == [b"11223344", b"24681357"]
        overrides = [record for record in app.session.audit.records() if record.operation == "verify-override"]
        assert overrides[-1].details["reason"] == "user found the PIN letter"


async def test_override_cancel_sends_nothing():
    lab = Lab("wrong-pin")
    app = lab.app
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("v")
        await type_secret(pilot, "11223344")
        await wait_for_screen(pilot, ResultModal)
        await pilot.press("o")
        await settle(pilot)

        await pilot.press("v")
        await wait_for_screen(pilot, OverrideModal)
        await pilot.press("escape")
        await settle(pilot)

        assert len(lab.commands(VERIFY)) == 1


async def test_pin_paste_escape_sequence_rejected():
    lab = Lab("wrong-pin")
    app = lab.app
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("v")
        prompt = await wait_for_screen(pilot, SecretPromptModal)
        field = prompt.query_one("#secret-input", Input)
        field.post_message(events.Paste("\x1b[<35;10;5M123456"))
        await pilot.pause()
        assert field.value == ""

        await pilot.press("enter")
        assert "No PIN was entered" in str(prompt.query_one("#modal-error").render())
        assert isinstance(app.screen, SecretPromptModal)
        await pilot.press("escape")
        await settle(pilot)

        assert lab.commands(VERIFY) == []
        assert not [record for record in app.session.audit.records() if record.operation == "verify-pin"]


async def test_pin_too_short_not_sent():
    lab = Lab("wrong-pin")
    app = lab.app
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("v")
        prompt = await wait_for_screen(pilot, SecretPromptModal)
        await pilot.press(*"123", "enter")

        assert "Not sent" in str(prompt.query_one("#modal-error").render())
        assert isinstance(app.screen, SecretPromptModal)
        await pilot.press("escape")
        await settle(pilot)
        assert lab.commands(VERIFY) == []


async def test_no_pin_verdict_6a88():
    lab = Lab("no-pin")
    app = lab.app
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await triage(pilot, 0)

        assert "Smart-card PIN NOT SET" in runbook(app)
        assert "No smart-card PIN is set" in verdict(app)

        await pilot.press("v")
        error = await wait_for_screen(pilot, ErrorModal)
        assert "No PIN is defined" in text(error)
        await pilot.press("o")
        assert lab.commands(VERIFY) == []


def expire_login_certificate(backend: LabBackend) -> None:
    """Replace the 9A certificate of the lab key with one that expired 30 days ago."""
    from tui.lab.piv import self_signed_certificate

    key = backend.key(backend.list_readers()[0])
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    key.piv.put_certificate(0x9A, self_signed_certificate("Lab expired", now - dt.timedelta(days=400), now - dt.timedelta(days=30)))


async def test_cert_expired_not_a_lockout():
    lab = Lab("healthy", mutate=expire_login_certificate)
    app = lab.app
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await triage(pilot, 0)

        assert app.runbook is not None
        assert app.runbook.not_lockout is not None
        assert "expired" in verdict(app).lower()
        assert lab.commands(VERIFY) == []


# --- read-only mode ------------------------------------------------------------------------


async def test_read_only_hides_write_lanes():
    from tui.ui.actions import all_actions
    from tui.ui.commands import ActionsProvider
    from tui.ui.screens import HelpScreen

    lab = Lab("pin-locked-puk", settings=SiteSettings(read_only=True))
    app = lab.app
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)

        footer_actions = {binding.action for _, binding, enabled, _ in app.active_bindings.values() if enabled}
        assert "triage" in footer_actions
        for action in ("verify", "unblock_puk", "admin_unlock", "reprovision"):
            assert action not in footer_actions
            assert app.check_action(action, ()) is False
        assert {spec.action for spec in all_actions()}.isdisjoint({"verify", "unblock_puk", "admin_unlock", "reprovision"})

        names = [str(hit.display) async for hit in ActionsProvider(app.screen).discover()]
        assert not any(name.startswith(("Verify", "Unblock", "Admin unlock", "Full reprovision")) for name in names)
        assert "read-only mode" in str(app.main_screen.query_one("#read-only-banner").render())

        await pilot.press("u", "v", "a", "w")
        await settle(pilot)
        assert not isinstance(app.screen, (SecretPromptModal, SourceModal, ReprovisionWizard))
        assert lab.commands(RESET_RETRY_COUNTER) == []
        assert lab.commands(VERIFY) == []

        await pilot.press("question_mark")
        help_text = str(app.screen.query_one("#help-text").render())
        assert isinstance(app.screen, HelpScreen)
        assert "Read-only mode" in help_text
        assert "one deliberate smart-card PIN verify" not in help_text


async def test_write_lanes_listed_when_writable():
    from tui.ui.commands import ActionsProvider

    lab = Lab("healthy")
    app = lab.app
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        names = [str(hit.display) async for hit in ActionsProvider(app.screen).discover()]

        assert any(name.startswith("Full reprovision (destructive)") for name in names)
        assert any(name.startswith("Verify") for name in names)
        assert app.check_action("verify", ()) is True


# --- Step 6 -------------------------------------------------------------------------------


def piv_block(text: str) -> bytes:
    return text.encode() + b"\xff" * (8 - len(text))


async def test_pin_locked_puk_reset_shows_pin_once():
    seen_before_scan: list[str | None] = []

    def watching_scan(backend, settings, *, observer=None):
        from tui.scan import scan_all

        # What escrow holds for the PIV PIN when each scan starts.
        token_id = lab.app.selected_token_id
        on_file = lab.store.read_metadata(token_id, SecretKind.PIV_PIN) if token_id else None
        seen_before_scan.append(None if on_file is None else lab.store.read_version(token_id, SecretKind.PIV_PIN)[0].state.value)
        return scan_all(backend, settings, observer=observer)

    lab = Lab("pin-locked-puk", scan=watching_scan)
    app = lab.app
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        lab.use_escrow()
        await triage(pilot, 0, ticket="INC-42")
        assert "Step 6" in verdict(app)
        assert "[u]" in runbook(app) or "Reset the PIN with the PUK" in runbook(app)

        await pilot.press("u")
        source = await wait_for_screen(pilot, SourceModal)
        assert "PUK tries: 10/10" in text(source) or "PUK tries:" in text(source)
        await pilot.press("s")
        confirm = await wait_for_screen(pilot, ConfirmModal)
        body = text(confirm)
        assert "RESET RETRY COUNTER" in body
        assert "escrow record" in body
        assert "wrong PUK spends one PUK try" in body
        assert "73910264" not in body
        await pilot.press("s")

        shown = await wait_for_screen(pilot, ShowOnceModal)
        new_pin = shown._secret.reveal_text()
        assert len(new_pin) == 8
        note = text(shown)
        assert "The user must change this PIN" in note
        assert "piv-pin" in note
        assert "version 2" in note
        assert new_pin not in note
        await pilot.press("d")
        await settle(pilot)

        # Exactly one RESET RETRY COUNTER, with the PUK on file and the PIN shown.
        assert lab.commands(RESET_RETRY_COUNTER) == [bytes.fromhex("002C008010") + piv_block("73910264") + piv_block(new_pin)]
        assert lab.commands(VERIFY) == []

        record, value, _ = lab.store.read_version(app.selected_token_id, SecretKind.PIV_PIN)
        assert record.state is RecordState.APPLIED
        assert value.reveal_text() == new_pin
        assert record.ticket == "INC-42"
        # The rescan after the reset started with the new PIN already applied in escrow.
        assert seen_before_scan[-1] == "applied"
        assert "Smart-card PIN 8/" in str(app.main_screen.query_one("#counters-text").render())
        assert app.findings_for(app.selected_token()).puk_reset == "reset"
        assert any(event.kind == "puk-reset" for event in app.session.events)


async def test_wrong_typed_puk_stops_without_retry():
    lab = Lab("pin-locked-puk")
    app = lab.app
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        lab.use_escrow()
        await pilot.press("u")
        await wait_for_screen(pilot, SourceModal)
        await pilot.press("down", "enter", "s")  # "type the PUK"; Down skips the unavailable manifest
        await type_secret(pilot, "11112222")
        await wait_for_screen(pilot, ConfirmModal)
        await pilot.press("s")

        error = await wait_for_screen(pilot, ErrorModal)
        assert "PUK tries left: 9" in text(error)
        assert "not retried" in text(error)
        await pilot.press("o")
        await settle(pilot)
        assert len(lab.commands(RESET_RETRY_COUNTER)) == 1

        # The runbook stops there: a second PUK reset is refused before anything is sent.
        await pilot.press("u")
        await wait_for_screen(pilot, SourceModal)
        await pilot.press("down", "enter", "s")
        await type_secret(pilot, "73910264")
        await wait_for_screen(pilot, ConfirmModal)
        await pilot.press("s")
        await wait_for_screen(pilot, ErrorModal)
        await pilot.press("o")
        await settle(pilot)
        assert len(lab.commands(RESET_RETRY_COUNTER)) == 1


async def test_puk_reset_refused_without_escrow():
    lab = Lab("pin-locked-puk")
    app = lab.app
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.session.escrow = None
        await pilot.press("u")
        error = await wait_for_screen(pilot, ErrorModal)

        assert "Escrow unavailable" in text(error)
        assert "no secret can be set" in text(error)
        await pilot.press("o")
        await settle(pilot)
        assert lab.commands(RESET_RETRY_COUNTER) == []


async def test_not_confirmed_escrow_keeps_pin_and_retries():
    from tui.escrow.errors import VaultServerError

    lab = Lab("pin-locked-puk")
    app = lab.app
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        lab.use_escrow()
        original_write = lab.store.write
        calls = []

        def failing_outcome_write(*args, **kwargs):
            calls.append(args[1])
            if len(calls) == 2:  # the pending write passes, the outcome write fails
                raise VaultServerError("Vault returned 503 (simulated outage)")
            return original_write(*args, **kwargs)

        lab.store.write = failing_outcome_write
        await pilot.press("u")
        await wait_for_screen(pilot, SourceModal)
        await pilot.press("s")
        await wait_for_screen(pilot, ConfirmModal)
        await pilot.press("s")

        kept = await wait_for_screen(pilot, NotConfirmedModal)
        new_pin = kept._secret.reveal_text()
        assert new_pin in str(kept.query_one(".modal-secret").render())
        assert "NOT CONFIRMED" in text(kept)
        await pilot.press("r")
        await settle(pilot)

        record, value, _ = lab.store.read_version(app.selected_token_id, SecretKind.PIV_PIN)
        assert record.state is RecordState.APPLIED
        assert value.reveal_text() == new_pin
        assert any("escrow record written" in line for line in app.activity.entries)


# --- admin-key unlock -------------------------------------------------------------------------


def admin_key_on_file(backend: LabBackend) -> None:
    """Block the Crescendo PIN and put the token's admin key on file."""
    from tui.lab.scenarios import LAB_ADMIN_KEY

    key = backend.key(backend.list_readers()[0])
    key.store.pin.tries_left = 0
    key.escrow["admin-key"] = Secret(LAB_ADMIN_KEY.hex().upper(), "admin key")


async def test_admin_key_on_file_unlock():
    lab = Lab("healthy", mutate=admin_key_on_file)
    app = lab.app
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        lab.use_escrow()
        await triage(pilot, 0)
        assert "BLOCKED" in str(app.main_screen.query_one("#counters-text").render())

        await pilot.press("a")
        source = await wait_for_screen(pilot, SourceModal)
        assert "on file (v1)" in str(source.query_one("#source-set").query("RadioButton").first().label)
        await pilot.press("s")
        confirm = await wait_for_screen(pilot, ConfirmModal)
        assert "EXTERNAL AUTHENTICATE" in text(confirm)
        assert "UNLOCK PIN" in text(confirm)
        await pilot.press("s")

        shown = await wait_for_screen(pilot, ShowOnceModal)
        new_pin = shown._secret.reveal_text()
        assert "Escrowed to" in text(shown)
        await pilot.press("d")
        await settle(pilot)

        assert len(lab.commands(0x82)) == 1  # one EXTERNAL AUTHENTICATE
        unlocks = [command for command in lab.commands(0x2C) if command[2] == 0x02]
        assert len(unlocks) == 1
        assert lab.key.store.pin.matches(new_pin.encode() + b"\xff" * (8 - len(new_pin)))
        assert "BLOCKED" not in str(app.main_screen.query_one("#counters-text").render())


def record_metadata_threads(store: MemoryStore, kind: SecretKind) -> list[threading.Thread]:
    """Wrap the store's metadata read so each read of `kind` records the thread it ran on."""
    threads: list[threading.Thread] = []
    original = store.read_metadata

    def recording_read_metadata(token_id, read_kind):
        if read_kind is kind:
            threads.append(threading.current_thread())
        return original(token_id, read_kind)

    store.read_metadata = recording_read_metadata
    return threads


def shown_labels(source: SourceModal) -> list[str]:
    return [str(button.label) for button in source.query_one("#source-set").query("RadioButton")]


async def test_admin_key_escrow_read_in_thread():
    lab = Lab("healthy", mutate=admin_key_on_file)
    app = lab.app
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        lab.use_escrow()
        expected = admin_key_source_options(app.session.escrow, app.selected_token())
        threads = record_metadata_threads(lab.store, SecretKind.ADMIN_KEY)

        await pilot.press("a")
        source = await wait_for_screen(pilot, SourceModal)

        assert threads
        assert all(thread is not threading.main_thread() for thread in threads)
        assert source.options == expected
        assert shown_labels(source) == ["Use the admin key on file in escrow, on file (v1)", "Type the admin key (masked, hex)"]
        assert source.options[0].unavailable is None
        assert any("checking escrow for an admin key" in line for line in app.activity.entries)

        await pilot.press("n")
        await settle(pilot)
        assert lab.commands(0x82, with_data=False) == []


async def test_puk_escrow_read_in_thread():
    from tui.recovery.puk_reset import puk_availability

    lab = Lab("pin-locked-puk")
    app = lab.app
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        lab.use_escrow()
        expected = puk_source_options(puk_availability(app.selected_token(), app.session))
        threads = record_metadata_threads(lab.store, SecretKind.PIV_PUK)

        await pilot.press("u")
        source = await wait_for_screen(pilot, SourceModal)

        assert threads
        assert all(thread is not threading.main_thread() for thread in threads)
        assert source.options == expected
        assert shown_labels(source)[0] == "Use the PUK on file in escrow, on file (v1)"

        await pilot.press("n")
        await settle(pilot)
        assert lab.commands(RESET_RETRY_COUNTER) == []


# --- Step 10 ------------------------------------------------------------------------------


async def test_pin_locked_no_puk_offers_step_10():
    lab = Lab("pin-locked-no-puk")
    app = lab.app
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        lab.use_escrow()
        await triage(pilot, 0)
        assert "Step 6" in verdict(app)

        # Nothing is on file, so the technician types the PUK from the records; the PUK is blocked.
        await pilot.press("u")
        source = await wait_for_screen(pilot, SourceModal)
        assert "unavailable: no PUK on file" in str(source.query_one("#source-set").query("RadioButton").first().label)
        await pilot.press("s")  # the only available source, "type the PUK", is preselected
        await type_secret(pilot, "16180339")
        await wait_for_screen(pilot, ConfirmModal)
        await pilot.press("s")
        error = await wait_for_screen(pilot, ErrorModal)
        await pilot.press("o")
        await settle(pilot)

        assert len(lab.commands(RESET_RETRY_COUNTER)) == 1
        assert "Step 10" in verdict(app)
        sent_before = len(lab.recording)

        # This generic PIV key has no reset command, so the wizard says so instead of opening.
        await pilot.press("w")
        error = await wait_for_screen(pilot, ErrorModal)
        assert "no reset the tool can send" in text(error)
        await pilot.press("o")
        await settle(pilot)
        assert not [command for command, _ in lab.recording[sent_before:] if command[1] in (0x2C, 0xFB, 0x38)]


async def test_reprovision_wizard_rejects_wrong_confirmation_then_runs():
    lab = Lab("healthy", mutate=admin_key_on_file)
    app = lab.app
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        lab.use_escrow()
        await pilot.press("w")
        wizard = await wait_for_screen(pilot, ReprovisionWizard)
        body = str(wizard.query_one("#wizard-body").render())
        assert "LOST, cannot be undone" in body

        await pilot.press("s")
        assert "Tick the box" in str(wizard.query_one("#modal-error").render())
        await pilot.press("space", "tab", *"9999", "enter", "s")
        assert "does not match" in str(wizard.query_one("#modal-error").render())
        assert not [command for command, _ in lab.recording if command[1] == 0x38]

        wizard.query_one("#typed-confirmation", Input).value = "0001"
        await pilot.press("s")
        shown = await wait_for_screen(pilot, ShowOnceModal)
        assert "The user must change this PIN" in text(shown)
        await pilot.press("d")
        result = await wait_for_screen(pilot, ResultModal)
        assert "Follow-up actions" in str(result.query_one("#result-text").render())
        await pilot.press("o")
        await settle(pilot)

        assert len([command for command, _ in lab.recording if command[1] == 0x38]) == 1
        event = next(event for event in app.session.events if event.kind == "reprovision")
        assert event.user_actions


async def test_reprovision_refused_with_two_tokens():
    lab = Lab("two-tokens")
    app = lab.app
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        lab.use_escrow()
        await pilot.press("w")
        error = await wait_for_screen(pilot, ErrorModal)

        assert "2 tokens are attached" in text(error)
        assert "HID Global Crescendo Key 00 00" in text(error)
        assert "HID Global Crescendo Key 01 00" in text(error)


# --- choices drawn in characters -------------------------------------------------------------


def marks(screen, selector: str) -> list[str]:
    """Return the state mark (the first three characters) that each toggle under `selector` renders."""
    return [toggle.render().plain[:3] for toggle in screen.query_one(selector).query("ToggleButton")]


async def test_source_modal_marks_chosen_answers(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    lab = Lab("pin-locked-puk")
    app = lab.app
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        lab.use_escrow()
        await pilot.press("u")
        source = await wait_for_screen(pilot, SourceModal)

        assert app.no_color
        assert marks(source, "#source-set") == ["(*)", "( )", "( )"]
        assert marks(source, "#pin-set") == ["(*)", "( )"]
        assert app.export_screenshot().count("(*)") == 2

        # Down skips the unavailable manifest row, so the typed PUK takes the mark.
        await pilot.press("down", "enter")
        assert marks(source, "#source-set") == ["( )", "( )", "(*)"]
        await pilot.press("tab", "down", "enter")
        assert marks(source, "#pin-set") == ["( )", "(*)"]
        assert app.export_screenshot().count("(*)") == 2


async def test_reprovision_wizard_marks_choice_and_box():
    lab = Lab("healthy", mutate=admin_key_on_file)
    app = lab.app
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        lab.use_escrow()
        await pilot.press("w")
        wizard = await wait_for_screen(pilot, ReprovisionWizard)
        box = wizard.query_one("#user-accepts")

        assert marks(wizard, "#auth-set") == ["(*)", "( )", "( )"]
        assert box.render().plain.startswith("[ ] The user accepts")

        await pilot.press("space")
        assert box.value
        assert box.render().plain.startswith("[x] The user accepts")

        await pilot.press("shift+tab", "down", "enter")
        assert marks(wizard, "#auth-set") == ["( )", "(*)", "( )"]
        assert lab.commands(0x38, with_data=False) == []


# --- snapshots of each modal at 80x24 (demo values only) ---------------------------------------------

DEMO_PIN = "58203746"


def snapshot_lab(scenario: str, mutate=None) -> Lab:
    return Lab(scenario, mutate=mutate)


async def open_triage(pilot) -> None:
    await settle(pilot)
    await pilot.press("i", "enter")
    await wait_for_screen(pilot, TriageScreen)


async def open_verify(pilot) -> None:
    await settle(pilot)
    await pilot.press("v")
    await wait_for_screen(pilot, SecretPromptModal)
    await pilot.press(*"1234")


def one_try_left(backend: LabBackend) -> None:
    """Leave the lab PIN one try, so Step 4 needs the override (whose text has no time stamp)."""
    backend.key(backend.list_readers()[0]).store.pin.tries_left = 1


async def open_override(pilot) -> None:
    await settle(pilot)
    await pilot.press("v")
    await wait_for_screen(pilot, OverrideModal)


def with_escrow(lab: Lab):
    async def prepare(pilot) -> None:
        await settle(pilot)
        lab.use_escrow()
    return prepare


def snapshot_cases():
    async def puk_source(pilot, lab):
        await with_escrow(lab)(pilot)
        await pilot.press("u")
        await wait_for_screen(pilot, SourceModal)

    async def puk_confirm(pilot, lab):
        await puk_source(pilot, lab)
        await pilot.press("s")
        await wait_for_screen(pilot, ConfirmModal)

    async def puk_show_once(pilot, lab):
        await puk_source(pilot, lab)
        await pilot.press("tab", "down", "enter", "s")  # type the new PIN
        await type_secret(pilot, DEMO_PIN)
        await wait_for_screen(pilot, ConfirmModal)
        await pilot.press("s")
        await wait_for_screen(pilot, ShowOnceModal)

    async def unlock_confirm(pilot, lab):
        await with_escrow(lab)(pilot)
        await pilot.press("a")
        await wait_for_screen(pilot, SourceModal)
        await pilot.press("s")
        await wait_for_screen(pilot, ConfirmModal)

    async def wizard(pilot, lab):
        await with_escrow(lab)(pilot)
        await pilot.press("w")
        await wait_for_screen(pilot, ReprovisionWizard)

    async def not_confirmed(pilot, lab):
        from tui.escrow.errors import VaultServerError

        await with_escrow(lab)(pilot)
        original_write = lab.store.write
        calls = []

        def failing(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                raise VaultServerError("Vault returned 503")
            return original_write(*args, **kwargs)

        lab.store.write = failing
        await pilot.press("u")
        await wait_for_screen(pilot, SourceModal)
        await pilot.press("tab", "down", "enter", "s")
        await type_secret(pilot, DEMO_PIN)
        await wait_for_screen(pilot, ConfirmModal)
        await pilot.press("s")
        await wait_for_screen(pilot, NotConfirmedModal)

    return {
        "triage": ("pin-locked-puk", None, lambda pilot, lab: open_triage(pilot)),
        "verify-prompt": ("wrong-pin", None, lambda pilot, lab: open_verify(pilot)),
        # NOTE: no snapshot of the verify result: the rescan it starts repaints the
        # dimmed main screen behind it at a moment that varies between runs. The
        # result's text is checked by the verify flow tests instead.
        "verify-override": ("wrong-pin", one_try_left, lambda pilot, lab: open_override(pilot)),
        "puk-source": ("pin-locked-puk", None, puk_source),
        "puk-confirm": ("pin-locked-puk", None, puk_confirm),
        "puk-show-once": ("pin-locked-puk", None, puk_show_once),
        "puk-not-confirmed": ("pin-locked-puk", None, not_confirmed),
        "unlock-confirm": ("healthy", admin_key_on_file, unlock_confirm),
        "reprovision-wizard": ("healthy", admin_key_on_file, wizard),
    }


@pytest.mark.parametrize("case", list(snapshot_cases()))
def test_modal_snapshot_80x24(snap_compare, case):
    scenario, mutate, opener = snapshot_cases()[case]
    lab = snapshot_lab(scenario, mutate)

    async def run_before(pilot) -> None:
        await opener(pilot, lab)
        # Let the activity-log messages posted by the device thread drain behind the modal.
        for _ in range(5):
            await pilot.pause()

    assert snap_compare(lab.app, terminal_size=(80, 24), run_before=run_before)
