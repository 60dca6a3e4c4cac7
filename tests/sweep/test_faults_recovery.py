"""Fault injection over the recovery actions (verify, PUK reset, admin-key unlock, reprovision) and the new FIDO PIN.

Each action runs on a canary lab scenario with a PC/SC fault of each class
at every APDU, either before the card processes the command or after it (the
response is lost). The rules: the action ends in a result or a
`KeytriageError`; one VERIFY at most reaches the card; every new PIN or PUK
the card holds is on file in escrow in a state other than "failed"; and a
result that says the change failed or was refused leaves the card as it was.
The new FIDO PIN gets an OSError at every CTAP call and a Vault failure at
every store call; the key must never hold a FIDO PIN that is not on file.
"""

from __future__ import annotations

import pytest

from sweep.helpers import (
    CANARY_ACA_PIN,
    CANARY_NEW_PIN,
    CANARY_NEW_PUK,
    CANARY_PIV_PIN,
    STATS,
    Fault,
    recovery_rig,
)
from tui.errors import KeytriageError
from tui.escrow.records import SecretKind
from tui.secret import Secret


def escrowed_values(rig, kind: SecretKind) -> list[tuple[str, str]]:
    """Return (state, value) of every kept version of `kind` for the rig's token."""
    metadata = rig.store.read_metadata(rig.token.token_id, kind)
    if metadata is None:
        return []
    found = []
    for number in sorted(metadata.versions):
        record, value, _ = rig.store.read_version(rig.token.token_id, kind, number)
        found.append((record.state.value, value.reveal_text() if isinstance(value.reveal(), str) else value.reveal().hex()))
    return found


def check_new_value_escrowed(where: str, rig, reference, new_value: str, kind: SecretKind) -> list[str]:
    """Return a problem when the card holds `new_value` but escrow has no non-failed version of it."""
    if reference is None or not reference.matches(new_value.encode()):
        return []
    versions = escrowed_values(rig, kind)
    if any(value == new_value and state != "failed" for state, value in versions):
        return []
    return [f"{where}: the card holds the new {kind.value} but escrow has {versions or 'nothing'}"]


# --- the actions -----------------------------------------------------------------------------


def claimed_pin(rig) -> Secret:
    """Return the token's canary PIN as a `Secret`; runners keep no plain secret in their own frame."""
    return Secret(CANARY_ACA_PIN if rig.token.profile.value == "hid-crescendo" else CANARY_PIV_PIN, "PIN")


def new_pin_for(rig) -> Secret:
    """Return the canary new PIN that fits the token's PIN policy (8 digits on a Crescendo)."""
    return Secret(CANARY_NEW_PIN + "11" if rig.token.profile.value == "hid-crescendo" else CANARY_NEW_PIN, "PIN")


def run_verify(rig):
    from tui.recovery.verify import verify_pin

    return verify_pin(rig.channel, rig.token, claimed_pin(rig), rig.session, override=True)


def run_puk_reset(rig):
    from tui.recovery.puk_reset import puk_from_escrow, reset_pin_with_puk

    return reset_pin_with_puk(rig.channel, rig.token, rig.session, puk_from_escrow(rig.token, rig.session),
                              new_pin=new_pin_for(rig))


def run_unlock(rig):
    from tui.recovery.unlock import AdminKeySource, admin_key_from_escrow, unlock_pin

    return unlock_pin(rig.channel, rig.token, rig.session, admin_key_from_escrow(rig.token, rig.session),
                      key_source=AdminKeySource.ESCROW, new_pin=new_pin_for(rig))


def run_reprovision(rig):
    from tui.recovery.reprovision import ResetAuth, plan_reprovision, reprovision

    plan = plan_reprovision(rig.token, rig.scan, rig.session.settings)
    auth = ResetAuth.ADMIN_KEY_ON_FILE if rig.token.profile.value == "hid-crescendo" else None
    return reprovision(rig.channel, rig.token, rig.scan, rig.session, confirmation=plan.confirmation, user_accepted=True,
                       auth=auth, new_pin=new_pin_for(rig), new_puk=Secret(CANARY_NEW_PUK, "PIV PUK"))


# action name -> (runner, scenarios, new values by kind the action may set)
ACTIONS = {
    "verify": (run_verify, ("wrong-pin", "healthy", "yubikey-healthy")),
    "PUK reset": (run_puk_reset, ("pin-locked-puk",)),
    "admin-key unlock": (run_unlock, ("admin-key-on-file",)),
    "reprovision": (run_reprovision, ("yubikey-all-blocked", "admin-key-on-file")),
}


def clean_apdu_count(action: str, scenario: str, tmp_path) -> int:
    rig = recovery_rig(scenario, tmp_path / "clean-audit.jsonl")
    ACTIONS[action][0](rig)
    return rig.backend.sent


def cases():
    return [(action, scenario, fault) for action, (_, scenarios) in ACTIONS.items() for scenario in scenarios
            for fault in Fault]


@pytest.mark.parametrize("action,scenario,fault", cases(), ids=[f"{a}-{s}-{f.name}" for a, s, f in cases()])
def test_recovery_fault_at_every_apdu(action, scenario, fault, tmp_path):
    run = ACTIONS[action][0]
    total = clean_apdu_count(action, scenario, tmp_path)
    assert total > 0, f"{action} on {scenario} sent no APDU without a fault"
    problems = []
    tried = 0
    for after in (False, True):
        for at in range(total + 1):
            where = f"{'lost reply' if after else 'not sent'} at APDU {at}"
            rig = recovery_rig(scenario, tmp_path / f"audit-{after}-{at}.jsonl", fault, at, after=after)
            store = rig.key.store
            pin_tries_before = store.pin.tries_left if store.pin is not None else None
            result = None
            try:
                result = run(rig)
            except KeytriageError:
                pass
            except Exception as exc:  # an action ends in a result or a typed error
                problems.append(f"{where}: raised {type(exc).__name__}: {exc}")
                continue
            tried += 1

            store = rig.key.store
            if action == "verify" and pin_tries_before is not None and store.pin is not None:
                if store.pin.tries_left < pin_tries_before - 1:
                    problems.append(f"{where}: verify spent {pin_tries_before - store.pin.tries_left} tries")
            for new_pin in (CANARY_NEW_PIN, CANARY_NEW_PIN + "11"):
                problems += check_new_value_escrowed(where, rig, store.pin, new_pin, SecretKind.PIV_PIN)
            problems += check_new_value_escrowed(where, rig, store.puk, CANARY_NEW_PUK, SecretKind.PIV_PUK)

            outcome = getattr(getattr(result, "outcome", None), "value", None)
            if outcome in ("refused",) and store.pin is not None and any(
                    store.pin.matches(value.encode()) for value in (CANARY_NEW_PIN, CANARY_NEW_PIN + "11")):
                problems.append(f"{where}: outcome refused but the card holds the new PIN")
    STATS.add("faults", tried)
    assert not problems, "\n".join(problems[:15])


# --- the new FIDO PIN: escrow before setPIN -------------------------------------------------------


class FlakyCtapDevice:
    """Wraps a lab `SoftCtapDevice`: call number `at` fails with OSError, before or after the key processed it."""

    def __init__(self, inner, at: int | None, *, after: bool) -> None:
        self.inner = inner
        self.at = at
        self.after = after
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def call(self, cmd, data=b"", event=None, on_keepalive=None):
        index = self.calls
        self.calls += 1
        if index == self.at:
            if self.after:
                self.inner.call(cmd, data, event, on_keepalive)
            raise OSError("the key went away (sweep fault)")
        return self.inner.call(cmd, data, event, on_keepalive)


def fido_rig(at: int | None, *, after: bool = False, store_fault_at: int | None = None, error=None):
    """Return (authenticator, device, store, result or error) for setting the canary FIDO PIN on fido-not-set."""
    from fido2.ctap import CtapDevice

    from sweep.helpers import CANARY_FIDO_PIN
    from sweep.test_faults import FaultyStore
    from tui.escrow.flow import EscrowFlow
    from tui.escrow.memory import MemoryStore
    from tui.fido.actions import set_new_fido_pin
    from tui.lab.backend import LabBackend
    from tui.lab.ctap_device import SoftCtapDevice
    from tui.lab.fido_applet import FidoApplet

    lab = LabBackend("fido-not-set")
    authenticator = lab.keys[0].card.applet(FidoApplet).authenticator
    device = FlakyCtapDevice(SoftCtapDevice(authenticator), at, after=after)
    CtapDevice.register(FlakyCtapDevice)
    memory = MemoryStore()
    store = FaultyStore(memory, store_fault_at, error) if error is not None else memory
    try:
        outcome = set_new_fido_pin(device, EscrowFlow(store, user="sweep"), "cplc:SWEEPF1D0", Secret(CANARY_FIDO_PIN, "FIDO PIN"))
    except KeytriageError as exc:
        outcome = exc
    return authenticator, device, memory, outcome


def fido_pin_problems(where: str, authenticator, memory) -> list[str]:
    from sweep.helpers import CANARY_FIDO_PIN
    from tui.lab.soft_fido import _pin_hash

    if authenticator.pin_hash != _pin_hash(CANARY_FIDO_PIN):
        return []
    metadata = memory.read_metadata("cplc:SWEEPF1D0", SecretKind.FIDO_PIN)
    versions = []
    if metadata is not None:
        for number in sorted(metadata.versions):
            record, value, _ = memory.read_version("cplc:SWEEPF1D0", SecretKind.FIDO_PIN, number)
            versions.append((record.state.value, value.reveal_text()))
    if any(value == CANARY_FIDO_PIN and state != "failed" for state, value in versions):
        return []
    return [f"{where}: the key holds the new FIDO PIN but escrow has {versions or 'nothing'}"]


def ctap_fault_runs():
    """Run the new-FIDO-PIN action with an OSError at every CTAP call; yield (where, authenticator, memory, error)."""
    _, device, _, _ = fido_rig(None)
    total = device.calls
    assert total > 0
    for after in (False, True):
        for at in range(total + 1):
            where = f"{'lost reply' if after else 'not sent'} at CTAP call {at}"
            try:
                authenticator, _, memory, _ = fido_rig(at, after=after)
            except Exception as exc:  # collected: the typed-error rule has its own test
                yield where, None, None, exc
                continue
            yield where, authenticator, memory, None


def test_new_fido_pin_ctap_fault_at_every_call():
    problems = []
    runs = 0
    for where, authenticator, memory, error in ctap_fault_runs():
        runs += 1
        if error is None:
            problems += fido_pin_problems(where, authenticator, memory)
    STATS.add("faults", runs)
    assert not problems, "\n".join(problems)


def test_new_fido_pin_lost_key_raises_typed_error():
    untyped = [f"{where}: raised {type(error).__name__}: {error}" for where, _, _, error in ctap_fault_runs()
               if error is not None]
    STATS.add("faults", 1)
    assert not untyped, "\n".join(untyped)


def test_new_fido_pin_vault_fault_at_every_call():
    from sweep.test_faults import vault_errors

    problems = []
    cases = 0
    for error_name, error in sorted(vault_errors().items()):
        for at in range(12):
            where = f"{error_name} at store call {at}"
            try:
                authenticator, _, memory, _ = fido_rig(None, store_fault_at=at, error=error)
            except Exception as exc:  # the flow turns every Vault failure into a result
                problems.append(f"{where}: raised {type(exc).__name__}: {exc}")
                continue
            cases += 1
            problems += fido_pin_problems(where, authenticator, memory)
    STATS.add("faults", cases)
    assert not problems, "\n".join(problems)


# --- the FIDO reset -------------------------------------------------------------------------------


def reset_runs():
    """Send authenticatorReset with an OSError at every CTAP call; yield (where, error or None)."""
    import threading

    from fido2.ctap import CtapDevice

    from tui.fido.discovery import FidoDiscovery
    from tui.fido.reset import send_reset
    from tui.lab.backend import LabBackend
    from tui.lab.ctap_device import SoftCtapDevice
    from tui.lab.fido_applet import FidoApplet

    CtapDevice.register(FlakyCtapDevice)
    for after in (False, True):
        for at in range(4):
            where = f"{'lost reply' if after else 'not sent'} at CTAP call {at}"
            authenticator = LabBackend("fido-blocked").keys[0].card.applet(FidoApplet).authenticator
            authenticator.restart_reset_window()
            device = FlakyCtapDevice(SoftCtapDevice(authenticator), at, after=after)

            class Endpoint:
                transport = "usb-hid"
                label = "lab"
                not_accessible = None

            Endpoint.device = device
            discovery = FidoDiscovery()
            discovery.best = lambda endpoint=Endpoint: endpoint
            try:
                send_reset(discovery, threading.Event(), None)
            except KeytriageError:
                yield where, None
            except Exception as exc:  # collected: a lost key must end in a typed error
                yield where, exc
            else:
                yield where, None


def test_fido_reset_lost_key_raises_typed_error():
    untyped = [f"{where}: raised {type(error).__name__}: {error}" for where, error in reset_runs() if error is not None]
    STATS.add("faults", 8)
    assert not untyped, "\n".join(untyped)
