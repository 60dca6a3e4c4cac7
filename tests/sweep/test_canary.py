"""Canary sweep: every lab scenario and every action run with unique secrets, then every artefact searched.

Each scenario's keys are rebuilt with canary secrets (`canarify`). The
headless commands and the key actions (set PUK, admin key test, HOTP
generation, FIDO PIN attempt with credential listing, new FIDO PIN) run on
them with the log at TRAFFIC level, an APDU trace and the audit trail. Then
the recovery actions (verify, PUK reset, admin-key unlock, reprovision) run
on their scenarios, and the TUI runs with its log file, ticket, clipboard
and screenshot. Every artefact is then searched for each canary as text,
as hex in both cases and as an FF-padded PIN block. The bar is zero hits.
The show-once view of a newly set secret is the one screen allowed to show
one, so its rendering is never kept, but its logs are searched.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from sweep.helpers import (
    CANARY_AES_ADMIN_KEY,
    CANARY_FIDO_PIN,
    CANARY_NEW_PUK,
    CANARY_PUK,
    CANARY_TDES_ADMIN_KEY,
    STATS,
    Canaries,
)
from tui.errors import KeytriageError
from tui.secret import Secret

REPOSITORY = Path(__file__).resolve().parents[2]


def scenario_names() -> list[str]:
    from tui.lab.scenarios import SCENARIOS

    return sorted(SCENARIOS)


class Artefacts:
    """Texts produced by a run, by where they came from, plus the files written under a folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.texts: dict[str, str] = {}

    def add(self, where: str, text: object) -> None:
        """Keep `text` (any object, kept as its str and repr) for the search."""
        self.texts[f"{where} (str)"] = str(text)
        self.texts[f"{where} (repr)"] = repr(text)

    def search(self, canaries: Canaries, *, extra_folders: tuple[Path, ...] = ()) -> list[str]:
        """Return every canary hit in the kept texts and in every file under the folders."""
        hits = []
        for where, text in self.texts.items():
            hits += canaries.hits(text, where)
        for folder in (self.folder, *extra_folders):
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                hits += canaries.hits(path.read_bytes(), str(path.relative_to(folder)))
        return hits


def flush_logs() -> None:
    for handler in logging.getLogger("keytriage").handlers:
        handler.flush()


# --- headless commands ----------------------------------------------------------------------


def run_cli(argv: list[str], capsys, artefacts: Artefacts, where: str) -> None:
    from tui.cli import main

    try:
        code = main(argv)
    except SystemExit as exc:  # argparse exits for bad usage
        code = exc.code
    flush_logs()
    captured = capsys.readouterr()
    artefacts.add(f"{where} stdout", captured.out)
    artefacts.add(f"{where} stderr", captured.err)
    assert code in (0, 1, 3), f"{' '.join(argv)} exited with {code}: {captured.err}"


# --- the actions ----------------------------------------------------------------------------


def fido_devices(backend, reader):
    """Return a fido2 `CtapDevice` for each FIDO applet of the lab key in `reader`."""
    from tui.lab.ctap_device import SoftCtapDevice
    from tui.lab.fido_applet import FidoApplet

    card = backend.key(reader).card
    return [SoftCtapDevice(applet.authenticator) for applet in card.applets if isinstance(applet, FidoApplet)]


def run_actions(name: str, folder: Path, artefacts: Artefacts, canaries: Canaries) -> int:
    """Run every action that applies to the keys of scenario `name`; return how many ran."""
    from tui.audit import AuditTrail
    from tui.escrow.actions import set_piv_puk
    from tui.escrow.flow import EscrowFlow
    from tui.escrow.memory import MemoryStore
    from tui.fido.actions import list_credentials, set_new_fido_pin
    from tui.fido.state import FidoPinState, read_fido_state
    from tui.lab.aca import AcaApplet
    from tui.lab.backend import LabBackend
    from tui.lab.card import AdminKeyType
    from tui.lab.oath import HidOathInstance
    from tui.oath import generate_hotp_code
    from tui.scan import scan_all
    from tui.scan_json import result_to_dict
    from tui.session import Session
    from tui.settings import SiteSettings
    from tui.ticket import ticket_text
    from tui.trace import open_trace_writer
    from tui.transport import Channel

    settings = SiteSettings()
    audit = AuditTrail(folder / "audit.jsonl", lab=True)
    store = MemoryStore()
    flow = EscrowFlow(store, user="sweep", audit=audit)
    lab = LabBackend(name)
    writer = open_trace_writer(folder / "actions.trace")
    backend = writer.wrap(lab)
    ran = 0

    result = scan_all(backend, settings, observer=writer)
    writer.record_result(result)
    artefacts.add("scan result", result)
    artefacts.add("scan JSON", json.dumps(result_to_dict(result)))

    for token in result.tokens:
        if token.problem is not None:
            continue
        key = lab.key(token.reader)
        transport = backend.open(token.reader)
        transport.connect()
        channel = Channel(transport, [writer])
        outcomes = []
        try:
            if key.store is not None and key.store.puk is not None and token.token_id is not None:
                outcomes.append(set_piv_puk(channel, flow, token.token_id, Secret(CANARY_PUK, "PIV PUK"),
                                            new_puk=Secret(CANARY_NEW_PUK, "PIV PUK"), allow_on_file=True,
                                            profile=token.profile.value))
            if key.card.applet(AcaApplet) is not None and key.store.admin_key is not None:
                from tui.xauth import test_admin_key

                raw = CANARY_AES_ADMIN_KEY if key.store.admin_key.key_type is AdminKeyType.AES128 else CANARY_TDES_ADMIN_KEY
                outcomes.append(test_admin_key(channel, Secret(raw.hex().upper(), "admin key")))
            for applet in key.card.applets:
                if isinstance(applet, HidOathInstance) and applet.config.mode == "HOTP":
                    generation = generate_hotp_code(channel, applet.slot, acknowledge_counter_advance=True,
                                                    on_button_prompt=lambda count: False)
                    if generation.code is not None:
                        canaries.add(f"OTP code of slot {applet.slot}", generation.code.reveal_text())
                    outcomes.append(generation)
                    outcomes.append(generation.message())
        finally:
            transport.disconnect()

        for device in fido_devices(lab, token.reader):
            state = read_fido_state(device, transport="usb-hid")
            outcomes.append(state)
            try:
                if state.pin.state is FidoPinState.NOT_SET:
                    outcomes.append(set_new_fido_pin(device, flow, str(token.token_id), Secret(CANARY_FIDO_PIN, "FIDO PIN")))
                else:
                    attempt = list_credentials(device, Secret(CANARY_FIDO_PIN, "FIDO PIN"), token_key=str(token.token_id),
                                               audit=audit, state=state, transport="usb-hid")
                    outcomes.append(attempt.message)
                    if attempt.listing is not None:
                        outcomes.append(attempt.listing.counts_text())
            except KeytriageError as exc:
                outcomes.append(exc)

        for index, outcome in enumerate(outcomes):
            artefacts.add(f"{token.reader} action {index}", outcome)
            for attribute in ("message", "verdict"):
                if hasattr(outcome, attribute):
                    artefacts.add(f"{token.reader} action {index} {attribute}", getattr(outcome, attribute))
        ran += len(outcomes)

    session = Session(settings, audit, lab_scenario=name)
    for token in result.tokens or [None]:
        artefacts.add(f"ticket for {getattr(token, 'reader', 'no token')}", ticket_text(session, result, token))
    writer.close()
    flush_logs()
    return ran


def run_recovery(name: str, folder: Path, artefacts: Artefacts) -> int:
    """Run each recovery action that applies to scenario `name` on its own canary lab session."""
    from sweep.helpers import recovery_rig
    from sweep.test_faults_recovery import ACTIONS as RECOVERY_ACTIONS
    from tui.ticket import ticket_text
    from tui.trace import open_trace_writer

    ran = 0
    for action, (run, scenarios) in RECOVERY_ACTIONS.items():
        if name not in scenarios:
            continue
        stem = action.replace(" ", "-")
        with open_trace_writer(folder / f"{stem}.trace") as writer:
            rig = recovery_rig(name, folder / "audit.jsonl", observers=[writer])
            try:
                result = run(rig)
            except KeytriageError as exc:
                result = exc
        artefacts.add(f"{action} result", result)
        for attribute in ("verdict", "message", "steps", "follow_up", "next_steps", "hints"):
            if hasattr(result, attribute):
                artefacts.add(f"{action} {attribute}", getattr(result, attribute))
        artefacts.add(f"{action} session events", rig.session.events)
        artefacts.add(f"{action} ticket", ticket_text(rig.session, rig.scan, rig.token))
        ran += 1
    flush_logs()
    return ran


@pytest.mark.parametrize("name", scenario_names())
def test_canaries_stay_out_of_artefacts(name, canary_scenarios, tmp_path, capsys, monkeypatch):
    import os

    from tui.cli import configure_logging

    artefacts = Artefacts(tmp_path)
    canaries = Canaries()

    for command in (["scan", "--json"], ["id", "--explain"], ["scan"]):
        stem = "-".join(command).replace("--", "")
        run_cli([command[0], "--lab", name, *command[1:], "--log-file", str(tmp_path / f"{stem}.log"),
                 "--log-level", "TRAFFIC", "--trace", str(tmp_path / f"{stem}.trace")], capsys, artefacts, stem)

    configure_logging("TRAFFIC", str(tmp_path / "actions.log"), tui=True)
    ran = run_actions(name, tmp_path, artefacts, canaries)
    ran += run_recovery(name, tmp_path, artefacts)
    captured = capsys.readouterr()
    artefacts.add("actions stdout", captured.out)
    artefacts.add("actions stderr", captured.err)

    state_dirs = tuple(Path(os.environ[variable]) for variable in ("XDG_STATE_HOME", "XDG_CONFIG_HOME")
                       if Path(os.environ[variable]).exists())
    hits = artefacts.search(canaries, extra_folders=state_dirs)
    STATS.add("canary", 3 + ran)
    assert not hits, "\n".join(hits[:20])


# --- the TUI -------------------------------------------------------------------------------------

TUI_SCENARIOS = ("healthy", "fido-healthy", "otp-drift", "xauth-stale", "wrong-pin", "yubikey-healthy")


def screen_text(app) -> str:
    """Return the characters on the app's screen, one line per row."""
    return "\n".join("".join(segment.text for segment in strip) for strip in app.screen._compositor.render_strips())


@pytest.mark.parametrize("name", TUI_SCENARIOS)
async def test_tui_run_leaks_no_canary(name, canary_scenarios, tmp_path):
    import os

    from tui.backends import open_backend
    from tui.cli import configure_logging
    from tui.settings import SiteSettings
    from tui.ui.app import KeytriageApp

    configure_logging("TRAFFIC", str(tmp_path / "tui.log"), tui=True)
    artefacts = Artefacts(tmp_path)
    canaries = Canaries()
    app = KeytriageApp(lambda: open_backend(name), SiteSettings(), lab_scenario=name)

    async with app.run_test(size=(100, 40)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        artefacts.add("main screen", screen_text(app))
        artefacts.add("activity", "\n".join(app.activity.entries))
        for keys in (("t",), ("c",), ("escape",), ("h",), ("escape",), ("o",), ("escape",)):
            await pilot.press(*keys)
            await app.workers.wait_for_complete()
            await pilot.pause()
            artefacts.add(f"screen after {keys}", screen_text(app))
        artefacts.add("clipboard", app.clipboard)
        (tmp_path / "screen.svg").write_text(app.export_screenshot(), encoding="utf-8")
        await pilot.press("q")
    flush_logs()

    state_dirs = tuple(Path(os.environ[variable]) for variable in ("XDG_STATE_HOME", "XDG_CONFIG_HOME")
                       if Path(os.environ[variable]).exists())
    hits = artefacts.search(canaries, extra_folders=state_dirs)
    STATS.add("canary", 8)
    assert not hits, "\n".join(hits[:20])


# --- stored snapshots ------------------------------------------------------------------------------


def lab_secrets() -> dict[str, str | bytes]:
    """Return every secret of the lab scenarios as they are registered (not canaries), by name."""
    from tui.lab.scenarios import SCENARIOS, LAB_ADMIN_KEY, LAB_STALE_ADMIN_KEY

    found: dict[str, str | bytes] = {"lab admin key": LAB_ADMIN_KEY, "stale lab admin key": LAB_STALE_ADMIN_KEY}
    for name, scenario in SCENARIOS.items():
        for key in scenario.build():
            for table in (key.escrow, key.holder_knows):
                for label, secret in table.items():
                    value = secret.reveal()
                    # Factory defaults (123456, 00000000) appear legitimately in help and runbook text.
                    if value not in ("123456", "12345678", "00000000"):
                        found[f"{name} {label}"] = value
    return found


def test_snapshots_hold_no_lab_secret():
    canaries = Canaries(values=lab_secrets())
    files = sorted((REPOSITORY / "snapshots").rglob("*.svg"))
    hits = []
    for path in files:
        hits += canaries.hits(path.read_text(encoding="utf-8"), str(path.relative_to(REPOSITORY)))
    STATS.add("canary", len(files))
    assert not hits, "\n".join(hits[:20])


async def test_tui_actions_leak_no_canary(canary_scenarios, tmp_path):
    """Verify (Step 4) on a PIV key and set PUK on a YubiKey through the TUI, then search every artefact.

    The show-once view of the new PUK is the one screen allowed to show a
    secret, so its rendering is not kept. The new PUK then becomes a canary
    for everything else (log, audit, draft, ticket, clipboard, later screens).
    """
    import os

    from sweep.helpers import CANARY_PIV_PIN
    from sweep.test_faults_ui import close_modals, pause_until, run_set_puk
    from tui.cli import configure_logging
    from tui.escrow.records import SecretKind
    from tui.lab.backend import LabBackend
    from tui.settings import SiteSettings
    from tui.ui.app import KeytriageApp
    from tui.ui.modals import SecretPromptModal

    configure_logging("TRAFFIC", str(tmp_path / "tui-actions.log"), tui=True)
    artefacts = Artefacts(tmp_path)
    canaries = Canaries()

    lab = LabBackend("wrong-pin")
    pin = lab.key(lab.list_readers()[0]).store.pin
    tries_before = pin.tries_left
    app = KeytriageApp(lambda: lab, SiteSettings(), lab_scenario="wrong-pin")
    async with app.run_test(size=(100, 40)) as pilot:
        await pause_until(pilot, lambda: app.scan_result is not None and not app.scanning, "the first scan")
        await pilot.press("v")
        await pause_until(pilot, lambda: isinstance(app.screen, SecretPromptModal), "the PIN prompt of verify")
        await pilot.press(*CANARY_PIV_PIN, "enter")
        artefacts.add("verify prompt", screen_text(app))
        await pilot.press("s")
        await pause_until(pilot, lambda: any("Verify result" in line for line in app.activity.entries), "the verify result")
        artefacts.add("verify result", screen_text(app))
        await close_modals(app, pilot)
        await pause_until(pilot, lambda: not app.scanning, "the rescan after verify")
        artefacts.add("after verify", screen_text(app))
        artefacts.add("activity after verify", "\n".join(app.activity.entries))
        await pilot.press("t")
        await pilot.pause()
        await pilot.press("c")
        await pilot.pause()
        artefacts.add("ticket screen after verify", screen_text(app))
        artefacts.add("clipboard after verify", app.clipboard)
        await close_modals(app, pilot)
    assert tries_before < pin.max_tries
    assert pin.tries_left == pin.max_tries, "a VERIFY with the right PIN restores every try, so none was sent"
    assert pin.matches(CANARY_PIV_PIN.encode())

    yubikey = LabBackend("yubikey-healthy")
    app = KeytriageApp(lambda: yubikey, SiteSettings(), lab_scenario="yubikey-healthy")
    async with app.run_test(size=(100, 40)) as pilot:
        await pause_until(pilot, lambda: app.scan_result is not None and not app.scanning, "the first scan")
        await app._escrow_ready.wait()
        await run_set_puk(app, pilot)
        # The outcome is the show-once view of the new PUK, or an outcome modal when the site hides new
        # values; neither rendering is kept.
        await close_modals(app, pilot)
        token_id = app.scan_result.tokens[0].token_id
        _, new_puk, _ = app.escrow_context.store.read_version(token_id, SecretKind.PIV_PUK)
        canaries.add("new PUK set through the TUI", new_puk.reveal_text())
        await pause_until(pilot, lambda: not app.scanning, "the rescan after set PUK")
        artefacts.add("after set PUK", screen_text(app))
        artefacts.add("activity after set PUK", "\n".join(app.activity.entries))
        await pilot.press("t")
        await pilot.pause()
        await pilot.press("c")
        await pilot.pause()
        artefacts.add("ticket screen after set PUK", screen_text(app))
        artefacts.add("clipboard after set PUK", app.clipboard)
        await close_modals(app, pilot)
        (tmp_path / "after-set-puk.svg").write_text(app.export_screenshot(), encoding="utf-8")
    assert yubikey.key(yubikey.list_readers()[0]).store.puk.matches(new_puk.reveal_bytes())
    flush_logs()

    state_dirs = tuple(Path(os.environ[variable]) for variable in ("XDG_STATE_HOME", "XDG_CONFIG_HOME")
                       if Path(os.environ[variable]).exists())
    hits = artefacts.search(canaries, extra_folders=state_dirs)
    STATS.add("canary", 2)
    assert not hits, "\n".join(hits[:20])


async def test_tui_fido_listing_leaks_no_canary(canary_scenarios, tmp_path):
    """List FIDO credentials through the TUI with the canary FIDO PIN, then search every artefact.

    The FIDO screen shows the relying parties and user names to the
    technician, so that screen is searched for secrets only. The log, the
    audit trail, the draft and the main screen must not contain them either.
    """
    import os

    from sweep.helpers import CANARY_FIDO_PIN, CANARY_RP_ID, CANARY_USER_NAME
    from sweep.test_faults_ui import close_modals, pause_until
    from tui.cli import configure_logging
    from tui.lab.backend import LabBackend
    from tui.settings import SiteSettings
    from tui.ui.app import KeytriageApp
    from tui.ui.modals import SecretPromptModal

    configure_logging("TRAFFIC", str(tmp_path / "tui-fido.log"), tui=True)
    artefacts = Artefacts(tmp_path)
    canaries = Canaries()
    secrets_only = Canaries(values={name: value for name, value in canaries.values.items()
                                    if value not in (CANARY_RP_ID, CANARY_USER_NAME)})

    lab = LabBackend("fido-healthy")
    app = KeytriageApp(lambda: lab, SiteSettings(), lab_scenario="fido-healthy")
    async with app.run_test(size=(100, 40)) as pilot:
        await pause_until(pilot, lambda: app.scan_result is not None and not app.scanning, "the first scan")
        await pilot.press("f")
        await pause_until(pilot, lambda: type(app.screen).__name__ == "FidoScreen", "the FIDO screen")
        fido_screen = app.screen
        await pilot.press("l")
        await pause_until(pilot, lambda: isinstance(app.screen, SecretPromptModal), "the FIDO PIN prompt")
        await pilot.press(*CANARY_FIDO_PIN, "enter", "s")
        await pause_until(pilot, lambda: getattr(fido_screen, "attempt", None) is not None, "the FIDO PIN attempt")
        await pilot.pause()
        fido_text = screen_text(app)
        assert CANARY_RP_ID in fido_text, "the credential listing shows no relying party: the attempt did not list"
        await close_modals(app, pilot)
        artefacts.add("main screen after the listing", screen_text(app))
        artefacts.add("activity", "\n".join(app.activity.entries))
        await pilot.press("t")
        await pilot.pause()
        artefacts.add("ticket screen", screen_text(app))
        await close_modals(app, pilot)
    flush_logs()

    state_dirs = tuple(Path(os.environ[variable]) for variable in ("XDG_STATE_HOME", "XDG_CONFIG_HOME")
                       if Path(os.environ[variable]).exists())
    hits = artefacts.search(canaries, extra_folders=state_dirs)
    hits += secrets_only.hits(fido_text, "FIDO screen")
    STATS.add("canary", 2)
    assert not hits, "\n".join(hits[:20])
