"""The Step 9 reset wizard: pure state machine events, and the runner against the lab key."""

from __future__ import annotations

import threading

import pytest

from tui.escrow.flow import EscrowFlow, Outcome
from tui.escrow.memory import MemoryStore
from tui.escrow.records import RecordState, SecretKind
from tui.fido.actions import set_new_fido_pin
from tui.fido.discovery import find_fido_devices
from tui.fido.errors import decode_ctap_error
from tui.fido.reset import (
    CANCELLED_TEXT,
    DENIED_TEXT,
    TOO_LATE_TEXT,
    TOUCH_NOT_DETECTED_TEXT,
    ExpectedIdentity,
    IdentityCheck,
    Presence,
    ResetAction,
    ResetRunner,
    ResetStep,
    ResetWizard,
    Verdict,
    check_identity,
    read_presence,
    reset_outcome_words,
    reset_window_for,
)
from tui.lab.backend import LabBackend
from tui.lab.fido_applet import FidoApplet, install_touch_buttons
from tui.lab.scenarios import READER_CRESCENDO, READER_CRESCENDO_SECOND, crescendo_key, scenario, with_fido
from tui.lab.soft_fido import CMD_RESET, SoftAuthenticator, deny_touch, touch_times_out
from tui.scan import scan_reader
from tui.secret import Secret
from tui.settings import SiteSettings


class FakeClock:
    """Seconds that move only when a test advances them."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@scenario("test-fido-two-keys", "Two Crescendo-style keys with FIDO2 in two readers (reset wizard tests)")
def _two_fido_keys():
    first = with_fido(crescendo_key(31), SoftAuthenticator(pin="13572468"))
    second = with_fido(crescendo_key(32, reader=READER_CRESCENDO_SECOND), SoftAuthenticator(pin="24681357"))
    return [first, second]


def authenticator_of(backend: LabBackend, reader: str) -> SoftAuthenticator:
    return backend.key(reader).card.applet(FidoApplet).authenticator


def resets_received(auth: SoftAuthenticator) -> int:
    return sum(1 for command, _ in auth.requests if command == CMD_RESET)


def token_id_of(backend: LabBackend, reader: str, settings: SiteSettings) -> str:
    return str(scan_reader(backend, reader, 0, settings).token_id)


@pytest.fixture
def lab():
    """A FIDO-blocked lab key whose authenticator and wizard share a fake clock."""
    settings = SiteSettings()
    backend = LabBackend("fido-blocked")
    reader = backend.list_readers()[0]
    clock = FakeClock()
    auth = authenticator_of(backend, reader)
    auth.clock = clock
    auth.boot_time = clock()
    token_id = token_id_of(backend, reader, settings)
    wizard = ResetWizard(token_label=token_id, token_id=token_id, reader=reader, clock=clock)
    return backend, reader, auth, clock, wizard, settings


def reinsert(backend, reader, runner):
    backend.remove(reader)
    runner.poll()
    backend.insert(reader)
    return runner.poll()


# --- the state machine alone ---------------------------------------------------------------------


def wizard_at_insert(clock, window=5.0):
    wizard = ResetWizard(token_label="lab key", token_id="cplc:AB12", reader="R1", clock=clock, window_s=window)
    wizard.confirm("RESET", Presence(("R1",)))
    wizard.presence(Presence(()))
    wizard.presence(Presence(("R1",)))
    return wizard


def test_wrong_confirmation_stays_in_intro():
    wizard = ResetWizard(token_label="lab key", token_id="cplc:AB12", reader="R1", clock=FakeClock())
    assert wizard.confirm("reset", Presence(("R1",))) is ResetStep.INTRO
    assert "does not match" in wizard.message
    assert wizard.confirm("ab12", Presence(("R1",))) is ResetStep.WAIT_REMOVE


def test_hold_keeps_wizard_unarmed():
    wizard = ResetWizard(token_label="lab key", token_id="cplc:AB12", reader="R1", clock=FakeClock())
    assert wizard.hold("Escrow unavailable: Vault is sealed.") is ResetStep.INTRO
    assert wizard.message == "Escrow unavailable: Vault is sealed."
    assert wizard.pending_action is ResetAction.NONE

    # Once armed, a late hold changes nothing.
    wizard.confirm("RESET", Presence(("R1",)))
    assert wizard.hold("too late") is ResetStep.WAIT_REMOVE
    assert "too late" not in wizard.message


def test_no_id_needs_typed_id():
    wizard = ResetWizard(token_label="lab key", token_id=None, reader="R1", clock=FakeClock())
    assert wizard.confirm("RESET", Presence(("R1",))) is ResetStep.INTRO
    assert "type the ID printed on the key" in wizard.message
    assert wizard.confirm("RESET", Presence(("R1",)), typed_id="HID-000123") is ResetStep.WAIT_REMOVE
    assert wizard.expected.method == "ID typed from the key"


def test_two_tokens_refused_by_name():
    wizard = ResetWizard(token_label="lab key", token_id="cplc:AB12", reader="R1", clock=FakeClock())
    assert wizard.confirm("RESET", Presence(("R1", "R2"))) is ResetStep.REFUSED
    assert "R2" in wizard.message
    assert wizard.pending_action is ResetAction.NONE


def test_second_token_at_insertion_refused():
    clock = FakeClock()
    wizard = ResetWizard(token_label="lab key", token_id="cplc:AB12", reader="R1", clock=clock)
    wizard.confirm("RESET", Presence(("R1",)))
    wizard.presence(Presence(()))
    assert wizard.presence(Presence(("R1", "R2"))) is ResetStep.REFUSED
    assert "R2" in wizard.message


def test_insertion_needs_new_card():
    clock = FakeClock()
    wizard = ResetWizard(token_label="lab key", token_id="cplc:AB12", reader="R1", clock=clock)
    wizard.confirm("RESET", Presence(()))
    assert wizard.step is ResetStep.WAIT_INSERT
    assert wizard.presence(Presence(())) is ResetStep.WAIT_INSERT
    assert wizard.presence(Presence(("R1",))) is ResetStep.CHECKING


def test_send_within_window():
    clock = FakeClock()
    wizard = wizard_at_insert(clock)
    clock.advance(4.9)
    assert wizard.seconds_left() == pytest.approx(0.1)
    assert wizard.identity_checked(IdentityCheck(Verdict.SAME, "smart-card ID", "cplc:AB12")) is ResetAction.SEND_RESET
    assert wizard.step is ResetStep.SENDING
    assert wizard.keepalive(2) is ResetStep.WAIT_TOUCH


def test_six_seconds_late_not_sent():
    clock = FakeClock()
    wizard = wizard_at_insert(clock)
    clock.advance(6)
    assert wizard.identity_checked(IdentityCheck(Verdict.SAME, "smart-card ID", "cplc:AB12")) is ResetAction.NONE
    assert wizard.step is ResetStep.WAIT_REMOVE
    assert TOO_LATE_TEXT in wizard.message
    assert "Nothing was sent" in wizard.message
    assert wizard.resets_sent == 0


def test_window_closed_during_check():
    clock = FakeClock()
    wizard = wizard_at_insert(clock)
    clock.advance(4.9)
    assert not wizard.window_closed()
    clock.advance(0.1)
    assert wizard.window_closed()
    assert wizard.step is ResetStep.CHECKING

    wizard.identity_checked(IdentityCheck(Verdict.SAME, "smart-card ID", "cplc:AB12"))
    assert wizard.step is ResetStep.WAIT_REMOVE
    assert not wizard.window_closed()
    assert wizard.resets_sent == 0


def test_cancel_before_send():
    clock = FakeClock()
    wizard = wizard_at_insert(clock)
    assert wizard.cancel() is ResetStep.CANCELLED
    assert wizard.identity_checked(IdentityCheck(Verdict.SAME, "smart-card ID", "cplc:AB12")) is ResetAction.NONE
    assert wizard.resets_sent == 0


@pytest.mark.parametrize(("code", "words"), [
    (0x30, TOO_LATE_TEXT),
    (0x2F, TOUCH_NOT_DETECTED_TEXT),
    (0x3A, TOUCH_NOT_DETECTED_TEXT),
    (0x27, DENIED_TEXT),
    (0x2D, CANCELLED_TEXT),
])
def test_outcome_words(code, words):
    assert reset_outcome_words(decode_ctap_error(code)) == words


def test_reset_window():
    assert reset_window_for(0x050704, is_yubikey=True) == 10
    assert reset_window_for(0x050403, is_yubikey=True) == 5
    assert reset_window_for(0x050704, is_yubikey=False) == 5
    assert reset_window_for(None, is_yubikey=True) == 5


# --- the runner on the lab key ---------------------------------------------------------------------


def test_lab_reset_success_then_new_pin(lab):
    backend, reader, auth, clock, wizard, settings = lab
    audit_records = []

    class Audit:
        def record(self, operation, outcome, **fields):
            audit_records.append((operation, outcome, fields))

    runner = ResetRunner(wizard, backend, settings, audit=Audit())
    assert runner.arm("RESET") is ResetStep.WAIT_REMOVE
    assert resets_received(auth) == 0

    assert reinsert(backend, reader, runner) is ResetStep.DONE
    assert resets_received(auth) == 1
    assert auth.credentials == []
    assert not auth.pin_is_set
    assert audit_records[-1][:2] == ("fido-reset", "done")
    assert audit_records[-1][2]["method"] == "smart-card ID"

    store = MemoryStore()
    discovery = find_fido_devices(reader, backend)
    try:
        result = set_new_fido_pin(discovery.best().device, EscrowFlow(store, user="tech"), wizard.token_id,
                                  Secret("80864213", "FIDO PIN"))
    finally:
        discovery.close()
    assert result.outcome is Outcome.APPLIED
    record, _, version = store.read_version(wizard.token_id, SecretKind.FIDO_PIN)
    assert (record.state, version) == (RecordState.APPLIED, 2)
    assert auth.pin_is_set


def test_lab_two_tokens_refused():
    backend = LabBackend("test-fido-two-keys")
    first, second = backend.list_readers()
    wizard = ResetWizard(token_label="key 1", token_id="cplc:X", reader=first, clock=FakeClock())
    runner = ResetRunner(wizard, backend, SiteSettings())

    assert runner.arm("RESET") is ResetStep.REFUSED
    assert second in wizard.message
    for reader in (first, second):
        assert resets_received(authenticator_of(backend, reader)) == 0


def test_lab_different_key_refused(lab):
    backend, reader, auth, clock, _, settings = lab
    wizard = ResetWizard(token_label="the user's key", token_id="cplc:4C41FFFF00000000FFFF", reader=reader, clock=clock)
    runner = ResetRunner(wizard, backend, settings)
    runner.arm("RESET")

    assert reinsert(backend, reader, runner) is ResetStep.WAIT_REMOVE
    assert "A different key was inserted" in wizard.message
    assert resets_received(auth) == 0


def test_lab_too_late_not_sent(lab):
    backend, reader, auth, clock, wizard, settings = lab

    def slow_check(*args):
        clock.advance(6)
        return check_identity(*args)

    runner = ResetRunner(wizard, backend, settings, identity_checker=slow_check)
    runner.arm("RESET")

    assert reinsert(backend, reader, runner) is ResetStep.WAIT_REMOVE
    assert TOO_LATE_TEXT in wizard.message
    assert resets_received(auth) == 0
    assert auth.pin_is_set


def test_lab_key_says_too_late(lab):
    backend, reader, auth, clock, _, settings = lab
    auth.reset_window_s = 2
    wizard = ResetWizard(token_label="lab key", token_id=token_id_of(backend, reader, settings), reader=reader,
                         clock=clock, window_s=10)

    def slow_check(*args):
        clock.advance(3)
        return check_identity(*args)

    runner = ResetRunner(wizard, backend, settings, identity_checker=slow_check)
    runner.arm("RESET")

    assert reinsert(backend, reader, runner) is ResetStep.FAILED
    assert wizard.message == TOO_LATE_TEXT
    assert resets_received(auth) == 1
    assert auth.pin_is_set
    assert wizard.retry() is ResetStep.WAIT_REMOVE


@pytest.mark.parametrize(("presence", "words"), [(touch_times_out, TOUCH_NOT_DETECTED_TEXT), (deny_touch, DENIED_TEXT)])
def test_lab_touch_outcomes(lab, presence, words):
    backend, reader, auth, clock, wizard, settings = lab
    auth.user_presence = presence
    runner = ResetRunner(wizard, backend, settings)
    runner.arm("RESET")

    assert reinsert(backend, reader, runner) is ResetStep.FAILED
    assert wizard.message == words
    assert auth.pin_is_set
    assert len(auth.credentials) == 1


def test_lab_cancel_before_send(lab):
    backend, reader, auth, clock, wizard, settings = lab
    runner = ResetRunner(wizard, backend, settings)
    runner.arm("RESET")
    backend.remove(reader)
    runner.poll()

    assert wizard.cancel() is ResetStep.CANCELLED
    backend.insert(reader)
    assert runner.poll() is ResetStep.CANCELLED
    assert resets_received(auth) == 0


def test_lab_cancel_while_waiting_for_touch(lab):
    backend, reader, auth, clock, wizard, settings = lab
    (button,) = install_touch_buttons(backend.key(reader))
    asked_for_touch = threading.Event()

    def changed():
        if wizard.step is ResetStep.WAIT_TOUCH:
            asked_for_touch.set()

    runner = ResetRunner(wizard, backend, settings, on_change=changed)
    runner.arm("RESET")
    backend.remove(reader)
    runner.poll()
    backend.insert(reader)

    worker = threading.Thread(target=runner.poll)
    worker.start()
    assert asked_for_touch.wait(10), "the key never signalled UPNEEDED"
    assert button.waiting.is_set()
    wizard.cancel()
    worker.join(10)

    assert not worker.is_alive()
    assert wizard.step is ResetStep.FAILED
    assert wizard.message == CANCELLED_TEXT
    assert auth.pin_is_set


def test_lab_touch_button_completes(lab):
    backend, reader, auth, clock, wizard, settings = lab
    (button,) = install_touch_buttons(backend.key(reader))
    runner = ResetRunner(wizard, backend, settings)
    runner.arm("RESET")
    backend.remove(reader)
    runner.poll()
    backend.insert(reader)

    worker = threading.Thread(target=runner.poll)
    worker.start()
    assert button.waiting.wait(10)
    button.press()
    worker.join(10)

    assert wizard.step is ResetStep.DONE
    assert not auth.pin_is_set


def test_lab_presence(lab):
    backend, reader, *_ = lab
    assert read_presence(backend) == Presence((reader,))
    backend.remove(reader)
    assert read_presence(backend) == Presence(())


def test_fingerprint_identity_without_token_id(lab):
    backend, reader, auth, clock, _, settings = lab
    wizard = ResetWizard(token_label="lab key", token_id=None, reader=reader, clock=clock)
    runner = ResetRunner(wizard, backend, settings)

    assert runner.arm("RESET") is ResetStep.WAIT_REMOVE
    assert wizard.expected.method == "getInfo fingerprint"
    assert reinsert(backend, reader, runner) is ResetStep.DONE
    assert wizard.identity.method == "getInfo fingerprint"


def test_fingerprint_mismatch_refused(lab):
    backend, reader, auth, clock, _, settings = lab
    wizard = ResetWizard(token_label="lab key", token_id=None, reader=reader, clock=clock,
                         expected=ExpectedIdentity(fingerprint="0" * 32))
    runner = ResetRunner(wizard, backend, settings)
    wizard.confirm("RESET", read_presence(backend))

    assert reinsert(backend, reader, runner) is ResetStep.WAIT_REMOVE
    assert "A different key was inserted" in wizard.message
    assert resets_received(auth) == 0


def test_scenario_reader_names():
    # The two-key scenario uses both Crescendo reader names, so a refusal can name the second.
    assert LabBackend("test-fido-two-keys").list_readers() == [READER_CRESCENDO, READER_CRESCENDO_SECOND]
