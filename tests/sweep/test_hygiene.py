"""Secret hygiene: no secret in argv, unmasked inputs, crash reports, logs or audit records.

Crash reports matter because Textual prints the local variables of every
frame when an action raises, and `rich.traceback` does the same with
`show_locals`: a secret held as plain text or bytes in any frame of the
failing call shows up there. Each secret-carrying action is run with an
undocumented exception (a driver fault) raised at each of its APDUs or CTAP
calls, and the crash reports of whatever escapes are searched for the
canaries.
"""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

import pytest

from sweep.helpers import (
    CANARY_AES_ADMIN_KEY,
    CANARY_FIDO_PIN,
    CANARY_NEW_PUK,
    CANARY_PUK,
    STATS,
    Canaries,
    LabScard,
    canarify,
    crash_reports,
)
from tui.errors import KeytriageError
from tui.secret import Secret

REPOSITORY = Path(__file__).resolve().parents[2]

# Option and argument names that would put a secret into a process's argv (visible in ps and shell history).
SECRET_NAME = re.compile(r"pin|puk|secret|password|passwd|passphrase|seed|otp|cryptogram|vault[-_]token|^--token$|mgmt|management",
                         re.IGNORECASE)
# Options whose names look secret but are not: "--key K" picks a lab key by its number.
NOT_SECRET_OPTIONS = {("keytriage lab remove", "--key"), ("keytriage lab insert", "--key"), ("keytriage lab touch", "--key")}


def cli_options() -> list[tuple[str, str, argparse.Action]]:
    """Return (command path, option or argument name, action) for every argument of the CLI."""
    from tui.cli import build_parser

    found = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
                continue
            for name in action.option_strings or [action.dest]:
                found.append((path, name, action))

    walk(build_parser(), "keytriage")
    return found


def test_cli_takes_no_secret_in_argv():
    problems = []
    options = cli_options()
    for path, name, action in options:
        if (path, name) in NOT_SECRET_OPTIONS:
            assert action.type is int, f"{path} {name} is allowed as a key number, but takes {action.type}"
            continue
        if SECRET_NAME.search(name) or (action.metavar and SECRET_NAME.search(str(action.metavar))):
            problems.append(f"{path} {name} (metavar {action.metavar!r}, help {action.help!r})")
    STATS.add("hygiene", len(options))
    assert not problems, "options that would put a secret into argv:\n" + "\n".join(problems)


def test_keytriage_key_option_is_a_number():
    from tui.cli import build_parser

    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["lab", "remove", "--key", CANARY_PUK + "x"])
    STATS.add("hygiene")


# --- masked inputs ------------------------------------------------------------------------------

SECRET_INPUT_HINT = re.compile(r"pin|puk|secret|password|admin|key|token|seed|otp", re.IGNORECASE)
# Inputs whose description mentions a secret word without taking one ("free text, no PIN",
# "last characters of the token ID").
NOT_SECRET_INPUTS = {"'triage-notes'", "'typed-confirmation'"}


def input_calls() -> list[tuple[str, int, ast.Call]]:
    """Return (file, line, call) for every `Input(...)` call in the UI package."""
    calls = []
    for path in sorted((REPOSITORY / "tui" / "ui").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "Input":
                calls.append((path.name, node.lineno, node))
    return calls


def test_secret_inputs_are_masked():
    problems = []
    calls = input_calls()
    assert calls, "no Input() call found in tui/ui: the scan is broken"
    for filename, line, call in calls:
        keywords = {kw.arg: kw.value for kw in call.keywords}
        described = " ".join(ast.unparse(value) for name, value in keywords.items() if name in ("id", "placeholder", "classes"))
        masked = isinstance(keywords.get("password"), ast.Constant) and keywords["password"].value is True
        if ast.unparse(keywords.get("id", ast.Constant(None))) in NOT_SECRET_INPUTS:
            continue
        if SECRET_INPUT_HINT.search(described) and not masked:
            problems.append(f"{filename}:{line}: Input({described}) takes a secret but has no password=True")
    STATS.add("hygiene", len(calls))
    assert not problems, "\n".join(problems)


async def test_secret_prompt_masks_typed_value():
    from textual.app import App
    from textual.widgets import Input

    from tui.ui.modals import SecretPromptModal

    results = []

    class Host(App):
        def on_mount(self) -> None:
            self.push_screen(SecretPromptModal("PIN", "Type the PIN", kind="PIV PIN"), results.append)

    app = Host()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press(*CANARY_PUK)
        field = app.screen.query_one("#secret-input", Input)
        assert field.password is True
        rendered = "\n".join("".join(segment.text for segment in strip) for strip in app.screen._compositor.render_strips())
        assert CANARY_PUK not in rendered
        assert "8 characters typed" in rendered
        await pilot.press("enter", "s")
        await pilot.pause()
    assert results and isinstance(results[0], Secret)
    assert results[0].reveal_text() == CANARY_PUK
    STATS.add("hygiene")


# --- Secret in reports --------------------------------------------------------------------------


def test_secret_local_masked_in_crash_reports():
    canaries = Canaries()

    def fail_with_secret_local() -> None:
        pin = Secret(CANARY_PUK, "PIV PUK")  # noqa: F841 - the local is what the report must mask
        raise RuntimeError(f"driver fault while handling {pin}")

    with pytest.raises(RuntimeError) as caught:
        fail_with_secret_local()
    for name, text in crash_reports(caught.value).items():
        assert "Secret(PIV PUK=****)" in text, f"{name} report does not show the masked Secret:\n{text}"
        assert not canaries.hits(text, f"{name} crash report")
    STATS.add("hygiene", 2)


def test_audit_rejects_secret_and_unknown_fields(tmp_path):
    from tui.audit import AuditError, AuditTrail

    trail = AuditTrail(tmp_path / "audit.jsonl")
    with pytest.raises(AuditError):
        trail.record("sweep", "ok", reason=Secret(CANARY_PUK, "PIV PUK"))
    with pytest.raises(AuditError):
        trail.record("sweep", "ok", message=CANARY_PUK.encode())
    with pytest.raises(AuditError):
        trail.record("sweep", "ok", rp_id="example.com")
    assert not (tmp_path / "audit.jsonl").exists() or CANARY_PUK not in (tmp_path / "audit.jsonl").read_text()
    STATS.add("hygiene", 3)


# --- actions hit by a driver fault --------------------------------------------------------------


def pcsc_channel(scenario: str, explode_at: int | None, explosion):
    """Return (lab backend, PC/SC channel through `LabScard`, reader) for the first token of `scenario`."""
    from tui.lab.backend import LabBackend
    from tui.pcsc import PcscBackend
    from tui.transport import Channel

    lab = LabBackend(scenario)
    canarify(lab.keys)
    reader = lab.list_readers()[0]
    backend = PcscBackend(scard=LabScard(lab, explode_at, explosion))
    transport = backend.open(reader)
    transport.connect()
    return lab, Channel(transport), reader


def token_id_of(lab, reader):
    from tui.scan import scan_reader
    from tui.settings import SiteSettings

    return scan_reader(lab, reader, 0, SiteSettings(), usb_hid=False).token_id


def act_set_puk(explode_at, explosion):
    from tui.escrow.actions import set_piv_puk
    from tui.escrow.flow import EscrowFlow
    from tui.escrow.memory import MemoryStore

    lab, channel, reader = pcsc_channel("wrong-pin", explode_at, explosion)
    token_id = token_id_of(lab, reader)
    return set_piv_puk(channel, EscrowFlow(MemoryStore(), user="sweep"), token_id, Secret(CANARY_PUK, "PIV PUK"),
                       new_puk=Secret(CANARY_NEW_PUK, "PIV PUK"), allow_on_file=True)


def act_admin_key_test(explode_at, explosion):
    from tui.xauth import test_admin_key

    _, channel, _ = pcsc_channel("healthy", explode_at, explosion)
    return test_admin_key(channel, Secret(CANARY_AES_ADMIN_KEY.hex().upper(), "admin key"))


def act_hotp(explode_at, explosion):
    from tui.oath import generate_hotp_code

    _, channel, _ = pcsc_channel("otp-drift", explode_at, explosion)
    return generate_hotp_code(channel, 1, acknowledge_counter_advance=True, on_button_prompt=lambda n: False)


class ExplodingDevice:
    """Wraps a lab `SoftCtapDevice`: call number N raises `explosion()`."""

    def __init__(self, inner, explode_at, explosion) -> None:
        self.inner = inner
        self.explode_at = explode_at
        self.explosion = explosion
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def call(self, cmd, data=b"", event=None, on_keepalive=None):
        index = self.calls
        self.calls += 1
        if index == self.explode_at:
            raise self.explosion()
        return self.inner.call(cmd, data, event, on_keepalive)


def fido_device(scenario: str, explode_at, explosion):
    from fido2.ctap import CtapDevice

    from tui.lab.backend import LabBackend
    from tui.lab.ctap_device import SoftCtapDevice
    from tui.lab.fido_applet import FidoApplet

    lab = LabBackend(scenario)
    canarify(lab.keys)
    applet = lab.keys[0].card.applet(FidoApplet)
    wrapper = ExplodingDevice(SoftCtapDevice(applet.authenticator), explode_at, explosion)
    CtapDevice.register(type(wrapper))
    return wrapper


def act_fido_pin_attempt(explode_at, explosion):
    from tui.fido.actions import list_credentials
    from tui.fido.state import read_fido_state

    device = fido_device("fido-healthy", None, explosion)
    state = read_fido_state(device, transport="usb-hid")
    device.explode_at = None if explode_at is None else device.calls + explode_at
    return list_credentials(device, Secret(CANARY_FIDO_PIN, "FIDO PIN"), token_key="cplc:SWEEP", audit=None, state=state,
                            transport="usb-hid")


def act_new_fido_pin(explode_at, explosion):
    from tui.escrow.flow import EscrowFlow
    from tui.escrow.memory import MemoryStore
    from tui.fido.actions import set_new_fido_pin

    device = fido_device("fido-not-set", explode_at, explosion)
    return set_new_fido_pin(device, EscrowFlow(MemoryStore(), user="sweep"), "cplc:SWEEP", Secret(CANARY_FIDO_PIN, "FIDO PIN"))


def recovery_over_pcsc(runner, scenario: str):
    """Return an action that runs a recovery `runner` on `scenario` through `PcscBackend` over `LabScard`."""

    def act(explode_at, explosion):
        import tempfile

        from sweep.helpers import recovery_rig
        from tui.pcsc import PcscBackend
        from tui.transport import Channel

        rig = recovery_rig(scenario, Path(tempfile.mkdtemp()) / "audit.jsonl")
        transport = PcscBackend(scard=LabScard(rig.lab, explode_at, explosion)).open(rig.token.reader)
        transport.connect()
        rig.channel = Channel(transport)
        return runner(rig)

    return act


def _recovery_actions() -> dict:
    from sweep.test_faults_recovery import run_puk_reset, run_reprovision, run_unlock, run_verify

    return {
        "verify": (recovery_over_pcsc(run_verify, "wrong-pin"), 3),
        "PUK reset": (recovery_over_pcsc(run_puk_reset, "pin-locked-puk"), 3),
        "admin-key unlock": (recovery_over_pcsc(run_unlock, "admin-key-on-file"), 5),
        "reprovision YubiKey": (recovery_over_pcsc(run_reprovision, "yubikey-all-blocked"), 7),
        "reprovision Crescendo": (recovery_over_pcsc(run_reprovision, "admin-key-on-file"), 7),
    }


ACTIONS = {
    "set PUK": (act_set_puk, 4),
    "admin key test": (act_admin_key_test, 4),
    "HOTP generation": (act_hotp, 3),
    "FIDO PIN attempt": (act_fido_pin_attempt, 12),
    "new FIDO PIN": (act_new_fido_pin, 6),
    **_recovery_actions(),
}

EXPLOSIONS = {
    "SystemError": lambda: SystemError("driver fault"),
    "IndexError": lambda: IndexError("index out of range"),
}


@pytest.mark.parametrize("action", sorted(ACTIONS))
@pytest.mark.parametrize("explosion", sorted(EXPLOSIONS))
def test_action_crash_reports_hold_no_secret(action, explosion, traffic_log):
    run, calls = ACTIONS[action]
    canaries = Canaries()
    problems = []
    cases = 0
    for at in range(calls + 1):
        where = f"{action}, {explosion} at call {at}"
        try:
            result = run(at, EXPLOSIONS[explosion])
        except BaseException as exc:  # every escaping exception is rendered as a crash report
            cases += 1
            problems += canaries.hits(str(exc), f"{where}: exception text")
            for name, text in crash_reports(exc).items():
                problems += canaries.hits(text, f"{where}: {name} crash report")
            continue
        cases += 1
        problems += canaries.hits(repr(result), f"{where}: result repr")
        problems += canaries.hits(str(getattr(result, "message", "")), f"{where}: result message")
    problems += canaries.hits(traffic_log.read_text(encoding="utf-8"), "TRAFFIC log")
    STATS.add("hygiene", cases)
    assert not problems, "\n".join(sorted(set(problems))[:20])


@pytest.mark.parametrize("explosion", sorted(EXPLOSIONS))
def test_pin_apdu_redacted_in_crash_report(explosion):
    from tui.apdu import CommandApdu

    _, channel, _ = pcsc_channel("wrong-pin", 0, EXPLOSIONS[explosion])
    verify = CommandApdu(0x00, 0x20, 0x00, 0x80, CANARY_PUK.encode(), name="VERIFY (sweep)")

    def send() -> None:
        channel.send(verify)

    with pytest.raises(KeytriageError) as caught:
        send()
    for name, text in crash_reports(caught.value).items():
        assert "bytes redacted" in text, f"{name} report shows no redacted APDU:\n{text}"
        assert not Canaries().hits(text, f"{name} crash report"), text
    STATS.add("hygiene", 2)


async def test_textual_crash_report_masks_secret():
    from textual.binding import Binding

    from tui.lab.backend import LabBackend
    from tui.settings import SiteSettings
    from tui.ui.app import KeytriageApp

    reports: list[str] = []

    class CrashingApp(KeytriageApp):
        """The app with one more action that fails while a PIN is in a local variable."""

        BINDINGS = KeytriageApp.BINDINGS + [Binding("ctrl+k", "sweep_crash", "Crash", id="sweep-crash")]

        def action_sweep_crash(self) -> None:
            pin = Secret(CANARY_PUK, "PIV PIN")  # noqa: F841 - the crash report must mask this local
            raise RuntimeError("driver fault during the sweep's action")

        def _fatal_error(self) -> None:
            super()._fatal_error()
            rendered = self._exit_renderables[-1]
            reports.append("".join(segment.text for segment in rendered.segments))

    app = CrashingApp(lambda: LabBackend("wrong-pin"), SiteSettings(), lab_scenario="wrong-pin")
    with pytest.raises(RuntimeError):
        async with app.run_test(size=(100, 40)) as pilot:
            await app.workers.wait_for_complete()
            await pilot.press("ctrl+k")
            await pilot.pause()

    assert reports, "Textual printed no crash report"
    report = reports[0]
    assert "action_sweep_crash" in report
    assert "Secret(PIV PIN=****)" in report, report
    assert not Canaries().hits(report, "Textual crash report"), report
    STATS.add("hygiene")


# --- Vault tokens and passwords ---------------------------------------------------------------


@pytest.fixture
def vault_with_canary_token():
    """Start tests/vault_server.py with a writer token whose value is the Vault token canary."""
    import importlib

    from sweep.helpers import CANARY_VAULT_TOKEN

    vault_server = importlib.import_module("vault_server")
    server = vault_server.VaultTestServer().start()
    server.add_token(vault_server.writer_rules(), token=CANARY_VAULT_TOKEN, display_name="sweep")
    yield server
    server.stop()


def canary_vault_store(server):
    from sweep.helpers import CANARY_VAULT_TOKEN
    from tui.escrow.config import VaultConfig
    from tui.escrow.store import VaultStore

    return VaultStore.from_config(VaultConfig(address=server.url, token=Secret(CANARY_VAULT_TOKEN, "Vault token"), timeout=0.5))


def test_vault_token_out_of_errors_and_reprs(vault_with_canary_token, traffic_log):
    from tui.escrow.errors import EscrowError
    from tui.escrow.records import SecretKind

    store = canary_vault_store(vault_with_canary_token)
    canaries = Canaries()
    texts = {"store repr": repr(store), "config repr": repr(getattr(store, "config", None))}
    vault_with_canary_token.inject("*", drop=True, times=0)
    with pytest.raises(EscrowError) as caught:
        store.read_metadata("cplc:SWEEP", SecretKind.PIV_PUK)
    texts["error text"] = str(caught.value)
    texts["error repr"] = repr(caught.value)
    texts["TRAFFIC log"] = traffic_log.read_text(encoding="utf-8")
    hits = [hit for where, text in texts.items() for hit in canaries.hits(text, where)]
    STATS.add("hygiene", len(texts))
    assert not hits, "\n".join(hits)


def test_vault_error_crash_report_hides_token(vault_with_canary_token):
    from tui.escrow.errors import EscrowError
    from tui.escrow.records import SecretKind

    store = canary_vault_store(vault_with_canary_token)
    vault_with_canary_token.inject("*", drop=True, times=0)

    def read() -> None:
        store.read_metadata("cplc:SWEEP", SecretKind.PIV_PUK)

    with pytest.raises(EscrowError) as caught:
        read()
    hits = []
    for name, text in crash_reports(caught.value).items():
        hits += Canaries().hits(text, f"{name} crash report")
    STATS.add("hygiene", 2)
    assert not hits, "\n".join(hits)
