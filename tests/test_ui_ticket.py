"""The ticket feature in the TUI: ticket screen, copy, history, draft, SIGHUP, help, exit printing, --trace."""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import stat
from types import SimpleNamespace

import pyperclip
import pytest

from conftest import FakeScanner, fixed_clock, make_scan, make_token, sample_exchanges
from tui.draft import STATE_CLOSED, STATE_INTERRUPTED, DraftStore
from tui.escrow.memory import MemoryStore
from tui.escrow.records import EscrowRecord, RecordState, SecretKind
from tui.model import Counter, PinState, Source
from tui.secret import Secret
from tui.settings import SiteSettings
from tui.ui.app import KeytriageApp
from tui.ui.feature_ticket import HANGUP_EXIT_CODE
from tui.ui.run import emit_ticket
from tui.ui.screens import HelpScreen
from tui.ui.ticket_screens import HistoryScreen, TicketScreen

TOKEN_ID = "cplc:4790516856781A2B3C4D"
TMUX = "/tmp/tmux-1000/default,1234,0"
CANARY_PIN = "CANARY-PIN-918273"
CANARY_PUK = "CANARY-PUK-55501234"


async def settle(app, pilot) -> None:
    """Wait for workers and the messages they posted."""
    await app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


def locked_scan():
    return make_scan(make_token(pin=Counter(PinState.BLOCKED, 0, 8, Source.STATUS_QUERY)))


@pytest.fixture
def over_ssh_in_tmux(monkeypatch):
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "STY", "TERM_PROGRAM", "SSH_CLIENT", "SSH_TTY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SSH_CONNECTION", "10.0.0.5 51000 10.0.0.9 22")
    monkeypatch.setenv("TMUX", TMUX)
    monkeypatch.setattr("tui.clipboard.tmux_set_clipboard", lambda: "external")
    copied: list[str] = []
    monkeypatch.setattr(pyperclip, "copy", copied.append)
    return copied


def text_view(app) -> str:
    return str(app.screen.query_one("#text-view-body").render())


# --- ticket screen ---------------------------------------------------------------------------

async def test_t_shows_ticket_and_o_closes(make_app):
    app = make_app(FakeScanner([locked_scan()]))

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("t")
        await pilot.pause()

        assert isinstance(app.screen, TicketScreen)
        text = text_view(app)
        assert f"Token ID:     {TOKEN_ID}" in text
        assert "smart card: PIN 0/8 BLOCKED (PIV status query)" in text

        await pilot.press("o")
        assert not isinstance(app.screen, TicketScreen)
        assert app.is_running


async def test_served_lab_key_ticket_says_lab():
    from tui.lab.backend import LabBackend

    # pcscd serves the emulated key, so the backend does not report `is_lab`; the token ID marks it.
    backend = LabBackend("pin-locked-puk")
    backend.is_lab = False
    app = KeytriageApp(lambda: backend, SiteSettings(), clock=fixed_clock)

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        token = app.selected_token()
        detail = str(app.main_screen.query_one("#token-detail").render())
        assert app.session.lab_scenario is None
        assert token.is_lab
        assert "LAB KEY" in detail

        await pilot.press("t")
        await pilot.pause()
        assert isinstance(app.screen, TicketScreen)
        assert app.screen.title_text == "Ticket summary (LAB TEST)"
        text = text_view(app)
        assert text.startswith("LAB TEST - keytriage ticket summary")
        assert f"{token.token_id}: emulated lab key served through" in text

        draft = json.loads(app.draft_store.path_for(app.session.audit.session).read_text())
        assert draft["lab"] is True
        assert draft["text"].startswith("LAB TEST - ")


async def test_hardware_ticket_title_plain(make_app):
    app = make_app(FakeScanner([locked_scan()]))

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("t")
        await pilot.pause()

        assert app.screen.title_text == "Ticket summary"
        assert "LAB" not in text_view(app)
        draft = json.loads(app.draft_store.path_for(app.session.audit.session).read_text())
        assert draft["lab"] is False


async def test_ticket_q_closes_not_quits(make_app):
    app = make_app(FakeScanner([locked_scan()]))

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("t", "q")
        await pilot.pause()

        assert not isinstance(app.screen, TicketScreen)
        assert app.is_running


@pytest.mark.parametrize("key", ["q", "n", "escape", "o"])
async def test_ticket_close_keys(make_app, key):
    app = make_app(FakeScanner([locked_scan()]))

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("t")
        await pilot.pause()
        assert isinstance(app.screen, TicketScreen)
        assert "[q] Close" in str(app.screen.query_one("#text-view-keys").render())

        await pilot.press(key)
        await pilot.pause()
        assert not isinstance(app.screen, TicketScreen)
        assert app.is_running


async def test_scan_records_locked_finding_once(make_app):
    app = make_app(FakeScanner([locked_scan()]))

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("r")
        await settle(app, pilot)

        findings = [e for e in app.session.events if e.kind == "finding"]
        assert len(findings) == 1
        assert findings[0].applet == "smart card"
        assert findings[0].token_id == TOKEN_ID


# --- clipboard -------------------------------------------------------------------------------

async def test_c_copies_token_id_over_ssh_tmux(make_app, over_ssh_in_tmux):
    app = make_app(FakeScanner([locked_scan()]))
    calls = []

    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        original = app.copy_to_clipboard
        app.copy_to_clipboard = lambda text: (calls.append(text), original(text))
        await settle(app, pilot)
        await pilot.press("c")
        await pilot.pause()

        assert app.clipboard == TOKEN_ID
        assert calls == [TOKEN_ID]
        assert over_ssh_in_tmux == []
        messages = [n.message for n in app._notifications]
        assert len(messages) == 1
        assert messages[0].startswith("Token ID sent to the terminal clipboard (OSC 52); check by pasting.")
        assert "set -g set-clipboard on" in messages[0]
        assert "Copied" not in messages[0]


async def test_c_with_local_display_uses_pyperclip(make_app, monkeypatch):
    for name in ("SSH_CONNECTION", "SSH_CLIENT", "SSH_TTY", "TMUX", "STY", "TERM_PROGRAM", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DISPLAY", ":0")
    copied: list[str] = []
    monkeypatch.setattr(pyperclip, "copy", copied.append)
    app = make_app(FakeScanner([locked_scan()]))

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("c")
        await pilot.pause()

        assert app.clipboard == TOKEN_ID
        assert copied == [TOKEN_ID]


async def test_c_without_token_id_copies_nothing(make_app, over_ssh_in_tmux):
    token = make_token(token_id=None)
    token.id_reason = "no CPLC and no serial answered"
    app = make_app(FakeScanner([make_scan(token)]))

    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await settle(app, pilot)
        await pilot.press("c")
        await pilot.pause()

        assert app.clipboard == ""
        messages = [n.message for n in app._notifications]
        assert messages == ["Nothing copied: the selected token has no ID (no CPLC and no serial answered)."]


async def test_c_in_ticket_copies_summary(make_app, over_ssh_in_tmux):
    app = make_app(FakeScanner([locked_scan()]))

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("t", "c")
        await pilot.pause()

        assert app.clipboard == app.ticket_summary()
        assert app.clipboard.startswith("keytriage ticket summary")


# --- history ---------------------------------------------------------------------------------

async def test_h_shows_audit_sessions_and_escrow_metadata(make_app, settings):
    store = MemoryStore()
    record = EscrowRecord(encoding="ascii-ff-padded", state=RecordState.PENDING, set_at="2025-03-14T20:00:00Z",
                          set_by="alice", reason="test")
    store.write(TOKEN_ID, SecretKind.PIV_PUK, record, Secret(CANARY_PUK, "PIV PUK"), cas=0)
    store.update_custom_metadata(TOKEN_ID, SecretKind.PIV_PUK, {
        "applied_version": "1", "last_version": "1", "last_state": "applied",
        "last_set_by": "alice", "last_set_at": "2025-03-14T20:00:01Z"})

    app = make_app(FakeScanner([locked_scan()]))
    app.session.audit.record("verify-pin", "wrong-pin", token_id=TOKEN_ID, status=0x63C2, tries_before=3, tries_after=2)

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        # Set after start: the escrow feature builds its own context when the app starts.
        app.session.escrow = SimpleNamespace(flow=SimpleNamespace(store=store))
        await pilot.press("h")
        await settle(app, pilot)

        assert isinstance(app.screen, HistoryScreen)
        text = text_view(app)
        assert "(this session)" in text
        assert "verify-pin: wrong-pin 63C2 tries 3->2" in text
        assert f"PIV PUK: secret/lab/keytriage/tokens/{TOKEN_ID}/piv-puk" in text
        assert "/data/" not in text
        assert "v1 written" in text
        assert "(applied)" in text
        assert "last: v1 applied by alice at 2025-03-14T20:00:01Z" in text
        assert "PIV PIN: nothing escrowed" in text
        assert CANARY_PUK not in text


async def test_h_without_escrow_says_so(make_app):
    app = make_app(FakeScanner([locked_scan()]))

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("h")
        await settle(app, pilot)

        text = text_view(app)
        assert "none in" in text
        assert "not available: escrow is not set up in this session" in text


async def test_h_store_failure_shown(make_app):
    class BrokenStore:
        def read_metadata(self, token_id, kind):
            raise OSError("connection refused by 127.0.0.1:8200")

    app = make_app(FakeScanner([locked_scan()]))

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        app.session.escrow = SimpleNamespace(flow=SimpleNamespace(store=BrokenStore()))
        await pilot.press("h")
        await settle(app, pilot)

        assert "PIV PUK: metadata not readable: connection refused by 127.0.0.1:8200" in text_view(app)


# --- drafts and SIGHUP -----------------------------------------------------------------------

async def test_draft_follows_scan_and_events(make_app):
    app = make_app(FakeScanner([locked_scan()]))

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        path = app.draft_store.path_for(app.session.audit.session)
        first = json.loads(path.read_text())

        app.session.triage.ticket = "INC777"
        app.session.add_event("puk-reset", "Step 6: PIN reset", token_id=TOKEN_ID, resolved_by="PUK reset")
        app.save_draft_if_changed()
        second = json.loads(path.read_text())

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first["state"] == "open"
    assert first["token_id"] == TOKEN_ID
    assert "INC777" not in first["text"]
    assert "INC777" in second["text"]
    assert "Resolved by:  PUK reset" in second["text"]


async def test_quit_closes_draft(make_app):
    app = make_app(FakeScanner([locked_scan()]))

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        path = app.draft_store.path_for(app.session.audit.session)
        await pilot.press("q")
        await pilot.pause()

    assert json.loads(path.read_text())["state"] == STATE_CLOSED


async def test_sighup_saves_interrupted_draft_and_exits(make_app):
    app = make_app(FakeScanner([locked_scan()]))

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        app.session.add_event("puk-reset", "Step 6: PIN reset", token_id=TOKEN_ID, resolved_by="PUK reset")
        path = app.draft_store.path_for(app.session.audit.session)
        # asyncio installs a no-op C-level handler; the loop then calls handle_hangup.
        assert signal.getsignal(signal.SIGHUP) not in (signal.SIG_DFL, signal.SIG_IGN)
        os.kill(os.getpid(), signal.SIGHUP)
        await pilot.pause(0.2)
        await settle(app, pilot)

    assert app.hung_up
    assert app.return_code == HANGUP_EXIT_CODE
    assert app.return_value == HANGUP_EXIT_CODE
    draft = json.loads(path.read_text())
    assert draft["state"] == STATE_INTERRUPTED
    assert "Resolved by:  PUK reset" in draft["text"]
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL


async def test_sighup_waits_for_write_in_flight(make_app):
    app = make_app(FakeScanner([locked_scan()]))

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        app.escrow_write_in_flight = True
        app.handle_hangup()
        await pilot.pause(0.3)

        assert app.is_running
        assert any("Waiting for the command in flight" in line for line in app.activity.entries)

        app.session.add_event("puk-reset", "Step 6: PIN reset, escrow record applied", token_id=TOKEN_ID,
                              resolved_by="PUK reset")
        app.escrow_write_in_flight = False
        await pilot.pause(0.3)
        await settle(app, pilot)

    assert app.return_code == HANGUP_EXIT_CODE
    draft = DraftStore().load(app.draft_store.path_for(app.session.audit.session))
    assert "escrow record applied" in draft.text


async def test_start_offers_interrupted_draft(make_app):
    DraftStore().save("earlier1", "keytriage ticket summary INC42\nold text\n", token_id=TOKEN_ID, lab=False,
                      state=STATE_INTERRUPTED)
    app = make_app(FakeScanner([locked_scan()]), scan_on_start=False)

    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()

        assert app.recovered_draft is not None
        assert any("was interrupted (SIGHUP)" in line and "press t, then d" in line for line in app.activity.entries)

        await pilot.press("t")
        await pilot.pause()
        assert "INC42" in text_view(app)
        await pilot.press("d")
        assert "INC42" not in text_view(app)
        await pilot.press("d")
        assert "INC42" in text_view(app)


async def test_no_draft_offer_after_clean_quit(make_app):
    DraftStore().save("earlier2", "text\n", token_id=TOKEN_ID, lab=False, state=STATE_CLOSED)
    app = make_app(FakeScanner([locked_scan()]), scan_on_start=False)

    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()

        assert app.recovered_draft is None


# --- secrets ---------------------------------------------------------------------------------

async def test_canaries_absent_everywhere(make_app, over_ssh_in_tmux):
    app = make_app(FakeScanner([locked_scan()]))
    pin = Secret(CANARY_PIN, "PIV PIN")
    puk = Secret(CANARY_PUK, "PIV PUK")

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        app.session.escrow = SimpleNamespace(values=[pin, puk])
        app.session.add_event("puk-reset", f"Step 6: PIN {pin} set with PUK {puk!r}", token_id=TOKEN_ID,
                              resolved_by="PUK reset", escrow_refs=[f"secret/data/keytriage/tokens/{TOKEN_ID}/piv-pin v3"])
        app.session.audit.record("puk-reset", "ok", token_id=TOKEN_ID, message=f"new PIN {pin}")
        app.save_draft_if_changed()
        await pilot.press("t", "c")
        await pilot.pause()
        with pytest.raises(TypeError):
            from tui.clipboard import copy_text

            copy_text(app, pin, "PIN")
        ticket = app.ticket_summary()
        clipboard = app.clipboard

    draft = app.draft_store.path_for(app.session.audit.session).read_text()
    audit = app.session.audit.path.read_text()
    for canary in (CANARY_PIN, CANARY_PUK):
        assert canary not in ticket
        assert canary not in clipboard
        assert canary not in draft
        assert canary not in audit
        assert canary not in "".join(over_ssh_in_tmux)


# --- help ------------------------------------------------------------------------------------

async def test_help_lists_feature_keys_and_runbook(make_app):
    app = make_app(FakeScanner([locked_scan()]))

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("question_mark")
        text = str(app.screen.query_one("#help-text").render())

        assert "Show the ticket summary" in text
        assert "Send the selected token ID to the clipboard" in text
        assert "Read-only rescan" in text
        assert "  0  Ask what the user was logging in to and saw" in text
        assert " 11  External authentication check" in text
        assert "Ground rules:" in text
        assert "escrowed to Vault" in text
        for line in text.splitlines():
            assert len(line) <= 72, line


async def test_help_over_ticket_lists_its_keys(make_app):
    app = make_app(FakeScanner([locked_scan()]))

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("t", "question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = str(app.screen.query_one("#help-text").render())

        assert text.startswith("Keys of Ticket summary:")
        assert "c          Copy" in text
        await pilot.press("q")
        assert isinstance(app.screen, TicketScreen)


# --- exit printing, --ticket-file, --trace ---------------------------------------------------

async def finished_app(make_app) -> KeytriageApp:
    app = make_app(FakeScanner([locked_scan()]))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        app.session.triage.ticket = "INC9"
        await pilot.press("q")
    return app


async def test_exit_prints_ticket(make_app):
    app = await finished_app(make_app)
    out, err = io.StringIO(), io.StringIO()

    assert emit_ticket(app.final_ticket_text(), None, out=out, err=err) == 0

    assert out.getvalue().startswith("keytriage ticket summary INC9\n")
    assert f"Token ID:     {TOKEN_ID}" in out.getvalue()
    assert err.getvalue() == ""


async def test_exit_without_token_prints_nothing(make_app):
    app = make_app(FakeScanner([make_scan()]))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
    out = io.StringIO()

    assert app.final_ticket_text() is None
    assert emit_ticket(app.final_ticket_text(), None, out=out) == 0
    assert out.getvalue() == ""


async def test_ticket_file_written(make_app, tmp_path):
    app = await finished_app(make_app)
    target = tmp_path / "ticket.txt"
    out = io.StringIO()

    assert emit_ticket(app.final_ticket_text(), str(target), out=out, err=io.StringIO()) == 0

    assert target.read_text() == out.getvalue()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


async def test_ticket_file_failure_still_prints(make_app, tmp_path):
    app = await finished_app(make_app)
    target = tmp_path / "no-such-dir" / "ticket.txt"
    out, err = io.StringIO(), io.StringIO()

    assert emit_ticket(app.final_ticket_text(), str(target), out=out, err=err) == 1

    assert "keytriage ticket summary INC9" in out.getvalue()
    assert f"cannot write the ticket file {target}" in err.getvalue()


async def test_unwritable_ticket_file_warned_at_start(make_app, tmp_path):
    app = make_app(FakeScanner([locked_scan()]))
    app.ticket_file = str(tmp_path / "missing" / "t.txt")

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)

        assert any("is not writable" in line for line in app.activity.entries)


def test_run_tui_prints_ticket_and_traces(monkeypatch, tmp_path, capsys):
    from tui.ui.run import run_tui

    trace = tmp_path / "tui.trace"
    ticket = tmp_path / "ticket.txt"
    monkeypatch.delenv("KEYTRIAGE_CONFIG", raising=False)
    seen = {}

    async def drive(self):
        async with self.run_test(size=(80, 24)) as pilot:
            await settle(self, pilot)
            seen["token_id"] = self.selected_token_id
            await pilot.press("q")

    def fake_run(self, *args, **kwargs):
        # The real app and the real scan of the in-process lab key, driven headless.
        import asyncio

        asyncio.run(drive(self))
        return self.return_value

    monkeypatch.setattr(KeytriageApp, "run", fake_run)
    args = argparse.Namespace(lab="pin-locked-puk", trace=str(trace), ticket_file=str(ticket))

    assert run_tui(args) == 0

    out = capsys.readouterr().out
    assert out.startswith("LAB TEST - keytriage ticket summary")
    assert f"Token ID:     {seen['token_id']}" in out
    assert ticket.read_text() == out
    lines = [json.loads(line) for line in trace.read_text().splitlines()]
    assert lines[0]["type"] == "header"
    assert any(line["type"] == "card" for line in lines)
    exchanges = [line for line in lines if line["type"] == "exchange"]
    assert exchanges
    assert all(line["reader"] for line in exchanges)
    assert any(line["type"] == "result" and line["token_id"] == seen["token_id"] for line in lines)
    assert stat.S_IMODE(trace.stat().st_mode) == 0o600


def test_run_tui_bad_trace_path_exits_2(monkeypatch, tmp_path, capsys):
    from tui.ui.run import run_tui

    monkeypatch.delenv("KEYTRIAGE_CONFIG", raising=False)
    monkeypatch.setattr(KeytriageApp, "run", lambda self, *a, **k: pytest.fail("the TUI must not start"))

    code = run_tui(argparse.Namespace(lab=None, trace=str(tmp_path / "no-dir" / "t.trace"), ticket_file=None))

    assert code == 2
    assert "cannot create the trace file" in capsys.readouterr().err


# --- snapshots at 80x24 ----------------------------------------------------------------------

def lab_app(scenario: str) -> KeytriageApp:
    from tui.lab.backend import LabBackend
    from tui.settings import SiteSettings

    return KeytriageApp(lambda: LabBackend(scenario), SiteSettings(), lab_scenario=scenario, clock=fixed_clock)


async def scan_done(pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


async def fixed_ticket(pilot) -> None:
    # The ticket shows the date and technician; pin them so the snapshot is the same on every run.
    import tui.ticket

    await scan_done(pilot)
    pilot.app.session.triage.ticket = "INC0012345"


@pytest.fixture
def fixed_ticket_header(monkeypatch):
    import datetime as dt

    import tui.ticket

    class FixedDatetime(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return dt.datetime(2025, 3, 14, 20, 5, tzinfo=dt.timezone.utc)

    monkeypatch.setattr(tui.ticket.dt, "datetime", FixedDatetime)
    monkeypatch.setattr(tui.ticket, "_os_user", lambda: "tech")
    monkeypatch.setattr(tui.ticket.socket, "gethostname", lambda: "jump01")


def test_ticket_screen_80x24(snap_compare, fixed_ticket_header):
    assert snap_compare(lab_app("pin-locked-puk"), press=["t"], terminal_size=(80, 24), run_before=fixed_ticket)


def test_help_screen_80x24(snap_compare):
    assert snap_compare(lab_app("pin-locked-puk"), press=["question_mark"], terminal_size=(80, 24),
                        run_before=scan_done)


def test_help_screen_scrolled_80x24(snap_compare):
    assert snap_compare(lab_app("pin-locked-puk"), press=["question_mark", "space", "space"],
                        terminal_size=(80, 24), run_before=scan_done)
