"""Step 5 verdicts and the tap-action note, reached from listing data and smart-card state."""

import pytest

from tui.drift import (
    CLOCK_SKEW_STEPS,
    RESEED_STEPS,
    RESYNC_STEPS,
    TAP_HINTS,
    DriftVerdict,
    SlotExpectation,
    assess_drift,
    tap_hint,
)
from tui.lab.backend import LabBackend
from tui.model import Counter, PinState, Profile, SmartCardState
from tui.oath import OtpApplet, OtpSlot, OtpSlots, list_otp_slots
from tui.settings import SiteSettings
from tui.transport import Channel


def healthy_card():
    return SmartCardState(pin=Counter(PinState.OK, 8, 8))


def hid_slot(number, **fields):
    return OtpSlot(OtpApplet.HID_OATH, str(number), "A00000007923" + f"{number - 1:02d}", button_slot=number == 1, **fields)


def listing(*slots):
    return OtpSlots(Profile.HID_CRESCENDO, list(slots))


CONFIGURED_HOTP = dict(present=True, configured=True, mode="HOTP", algorithm="SHA-1", digits=6)


def test_drift_scenario_end_to_end():
    backend = LabBackend("otp-drift")
    key = backend.keys[0]
    transport = backend.open(key.reader)
    transport.connect()
    slots = list_otp_slots(Channel(transport), Profile.HID_CRESCENDO, SiteSettings(), is_lab=True)

    assessment = assess_drift(slots, healthy_card())
    assert assessment.verdict is DriftVerdict.HOTP_DRIFT
    assert assessment.verdict.value == "likely HOTP counter drift (server-side)"
    assert assessment.slot.slot == "1"
    assert assessment.steps == RESYNC_STEPS
    assert assessment.reseed_steps == RESEED_STEPS
    assert any("1042" in note for note in assessment.notes)
    assert assessment.title == "OTP slot 1: likely HOTP counter drift (server-side)"


def test_resync_procedure_content():
    text = " ".join(RESYNC_STEPS)
    assert "two or three" in text
    assert "consecutive codes" in text
    assert "server is probably ahead of the token" in text
    assert "only a re-seed fixes that" in text


def test_reseed_order_escrows_before_writing():
    escrow = next(i for i, step in enumerate(RESEED_STEPS) if "escrow it to Vault" in step)
    write = next(i for i, step in enumerate(RESEED_STEPS) if "Write the slot configuration, then the key" in step)
    assert escrow < write
    assert "BEFORE anything is written" in RESEED_STEPS[escrow]


def test_totp_slot_is_clock_skew():
    slots = listing(hid_slot(1, present=True, configured=False), hid_slot(2, present=True, configured=True, mode="TOTP"))
    assessment = assess_drift(slots, healthy_card())
    assert assessment.verdict is DriftVerdict.CLOCK_SKEW
    assert assessment.slot.slot == "2"
    assert assessment.steps == CLOCK_SKEW_STEPS
    assert assessment.reseed_steps == ()


@pytest.mark.parametrize("button_fields", [
    dict(present=False, configured=False),
    dict(present=True, configured=False),
])
def test_missing_or_empty_slot_reprovisions(button_fields):
    slots = listing(hid_slot(1, **button_fields), hid_slot(2, present=True, configured=False))
    assessment = assess_drift(slots, healthy_card())
    assert assessment.verdict is DriftVerdict.REPROVISION
    assert "PSKC workflow" in assessment.steps[0]
    assert assessment.verdict.value == "slot missing or wrong: reprovision the slot through the PSKC workflow"


def test_wrong_slot_reprovisions():
    slots = listing(hid_slot(1, **CONFIGURED_HOTP))
    assessment = assess_drift(slots, healthy_card(), SlotExpectation(digits=8, algorithm="SHA-1"))
    assert assessment.verdict is DriftVerdict.REPROVISION
    assert any("digits is 6, expected 8" in note for note in assessment.notes)


def test_expected_slot_not_listed():
    slots = listing(hid_slot(1, **CONFIGURED_HOTP))
    assessment = assess_drift(slots, healthy_card(), SlotExpectation(slot="3"))
    assert assessment.verdict is DriftVerdict.REPROVISION
    assert assessment.slot is None


def test_expected_slot_by_account_name():
    account = OtpSlot(OtpApplet.YUBIKEY_OATH, "1", "A0000005272101", present=True, configured=True, mode="HOTP", name="VPN:alice")
    slots = OtpSlots(Profile.YUBIKEY, [account])
    assessment = assess_drift(slots, healthy_card(), SlotExpectation(slot="VPN:alice"))
    assert assessment.verdict is DriftVerdict.HOTP_DRIFT
    assert assessment.slot is account


def test_unreadable_configuration_is_unconfirmed():
    slots = listing(hid_slot(1, present=True, mode="HOTP"))
    assessment = assess_drift(slots, healthy_card())
    assert assessment.verdict is DriftVerdict.UNCONFIRMED
    assert any("text editor" in step for step in assessment.steps)
    assert assessment.reseed_steps == RESEED_STEPS


@pytest.mark.parametrize("state", [PinState.BLOCKED, PinState.NOT_SET])
def test_broken_smart_card_first(state):
    slots = listing(hid_slot(1, **CONFIGURED_HOTP))
    assessment = assess_drift(slots, SmartCardState(pin=Counter(state, 0, 8)))
    assert assessment.verdict is DriftVerdict.SMART_CARD_FIRST
    assert "Step 6" in assessment.steps[0]


@pytest.mark.parametrize("smartcard", [None, SmartCardState()])
def test_unknown_smart_card_adds_caveat(smartcard):
    slots = listing(hid_slot(1, **CONFIGURED_HOTP))
    assessment = assess_drift(slots, smartcard)
    assert assessment.verdict is DriftVerdict.HOTP_DRIFT
    assert any("Step 4" in note for note in assessment.notes)


def test_yubikey_otp_slot_type_unknown_note():
    short = OtpSlot(OtpApplet.YUBIKEY_OTP, "short press", "A0000005272001", present=True, configured=True,
                    touch_triggered=True, button_slot=True)
    assessment = assess_drift(OtpSlots(Profile.YUBIKEY, [short]), healthy_card())
    assert assessment.verdict is DriftVerdict.HOTP_DRIFT
    assert any("Yubico OTP slot does not drift" in note for note in assessment.notes)


def test_first_configured_slot_when_button_slot_empty():
    slots = listing(hid_slot(1, present=True, configured=False), hid_slot(3, **CONFIGURED_HOTP))
    assessment = assess_drift(slots, healthy_card())
    assert assessment.verdict is DriftVerdict.HOTP_DRIFT
    assert assessment.slot.slot == "3"


# --- the tap-action note --------------------------------------------------------------------


@pytest.mark.parametrize("answer, step, meaning", [
    ("It types a code by itself", "5", "OATH HOTP"),
    ("A box asks me to touch the key", "7", "FIDO2"),
    ("Nothing happens when I tap it", "5", "either OATH HOTP or FIDO2"),
])
def test_tap_hints(answer, step, meaning):
    hint = tap_hint(answer)
    assert hint.runbook_step == step
    assert meaning in hint.meaning


def test_tap_nothing_happens_lists_otp_first():
    hint = tap_hint("nothing")
    assert hint.first_check.startswith("List the OTP slots first")
    assert "free" in hint.first_check


def test_tap_hints_cover_three_answers():
    assert len(TAP_HINTS) == 3
    assert len({hint.answer for hint in TAP_HINTS}) == 3


def test_unknown_tap_answer():
    with pytest.raises(KeyError) as error:
        tap_hint("it beeps")
    assert "It types a code by itself" in str(error.value)
