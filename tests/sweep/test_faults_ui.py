"""The TUI recovers from every fault class without a restart: one Pilot test per class.

PC/SC faults hit the first scan at its fourth APDU; after the cause is gone
(the card reinserted, the service back) `r` rescans and the screen must
match a fresh start. Vault faults hit the pending escrow write of the
set-PUK action; the token must keep its PUK, and a second attempt in the
same app must succeed.
"""

from __future__ import annotations

import datetime as dt

import pytest

from sweep.helpers import CANARY_PUK, STATS, Fault, FaultyBackend
from tui.settings import SiteSettings

FAULT_AT = 3
FIXED_TIME = dt.datetime(2025, 3, 14, 20, 1, 2)


def screen_text(app) -> str:
    """Return the main screen's characters with the activity rows blanked (their scroll position varies)."""
    rows = ["".join(segment.text for segment in strip) for strip in app.screen._compositor.render_strips()]
    inside = False
    for index, row in enumerate(rows):
        if "─ Activity ─" in row:
            inside = True
        elif inside and row.lstrip().startswith("╰"):
            inside = False
        elif inside:
            rows[index] = "(activity row)"
    return "\n".join(rows)


async def settle(app, pilot) -> None:
    for _ in range(3):
        await app.workers.wait_for_complete()
        await pilot.pause()


def make_app(name: str, backend_factory):
    from tui.ui.app import KeytriageApp

    return KeytriageApp(backend_factory, SiteSettings(), lab_scenario=name, clock=lambda: FIXED_TIME)


async def fresh_screen(name: str) -> str:
    from tui.lab.backend import LabBackend

    app = make_app(name, lambda: LabBackend(name))
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(app, pilot)
        return screen_text(app)


@pytest.mark.parametrize("fault", list(Fault), ids=[fault.name for fault in Fault])
async def test_tui_recovers_from_pcsc_fault(fault, canary_scenarios):
    from tui.lab.backend import LabBackend

    name = "healthy"
    lab = LabBackend(name)
    faulty = FaultyBackend(lab, fault, FAULT_AT)
    app = make_app(name, lambda: faulty)

    async with app.run_test(size=(100, 40)) as pilot:
        await settle(app, pilot)
        assert faulty.fired == FAULT_AT
        first = screen_text(app)
        token = app.scan_result.tokens[0]
        if fault is Fault.CARD_RESET:
            assert token.problem is None, "one reset must be retried within the scan"
        else:
            assert token.problem is not None
            assert "Not readable" in first, f"after {fault.value} the counters must say the token is not readable:\n{first}"
            assert "8/8" not in first, f"after {fault.value} the PIN counter is shown:\n{first}"
            assert "0/" not in first, f"after {fault.value} a zero counter is shown:\n{first}"

        if fault is Fault.CARD_REMOVED:
            lab.insert(lab.list_readers()[0])
        await pilot.press("r")
        await settle(app, pilot)
        assert app.return_code is None, "the app exited"
        assert app.scan_count == 2
        recovered = screen_text(app)

    assert recovered == await fresh_screen(name), f"after {fault.value} and a rescan the screen differs from a fresh start"
    STATS.add("faults")


def vault_faults():
    from tui.escrow.errors import CasConflictError, VaultPermissionError, VaultSealedError, VaultUnreachableError

    return {
        "down": VaultUnreachableError("Cannot connect to Vault (sweep fault)."),
        "sealed": VaultSealedError("Vault is sealed (sweep fault)."),
        "403": VaultPermissionError("Permission denied (sweep fault, HTTP 403).", capability="create"),
        "timeout": VaultUnreachableError("The request to Vault timed out (sweep fault)."),
        "cas conflict": CasConflictError("check-and-set mismatch (sweep fault)", expected_version=0),
    }


async def pause_until(pilot, condition, what: str, rounds: int = 500) -> None:
    """Let the app run until `condition()` holds; fail naming `what` when it never does.

    Workers of the set-PUK flow wait on modals, so `workers.wait_for_complete`
    would wait forever here.
    """
    for _ in range(rounds):
        if condition():
            return
        await pilot.pause(0.01)
    raise AssertionError(f"the app never reached: {what}")


def screen_id(app) -> str:
    return f"{type(app.screen).__name__}#{app.screen.id}"


async def run_set_puk(app, pilot) -> None:
    """Drive the set-PUK action on a YubiKey: choose to type the current PUK, type and check it, confirm sending."""
    from tui.ui.modals import ConfirmModal, SecretPromptModal

    await pilot.press("p")
    await pause_until(pilot, lambda: screen_id(app) == "ChoiceModal#puk-source", "the current-PUK choice")
    await pilot.press("t")
    await pause_until(pilot, lambda: isinstance(app.screen, SecretPromptModal), "the current-PUK prompt")
    await pilot.press(*CANARY_PUK, "enter", "s")
    await pause_until(pilot, lambda: isinstance(app.screen, ConfirmModal), "the send confirmation")
    await pilot.press("s")
    await pause_until(pilot, lambda: app.screen.id != "set-puk-confirm" and not app.escrow_write_in_flight,
                      "the end of the escrow write")
    await pause_until(pilot, lambda: len(app.screen_stack) > 1 or not app.escrow_write_in_flight, "the outcome")


async def close_modals(app, pilot) -> None:
    """Dismiss every modal with its letter or Escape, answering no to a conflict question."""
    for _ in range(10):
        if len(app.screen_stack) <= 1:
            return
        await pilot.press("escape")
        await pilot.pause(0.05)
    raise AssertionError(f"modals stayed open: {[screen_id_of(screen) for screen in app.screen_stack]}")


def screen_id_of(screen) -> str:
    return f"{type(screen).__name__}#{screen.id}"


@pytest.mark.parametrize("fault_name", sorted(vault_faults()))
async def test_tui_recovers_from_vault_fault(fault_name, canary_scenarios):
    from tui.lab.backend import LabBackend

    from tui.escrow.records import SecretKind

    # A YubiKey-style key has a PUK and, unlike the wrong-pin scenario, none on file, so set PUK may run.
    name = "yubikey-healthy"
    lab = LabBackend(name)
    app = make_app(name, lambda: lab)
    reader = lab.list_readers()[0]
    puk = lab.key(reader).store.puk

    async with app.run_test(size=(100, 40)) as pilot:
        await settle(app, pilot)
        await app._escrow_ready.wait()
        store = app.escrow_context.store
        store.fail_next("write", vault_faults()[fault_name])

        await run_set_puk(app, pilot)
        assert not store._faults.get("write"), "the set-PUK action never reached the pending escrow write"
        assert puk.matches(CANARY_PUK.encode()), f"after a {fault_name} pending write the token's PUK changed"
        sent = [line for line in app.activity.entries if "CHANGE REFERENCE DATA" in line and "24 00 81" in line]
        assert not sent, f"CHANGE REFERENCE DATA was sent although the pending write failed: {sent}"
        assert app.return_code is None

        await close_modals(app, pilot)
        if fault_name == "cas conflict":
            # The flow asked whether to overwrite the other writer's version, and Escape declined.
            assert puk.matches(CANARY_PUK.encode())

        await pause_until(pilot, lambda: not app.scanning, "the end of any scan the action started")
        scans = app.scan_count
        await pilot.press("r")
        await pause_until(pilot, lambda: app.scan_count == scans + 1 and not app.scanning,
                          f"the rescan (scans {scans}, screens {[screen_id_of(s) for s in app.screen_stack]})")

        await run_set_puk(app, pilot)
        await close_modals(app, pilot)
        assert not puk.matches(CANARY_PUK.encode()), (
            f"the second set-PUK attempt after a {fault_name} fault did not change the PUK: "
            + " | ".join(app.activity.entries[-6:]))
        record = store.read_version(app.scan_result.tokens[0].token_id, SecretKind.PIV_PUK)
        assert puk.matches(record[1].reveal_bytes()), "the token's new PUK is not the one on file"
    STATS.add("faults")
