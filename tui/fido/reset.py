"""The guided FIDO reset of runbook Step 9: a state machine driven by events, and its device driver.

`ResetWizard` holds no device and reads no wall clock: the caller feeds it
events (the typed confirmation, presence snapshots, the identity check, the
keepalive, the reset's outcome) and it returns the next step and the
`pending_action` the driver performs. Its clock is injected, so the window
check is testable without sleeping.

Order of a reset:

1. Say what is wiped: every FIDO registration (also the ones no listing can
   show) and the FIDO PIN. The smart card, OATH and external authentication
   stay untouched, and the user must register the key again with every
   relying party.
2. Require a typed confirmation: the word RESET or the last four characters
   of the token ID.
3. Refuse while more than one token is attached, naming the readers that
   hold the others.
4. Wait for the key to be removed, then re-inserted. authenticatorReset is
   accepted only within a few seconds of power-up (10 s on CTAP 2.1 keys, 5 s
   on YubiKeys before firmware 5.5.4), so the reset goes out at once after
   the insertion, never after a further confirmation.
5. Check that the re-inserted key is the same token: by its smart-card ID in
   the same reader, else by the USB serial number, else by a fingerprint of
   its getInfo response, else by the ID the technician typed from the key.
6. Send authenticatorReset and ask for a touch when the key signals
   UPNEEDED. Cancel works until the key answers.

`ResetRunner.poll()` performs one round of the pending device work on the
device thread: read presence and, on an insertion, check the identity and
send the reset in the same job, so no event-loop hop delays it.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tui.errors import KeytriageError, PcscError
from tui.fido.errors import FidoErrorKind, FidoResult, decode_ctap_error

log = logging.getLogger("keytriage.fido")

CONFIRM_WORD = "RESET"
DEFAULT_RESET_WINDOW_S = 5.0  # the shortest window in use, assumed when the key's is unknown
CTAP21_YUBIKEY_WINDOW_S = 10.0
YUBIKEY_10S_FIRMWARE = 0x050504  # YubiKey firmware 5.5.4 and later allow 10 s

WIPE_TEXT = (
    "A FIDO reset erases every FIDO registration on this key (passkeys and U2F, including those that "
    "no credential listing can show) and the FIDO PIN. The smart card (PIV/ACA), OATH/OTP slots and "
    "external authentication stay untouched. Afterwards the user must register the key again with "
    "every relying party where it was enrolled. FIDO2 has no other recovery."
)
TOO_LATE_TEXT = "Too late after insertion: remove and re-insert the key; keytriage sends the reset at once."
TOUCH_NOT_DETECTED_TEXT = "Touch not detected: the key was not touched in time. Nothing was erased."
DENIED_TEXT = ("Reset denied by the key: the touch was declined, or the key does not allow a reset over "
               "this transport (retry over USB HID if this was PC/SC). Nothing was erased.")
CANCELLED_TEXT = "Reset cancelled before the key was touched. Nothing was erased."


def reset_window_for(firmware_version: int | None, *, is_yubikey: bool) -> float:
    """Return the reset window in seconds after power-up: 10 on YubiKey 5.5.4 or later, else 5.

    Only Yubico documents its window. Every other key gets the shortest window
    in use (5 s), which is safe because a reset sent early is valid.
    """
    if is_yubikey and firmware_version and firmware_version >= YUBIKEY_10S_FIRMWARE:
        return CTAP21_YUBIKEY_WINDOW_S
    return DEFAULT_RESET_WINDOW_S


def reset_outcome_words(result: FidoResult) -> str:
    """Return the words for a failed authenticatorReset."""
    if result.kind is FidoErrorKind.NOT_ALLOWED:
        return TOO_LATE_TEXT
    if result.kind is FidoErrorKind.USER_ACTION_TIMEOUT:
        return TOUCH_NOT_DETECTED_TEXT
    if result.kind is FidoErrorKind.OPERATION_DENIED:
        return DENIED_TEXT
    if result.kind is FidoErrorKind.KEEPALIVE_CANCEL:
        return CANCELLED_TEXT
    return f"The reset failed: {result.message}"


class ResetStep(str, enum.Enum):
    """Where the reset wizard stands."""

    INTRO = "intro"  # explained, waiting for the typed confirmation
    REFUSED = "refused"  # more than one token attached; nothing sent
    WAIT_REMOVE = "wait_remove"
    WAIT_INSERT = "wait_insert"
    CHECKING = "checking"  # re-inserted: identity check, the reset follows at once
    SENDING = "sending"  # authenticatorReset sent, waiting for the key
    WAIT_TOUCH = "wait_touch"  # the key signalled UPNEEDED
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ResetAction(str, enum.Enum):
    """The device work the wizard waits for."""

    NONE = "none"
    WATCH_PRESENCE = "watch_presence"
    CHECK_IDENTITY = "check_identity"
    SEND_RESET = "send_reset"


CANCELLABLE_BEFORE_SEND = (ResetStep.INTRO, ResetStep.REFUSED, ResetStep.WAIT_REMOVE, ResetStep.WAIT_INSERT, ResetStep.CHECKING)


@dataclass(frozen=True)
class Presence:
    """The readers that hold a card at one moment."""

    readers_with_card: tuple[str, ...]

    def has_card(self, reader: str) -> bool:
        """True when `reader` holds a card."""
        return reader in self.readers_with_card


class Verdict(str, enum.Enum):
    """Result of comparing the re-inserted key with the one the reset is meant for."""

    SAME = "same"
    DIFFERENT = "different"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class IdentityCheck:
    """The identity verdict, the method that produced it and what was found (an ID, never a secret)."""

    verdict: Verdict
    method: str
    found: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class ExpectedIdentity:
    """What identifies the key to reset; the first available field is used."""

    token_id: str | None = None  # the smart-card ID from the scan
    serial: str | None = None  # the USB serial number of the FIDO HID device
    fingerprint: str | None = None  # see `info_fingerprint`
    typed_id: str | None = None  # the ID the technician read off the key

    @property
    def method(self) -> str:
        """The identity method the check will use."""
        if self.token_id:
            return "smart-card ID"
        if self.serial:
            return "USB serial number"
        if self.fingerprint:
            return "getInfo fingerprint"
        if self.typed_id:
            return "ID typed from the key"
        return "none"


class ResetWizard:
    """The FIDO reset as a state machine; thread-safe, so the UI and the device thread can both feed it.

    `token_label` names the key in messages, `token_id` is its ID (None when
    it has none), `reader` the reader it sits in. `window_s` is the reset
    window after power-up and `clock` returns seconds (monotonic).
    """

    def __init__(self, *, token_label: str, token_id: str | None, reader: str, window_s: float = DEFAULT_RESET_WINDOW_S,
                 clock: Callable[[], float] = time.monotonic, expected: ExpectedIdentity | None = None) -> None:
        self.token_label = token_label
        self.token_id = token_id
        self.reader = reader
        self.window_s = window_s
        self.clock = clock
        self.expected = expected or ExpectedIdentity(token_id=token_id)
        self.step = ResetStep.INTRO
        self.message = WIPE_TEXT
        self.inserted_at: float | None = None
        self.result: FidoResult | None = None
        self.identity: IdentityCheck | None = None
        self.resets_sent = 0
        self.cancel_event = threading.Event()
        self._baseline: set[str] = set()
        self._lock = threading.RLock()

    # -- queries -------------------------------------------------------------

    @property
    def confirmation_hint(self) -> str:
        """What the technician may type to confirm."""
        if self.token_id:
            return f"{CONFIRM_WORD} or the last four characters of the token ID ({self.token_id[-4:]})"
        return CONFIRM_WORD

    @property
    def pending_action(self) -> ResetAction:
        """The device work the wizard waits for now."""
        with self._lock:
            if self.step in (ResetStep.WAIT_REMOVE, ResetStep.WAIT_INSERT):
                return ResetAction.WATCH_PRESENCE
            if self.step is ResetStep.CHECKING:
                return ResetAction.CHECK_IDENTITY
            return ResetAction.NONE

    @property
    def finished(self) -> bool:
        """True once the wizard is done, failed or cancelled."""
        return self.step in (ResetStep.DONE, ResetStep.FAILED, ResetStep.CANCELLED)

    def seconds_left(self) -> float | None:
        """Seconds left of the reset window since the insertion, None before an insertion."""
        with self._lock:
            if self.inserted_at is None or self.step not in (ResetStep.CHECKING, ResetStep.SENDING, ResetStep.WAIT_TOUCH):
                return None
            return max(0.0, self.window_s - (self.clock() - self.inserted_at))

    def window_closed(self) -> bool:
        """True while the identity check still runs but the reset window since the insertion has passed.

        `identity_checked` then withholds the reset, so no reset will be sent
        for this insertion whatever the check finds.
        """
        with self._lock:
            if self.step is not ResetStep.CHECKING or self.inserted_at is None:
                return False
            return self.clock() - self.inserted_at >= self.window_s

    # -- events --------------------------------------------------------------

    def confirm(self, typed: str, presence: Presence, *, typed_id: str | None = None) -> ResetStep:
        """Take the typed confirmation and the presence right now; arm the wizard when both allow it."""
        with self._lock:
            if self.step not in (ResetStep.INTRO, ResetStep.REFUSED):
                return self.step
            if not self._confirmation_matches(typed):
                self.message = f"The confirmation does not match: type {self.confirmation_hint}. Nothing was sent."
                return self.step
            if typed_id is not None and typed_id.strip():
                self.expected = ExpectedIdentity(self.expected.token_id, self.expected.serial, self.expected.fingerprint,
                                                 typed_id.strip())
            if self.expected.method == "none":
                self.message = "This key has no readable ID: type the ID printed on the key to confirm it is the right one."
                return self.step
            if self._refuse_others(presence):
                return self.step
            if presence.has_card(self.reader):
                self._go(ResetStep.WAIT_REMOVE, f"Remove the key {self.token_label} from {self.reader} now.")
            else:
                self._enter_wait_insert(presence)
            return self.step

    def hold(self, reason: str) -> ResetStep:
        """Stay unarmed and show `reason`: a precondition outside the key failed, so the technician fixes it and confirms again."""
        with self._lock:
            if self.step in (ResetStep.INTRO, ResetStep.REFUSED):
                self.message = reason
            return self.step

    def presence(self, presence: Presence) -> ResetStep:
        """Take a presence snapshot: notice the removal, then the re-insertion."""
        with self._lock:
            if self.step is ResetStep.WAIT_REMOVE and not presence.has_card(self.reader):
                self._enter_wait_insert(presence)
                return self.step
            if self.step is not ResetStep.WAIT_INSERT:
                return self.step
            # Only a card that was not there when the removal was seen counts as the insertion.
            inserted = [reader for reader in presence.readers_with_card if reader not in self._baseline]
            if not inserted:
                self._baseline &= set(presence.readers_with_card)
                return self.step
            if self._refuse_others(presence):
                return self.step
            self.reader = inserted[0]
            self.inserted_at = self.clock()
            self._go(ResetStep.CHECKING, "Key inserted: checking it is the same key, then sending the reset.")
            return self.step

    def identity_checked(self, check: IdentityCheck) -> ResetAction:
        """Take the identity verdict; return SEND_RESET when the reset must go out now, else NONE."""
        with self._lock:
            if self.step is not ResetStep.CHECKING:
                return ResetAction.NONE
            self.identity = check
            if check.verdict is Verdict.DIFFERENT:
                found = f" ({check.method} {check.found})" if check.found else ""
                self._go(ResetStep.WAIT_REMOVE,
                         f"A different key was inserted{found}; this reset is for {self.token_label}. Nothing was sent. "
                         f"Remove it and insert {self.token_label}.")
                return ResetAction.NONE
            if check.verdict is Verdict.UNKNOWN:
                self._go(ResetStep.WAIT_REMOVE,
                         f"keytriage could not confirm that this is {self.token_label} ({check.detail or check.method}). "
                         "Nothing was sent. Remove the key and insert it again.")
                return ResetAction.NONE
            elapsed = self.clock() - (self.inserted_at or 0.0)
            if elapsed >= self.window_s:
                self._go(ResetStep.WAIT_REMOVE, f"{TOO_LATE_TEXT} Nothing was sent ({elapsed:.1f} s after insertion, "
                                                f"the key allows {self.window_s:g} s).")
                return ResetAction.NONE
            self.resets_sent += 1
            self.cancel_event = threading.Event()
            self._go(ResetStep.SENDING, "Reset sent. Touch the key when it blinks.")
            return ResetAction.SEND_RESET

    def keepalive(self, status: int) -> ResetStep:
        """Take a keepalive status; UPNEEDED (2) means the key waits for a touch."""
        with self._lock:
            if self.step is ResetStep.SENDING and int(status) == 2:
                self._go(ResetStep.WAIT_TOUCH, "Touch the key now: it waits for the user's touch to erase FIDO.")
            return self.step

    def reset_finished(self, result: FidoResult | None) -> ResetStep:
        """Take the reset's outcome: None for success, else the decoded CTAP error."""
        with self._lock:
            if self.step not in (ResetStep.SENDING, ResetStep.WAIT_TOUCH):
                return self.step
            self.result = result
            if result is None:
                self._go(ResetStep.DONE, "FIDO reset done: every FIDO credential and the FIDO PIN are erased. "
                                         "The user must register the key again with every relying party.")
            else:
                self._go(ResetStep.FAILED, reset_outcome_words(result))
            return self.step

    def retry(self) -> ResetStep:
        """Arm the wizard again after a failure (the technician's confirmation); it waits for a removal."""
        with self._lock:
            if self.step is ResetStep.FAILED:
                self.result = None
                self._go(ResetStep.WAIT_REMOVE, f"Remove the key {self.token_label} again; the reset goes out as soon as it is back.")
            return self.step

    def cancel(self) -> ResetStep:
        """Cancel: before the send nothing goes out; while the key waits, ask it to stop."""
        with self._lock:
            if self.step in CANCELLABLE_BEFORE_SEND:
                self._go(ResetStep.CANCELLED, "Reset cancelled. Nothing was sent to the key.")
            elif self.step in (ResetStep.SENDING, ResetStep.WAIT_TOUCH):
                self.cancel_event.set()
                self.message = "Cancelling: waiting for the key to confirm."
            elif self.step is ResetStep.FAILED:
                self._go(ResetStep.CANCELLED, f"{self.message} Reset abandoned.")
            return self.step

    # -- helpers -------------------------------------------------------------

    def _confirmation_matches(self, typed: str) -> bool:
        text = typed.strip()
        if text == CONFIRM_WORD:
            return True
        return bool(self.token_id) and len(text) == 4 and text.upper() == self.token_id[-4:].upper()

    def _refuse_others(self, presence: Presence) -> bool:
        if len(presence.readers_with_card) <= 1:
            return False
        names = ", ".join(reader for reader in presence.readers_with_card if reader != self.reader)
        self._go(ResetStep.REFUSED,
                 f"More than one token is attached (others in: {names}). A reset must never reach the wrong key: "
                 "remove the other tokens, then confirm again. Nothing was sent.")
        return True

    def _enter_wait_insert(self, presence: Presence) -> None:
        self._baseline = set(presence.readers_with_card)
        self._go(ResetStep.WAIT_INSERT, self._insert_text())

    def _insert_text(self) -> str:
        return (f"Insert the key {self.token_label} now. keytriage sends the reset at once; the key allows it only "
                f"within {self.window_s:g} s of insertion, then asks for a touch.")

    def _go(self, step: ResetStep, message: str) -> None:
        log.info("FIDO reset wizard for %s: %s -> %s", self.token_label, self.step.value, step.value)
        self.step = step
        self.message = message


# --- device side (device thread only) ---------------------------------------------------------------


def card_present(backend: Any, reader: str) -> bool:
    """Return True when `reader` holds a card: the lab backend's flag, else a PC/SC connect probe."""
    is_present = getattr(backend, "is_present", None)
    if is_present is not None:
        return bool(is_present(reader))
    transport = backend.open(reader)
    try:
        transport.connect()
    except PcscError:
        # NOTE: any connect failure counts as "no card", so a reader held exclusively by another program looks empty.
        return False
    try:
        transport.disconnect()
    except PcscError as exc:
        log.debug("disconnect after the presence probe of %s failed: %s", reader, exc)
    return True


def read_presence(backend: Any) -> Presence:
    """Return the readers that hold a card now; a reader that vanished (a USB token unplugged) has none."""
    try:
        readers = backend.list_readers()
    except PcscError as exc:
        # The smart-card service may restart when the last USB token leaves; it counts as "no card".
        log.info("listing readers during the FIDO reset failed: %s", exc)
        return Presence(())
    return Presence(tuple(reader for reader in readers if card_present(backend, reader)))


def info_fingerprint(info: Any) -> str:
    """Return a fingerprint of a getInfo response: SHA-256 over its fields that stay fixed across a re-insertion.

    Keys of one model and firmware share it, so it only tells models and
    firmware apart; it is used when the key has no other ID.
    """
    from fido2 import cbor

    fixed = {
        1: list(info.versions),
        2: list(info.extensions),
        3: bytes(info.aaguid),
        4: {k: v for k, v in info.options.items() if k != "clientPin"},
        5: info.max_msg_size,
        6: list(info.pin_uv_protocols),
        9: list(info.transports),
        14: info.firmware_version,
    }
    return hashlib.sha256(cbor.encode(fixed)).hexdigest()[:32]


def expected_identity(discovery: Any, token_id: str | None) -> ExpectedIdentity:
    """Read what identifies the key before it is removed: the HID serial and the getInfo fingerprint."""
    serial, fingerprint = _hid_serial_and_fingerprint(discovery)
    return ExpectedIdentity(token_id=token_id, serial=serial, fingerprint=fingerprint)


def _hid_serial_and_fingerprint(discovery: Any) -> tuple[str | None, str | None]:
    from fido2.ctap import CtapError
    from fido2.ctap2 import Ctap2

    endpoint = discovery.best() if discovery is not None else None
    if endpoint is None or endpoint.device is None:
        return None, None
    serial = getattr(endpoint.device, "serial_number", None) or None
    try:
        fingerprint = info_fingerprint(Ctap2(endpoint.device).info)
    except (CtapError, OSError, ValueError, KeytriageError) as exc:
        log.info("getInfo for the FIDO reset identity check failed: %s", exc)
        fingerprint = None
    return serial, fingerprint


def check_identity(backend: Any, reader: str, expected: ExpectedIdentity, settings: Any, discovery: Any) -> IdentityCheck:
    """Compare the key now in `reader` with `expected`, by the first method both sides have."""
    if expected.token_id:
        from tui.scan import scan_reader

        token = scan_reader(backend, reader, 0, settings)
        if token.token_id is not None:
            found = str(token.token_id)
            verdict = Verdict.SAME if found == expected.token_id else Verdict.DIFFERENT
            return IdentityCheck(verdict, "smart-card ID", found)
        if not (expected.serial or expected.fingerprint or expected.typed_id):
            return IdentityCheck(Verdict.UNKNOWN, "smart-card ID", None,
                                 f"the smart-card ID could not be read: {token.error or 'no ID source answered'}")

    serial, fingerprint = _hid_serial_and_fingerprint(discovery)
    if expected.serial and serial:
        return IdentityCheck(Verdict.SAME if serial == expected.serial else Verdict.DIFFERENT, "USB serial number", serial)
    if expected.fingerprint and fingerprint:
        verdict = Verdict.SAME if fingerprint == expected.fingerprint else Verdict.DIFFERENT
        return IdentityCheck(verdict, "getInfo fingerprint", fingerprint[:12])
    if expected.typed_id:
        # The technician read the ID off the key in hand, and only one token is attached.
        return IdentityCheck(Verdict.SAME, "ID typed from the key", expected.typed_id)
    return IdentityCheck(Verdict.UNKNOWN, expected.method, None, "no identity source could be read after insertion")


def send_reset(discovery: Any, event: threading.Event, on_keepalive: Callable[[int], None] | None,
               reset_window_s: float | None = None) -> FidoResult | None:
    """Send authenticatorReset through the best endpoint; return None on success, else the decoded error."""
    from fido2.ctap import CtapError
    from fido2.ctap2 import Ctap2

    endpoint = discovery.best() if discovery is not None else None
    if endpoint is None or endpoint.device is None:
        raise ResetError("No FIDO authenticator was found on the re-inserted key, so the reset was not sent. "
                         "Check the key's FIDO interface and retry.")
    try:
        ctap = Ctap2(endpoint.device)
    except CtapError as exc:
        return decode_ctap_error(exc, transport=endpoint.transport, reset_window_s=reset_window_s)
    except OSError as exc:
        raise ResetError(f"The key stopped responding before the reset was sent ({exc}); nothing was reset. "
                         "Reinsert it and start the reset again.") from exc

    try:
        ctap.reset(event=event, on_keepalive=on_keepalive)
    except CtapError as exc:
        return decode_ctap_error(exc, transport=endpoint.transport, reset_window_s=reset_window_s)
    except OSError as exc:
        # The command may have reached the key before the connection broke.
        raise ResetError(f"The connection broke while the reset was in progress ({exc}); the key may or may not "
                         "have been reset. Reinsert it and press f to read its FIDO state before anything else.") from exc
    return None


class ResetError(KeytriageError):
    """The reset could not be sent. The message gives the reason."""


IdentityChecker = Callable[[Any, str, ExpectedIdentity, Any, Any], IdentityCheck]
DiscoveryOpener = Callable[[Any, str], Any]


def _open_discovery(backend: Any, reader: str) -> Any:
    from tui.fido.discovery import find_fido_devices

    return find_fido_devices(reader, backend)


class ResetRunner:
    """Runs the wizard's device work on the device thread: presence, identity, reset.

    `on_change` is called (on the device thread) after every step change, so
    the UI can post a message. `audit` receives one "fido-reset" record per
    reset sent or withheld after an insertion.
    """

    def __init__(self, wizard: ResetWizard, backend: Any, settings: Any, *, audit: Any = None,
                 on_change: Callable[[], None] | None = None, identity_checker: IdentityChecker = check_identity,
                 open_discovery: DiscoveryOpener = _open_discovery) -> None:
        self.wizard = wizard
        self.backend = backend
        self.settings = settings
        self.audit = audit
        self.on_change = on_change or (lambda: None)
        self.identity_checker = identity_checker
        self.open_discovery = open_discovery

    def arm(self, typed: str, *, typed_id: str | None = None) -> ResetStep:
        """Read presence and the expected identity, then pass the technician's confirmation to the wizard."""
        wizard = self.wizard
        presence = read_presence(self.backend)
        if wizard.expected.token_id is None and presence.has_card(wizard.reader):
            discovery = self.open_discovery(self.backend, wizard.reader)
            try:
                wizard.expected = expected_identity(discovery, None)
            finally:
                discovery.close()
        step = wizard.confirm(typed, presence, typed_id=typed_id)
        self.on_change()
        return step

    def poll(self) -> ResetStep:
        """Do the pending device work once: presence, then on insertion the identity check and the reset."""
        wizard = self.wizard
        if wizard.pending_action is ResetAction.WATCH_PRESENCE:
            before = wizard.step
            wizard.presence(read_presence(self.backend))
            if wizard.step is not before:
                self.on_change()
        if wizard.pending_action is ResetAction.CHECK_IDENTITY:
            self._check_and_send()
        return wizard.step

    def _check_and_send(self) -> None:
        wizard = self.wizard
        discovery = None
        try:
            discovery = self.open_discovery(self.backend, wizard.reader)
            try:
                check = self.identity_checker(self.backend, wizard.reader, wizard.expected, self.settings, discovery)
            except (PcscError, KeytriageError) as exc:
                check = IdentityCheck(Verdict.UNKNOWN, wizard.expected.method, None, f"reading the key failed: {exc}")
            action = wizard.identity_checked(check)
            if action is not ResetAction.SEND_RESET:
                self._audit("not-sent", check, message=wizard.message)
                return
            self.on_change()
            try:
                result = send_reset(discovery, wizard.cancel_event, self._keepalive, wizard.window_s)
            except (ResetError, PcscError, OSError) as exc:
                wizard.reset_finished(decode_ctap_error(0x7F))
                wizard.message = str(exc) if isinstance(exc, ResetError) else f"The reset could not be sent: {exc}"
                self._audit("failed", check, message=wizard.message)
                return
            wizard.reset_finished(result)
            self._audit("done" if result is None else result.kind.value, check, result=result)
        finally:
            if discovery is not None:
                discovery.close()
            self.on_change()

    def _keepalive(self, status: int) -> None:
        before = self.wizard.step
        self.wizard.keepalive(status)
        if self.wizard.step is not before:
            self.on_change()

    def _audit(self, outcome: str, check: IdentityCheck, *, result: FidoResult | None = None, message: str | None = None) -> None:
        if self.audit is None:
            return
        try:
            self.audit.record(
                "fido-reset", outcome, token_id=self.wizard.token_id or f"reader:{self.wizard.reader}",
                status=f"CTAP 0x{result.code:02X}" if result is not None else None,
                reader=self.wizard.reader, method=check.method, applet="FIDO", message=message)
        except KeytriageError as exc:
            log.warning("Cannot write the fido-reset audit record: %s", exc)
