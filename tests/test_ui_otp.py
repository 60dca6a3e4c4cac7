"""The OTP slots screen (o, Step 5) and the external-auth check (x, Step 11) on the lab key.

The scan is the real read-only scan of the in-process lab key. Every APDU the
card receives after the scan is recorded, so the tests see exactly what each
key press sent.
"""

from __future__ import annotations

import pytest
from textual.widgets import Static

from conftest import fixed_clock
from tui.hotp import hotp
from tui.lab.oath import RFC_4226_SEED, HidOathInstance
from tui.lab.scenarios import LAB_ADMIN_KEY, LAB_STALE_ADMIN_KEY
from tui.settings import SiteSettings
from tui.ui.app import KeytriageApp
from tui.ui.modals import ConfirmModal, ErrorModal, SecretPromptModal, ShowOnceModal
from tui.ui.otp_screens import ExternalAuthScreen, OtpSlotsScreen

HOTP_AUTHENTICATE = bytes.fromhex("8088")
EXTERNAL_AUTHENTICATE = bytes.fromhex("0082")
GET_CHALLENGE = bytes.fromhex("0084")


def lab_app(scenario: str, *, read_only: bool = False) -> KeytriageApp:
    from tui.lab.backend import LabBackend

    settings = SiteSettings(read_only=read_only)
    return KeytriageApp(lambda: LabBackend(scenario), settings, lab_scenario=scenario, clock=fixed_clock)


async def scan_done(pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


async def wait_for(pilot, condition, what: str, rounds: int = 400) -> None:
    """Let the app run until `condition()` holds; fail naming `what` when it never does."""
    for _ in range(rounds):
        if condition():
            return
        await pilot.pause(0.01)
    raise AssertionError(f"never reached: {what}")


def lab_card(app: KeytriageApp):
    backend = app._backend
    return backend.key(backend.list_readers()[0]).card


def sent(recording, prefix: bytes) -> list[bytes]:
    return [command for command, _ in recording if command.startswith(prefix)]


def text_of(screen, selector: str) -> str:
    return str(screen.query_one(selector, Static).render())


def button_slot(app: KeytriageApp) -> HidOathInstance:
    return next(a for a in lab_card(app).applets if isinstance(a, HidOathInstance) and a.slot == 1)


def audit_lines(app: KeytriageApp) -> str:
    return app.session.audit.path.read_text(encoding="utf-8")


# --- the OTP slots screen ---------------------------------------------------------------


async def test_o_lists_slots_without_generating():
    app = lab_app("otp-drift")
    async with app.run_test(size=(80, 24)) as pilot:
        await scan_done(pilot)
        recording = lab_card(app).start_recording()
        await pilot.press("o")
        await pilot.pause()
        screen = app.screen
        listing = text_of(screen, "#otp-listing")
        assert isinstance(screen, OtpSlotsScreen)
        assert "OTP slot 1: configured" in listing
        assert "mode HOTP, algorithm SHA-1, digits 6, counter 1042" in listing
        assert "OTP slot 2: empty" in listing
        assert "likely HOTP counter drift" in listing
        assert "[g] Generate one code to submit" in text_of(screen, "#otp-keys")
        assert recording == []
        assert app.session.events[-1].applet == "OATH"


async def test_generate_cancelled_sends_nothing():
    app = lab_app("otp-drift")
    async with app.run_test(size=(80, 24)) as pilot:
        await scan_done(pilot)
        recording = lab_card(app).start_recording()
        await pilot.press("o", "g")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmModal)
        assert "advances the token's HOTP counter by one" in app.screen.body
        await pilot.press("n")
        await pilot.pause()
        assert isinstance(app.screen, OtpSlotsScreen)
        assert "Not generated" in text_of(app.screen, "#otp-status")
        assert recording == []


async def test_generate_one_code_shown_once():
    app = lab_app("otp-drift")
    async with app.run_test(size=(80, 24)) as pilot:
        await scan_done(pilot)
        recording = lab_card(app).start_recording()
        await pilot.press("o", "g", "y")
        await wait_for(pilot, lambda: isinstance(app.screen, ShowOnceModal), "the code shown")
        code = hotp(RFC_4226_SEED, 1042)
        assert app.screen._secret.reveal() == code
        assert len(sent(recording, HOTP_AUTHENTICATE)) == 1
        assert button_slot(app).config.counter == 1043

        # The code is never logged or audited; that a code was generated is.
        assert code not in "\n".join(app.activity.entries)
        assert code not in audit_lines(app)
        assert '"operation": "hotp-generate"' in audit_lines(app)
        assert any(event.kind == "hotp-generate" for event in app.session.events)
        assert all(code not in event.summary for event in app.session.events)

        await pilot.press("d")
        await pilot.pause()
        assert isinstance(app.screen, OtpSlotsScreen)
        assert "counter advanced by one" in text_of(app.screen, "#otp-status")


async def test_generate_confirm_key_differs():
    app = lab_app("otp-drift")
    async with app.run_test(size=(80, 24)) as pilot:
        await scan_done(pilot)
        recording = lab_card(app).start_recording()
        await pilot.press("o", "g", "g")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmModal)
        assert app.screen.confirm_key == "y"
        assert recording == []
        assert button_slot(app).config.counter == 1042


async def test_generate_hidden_read_only():
    app = lab_app("otp-drift", read_only=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await scan_done(pilot)
        recording = lab_card(app).start_recording()
        await pilot.press("o")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, OtpSlotsScreen)
        assert "[g]" not in text_of(screen, "#otp-keys")
        assert text_of(screen, "#otp-status").startswith("read-only mode: generating an HOTP code is disabled")
        assert screen.check_action("generate", ()) is False

        await pilot.press("g", "y")
        await pilot.pause()
        assert app.screen is screen
        screen.action_generate()
        await pilot.pause()
        assert app.screen is screen
        assert text_of(screen, "#otp-status").startswith("read-only mode:")
        assert recording == []
        assert button_slot(app).config.counter == 1042


async def test_generate_waits_for_button():
    app = lab_app("otp-drift")
    async with app.run_test(size=(80, 24)) as pilot:
        await scan_done(pilot)
        slot = button_slot(app)
        slot.needs_button = True
        recording = lab_card(app).start_recording()
        await pilot.press("o", "g", "y")
        await wait_for(pilot, lambda: "Press the key's button" in text_of(app.screen, "#otp-status"),
                       "the button prompt")
        assert not isinstance(app.screen, ShowOnceModal)
        slot.press_button()
        await wait_for(pilot, lambda: isinstance(app.screen, ShowOnceModal), "the code shown")
        answers = [response[-2:].hex() for command, response in recording if command.startswith(HOTP_AUTHENTICATE)]
        assert answers[0] == "6985"
        assert answers[-1] == "9000"
        assert answers.count("9000") == 1


async def test_generate_cancel_while_waiting():
    app = lab_app("otp-drift")
    async with app.run_test(size=(80, 24)) as pilot:
        await scan_done(pilot)
        button_slot(app).needs_button = True
        await pilot.press("o", "g", "y")
        await wait_for(pilot, lambda: "Press the key's button" in text_of(app.screen, "#otp-status"),
                       "the button prompt")
        await pilot.press("c")
        await wait_for(pilot, lambda: not app.screen.generating, "the generation to stop")
        assert "no code was generated" in text_of(app.screen, "#otp-status")
        assert button_slot(app).config.counter == 1042
        assert '"outcome": "cancelled"' in audit_lines(app)


async def test_no_generate_without_hid_slot():
    app = lab_app("yubikey-healthy")
    async with app.run_test(size=(80, 24)) as pilot:
        await scan_done(pilot)
        await pilot.press("o", "g")
        await pilot.pause()
        assert isinstance(app.screen, OtpSlotsScreen)
        assert "[g]" not in text_of(app.screen, "#otp-keys")
        assert "HID Crescendo" in text_of(app.screen, "#otp-status")


# --- the external-auth check ------------------------------------------------------------


async def type_key(pilot, key_hex: str) -> None:
    await pilot.press(*key_hex.lower())
    await pilot.press("enter")
    await pilot.pause()


async def open_xauth(pilot) -> ExternalAuthScreen:
    """Press x and wait until the screen has looked up the key on file."""
    await pilot.press("x")
    screen = pilot.app.screen
    assert isinstance(screen, ExternalAuthScreen)
    await wait_for(pilot, screen._lookup_done.is_set, "the key-on-file lookup")
    await pilot.pause()
    return screen


def secret_nowhere(app: KeytriageApp, screen, key: bytes) -> None:
    """Assert that `key` is in neither the audit trail, the activity log nor the screen's text."""
    hex_key = key.hex().upper()
    assert hex_key not in audit_lines(app).upper()
    assert not any(hex_key in line.upper() for line in app.activity.entries)
    for selector in ("#xauth-state", "#xauth-on-file", "#xauth-result", "#xauth-status"):
        assert hex_key not in text_of(screen, selector).upper()


async def test_x_offers_key_on_file():
    app = lab_app("admin-key-on-file")
    async with app.run_test(size=(80, 24)) as pilot:
        await scan_done(pilot)
        recording = lab_card(app).start_recording()
        screen = await open_xauth(pilot)

        assert "admin key on file (v1) in escrow" in text_of(screen, "#xauth-on-file")
        assert text_of(screen, "#xauth-keys").startswith("[t] Test the key on file    [k] Type a key instead")
        assert recording == []

        await pilot.press("t")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), "the confirmation")
        assert "admin key on file in escrow (on file (v1))" in app.screen.body
        assert recording == []
        await pilot.press("s")
        await wait_for(pilot, lambda: screen.result is not None, "the test result")

        assert "External auth is functional" in text_of(screen, "#xauth-result")
        assert "Key tested: escrow record, escrow version 1" in text_of(screen, "#xauth-result")
        assert len(sent(recording, EXTERNAL_AUTHENTICATE)) == 1
        record = [r for r in app.session.audit.records() if r.operation == "xauth-test"][-1]
        assert record.details["source"] == "escrow record"
        assert record.details["escrow_version"] == 1
        secret_nowhere(app, screen, LAB_ADMIN_KEY)


async def test_x_key_on_file_read_in_thread(monkeypatch):
    import threading

    import tui.ui.otp_screens as otp_screens

    threads: dict[str, str] = {}

    def recorded(name, function):
        def wrapper(*args):
            threads[name] = threading.current_thread().name
            return function(*args)
        return wrapper

    monkeypatch.setattr(otp_screens, "admin_key_on_file", recorded("metadata", otp_screens.admin_key_on_file))
    monkeypatch.setattr(otp_screens, "read_admin_key_on_file", recorded("value", otp_screens.read_admin_key_on_file))
    app = lab_app("admin-key-on-file")
    async with app.run_test(size=(80, 24)) as pilot:
        await scan_done(pilot)
        screen = await open_xauth(pilot)
        assert set(threads) == {"metadata"}

        await pilot.press("t")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), "the confirmation")
        # The value is read only once the technician confirmed.
        assert set(threads) == {"metadata"}
        await pilot.press("s")
        await wait_for(pilot, lambda: screen.result is not None, "the test result")

    main = threading.main_thread().name
    assert threads["metadata"] != main
    assert threads["value"] != main


async def test_x_stale_key_on_file_fails_once():
    app = lab_app("xauth-stale")
    async with app.run_test(size=(80, 24)) as pilot:
        await scan_done(pilot)
        recording = lab_card(app).start_recording()
        screen = await open_xauth(pilot)
        assert "configured, AES-128" in text_of(screen, "#xauth-state")
        assert recording == []

        await pilot.press("t")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), "the confirmation")
        await pilot.press("s")
        await wait_for(pilot, lambda: screen.result is not None, "the test result")
        assert app.screen is screen
        result = text_of(screen, "#xauth-result")
        assert "Wrong key on file or corrupted key on the token." in result
        assert "Do not repeat the test" in result
        assert len(sent(recording, EXTERNAL_AUTHENTICATE)) == 1
        assert len(sent(recording, GET_CHALLENGE)) == 1
        assert '"outcome": "failed"' in audit_lines(app)
        secret_nowhere(app, screen, LAB_STALE_ADMIN_KEY)

        # The same key on file is never tested twice: t is rejected without a prompt.
        await pilot.press("t")
        await wait_for(pilot, lambda: "already failed" in text_of(screen, "#xauth-status"), "the refusal")
        assert app.screen is screen
        assert "Press k to test a different key" in text_of(screen, "#xauth-status")

        # A typed key after a failure needs a warning and a choice.
        await pilot.press("k")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmModal)
        assert "already failed" in app.screen.body
        await pilot.press("n")
        await pilot.pause()
        assert app.screen is screen
        assert len(sent(recording, EXTERNAL_AUTHENTICATE)) == 1


async def test_x_typed_key_after_stale_failure():
    app = lab_app("xauth-stale")
    async with app.run_test(size=(80, 24)) as pilot:
        await scan_done(pilot)
        recording = lab_card(app).start_recording()
        screen = await open_xauth(pilot)
        await pilot.press("t")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), "the confirmation")
        await pilot.press("s")
        await wait_for(pilot, lambda: screen.result is not None, "the first result")
        assert not screen.result.succeeded

        await pilot.press("k")
        await pilot.pause()
        await pilot.press("s")  # continue past the warning, with a different key
        await pilot.pause()
        assert isinstance(app.screen, SecretPromptModal)
        await type_key(pilot, LAB_ADMIN_KEY.hex())
        await pilot.press("s")
        await wait_for(pilot, lambda: screen.result.succeeded, "the second result")

        assert "Key tested: typed by the technician" in text_of(screen, "#xauth-result")
        assert len(sent(recording, EXTERNAL_AUTHENTICATE)) == 2
        sources = [r.details.get("source") for r in app.session.audit.records() if r.operation == "xauth-test"]
        assert sources == ["escrow record", "typed by the technician"]


async def test_x_cancel_confirmation_sends_nothing():
    app = lab_app("admin-key-on-file")
    async with app.run_test(size=(80, 24)) as pilot:
        await scan_done(pilot)
        recording = lab_card(app).start_recording()
        screen = await open_xauth(pilot)
        await pilot.press("t")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), "the confirmation")
        await pilot.press("n")
        await wait_for(pilot, lambda: app.screen is screen, "the screen again")

        assert text_of(screen, "#xauth-status") == "Not sent."
        assert recording == []
        assert not [r for r in app.session.audit.records() if r.operation == "xauth-test"]


async def test_x_nothing_on_file_asks_typed():
    app = lab_app("healthy")
    async with app.run_test(size=(80, 24)) as pilot:
        await scan_done(pilot)
        recording = lab_card(app).start_recording()
        screen = await open_xauth(pilot)
        assert "none usable (no admin key on file)" in text_of(screen, "#xauth-on-file")
        assert text_of(screen, "#xauth-keys").startswith("[t] Type the admin key and test it")

        await pilot.press("t")
        await wait_for(pilot, lambda: isinstance(app.screen, SecretPromptModal), "the key prompt")
        await type_key(pilot, LAB_ADMIN_KEY.hex())
        await pilot.press("s")
        await wait_for(pilot, lambda: screen.result is not None, "the test result")
        assert screen.result.succeeded
        assert len(sent(recording, EXTERNAL_AUTHENTICATE)) == 1


async def test_x_without_escrow_asks_typed():
    app = lab_app("admin-key-on-file")
    async with app.run_test(size=(80, 24)) as pilot:
        await scan_done(pilot)
        app.session.escrow = None
        screen = await open_xauth(pilot)
        assert "no escrow is configured for this session" in text_of(screen, "#xauth-on-file")

        await pilot.press("t")
        await wait_for(pilot, lambda: isinstance(app.screen, SecretPromptModal), "the key prompt")


async def test_x_unreadable_value_sends_nothing(monkeypatch):
    from tui.escrow.errors import VaultPermissionError

    def forbidden(escrow, token_id):
        raise VaultPermissionError("permission denied reading secret/data/keytriage/tokens/x/admin-key; "
                                   "ask for read on data paths", api_path="/v1/secret/data/x", capability="read",
                                   method="GET")

    monkeypatch.setattr("tui.ui.otp_screens.read_admin_key_on_file", forbidden)
    app = lab_app("admin-key-on-file")
    async with app.run_test(size=(80, 24)) as pilot:
        await scan_done(pilot)
        recording = lab_card(app).start_recording()
        screen = await open_xauth(pilot)
        await pilot.press("t")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), "the confirmation")
        await pilot.press("s")
        await wait_for(pilot, lambda: isinstance(app.screen, ErrorModal), "the error")

        assert "could not be read" in app.screen.message
        assert "Press k to type the key" in app.screen.message
        assert recording == []
        assert screen.result is None


async def test_x_hidden_read_only():
    app = lab_app("xauth-stale", read_only=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await scan_done(pilot)
        recording = lab_card(app).start_recording()
        screen = await open_xauth(pilot)
        assert text_of(screen, "#xauth-keys") == "[n] Close"
        assert text_of(screen, "#xauth-status").startswith("read-only mode: the admin-key test is disabled")
        assert screen.check_action("test_key", ()) is False
        assert screen.check_action("type_key", ()) is False

        await pilot.press("t", "k")
        await pilot.pause()
        assert app.screen is screen
        screen.action_test_key()
        screen.action_type_key()
        await pilot.pause()
        assert app.screen is screen
        assert recording == []


async def test_x_wrong_length_never_sent():
    app = lab_app("xauth-stale")
    async with app.run_test(size=(80, 24)) as pilot:
        await scan_done(pilot)
        recording = lab_card(app).start_recording()
        await open_xauth(pilot)
        await pilot.press("k")
        await pilot.pause()
        await type_key(pilot, "0102030405060708")
        modal = app.screen
        assert isinstance(modal, SecretPromptModal)
        assert "32 hex digits for an AES-128 key" in text_of(modal, "#modal-error")
        await pilot.press("s")
        await pilot.pause()
        assert app.screen is modal
        # The field keeps the focus after a rejected value, so Escape cancels.
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, ExternalAuthScreen)
        assert "Not sent" in text_of(app.screen, "#xauth-status")
        assert recording == []


async def test_x_not_for_yubikey():
    app = lab_app("yubikey-healthy")
    async with app.run_test(size=(80, 24)) as pilot:
        await scan_done(pilot)
        recording = lab_card(app).start_recording()
        screen = await open_xauth(pilot)
        for key in ("t", "k"):
            await pilot.press(key)
            await pilot.pause()
            assert app.screen is screen
            assert "HID Crescendo" in text_of(screen, "#xauth-status")
        assert recording == []


async def test_x_token_gone_reports_error():
    app = lab_app("xauth-stale")
    async with app.run_test(size=(80, 24)) as pilot:
        await scan_done(pilot)
        reader = app._backend.list_readers()[0]
        app._backend.remove(reader)
        await open_xauth(pilot)
        await pilot.press("k")
        await pilot.pause()
        await type_key(pilot, LAB_ADMIN_KEY.hex())
        await pilot.press("s")
        await wait_for(pilot, lambda: isinstance(app.screen, ErrorModal), "the error")
        assert "Rescan" in app.screen.message


# --- snapshots at 80x24 ---------------------------------------------------------------


def test_otp_screen_snapshot(snap_compare):
    async def open_otp(pilot):
        await scan_done(pilot)
        await pilot.press("o")
        await pilot.pause()

    assert snap_compare(lab_app("otp-drift"), terminal_size=(80, 24), run_before=open_otp)


def test_otp_confirm_snapshot(snap_compare):
    async def open_confirm(pilot):
        await scan_done(pilot)
        await pilot.press("o", "g")
        await pilot.pause()

    assert snap_compare(lab_app("otp-drift"), terminal_size=(80, 24), run_before=open_confirm)


def test_external_auth_snapshot(snap_compare):
    async def open_screen(pilot):
        await scan_done(pilot)
        await open_xauth(pilot)

    assert snap_compare(lab_app("xauth-stale"), terminal_size=(80, 24), run_before=open_screen)
