"""Fault injection: a PC/SC failure at every APDU of every action, and a Vault failure at every call.

PC/SC faults (card removed, reset by another connection, service stopped,
sharing violation) are raised by `FaultyBackend` as the typed `PcscError`
at APDU number N, for every N up to one past the action's last APDU. The
rules checked:
- the action returns or raises a `KeytriageError`, nothing else;
- no number is shown that was not read: every counter, try count, token ID
  and OTP counter of a faulted scan is unknown (None) or equals the value of
  the same scan without the fault, never an invented 0;
- a reset by another connection is retried, so the scan comes out whole;
- the token never holds a new PUK whose pending escrow write failed, and a
  new PUK on the token is always on file in escrow.
Vault faults (down, sealed, 403, timeout, check-and-set conflict) are
raised at every store call (`FaultyStore` over `MemoryStore`) and at every
HTTP request to tests/vault_server.py through the real hvac client.
"""

from __future__ import annotations

import pytest

from sweep.helpers import CANARY_NEW_PUK, CANARY_PUK, STATS, Fault, FaultyBackend, canarify
from tui.errors import KeytriageError
from tui.lab.backend import LabBackend
from tui.lab.scenarios import SCENARIOS
from tui.model import PcscProblem
from tui.settings import SiteSettings

SETTINGS = SiteSettings()
FAULT_PROBLEMS = {
    Fault.CARD_REMOVED: PcscProblem.CARD_REMOVED,
    Fault.CARD_RESET: PcscProblem.CARD_RESET,
    Fault.SERVICE_STOPPED: PcscProblem.SERVICE_STOPPED,
    Fault.SHARING_VIOLATION: PcscProblem.SHARING_VIOLATION,
}


def lab(name: str) -> LabBackend:
    """Return a lab backend for scenario `name` with every secret replaced by its canary."""
    backend = LabBackend(name)
    canarify(backend.keys)
    return backend


def scan(backend):
    """Run the read-only scan without the USB HID search, so every FIDO command is an APDU."""
    from tui.scan import scan_all

    return scan_all(backend, SETTINGS, usb_hid=False)


# --- what a scan shows ------------------------------------------------------------------------


def shown_numbers(token) -> dict[str, object]:
    """Return every number and ID a token's scan shows, by name; None where it was not read."""
    card = token.smartcard
    numbers: dict[str, object] = {
        "token ID": None if token.token_id is None else str(token.token_id),
        "profile": token.profile.value,
        "PIN tries": card.pin.remaining,
        "PIN total": card.pin.total,
        "PUK tries": card.puk.remaining,
        "PUK total": card.puk.total,
        "admin key": card.admin_key.present,
        "serial": card.serial,
    }
    fido = token.fido
    if fido is not None:
        numbers["FIDO retries"] = fido.pin.retries
    otp = token.otp
    if otp is not None:
        for slot in getattr(otp, "slots", []):
            numbers[f"OTP {slot.applet.value} {slot.slot} counter"] = slot.counter
    return numbers


def unread_defaults(token) -> dict[str, object]:
    """Return the values a token shows for fields nothing has read yet."""
    return {name: None for name in shown_numbers(token)} | {"profile": "unknown"}


def disagreements(faulted, baseline) -> list[str]:
    """Return each shown number of `faulted` that is neither unread nor the baseline's value."""
    found = []
    unread = unread_defaults(faulted)
    expected = shown_numbers(baseline)
    for name, value in shown_numbers(faulted).items():
        if value == unread.get(name) or value is None:
            continue
        if name not in expected:
            found.append(f"{name} is {value!r} but the scan without the fault has no such field")
        elif value != expected[name]:
            found.append(f"{name} is {value!r}, the scan without the fault read {expected[name]!r}")
    return found


# --- the read-only scan ------------------------------------------------------------------------


def scan_cases() -> list[tuple[str, Fault]]:
    return [(name, fault) for name in sorted(SCENARIOS) for fault in Fault]


@pytest.mark.parametrize("name,fault", scan_cases(), ids=[f"{n}-{f.name}" for n, f in scan_cases()])
def test_scan_fault_at_every_apdu(name, fault):
    from tui.scan import next_step_for
    from tui.ui.widgets import render_counters

    baseline_backend = lab(name)
    baseline = scan(baseline_backend)
    total = baseline.apdu_count
    by_reader = {token.reader: token for token in baseline.tokens}
    problems = []

    for at in range(total + 1):
        backend = FaultyBackend(lab(name), fault, at)
        try:
            result = scan(backend)
        except Exception as exc:  # a scan must report a PC/SC failure, never raise it
            problems.append(f"APDU {at}: scan raised {type(exc).__name__}: {exc}")
            continue

        for token in result.tokens:
            where = f"APDU {at}, {token.reader}"
            reference = by_reader.get(token.reader)
            if reference is None:
                problems.append(f"{where}: token not in the scan without the fault")
                continue
            problems += [f"{where}: {text}" for text in disagreements(token, reference)]

            if token.problem is not None:
                if token.problem is not FAULT_PROBLEMS[fault]:
                    problems.append(f"{where}: problem {token.problem.name}, expected {FAULT_PROBLEMS[fault].name}")
                if not next_step_for(token).startswith("Step 1"):
                    problems.append(f"{where}: next step {next_step_for(token)!r} for an unreadable token")
                if "Not readable" not in render_counters(token):
                    problems.append(f"{where}: counters panel does not say the token is not readable")

        if fault is Fault.CARD_RESET and backend.fired is not None:
            # One reset restarts the smart-card read, so the scan comes out whole.
            for token in result.tokens:
                if token.problem is not None:
                    problems.append(f"APDU {at}: a single reset left {token.reader} with problem {token.problem.name}")
        if backend.fired is None and at < total:
            problems.append(f"APDU {at}: fault never fired although the scan sent {total} APDUs")

    STATS.add("faults", total + 1)
    assert not problems, "\n".join(problems[:10])


# --- set a PUK: escrow before apply ---------------------------------------------------------------

PUK_SCENARIOS = ("wrong-pin", "pin-locked-puk", "yubikey-healthy")


def puk_setup(name: str, fault: Fault | None, at: int | None, *, after: bool = False, store=None):
    """Return (lab backend, the PUK's reference data, channel through the faults, token ID, store)."""
    from tui.escrow.memory import MemoryStore
    from tui.transport import Channel

    inner = lab(name)
    token = scan(LabBackendView(inner)).tokens[0]
    backend = FaultyBackend(inner, fault or Fault.CARD_REMOVED, at, after=after)
    transport = backend.open(token.reader)
    transport.connect()
    return inner, inner.key(token.reader).store.puk, Channel(transport), token.token_id, store or MemoryStore(), backend


class LabBackendView:
    """The lab backend seen through a second handle, so the setup scan does not count toward faults."""

    def __init__(self, inner: LabBackend) -> None:
        self.inner = inner
        self.is_lab = True

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def check_puk_invariants(where: str, result, store, puk_reference, token_id) -> list[str]:
    """Return the broken escrow-before-apply rules for one set-PUK run."""
    from tui.escrow.flow import Outcome
    from tui.escrow.records import SecretKind

    problems = []
    holds_new = puk_reference.matches(CANARY_NEW_PUK.encode())
    holds_old = puk_reference.matches(CANARY_PUK.encode())
    if not (holds_new or holds_old):
        problems.append(f"{where}: the token holds neither the old nor the new PUK")

    versions = []
    metadata = store.read_metadata(token_id, SecretKind.PIV_PUK)
    if metadata is not None:
        for number in sorted(metadata.versions):
            record, value, _ = store.read_version(token_id, SecretKind.PIV_PUK, number)
            versions.append((record.state.value, value.reveal_text()))
    if holds_new and not any(value == CANARY_NEW_PUK and state != "failed" for state, value in versions):
        problems.append(f"{where}: the token holds the new PUK but escrow has {versions or 'nothing'}")
    if result is not None:
        if result.outcome is Outcome.APPLIED and not holds_new:
            problems.append(f"{where}: outcome applied but the token kept the old PUK")
        if result.outcome is Outcome.FAILED and not holds_old:
            problems.append(f"{where}: outcome failed but the token holds the new PUK")
        if result.outcome in (Outcome.REFUSED, Outcome.CONFLICT, Outcome.NOT_ESCROWED) and not holds_old:
            problems.append(f"{where}: outcome {result.outcome.value} (nothing sent) but the token changed")
    return problems


def run_set_puk(channel, store, token_id):
    """Set the canary new PUK through the escrow flow; return the result, or None after a typed error."""
    from tui.escrow.actions import set_piv_puk
    from tui.escrow.flow import EscrowFlow
    from tui.secret import Secret

    return set_piv_puk(channel, EscrowFlow(store, user="sweep"), token_id, Secret(CANARY_PUK, "PIV PUK"),
                       new_puk=Secret(CANARY_NEW_PUK, "PIV PUK"), allow_on_file=True)


def puk_cases():
    return [(name, fault, after) for name in PUK_SCENARIOS for fault in Fault for after in (False, True)]


@pytest.mark.parametrize("name,fault,after", puk_cases(),
                         ids=[f"{n}-{f.name}-{'lost-reply' if a else 'not-sent'}" for n, f, a in puk_cases()])
def test_set_puk_fault_at_every_apdu(name, fault, after):
    problems = []
    cases = 0
    for at in range(3):
        inner, puk_reference, channel, token_id, store, backend = puk_setup(name, fault, at, after=after)
        where = f"APDU {at}"
        try:
            result = run_set_puk(channel, store, token_id)
        except KeytriageError:
            result = None
        except Exception as exc:  # the action must end in a result or a typed error
            problems.append(f"{where}: raised {type(exc).__name__}: {exc}")
            continue
        cases += 1
        problems += check_puk_invariants(where, result, store, puk_reference, token_id)
    STATS.add("faults", cases)
    assert not problems, "\n".join(problems)


# --- Vault faults at every store call ---------------------------------------------------------------


def vault_errors():
    from tui.escrow.errors import CasConflictError, VaultPermissionError, VaultSealedError, VaultUnreachableError

    return {
        "down": lambda: VaultUnreachableError("Cannot connect to Vault at http://127.0.0.1:1 (sweep fault)."),
        "sealed": lambda: VaultSealedError("Vault is sealed (sweep fault)."),
        "403": lambda: VaultPermissionError("Permission denied (sweep fault, HTTP 403).", capability="update"),
        "timeout": lambda: VaultUnreachableError("The request to Vault timed out (sweep fault)."),
        "cas conflict": lambda: CasConflictError("check-and-set mismatch (sweep fault)", expected_version=0),
    }


class FaultyStore:
    """An escrow store that raises `error()` at its call number `at` (0-based, over every method)."""

    def __init__(self, inner, at: int | None, error) -> None:
        self.inner = inner
        self.at = at
        self.error = error
        self.calls: list[str] = []
        self.fired: str | None = None

    def __getattr__(self, name: str):
        value = getattr(self.inner, name)
        if not callable(value) or name.startswith("_") or name in ("data_path", "metadata_path", "fail_next", "seed"):
            return value

        def call(*args, **kwargs):
            index = len(self.calls)
            self.calls.append(name)
            if index == self.at:
                self.fired = name
                raise self.error()
            return value(*args, **kwargs)

        return call


@pytest.mark.parametrize("error_name", sorted(vault_errors()))
def test_set_puk_vault_fault_at_every_call(error_name):
    from tui.escrow.flow import Outcome
    from tui.escrow.memory import MemoryStore

    error = vault_errors()[error_name]
    clean = FaultyStore(MemoryStore(), None, error)
    _, _, channel, token_id, _, _ = puk_setup("wrong-pin", None, None)
    run_set_puk(channel, clean, token_id)
    calls = list(clean.calls)
    assert "write" in calls

    problems = []
    pending_write = calls.index("write")
    for at in range(len(calls) + 1):
        memory = MemoryStore()
        store = FaultyStore(memory, at, error)
        inner, puk_reference, channel, token_id, _, _ = puk_setup("wrong-pin", None, None)
        where = f"{error_name} at store call {at} ({calls[at] if at < len(calls) else 'none'})"
        try:
            result = run_set_puk(channel, store, token_id)
        except Exception as exc:  # the flow turns every Vault failure into a result
            problems.append(f"{where}: raised {type(exc).__name__}: {exc}")
            continue
        problems += check_puk_invariants(where, result, memory, puk_reference, token_id)
        sent_change = any(exchange.command.ins == 0x24 for exchange in channel.exchanges)
        if at <= pending_write and sent_change:
            problems.append(f"{where}: CHANGE REFERENCE DATA was sent although the pending escrow write did not succeed")
        if at <= pending_write and result.outcome not in (Outcome.REFUSED, Outcome.NOT_ESCROWED, Outcome.CONFLICT):
            problems.append(f"{where}: outcome {result.outcome.value} after a failed pre-flight or pending write")
        if result.not_confirmed:
            retried = result.retry_record()
            if not retried.confirmed:
                problems.append(f"{where}: retrying the outcome record did not confirm it: {retried.message}")
    STATS.add("faults", len(calls) + 1)
    assert not problems, "\n".join(problems)


# --- Vault faults at every HTTP request through hvac -----------------------------------------------------


def http_faults():
    from tests_vault import Fault as HttpFault, SEALED

    return {
        "down": HttpFault(drop=True),
        "sealed": HttpFault(status=503, errors=[SEALED]),
        "403": HttpFault(status=403, errors=["1 error occurred:\n\t* permission denied\n\n"]),
        "timeout": HttpFault(delay=1.0),
        "500": HttpFault(status=500, errors=["internal error"]),
    }


@pytest.fixture
def vault_module(monkeypatch):
    """Make tests/vault_server.py importable as `tests_vault`."""
    import importlib
    import sys

    module = importlib.import_module("vault_server")
    monkeypatch.setitem(sys.modules, "tests_vault", module)
    return module


HTTP_FAULT_NAMES = ("down", "sealed", "403", "timeout", "500", "cas conflict")


@pytest.mark.parametrize("fault_name", HTTP_FAULT_NAMES)
def test_set_puk_http_fault_at_every_request(vault_module, fault_name):
    from tui.escrow.config import VaultConfig
    from tui.escrow.flow import Outcome
    from tui.escrow.store import VaultStore
    from tui.secret import Secret

    class CountingServer(vault_module.VaultTestServer):
        """Fires one fault at request number `fire_at` (0-based) instead of at the first match."""

        fire_at: int | None = None
        fault = None
        seen = 0

        def _take_fault(self, method, path):
            with self.lock:
                index = self.seen
                self.seen += 1
            if index == self.fire_at and self.fault is not None:
                return self.fault
            return None

    def run(at: int | None):
        server = CountingServer().start()
        try:
            token = server.add_token(vault_module.writer_rules(read_values=True))
            store = VaultStore.from_config(VaultConfig(address=server.url, token=Secret(token, "Vault token"), timeout=0.5))
            inner, puk_reference, channel, token_id, _, _ = puk_setup("wrong-pin", None, None)
            server.fire_at = at
            if fault_name == "cas conflict":
                if at is not None:
                    server.fire_at = None
                    server.conflict_next_write("*")
            else:
                server.fault = http_faults()[fault_name]
            result = run_set_puk(channel, store, token_id)
            return server.seen, result, store, puk_reference, token_id, channel
        finally:
            server.stop()

    requests, *_ = run(None)
    problems = []
    targets = [0] if fault_name == "cas conflict" else range(requests + 1)
    for at in targets:
        where = f"{fault_name} at request {at}"
        try:
            _, result, store, puk_reference, token_id, channel = run(at)
        except Exception as exc:  # the flow turns every Vault failure into a result
            problems.append(f"{where}: raised {type(exc).__name__}: {exc}")
            continue
        sent_change = any(exchange.command.ins == 0x24 for exchange in channel.exchanges)
        if result.outcome in (Outcome.REFUSED, Outcome.NOT_ESCROWED, Outcome.CONFLICT) and sent_change:
            problems.append(f"{where}: CHANGE REFERENCE DATA was sent with outcome {result.outcome.value}")
        holds_new = puk_reference.matches(CANARY_NEW_PUK.encode())
        if holds_new and result.outcome not in (Outcome.APPLIED, Outcome.UNKNOWN):
            problems.append(f"{where}: the token holds the new PUK but the outcome is {result.outcome.value}")
    STATS.add("faults", len(targets))
    assert not problems, "\n".join(problems)
