"""The main screen over a fake scan: scanning, busy state, token selection, help, size check."""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import threading

from conftest import REPOSITORY, FakeScanner, make_scan, make_token, sample_exchanges
from tui.model import Counter, PcscProblem, PinState, Source
from tui.ui.app import KeytriageApp
from tui.ui.screens import HelpScreen
from tui.ui.widgets import TokenList


def text_of(app: KeytriageApp, selector: str) -> str:
    """Return the plain text a Static shows."""
    return str(app.main_screen.query_one(selector).render())


async def settle(app: KeytriageApp, pilot) -> None:
    """Wait for the scan worker and the messages it posted."""
    await app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


def two_token_scan():
    first = make_token(0, reader="Reader A", token_id="cplc:AAAA")
    second = make_token(1, reader="Reader B", token_id="cplc:BBBB",
                        pin=Counter(PinState.BLOCKED, 0, 8, Source.STATUS_QUERY))
    return make_scan(first, second)


async def test_scan_runs_on_start(make_app):
    scanner = FakeScanner([make_scan(make_token())])
    app = make_app(scanner)

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)

        assert scanner.calls == 1
        assert app.scan_result is not None
        assert "Smart-card PIN 8/8 ok" in text_of(app, "#counters-text")
        assert "Scanned 20:01:02" in text_of(app, "#scan-state")


async def test_scan_runs_on_device_thread(make_app):
    scanner = FakeScanner([make_scan(make_token())])
    app = make_app(scanner)

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)

        assert scanner.threads
        assert scanner.threads[0].startswith("keytriage-device")


async def test_r_rescans(make_app):
    scanner = FakeScanner([make_scan(make_token())])
    app = make_app(scanner)

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("r")
        await settle(app, pilot)
        await pilot.press("r")
        await settle(app, pilot)

        assert scanner.calls == 3


async def test_busy_state_during_slow_scan(make_app):
    gate = threading.Event()
    scanner = FakeScanner([make_scan(make_token())], gate=gate)
    app = make_app(scanner)

    async with app.run_test(size=(80, 24)) as pilot:
        await asyncio.to_thread(scanner.started.wait, 10)
        await pilot.pause()

        assert app.scanning
        assert "Scanning..." in text_of(app, "#scan-state")

        gate.set()
        await settle(app, pilot)

        assert not app.scanning
        assert "Scanning..." not in text_of(app, "#scan-state")


async def test_second_r_while_scanning_ignored(make_app):
    gate = threading.Event()
    scanner = FakeScanner([make_scan(make_token())], gate=gate)
    app = make_app(scanner)

    async with app.run_test(size=(80, 24)) as pilot:
        await asyncio.to_thread(scanner.started.wait, 10)
        await pilot.press("r")
        await pilot.press("r")
        gate.set()
        await settle(app, pilot)

        assert scanner.calls == 1
        assert any("Rescan ignored" in line for line in app.activity.entries)


async def test_activity_log_shows_exchanges(make_app):
    scanner = FakeScanner([make_scan(make_token())], exchanges=sample_exchanges())
    app = make_app(scanner)

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        entries = app.activity.entries

        assert "20:01:02 SELECT PIV 9000 ok" in entries
        assert "20:01:02 VERIFY (status) 6983 blocked" in entries
        finished = [line for line in entries if "Scan finished" in line]
        assert finished == ["20:01:02 Scan finished: 1 token, 2 APDUs"]
        assert entries.index(finished[0]) > entries.index("20:01:02 VERIFY (status) 6983 blocked")


async def test_two_tokens_switch_with_keys(make_app):
    scanner = FakeScanner([two_token_scan()])
    app = make_app(scanner)

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)

        assert app.selected_token_id == "cplc:AAAA"
        assert "8/8 ok" in text_of(app, "#counters-text")
        assert "Step 4" in text_of(app, "#verdict")

        await pilot.press("j")
        assert app.selected_token_id == "cplc:BBBB"
        assert "0/8 BLOCKED" in text_of(app, "#counters-text")
        assert "Reader: Reader B" in text_of(app, "#token-detail")
        assert "Step 6" in text_of(app, "#verdict")

        await pilot.press("k")
        assert app.selected_token_id == "cplc:AAAA"

        await pilot.press("1")
        assert app.selected_token_id == "cplc:BBBB"
        await pilot.press("0")
        assert app.selected_token_id == "cplc:AAAA"


async def test_selection_marked_in_words(make_app):
    scanner = FakeScanner([two_token_scan()])
    app = make_app(scanner)

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("j")
        token_list = app.main_screen.query_one(TokenList)
        prompts = [str(token_list.get_option_at_index(i).prompt) for i in range(2)]

        assert prompts[0].startswith("  0 ")
        assert prompts[1].startswith("> 1 ")


async def test_selection_follows_id_across_rescan(make_app):
    scan = two_token_scan()
    reordered = make_scan(scan.tokens[1], scan.tokens[0])
    scanner = FakeScanner([scan, reordered])
    app = make_app(scanner)

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("j")
        assert app.selected_token_id == "cplc:BBBB"

        await pilot.press("r")
        await settle(app, pilot)

        assert app.selected_token_id == "cplc:BBBB"
        assert app.main_screen.query_one(TokenList).highlighted == 0
        assert "0/8 BLOCKED" in text_of(app, "#counters-text")


async def test_no_token_names_failed_check(make_app):
    scanner = FakeScanner([make_scan(problem=PcscProblem.NO_CARD)])
    app = make_app(scanner)

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        verdict = text_of(app, "#verdict")

        assert "Failed check: card in reader" in verdict
        assert "not a lockout" in verdict
        assert "No token detected" in text_of(app, "#runbook-steps")
        assert app.selected_token_id is None


async def test_scan_crash_shown_in_words(make_app):
    def broken_scan(backend, settings, *, observer=None):
        raise RuntimeError("reader table corrupt")

    app = make_app(broken_scan)

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)

        assert "Scan failed" in text_of(app, "#scan-state")
        assert "reader table corrupt" in text_of(app, "#verdict")
        assert not app.scanning


async def test_lab_banner_names_scenario(make_app):
    scanner = FakeScanner([make_scan(make_token())])
    app = make_app(scanner, lab_scenario="healthy")

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)

        assert text_of(app, "#lab-banner").strip() == "LAB healthy"
        assert any("LAB mode: scenario healthy" in line for line in app.activity.entries)


async def test_no_lab_banner_without_lab(make_app):
    scanner = FakeScanner([make_scan(make_token())])
    app = make_app(scanner)

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)

        assert not app.main_screen.query("#lab-banner")


async def test_help_opens_and_closes_with_letter(make_app):
    scanner = FakeScanner([make_scan(make_token())])
    app = make_app(scanner)

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        help_text = str(app.screen.query_one("#help-text").render())
        assert "Read-only rescan" in help_text
        assert "Quit keytriage" in help_text

        await pilot.press("n")
        assert not isinstance(app.screen, HelpScreen)
        assert app.is_running

        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("q")
        assert not isinstance(app.screen, HelpScreen)
        assert app.is_running


async def test_help_screen_reused_with_fresh_text(make_app):
    from textual.binding import Binding
    from textual.screen import Screen

    class ProbeScreen(Screen[None]):
        title_text = "Probe screen"
        BINDINGS = [Binding("z", "app.bell", "Ring the probe bell")]

    scanner = FakeScanner([make_scan(make_token())])
    app = make_app(scanner)

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("question_mark")
        first = app.screen
        assert isinstance(first, HelpScreen)
        assert "Keys of Probe screen" not in str(first.query_one("#help-text").render())
        await pilot.press("space")
        await pilot.pause()
        assert first.query_one("#help-scroll").scroll_y > 0
        await pilot.press("n")

        # Opened again over another screen: the same screen, its text rebuilt
        # for the screen below and scrolled back to the top.
        await app.push_screen(ProbeScreen())
        await pilot.press("question_mark")
        await pilot.pause()
        assert app.screen is first
        help_text = str(first.query_one("#help-text").render())
        assert "Keys of Probe screen:" in help_text
        assert "Ring the probe bell" in help_text
        assert first.query_one("#help-scroll").scroll_y == 0

        await pilot.press("n")
        assert isinstance(app.screen, ProbeScreen)


async def test_q_quits(make_app):
    scanner = FakeScanner([make_scan(make_token())])
    app = make_app(scanner)

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("q")
        await pilot.pause()

        assert app.return_code == 0
        assert not app.is_running


async def test_palette_lists_every_action(make_app):
    from tui.ui.actions import all_actions
    from tui.ui.commands import ActionsProvider

    scanner = FakeScanner([make_scan(make_token())])
    app = make_app(scanner)

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        provider = ActionsProvider(app.screen)
        names = [str(hit.display) async for hit in provider.discover()]

        assert len(names) == len(all_actions())
        for spec in all_actions():
            assert any(name.startswith(spec.label) for name in names), spec.label


async def test_palette_runs_rescan(make_app):
    scanner = FakeScanner([make_scan(make_token())])
    app = make_app(scanner)

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"rescan")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await settle(app, pilot)

        assert scanner.calls == 2


async def test_tiny_terminal_shows_size(make_app):
    scanner = FakeScanner([make_scan(make_token())])
    app = make_app(scanner)

    async with app.run_test(size=(60, 20)) as pilot:
        await settle(app, pilot)
        screen = app.main_screen

        assert "needs 80x24, has 60x20" in text_of(app, "#size-notice")
        assert screen.has_class("-too-small")
        assert screen.query_one("#body").styles.display == "none"
        assert screen.query_one("#size-notice").styles.display == "block"


async def test_resize_back_restores_panels(make_app):
    scanner = FakeScanner([make_scan(make_token())])
    app = make_app(scanner)

    async with app.run_test(size=(60, 20)) as pilot:
        await settle(app, pilot)
        await pilot.resize_terminal(80, 24)
        await pilot.pause()

        assert not app.main_screen.has_class("-too-small")
        assert text_of(app, "#size-notice") == ""


# --- start-up: settings, --lab check, stylesheet ----------------------------------------------

def test_unknown_lab_scenario_exits_2(monkeypatch, capsys):
    from tui.cli import main

    def never_run(self, *args, **kwargs):
        raise AssertionError("the TUI must not start for an unknown scenario")

    monkeypatch.setattr(KeytriageApp, "run", never_run)
    monkeypatch.delenv("KEYTRIAGE_CONFIG", raising=False)
    # main() would otherwise detach the keytriage logger for the rest of the session.
    monkeypatch.setattr("tui.cli.configure_logging", lambda *args, **kwargs: None)

    code = main(["--lab", "no-such-scenario"])
    err = capsys.readouterr().err

    assert code == 2
    assert "unknown lab scenario 'no-such-scenario'" in err
    assert "pin-locked-puk" in err
    assert err.count("\n") == 1


def test_broken_config_exits_2(monkeypatch, capsys, tmp_path):
    from tui.ui.run import run_tui

    config = tmp_path / "config.toml"
    config.write_text("[site\nread_only = true\n")
    monkeypatch.setenv("KEYTRIAGE_CONFIG", str(config))
    monkeypatch.setattr(KeytriageApp, "run", lambda self, *a, **k: 0)

    code = run_tui(argparse.Namespace(lab=None))
    err = capsys.readouterr().err

    assert code == 2
    assert str(config) in err
    assert "not valid TOML" in err
    assert err.count("\n") == 1


def test_known_lab_scenario_starts_app(monkeypatch):
    from tui.ui.run import run_tui

    started = []
    monkeypatch.delenv("KEYTRIAGE_CONFIG", raising=False)
    monkeypatch.setattr(KeytriageApp, "run", lambda self, *a, **k: started.append(self.lab_scenario) or 0)

    assert run_tui(argparse.Namespace(lab="healthy")) == 0
    assert started == ["healthy"]


def test_start_without_lab_skips_lab_import(tmp_path):
    # A fresh interpreter, so modules imported by other tests do not count. The
    # parser itself imports tui.lab.cli for its options; the lab key must stay out.
    script = (
        "import sys\n"
        "from tui.ui.app import KeytriageApp\n"
        "KeytriageApp.run = lambda self, *a, **k: 0\n"
        "from tui.cli import main\n"
        "code = main([])\n"
        "lab = {'tui.lab.scenarios', 'tui.lab.backend', 'tui.lab.card'} & set(sys.modules)\n"
        "print(code, sorted(lab))\n"
    )
    (tmp_path / "empty.toml").write_text("")
    env = {**os.environ, "KEYTRIAGE_CONFIG": str(tmp_path / "empty.toml")}
    out = subprocess.run([sys.executable, "-c", script], cwd=REPOSITORY, env=env,
                         capture_output=True, text=True, timeout=60)

    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0 []"


def test_stylesheet_from_source_tree():
    from tui.ui.stylesheet import SOURCE_STYLES, load_stylesheet

    text, origin = load_stylesheet()

    assert origin == str(SOURCE_STYLES / "keytriage.tcss")
    assert "#activity" in text


def test_stylesheet_prefers_installed_package(monkeypatch, tmp_path):
    import importlib.resources

    from tui.ui.stylesheet import load_stylesheet

    (tmp_path / "keytriage.tcss").write_text("/* installed */\n")
    monkeypatch.setattr(importlib.resources, "files",
                        lambda package: tmp_path if package == "tui.styles" else None)

    assert load_stylesheet() == ("/* installed */\n", "package tui.styles")


async def test_served_lab_key_audited_as_lab(make_app):
    # A lab key served through pcscd: a real-reader session, a token flagged by its reserved ID.
    served = make_token(0, token_id="cplc:1AB07E575A17C0DE0001")
    served.is_lab = True
    app = make_app(FakeScanner([make_scan(served)]))

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("i")
        await pilot.pause()
        await pilot.press("s")
        await pilot.pause()

        records = [entry for entry in app.session.audit.records() if entry.operation == "triage"]
        assert app.session.audit.lab is False
        assert len(records) == 1
        assert records[0].token_id == "cplc:1AB07E575A17C0DE0001"
        assert records[0].lab is True


async def test_served_lab_key_banner_follows_scan(make_app):
    # A lab key served through pcscd, then a rescan that finds only hardware.
    served = make_token(0, token_id="cplc:1AB07E575A17C0DE0001")
    served.is_lab = True
    scanner = FakeScanner([make_scan(served), make_scan(make_token())])
    app = make_app(scanner)

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        banner = app.main_screen.query_one("#lab-banner")

        assert str(banner.render()).strip() == "LAB KEY"
        assert banner.region.width == len(" LAB KEY ")
        assert banner.region.x < app.main_screen.query_one("#vault-state").region.x

        await pilot.press("r")
        await settle(app, pilot)

        assert scanner.calls == 2
        assert not app.main_screen.query("#lab-banner")


async def test_lab_run_keeps_one_banner(make_app):
    scanner = FakeScanner([make_scan(make_token())])
    scanner.results[0].tokens[0].is_lab = True
    app = make_app(scanner, lab_scenario="healthy")

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        banners = app.main_screen.query("#lab-banner")

        assert len(banners) == 1
        assert str(banners.first().render()).strip() == "LAB healthy"


async def test_heap_frozen_once_after_first_good_scan(make_app, monkeypatch):
    import tui.ui.app as app_module

    frozen = []
    monkeypatch.setattr(app_module, "freeze_startup_heap", lambda: frozen.append(True))
    monkeypatch.setattr(app_module, "HEAP_FREEZE_DELAY_SECONDS", 0.01)
    calls = []
    good = make_scan(make_token())

    def flaky_scan(backend, settings, *, observer=None):
        calls.append(True)
        if len(calls) == 1:
            raise RuntimeError("reader busy")
        return good

    app = make_app(flaky_scan)
    app.freeze_heap_after_first_scan = True

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        assert "Scan failed" in text_of(app, "#scan-state")
        assert frozen == []

        for _ in range(2):
            await pilot.press("r")
            await settle(app, pilot)
            await pilot.pause(0.05)

        assert len(calls) == 3
        assert frozen == [True]


async def test_help_explains_marks_and_tries(make_app):
    app = make_app(FakeScanner([make_scan(make_token())]))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("question_mark")
        help_text = str(app.screen.query_one("#help-text").render())

        assert "! done, found a problem" in help_text
        assert "3/? means the maximum is not" in help_text
        assert " 6a  Unlock the PIN with the admin key" in help_text
        assert max(len(line) for line in help_text.splitlines()) <= 72
