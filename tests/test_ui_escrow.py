"""The escrow feature in the TUI: Vault header, login, and "set a PUK" through escrow-before-apply.

Lab tests run the real read-only scan on the in-process lab key with the
in-memory lab store. Vault tests run the real hvac client against the
Vault-compatible server in tests/vault_server.py on 127.0.0.1, in lab mode
with `lab_vault`, so records go to `lab/keytriage/tokens` on that server.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from conftest import fixed_clock
from tui.escrow.errors import VaultUnreachableError
from tui.escrow.records import RecordState, SecretKind
from tui.lab.backend import LabBackend
from tui.settings import SiteSettings
from tui.ui.app import KeytriageApp
from tui.ui.modals import ConfirmModal, ErrorModal, SecretPromptModal
from tui.ui.vault_screens import ChoiceModal, OutcomeModal, VaultLoginScreen
from vault_server import VaultTestServer, writer_rules

YUBIKEY = "yubikey-healthy"
LAB_BASE = "lab/keytriage/tokens"
MAX_PAUSES = 400


class LabRun:
    """The lab app and what the test inspects: the backend it built and what each scan saw in escrow."""

    def __init__(self, scenario: str, *, overrides: dict | None = None, settings: SiteSettings | None = None) -> None:
        self.backend: LabBackend | None = None
        self.seen_at_scan: list[RecordState | None] = []
        self.app = KeytriageApp(self._backend_factory(scenario), settings or SiteSettings(), lab_scenario=scenario,
                                scan=self._scan, clock=fixed_clock)
        self.app.escrow_overrides = overrides or {}

    def _backend_factory(self, scenario: str):
        def factory() -> LabBackend:
            self.backend = LabBackend(scenario)
            return self.backend
        return factory

    def _scan(self, backend, settings, *, observer=None):
        # Record the escrow state of the PUK at the moment each scan starts.
        from tui.scan import scan_all

        context = self.app.escrow_context
        token_id = self.app.selected_token_id
        state = None
        if context is not None and context.memory and token_id is not None:
            if context.store.read_metadata(token_id, SecretKind.PIV_PUK) is not None:
                state = context.store.read_version(token_id, SecretKind.PIV_PUK)[0].state
        self.seen_at_scan.append(state)
        return scan_all(backend, settings, observer=observer)

    def lab_puk(self):
        reader = self.backend.list_readers()[0]
        return self.backend.key(reader).piv.store.puk


def header(app: KeytriageApp) -> str:
    return str(app.main_screen.query_one("#vault-state").render())


async def until(pilot, condition, what: str) -> None:
    """Let the app run until `condition()` holds; fail naming `what` after MAX_PAUSES rounds."""
    for _ in range(MAX_PAUSES):
        if condition():
            return
        await pilot.pause(0.01)
    raise AssertionError(f"never reached: {what}")


async def settle(app, pilot) -> None:
    await app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


def screen_text(app: KeytriageApp) -> str:
    return "\n".join(str(widget.render()) for widget in app.screen.query("Static"))


async def run_set_puk_with_default(run: LabRun, pilot) -> None:
    app = run.app
    await pilot.press("p")
    await until(pilot, lambda: isinstance(app.screen, ChoiceModal), "current PUK choice")
    await pilot.press("d")
    await until(pilot, lambda: isinstance(app.screen, ConfirmModal), "set PUK confirmation")
    await pilot.press("s")
    await until(pilot, lambda: isinstance(app.screen, (OutcomeModal, ErrorModal)), "set PUK outcome")


# --- lab store --------------------------------------------------------------------------


async def test_lab_header_says_lab_store():
    run = LabRun(YUBIKEY)
    async with run.app.run_test(size=(80, 24)) as pilot:
        await settle(run.app, pilot)
        assert header(run.app) == "Vault: lab store"
        assert run.app.escrow_context.memory
        assert run.app.escrow_context.store.base_path == LAB_BASE


async def test_lab_escrow_seeded_after_scan():
    run = LabRun("pin-locked-puk")
    async with run.app.run_test(size=(80, 24)) as pilot:
        await settle(run.app, pilot)
        app = run.app
        token_id = app.selected_token_id
        store = app.escrow_context.store
        record, value, version = store.read_version(token_id, SecretKind.PIV_PUK)

        assert record.state is RecordState.APPLIED
        assert version == 1
        assert value == run.backend.key(run.backend.list_readers()[0]).escrow["piv-puk"]
        assert app.escrow_context.value_on_file(token_id, SecretKind.PIV_PUK) == value
        assert app.escrow_puk_on_file[token_id] == "on file (v1)"

        # A rescan does not seed again.
        await pilot.press("r")
        await settle(app, pilot)
        assert store.read_metadata(token_id, SecretKind.PIV_PUK).current_version == 1


async def test_set_puk_escrowed_before_rescan():
    run = LabRun(YUBIKEY)
    async with run.app.run_test(size=(80, 24)) as pilot:
        app = run.app
        await settle(app, pilot)
        token_id = app.selected_token_id
        assert app.selected_token().smartcard.puk.is_default is True

        await run_set_puk_with_default(run, pilot)
        assert isinstance(app.screen, OutcomeModal)
        assert "applied" in app.screen.message
        assert f"secret/{LAB_BASE}/{token_id}/piv-puk (version 1, pending) before it was set" in app.screen.message
        assert "recorded as applied in version 2" in app.screen.message
        assert "/data/" not in app.screen.message

        await pilot.press("o")
        await settle(app, pilot)

        # The rescan started only with the PUK applied in escrow.
        assert run.seen_at_scan == [None, RecordState.APPLIED]
        record, value, version = app.escrow_context.store.read_version(token_id, SecretKind.PIV_PUK)
        assert record.state is RecordState.APPLIED
        assert version == 2
        assert run.lab_puk().matches(value.reveal_bytes())
        assert app.selected_token().smartcard.puk.is_default is False
        assert app.selected_token().smartcard.puk.remaining == 3


async def test_set_puk_path_same_everywhere():
    run = LabRun(YUBIKEY)
    async with run.app.run_test(size=(80, 24)) as pilot:
        app = run.app
        await settle(app, pilot)
        token_id = app.selected_token_id
        path = f"secret/{LAB_BASE}/{token_id}/piv-puk"

        await run_set_puk_with_default(run, pilot)
        assert isinstance(app.screen, OutcomeModal)
        shown = app.screen.message
        await pilot.press("o")
        await settle(app, pilot)

        await pilot.press("h")
        await until(pilot, lambda: type(app.screen).__name__ == "HistoryScreen", "history view")
        await settle(app, pilot)
        history = str(app.screen.query_one("#text-view-body").render())
        await pilot.press("o")
        await settle(app, pilot)

        await pilot.press("t")
        await until(pilot, lambda: type(app.screen).__name__ == "TicketScreen", "ticket")
        await settle(app, pilot)
        ticket = str(app.screen.query_one("#text-view-body").render())

    assert f"Escrowed to {path} (version 1, pending)" in shown
    assert f"PIV PUK: {path}\n" in history
    assert f"{path} v2" in ticket
    for text in (shown, history, ticket):
        assert "/data/" not in text


async def test_set_puk_refused_when_on_file():
    run = LabRun("wrong-pin")
    async with run.app.run_test(size=(80, 24)) as pilot:
        await settle(run.app, pilot)
        await pilot.press("p")
        await until(pilot, lambda: isinstance(run.app.screen, ErrorModal), "refusal")

        assert "already on file (v1)" in run.app.screen.message
        assert run.lab_puk().matches(b"86420975")


async def test_set_puk_read_only_sends_nothing():
    run = LabRun(YUBIKEY, settings=SiteSettings(read_only=True))
    async with run.app.run_test(size=(80, 24)) as pilot:
        await settle(run.app, pilot)
        recording = run.backend.key(run.backend.list_readers()[0]).card.start_recording()
        await pilot.press("p")
        await settle(run.app, pilot)

        # NOTE: the main screen still shows the p key in read-only mode; the action rejects it.
        assert not isinstance(run.app.screen, (ChoiceModal, ConfirmModal))
        assert recording == []
        assert run.lab_puk().matches(b"12345678")
        token_id = run.app.selected_token_id
        assert run.app.escrow_context.store.read_metadata(token_id, SecretKind.PIV_PUK) is None


async def test_set_puk_crescendo_leaves_no_record():
    run = LabRun("healthy")
    async with run.app.run_test(size=(80, 24)) as pilot:
        await settle(run.app, pilot)
        token_id = run.app.selected_token_id
        store = run.app.escrow_context.store
        before = store.read_metadata(token_id, SecretKind.PIV_PUK)
        await pilot.press("p")
        for _ in range(MAX_PAUSES):
            if isinstance(run.app.screen, ErrorModal):
                break
            if isinstance(run.app.screen, ChoiceModal):
                await pilot.press("d")
            elif isinstance(run.app.screen, SecretPromptModal):
                for char in "12345678":
                    await pilot.press(char)
                await pilot.press("enter", "s")
            elif isinstance(run.app.screen, ConfirmModal):
                await pilot.press("s")
            await pilot.pause()

        assert isinstance(run.app.screen, ErrorModal)
        assert "admin-key unlock" in run.app.screen.message
        after = store.read_metadata(token_id, SecretKind.PIV_PUK)
        assert (after.current_version if after else None) == (before.current_version if before else None)


async def test_set_puk_typed_wrong_puk_fails_with_tries():
    run = LabRun(YUBIKEY)
    async with run.app.run_test(size=(80, 24)) as pilot:
        app = run.app
        await settle(app, pilot)
        token_id = app.selected_token_id
        await pilot.press("p")
        await until(pilot, lambda: isinstance(app.screen, ChoiceModal), "current PUK choice")
        await pilot.press("t")
        await until(pilot, lambda: isinstance(app.screen, SecretPromptModal), "PUK entry")
        await pilot.press(*"11112222", "enter", "s")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal), "confirmation")
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, OutcomeModal), "outcome")

        assert "verify failed, 2 tries left" in app.screen.message
        assert "PUK tries left: 2" in app.screen.message
        record, _, _ = app.escrow_context.store.read_version(token_id, SecretKind.PIV_PUK)
        assert record.state is RecordState.FAILED
        assert run.lab_puk().matches(b"12345678")


async def test_set_puk_cancel_sends_nothing():
    run = LabRun(YUBIKEY)
    async with run.app.run_test(size=(80, 24)) as pilot:
        app = run.app
        await settle(app, pilot)
        token_id = app.selected_token_id
        await pilot.press("p")
        await until(pilot, lambda: isinstance(app.screen, ChoiceModal), "current PUK choice")
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal), "confirmation")
        await pilot.press("n")
        await settle(app, pilot)

        assert app.escrow_context.store.read_metadata(token_id, SecretKind.PIV_PUK) is None
        assert run.lab_puk().is_default
        assert "Set PUK cancelled; nothing was sent" in app.activity.entries[-1]


async def test_not_confirmed_banner_and_retry():
    run = LabRun(YUBIKEY)
    async with run.app.run_test(size=(80, 24)) as pilot:
        app = run.app
        await settle(app, pilot)
        token_id = app.selected_token_id
        store = app.escrow_context.store
        original_write = store.write
        writes = []

        def write_then_fail(*args, **kwargs):
            # The pending write goes through; the outcome write fails.
            writes.append(args[2].state)
            if len(writes) == 2:
                raise VaultUnreachableError("Cannot connect to Vault for POST (test).")
            return original_write(*args, **kwargs)

        store.write = write_then_fail
        await run_set_puk_with_default(run, pilot)
        assert isinstance(app.screen, ErrorModal)
        assert "NOT CONFIRMED" in app.screen.message
        await pilot.press("o")
        await pilot.pause()

        banner = str(app.main_screen.query_one("#escrow-banner").render())
        assert "NOT CONFIRMED" in banner
        assert len(app.escrow_unconfirmed) == 1
        # The token has the new PUK; escrow still says pending.
        assert run.lab_puk().matches(app.escrow_unconfirmed[0].value.reveal_bytes())
        assert store.read_version(token_id, SecretKind.PIV_PUK)[0].state is RecordState.PENDING

        # Quit asks first instead of dropping the value.
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal), "quit question")
        await pilot.press("n")

        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, ChoiceModal), "retry choice")
        await pilot.press("w")
        await until(pilot, lambda: isinstance(app.screen, OutcomeModal), "retry outcome")
        await pilot.press("o")
        await pilot.pause()

        assert app.escrow_unconfirmed == []
        assert not app.main_screen.query("#escrow-banner")
        assert store.read_version(token_id, SecretKind.PIV_PUK)[0].state is RecordState.APPLIED


async def test_quit_waits_for_write():
    run = LabRun(YUBIKEY)
    async with run.app.run_test(size=(80, 24)) as pilot:
        app = run.app
        await settle(app, pilot)
        app.escrow_write_in_flight = True
        await pilot.press("q")
        await pilot.pause()

        assert app.is_running
        assert app._escrow_quit_requested
        app.escrow_write_in_flight = False
        app._escrow_quit_requested = False


async def test_secret_canary_absent(caplog, tmp_path):
    run = LabRun(YUBIKEY)
    caplog.set_level(logging.DEBUG, logger="keytriage")
    async with run.app.run_test(size=(80, 24)) as pilot:
        app = run.app
        await settle(app, pilot)
        await run_set_puk_with_default(run, pilot)
        await pilot.press("o")
        await settle(app, pilot)

        token_id = app.selected_token_id
        _, new_puk, _ = app.escrow_context.store.read_version(token_id, SecretKind.PIV_PUK)
        canary = new_puk.reveal_text()
        audit_text = app.session.audit.path.read_text(encoding="utf-8")
        screen = app.export_screenshot()
        activity = list(app.activity.entries)

    assert canary not in caplog.text
    assert canary not in audit_text
    assert "escrow-set-piv-puk" in audit_text
    assert not any(canary in line for line in activity)
    assert not any(canary in event.summary or canary in " ".join(event.escrow_refs) for event in app.session.events)
    assert canary not in screen


# --- snapshots ----------------------------------------------------------------------------


async def open_set_puk_confirmation(pilot) -> None:
    await settle(pilot.app, pilot)
    await pilot.press("p")
    await until(pilot, lambda: isinstance(pilot.app.screen, ChoiceModal), "current PUK choice")
    await pilot.press("d")
    await until(pilot, lambda: isinstance(pilot.app.screen, ConfirmModal), "confirmation")


async def finish_set_puk(pilot) -> None:
    await open_set_puk_confirmation(pilot)
    await pilot.press("s")
    await until(pilot, lambda: isinstance(pilot.app.screen, OutcomeModal), "outcome")


def test_snapshot_set_puk_confirmation(snap_compare):
    assert snap_compare(LabRun(YUBIKEY).app, terminal_size=(80, 24), run_before=open_set_puk_confirmation)


def test_snapshot_set_puk_applied(snap_compare):
    assert snap_compare(LabRun(YUBIKEY).app, terminal_size=(80, 24), run_before=finish_set_puk)


# --- against the Vault test server ----------------------------------------------------------


@pytest.fixture
def vault(monkeypatch, tmp_path):
    """A started Vault test server, with HOME pointed at an empty folder and no VAULT_* variables."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("VAULT_ADDR", "VAULT_TOKEN", "VAULT_NAMESPACE", "VAULT_CACERT", "VAULT_CAPATH", "VAULT_SKIP_VERIFY"):
        monkeypatch.delenv(name, raising=False)
    server = VaultTestServer().start()
    yield server
    server.stop()


def vault_run(server: VaultTestServer, monkeypatch, token: str | None = None) -> LabRun:
    if token is not None:
        monkeypatch.setenv("VAULT_TOKEN", token)
    return LabRun(YUBIKEY, overrides={"address": server.url, "lab_vault": True, "timeout": 2})


async def test_vault_set_puk_applied(vault, monkeypatch):
    token = vault.add_token(writer_rules(base=LAB_BASE), display_name="writer")
    run = vault_run(vault, monkeypatch, token)
    async with run.app.run_test(size=(80, 24)) as pilot:
        app = run.app
        await settle(app, pilot)
        assert header(app).startswith("Vault (lab): ok (writer, ")
        token_id = app.selected_token_id

        await run_set_puk_with_default(run, pilot)
        assert isinstance(app.screen, OutcomeModal)
        await pilot.press("o")
        await settle(app, pilot)

        versions = vault.versions("secret", f"{LAB_BASE}/{token_id}/piv-puk")
        assert [v["state"] for v in versions] == ["pending", "applied"]
        assert run.lab_puk().matches(versions[-1]["value"].encode())
        posts = vault.requests_to("POST", f"secret/data/{LAB_BASE}/{token_id}/piv-puk")
        assert [p["json"]["options"]["cas"] for p in posts] == [0, 1]


async def test_vault_stopped_blocks_set_puk(vault, monkeypatch):
    token = vault.add_token(writer_rules(base=LAB_BASE), display_name="writer")
    vault.stop()
    run = vault_run(vault, monkeypatch, token)
    async with run.app.run_test(size=(80, 24)) as pilot:
        app = run.app
        await settle(app, pilot)
        assert header(app) == "Vault (lab): unreachable"

        await pilot.press("p")
        await until(pilot, lambda: isinstance(app.screen, ErrorModal), "refusal")
        assert "Cannot connect to Vault" in app.screen.message
        assert "Check VAULT_ADDR" in app.screen.message
        assert run.lab_puk().is_default
        assert app.escrow_block_reason is not None


async def test_vault_lost_mid_session_blocks_set_puk(vault, monkeypatch):
    token = vault.add_token(writer_rules(base=LAB_BASE), display_name="writer")
    run = vault_run(vault, monkeypatch, token)
    async with run.app.run_test(size=(80, 24)) as pilot:
        app = run.app
        await settle(app, pilot)
        assert header(app).startswith("Vault (lab): ok (writer, ")

        # Every later request has its connection dropped, as when Vault goes away.
        vault.inject("*", drop=True, times=0)
        await pilot.press("p")
        await until(pilot, lambda: isinstance(app.screen, ErrorModal), "refusal")
        assert "Cannot connect to Vault" in app.screen.message
        assert header(app) == "Vault (lab): unreachable"
        assert run.lab_puk().is_default


async def test_vault_sealed_blocks_set_puk(vault, monkeypatch):
    token = vault.add_token(writer_rules(base=LAB_BASE), display_name="writer")
    run = vault_run(vault, monkeypatch, token)
    async with run.app.run_test(size=(80, 24)) as pilot:
        app = run.app
        await settle(app, pilot)
        vault.sealed = True
        await pilot.press("p")
        await until(pilot, lambda: isinstance(app.screen, ErrorModal), "refusal")

        assert "sealed" in app.screen.message
        assert header(app) == "Vault (lab): sealed"
        assert run.lab_puk().is_default
        assert vault.requests_to("POST", "secret/data/") == []


async def test_vault_403_names_exact_path(vault, monkeypatch):
    # Read on metadata, but neither create nor update on the data path.
    rules = {f"secret/metadata/{LAB_BASE}/*": ["read"], f"secret/data/{LAB_BASE}/*": ["read"]}
    token = vault.add_token(rules, display_name="reader")
    run = vault_run(vault, monkeypatch, token)
    async with run.app.run_test(size=(80, 24)) as pilot:
        app = run.app
        await settle(app, pilot)
        token_id = app.selected_token_id
        await pilot.press("p")
        await until(pilot, lambda: isinstance(app.screen, ErrorModal), "refusal")

        assert f"/v1/secret/data/{LAB_BASE}/{token_id}/piv-puk" in app.screen.message
        assert "create/update capability" in app.screen.message
        assert header(app) == "Vault (lab): read only (reader, 59m)" or header(app) == "Vault (lab): read only (reader, 1h00m)"
        assert run.lab_puk().is_default


async def test_vault_login_userpass_memory_only(vault, monkeypatch):
    vault.add_userpass_user("alice", "correct horse", writer_rules(base=LAB_BASE))
    run = vault_run(vault, monkeypatch)
    home = Path.home()
    async with run.app.run_test(size=(80, 24)) as pilot:
        app = run.app
        await settle(app, pilot)
        assert header(app) == "Vault (lab): not logged in"

        await pilot.press("l")
        await until(pilot, lambda: isinstance(app.screen, ChoiceModal), "login method")
        await pilot.press("u")
        await until(pilot, lambda: isinstance(app.screen, VaultLoginScreen), "login form")

        # A wrong password first: the reason in words, the form stays open.
        await pilot.press(*"alice", "enter", *"wrong", "enter", "s")
        await until(pilot, lambda: "Login failed" in str(app.screen.query_one("#login-error").render()), "login error")
        assert "wrong user name or password" in str(app.screen.query_one("#login-error").render())
        assert app.screen.query_one("#login-secret").value == ""

        await pilot.press(*"correct horse", "enter", "s")
        await until(pilot, lambda: app.screen.info is not None, "login")
        assert "expires in" in str(app.screen.query_one("#login-error").render())
        await pilot.press("o")
        await settle(app, pilot)

        assert header(app).startswith("Vault (lab): ok (userpass-alice, ")
        assert app.escrow_context.config.token_source == "login"
        assert app.escrow_context.status.usable

    assert list(home.rglob("*")) == []


async def test_vault_login_unreachable_in_words(vault, monkeypatch):
    run = vault_run(vault, monkeypatch)
    async with run.app.run_test(size=(80, 24)) as pilot:
        app = run.app
        await settle(app, pilot)
        vault.stop()
        await pilot.press("l")
        await until(pilot, lambda: isinstance(app.screen, ChoiceModal), "login method")
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, VaultLoginScreen), "login form")
        await pilot.press(*"bob", "enter", *"secret1", "enter", "s")
        await until(pilot, lambda: "Login failed" in str(app.screen.query_one("#login-error").render()), "login error")

        text = str(app.screen.query_one("#login-error").render())
        assert "Vault is not usable" in text
        assert "Check VAULT_ADDR" in text


async def test_lab_store_needs_no_login():
    run = LabRun(YUBIKEY)
    async with run.app.run_test(size=(80, 24)) as pilot:
        await settle(run.app, pilot)
        await pilot.press("l")
        await until(pilot, lambda: isinstance(run.app.screen, ErrorModal), "lab login message")
        assert "needs no Vault login" in run.app.screen.message

