"""Step 5 verdicts: HOTP counter drift, TOTP clock skew or reprovisioning, and the tap-action note.

HOTP codes come from a seed and a counter. The token advances its counter on
every code it generates, and the validation server advances its own on every
code it accepts. Codes generated and never submitted (a wrong field, a double
tap, a test calculation) therefore push the token ahead. Once the gap exceeds the
server's look-ahead window every code is rejected although the key is healthy.
TOTP uses the clock instead of a counter, so it cannot drift this way.

Everything here is plain data and text built from an `OtpSlots` listing and
the smart-card state; nothing talks to a device.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from tui.model import PinState, SmartCardState
from tui.oath import OtpSlot, OtpSlots


class DriftVerdict(str, enum.Enum):
    """The Step 5 conclusion."""

    HOTP_DRIFT = "likely HOTP counter drift (server-side)"
    CLOCK_SKEW = "TOTP slot: clock skew, not counter drift"
    REPROVISION = "slot missing or wrong: reprovision the slot through the PSKC workflow"
    UNCONFIRMED = "slot present, configuration not readable"
    SMART_CARD_FIRST = "fix the smart card first"


RESYNC_STEPS = (
    "Generate a code only to submit it, with keytriage or a vendor tool: each one advances the token's counter and widens the gap.",
    "Have the user press the button two or three times in a text editor, without submitting the codes anywhere, "
    "so you get consecutive codes in order. Type them only into the validation server, never into the ticket.",
    "Enter the consecutive codes in the validation server's resynchronisation function for this user's token. "
    "It searches a wide counter window for the sequence and moves the server counter past it.",
    "If the server has no resynchronisation function, raise the look-ahead window for this user only, "
    "have the user authenticate once, then restore the window.",
    "If the resynchronisation finds no match although the slot is configured, the server is probably ahead of "
    "the token. A server counter only moves forward, so only a re-seed fixes that (re-seeding order below).",
    "Tell the user that every button press advances the token: codes typed into the wrong field or a double "
    "tap cause the drift again.",
)

RESEED_STEPS = (
    "Create a new seed for this token ID in the PSKC workflow.",
    "Import it into the validation server (counter 0) and escrow it to Vault under the token ID "
    "BEFORE anything is written to the token.",
    "Verify the smart-card PIN once: writing an OATH slot needs the PIN (or XAUTH1).",
    "Write the slot configuration, then the key: writing a configuration clears the slot's key, "
    "so the key is always written after it.",
    "Have the user generate one code and sign in once to confirm; record the re-seed in the ticket without the seed or code.",
)

CLOCK_SKEW_STEPS = (
    "TOTP codes depend on the time, not on a counter, so there is nothing to resynchronise on the token.",
    "Check the clock of the validation server and of the computer that generates the code against NTP. "
    "An HID Crescendo key has no clock: the host sends the time with TOTP AUTHENTICATE.",
    "Codes typically change every 30 seconds; a skew of more than one or two steps is rejected.",
)

REPROVISION_STEPS = (
    "Reprovision the slot through the PSKC workflow.",
) + RESEED_STEPS[1:]

UNCONFIRMED_STEPS = (
    "The token does not report whether the slot is configured. Ask the user to press the button once in a text editor.",
    "A code is typed: the slot is configured. Treat it as HOTP counter drift and keep that code as the first one for the resynchronisation.",
    "Nothing is typed: the slot is empty. Reprovision it through the PSKC workflow.",
)

SMART_CARD_FIRST_STEPS = (
    "Step 5 applies once the smart-card PIN works. Recover the PIN first (Step 6 with the PUK), then return to the OTP slots.",
)


@dataclass(frozen=True)
class SlotExpectation:
    """The slot the validation server expects, as far as the site records it.

    `slot` matches `OtpSlot.slot` ("1", "short press", an account index) or
    the account name; None picks the button slot, else the first configured
    slot. `mode`, `algorithm` and `digits` are compared only when both sides
    are known.
    """

    slot: str | None = None
    mode: str | None = None
    algorithm: str | None = None
    digits: int | None = None


@dataclass
class DriftAssessment:
    """The Step 5 verdict, the slot it is about, and what to do, in order."""

    verdict: DriftVerdict
    slot: OtpSlot | None
    steps: tuple[str, ...]
    reseed_steps: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        """The verdict as the screen heading shows it."""
        label = self.slot.label if self.slot is not None else "expected OTP slot"
        return f"{label}: {self.verdict.value}"


def assess_drift(slots: OtpSlots, smartcard: SmartCardState | None = None,
                 expected: SlotExpectation | None = None) -> DriftAssessment:
    """Turn the OTP listing and the smart-card state into the Step 5 verdict and guidance."""
    expected = expected or SlotExpectation()
    notes: list[str] = []

    if smartcard is not None and smartcard.pin.state in (PinState.BLOCKED, PinState.NOT_SET):
        return DriftAssessment(DriftVerdict.SMART_CARD_FIRST, None, SMART_CARD_FIRST_STEPS,
                               notes=[f"Smart-card PIN: {smartcard.pin.text()}."])
    if smartcard is None or smartcard.pin.state not in (PinState.OK, PinState.VERIFIED_COUNT_UNKNOWN):
        notes.append("The smart-card PIN state is not known: confirm it works (Step 4) before settling on this verdict.")

    slot = _pick_slot(slots, expected)
    if slot is None or slot.present is False or slot.configured is False:
        what = "is not present" if slot is None or slot.present is False else "is empty"
        notes.append(f"The expected OTP slot {what}.")
        return DriftAssessment(DriftVerdict.REPROVISION, slot, REPROVISION_STEPS, notes=notes)

    mismatch = _mismatch(slot, expected)
    if mismatch:
        notes.append(f"The slot does not match what the validation server expects: {mismatch}.")
        return DriftAssessment(DriftVerdict.REPROVISION, slot, REPROVISION_STEPS, notes=notes)

    if slot.mode == "TOTP":
        return DriftAssessment(DriftVerdict.CLOCK_SKEW, slot, CLOCK_SKEW_STEPS, notes=notes)

    if slot.configured is None:
        return DriftAssessment(DriftVerdict.UNCONFIRMED, slot, UNCONFIRMED_STEPS, RESEED_STEPS, notes=notes)

    if slot.mode is None:
        notes.append(
            "The slot's credential type is not reported. A Yubico OTP slot does not drift this way, because "
            "its server accepts any higher counter; the steps below apply to an OATH-HOTP slot."
        )
    if slot.counter is not None:
        notes.append(f"Token counter (lab or inferred reading): {slot.counter}. Compare it with the server's counter for this token.")
    return DriftAssessment(DriftVerdict.HOTP_DRIFT, slot, RESYNC_STEPS, RESEED_STEPS, notes=notes)


def _pick_slot(slots: OtpSlots, expected: SlotExpectation) -> OtpSlot | None:
    if expected.slot is not None:
        for slot in slots.slots:
            if expected.slot in (slot.slot, slot.name, slot.label):
                return slot
        return None

    button = slots.button_slot()
    if button is not None and button.present and button.configured is not False:
        return button
    for slot in slots.slots:
        if slot.present and slot.configured:
            return slot
    return button


def _mismatch(slot: OtpSlot, expected: SlotExpectation) -> str:
    differences = []
    for label, wanted, actual in (("mode", expected.mode, slot.mode), ("algorithm", expected.algorithm, slot.algorithm),
                                  ("digits", expected.digits, slot.digits)):
        if wanted is not None and actual is not None and wanted != actual:
            differences.append(f"{label} is {actual}, expected {wanted}")
    return "; ".join(differences)


# --- the tap-action note ------------------------------------------------------------------


@dataclass(frozen=True)
class TapHint:
    """One answer to "what happens when you tap the key?" and where it leads."""

    answer: str
    meaning: str
    where_it_fails: str
    first_check: str
    runbook_step: str


TAP_HINTS = (
    TapHint(
        answer="It types a code by itself",
        meaning="OATH HOTP: the key emits a one-time code and the server checks it against a counter.",
        where_it_fails="Server-side counter drift, or a misconfigured OATH slot.",
        first_check="List the OTP slots (o): read-only and free.",
        runbook_step="5",
    ),
    TapHint(
        answer="A box asks me to touch the key",
        meaning="FIDO2 user presence: the key signs a challenge after the touch.",
        where_it_fails="Relying party rejection, FIDO PIN required, or no credential registered.",
        first_check="Read the FIDO state (clientPin), then the PIN retries and credentials.",
        runbook_step="7",
    ),
    TapHint(
        answer="Nothing happens when I tap it",
        meaning="Could be either OATH HOTP or FIDO2.",
        where_it_fails="Unknown until the key's provisioning is known.",
        first_check="List the OTP slots first (o): it is free and shows what is provisioned; then decide on the FIDO checks.",
        runbook_step="5",
    ),
)


def tap_hint(answer: str) -> TapHint:
    """Return the hint whose answer starts with `answer` (case-insensitive); raise KeyError naming the choices."""
    wanted = answer.strip().lower()
    for hint in TAP_HINTS:
        if hint.answer.lower().startswith(wanted):
            return hint
    choices = "; ".join(hint.answer for hint in TAP_HINTS)
    raise KeyError(f"no tap-action answer starts with {answer!r}; choose one of: {choices}")
