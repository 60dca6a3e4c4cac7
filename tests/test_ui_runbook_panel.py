"""The runbook panel and the header on the main screen at 80x24, on the lab key.

The PUK reset runs through the same modals a technician uses, against the
in-process lab key and an in-memory escrow store, so the panel is read
after the real rescan that follows the reset.
"""

from __future__ import annotations

from conftest import fixed_clock, make_scan, make_token
from tui.escrow.context import EscrowContext
from tui.escrow.flow import EscrowFlow
from tui.escrow.memory import MemoryStore
from tui.escrow.records import SecretKind
from tui.lab.backend import LabBackend
from tui.settings import SiteSettings
from tui.ui.app import KeytriageApp
from tui.ui.modals import ConfirmModal, ShowOnceModal
from tui.ui.recovery_screens import SourceModal
from tui.ui.triage import TriageScreen
from tui.ui.widgets import render_counters, render_token_detail

SIZE = (80, 24)


def lab_app(scenario: str) -> tuple[KeytriageApp, LabBackend]:
    backend = LabBackend(scenario)
    return KeytriageApp(lambda: backend, SiteSettings(), lab_scenario=scenario, clock=fixed_clock), backend


def use_escrow(app: KeytriageApp, backend: LabBackend) -> None:
    """Escrow to an in-memory store seeded with the lab key's PUK on file."""
    store = MemoryStore()
    key = backend.key(backend.list_readers()[0])
    if "piv-puk" in key.escrow:
        store.seed(app.selected_token_id, SecretKind.PIV_PUK, key.escrow["piv-puk"], encoding="ascii-ff-padded")
    flow = EscrowFlow(store, user="technician", audit=app.session.audit)
    app.session.escrow = EscrowContext(flow, label="test store", store=store)


async def settle(pilot) -> None:
    for _ in range(3):
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()


async def wait_for_screen(pilot, kind):
    for _ in range(50):
        if isinstance(pilot.app.screen, kind):
            await pilot.pause()
            return pilot.app.screen
        await pilot.pause(0.05)
    raise AssertionError(f"{kind.__name__} never opened; top screen is {type(pilot.app.screen).__name__}")


async def triage_smart_card(pilot) -> None:
    await pilot.press("i")
    await wait_for_screen(pilot, TriageScreen)
    await pilot.press("enter", "tab", "tab", "tab", *"INC-9", "enter", "s")
    await settle(pilot)


def panel(app: KeytriageApp) -> str:
    return str(app.main_screen.query_one("#runbook-steps").render())


async def test_step_zero_hint_before_triage():
    app, _ = lab_app("pin-locked-puk")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        text = panel(app)

        assert text.count("0 Ask what the user was doing [i]") == 1
        assert "✔ 0" not in text


async def test_step_zero_printed_once_after_triage():
    app, _ = lab_app("pin-locked-puk")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await triage_smart_card(pilot)
        text = panel(app)

        assert "✔ 0 Triage: smart card / Windows login" in text
        assert "Ask what the user was doing" not in text
        assert [line[2] for line in text.splitlines() if line[:1] in "✔✖!▶" and line[2:3].isdigit()] == list("01236")


async def test_locked_pin_panel_order_and_key():
    app, _ = lab_app("pin-locked-puk")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await triage_smart_card(pilot)
        lines = panel(app).splitlines()

        # The key hint survives: Rich markup would have swallowed "[u]".
        assert "▶ 6 Reset the PIN with the PUK [u]" in lines
        next_line = lines.index("▶ 6 Reset the PIN with the PUK [u]")
        verdict_line = next(i for i, line in enumerate(lines) if line.startswith("Verdict: "))
        state_line = lines.index("Locked: smart card.")
        offered_line = lines.index("Also possible:")
        assert next_line < verdict_line < state_line < offered_line
        assert "  10 Reprovision the token [w]" in lines


async def test_puk_reset_panel_shows_recovery_done():
    app, backend = lab_app("pin-locked-puk")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        use_escrow(app, backend)
        await triage_smart_card(pilot)

        await pilot.press("u")
        await wait_for_screen(pilot, SourceModal)
        await pilot.press("s")
        await wait_for_screen(pilot, ConfirmModal)
        await pilot.press("s")
        await wait_for_screen(pilot, ShowOnceModal)
        await pilot.press("d")
        await settle(pilot)

        text = panel(app)
        assert "Smart-card PIN 8/" in str(app.main_screen.query_one("#counters-text").render())
        assert "after the recovery" in text
        assert "✔ 6 PIN reset with the PUK" in text
        assert "▶ Close the ticket [t]" in text
        assert "Verdict: Smart-card PIN was locked; reset with the PUK; the user must change the new PIN at next " \
               "login." in text.replace("\n", " ")
        assert "Locked: smart card, resolved by PUK reset." in text
        assert "Verify the PIN once" not in text
        assert "▶ 4" not in text
        assert app.runbook.next_action == "ticket"


async def test_no_puk_panel_says_puk_unknown():
    app, _ = lab_app("pin-locked-no-puk")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await triage_smart_card(pilot)
        text = panel(app)
        flat = text.replace("\n", " ")

        assert "▶ 6 Reset the PIN with the PUK [u]" in text
        assert "PUK state unknown: this key does not report its PUK tries." in flat
        assert "Without a PUK on file, Step 10 follows." in flat
        assert "  10 Reprovision the token [w]" in text
        assert "without a PUK on file, or if the PUK fails" in flat


async def test_header_fits_80_columns():
    app, _ = lab_app("pin-locked-puk")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = app.main_screen
        banner = screen.query_one("#lab-banner")
        scan_state = screen.query_one("#scan-state")

        assert str(banner.render()).strip() == "LAB pin-locked-puk"
        assert banner.region.right <= SIZE[0]
        assert str(scan_state.render()) == "Scanned 20:01:02"
        # The scan state is shown whole: its region is at least its text wide and inside the screen.
        assert scan_state.region.width >= len("Scanned 20:01:02")
        assert scan_state.region.right <= SIZE[0]
        assert screen.query_one("#vault-state").region.x >= banner.region.right


async def test_brackets_survive_in_panels():
    # A reader name with brackets and the key hints would vanish if read as Rich markup.
    token = make_token(reader="Yubico YubiKey [CCID Interface] 00 00")
    app = KeytriageApp(lambda: None, SiteSettings(), scan=lambda backend, settings, observer=None: make_scan(token),
                       clock=fixed_clock)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = app.main_screen

        assert "Reader: Yubico YubiKey [CCID Interface] 00 00" in str(screen.query_one("#token-detail").render())
        assert "▶ 4 Verify the PIN once [v]" in panel(app)
        assert "0 Ask what the user was doing [i]" in panel(app)
        assert "Smart-card PIN 8/8 ok" in str(screen.query_one("#counters-text").render())


def test_render_functions_return_plain_text():
    token = make_token(reader="Reader [1]")

    assert render_token_detail(token).plain == f"Reader: Reader [1]\nATR: {token.atr}"
    assert render_counters(token).plain.splitlines()[0] == "Smart-card PIN 8/8 ok"


def path_marks(text: str) -> dict[str, str]:
    """Map each step id on the path to the mark in front of its line, e.g. {"3": "!"}."""
    marks = {}
    for line in text.splitlines():
        mark, _, rest = line.partition(" ")
        if mark in ("✔", "✖", "!") and rest:
            marks[rest.split(" ", 1)[0]] = mark
    return marks


async def test_fido_blocked_step_not_ticked():
    app, _ = lab_app("fido-blocked")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        text = panel(app)
        marks = path_marks(text)

        assert "! 7 FIDO PIN 0 tries left, BLOCKED" in text
        assert marks["7"] == "!"
        assert marks["1"] == "✔"
        assert marks["2"] == "✔"
        assert "✔ 7" not in text


async def test_crescendo_no_puk_command_not_ticked():
    app, _ = lab_app("crescendo-no-admin-key")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await triage_smart_card(pilot)
        text = panel(app)
        marks = path_marks(text)

        assert "! 6 No PUK command on this key" in text
        assert marks["3"] == "!"
        assert marks["6"] == "!"
        assert marks["0"] == "✔"
        assert "✔ 6" not in text


async def test_healthy_steps_keep_tick():
    app, _ = lab_app("wrong-pin")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await triage_smart_card(pilot)
        marks = path_marks(panel(app))

        assert marks == {"0": "✔", "1": "✔", "2": "✔", "3": "✔"}
