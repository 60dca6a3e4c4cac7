"""OTP slot read-out (runbook Step 5) and the explicit one-code HOTP generation.

Listing never calculates a code, because every HOTP calculation advances the
token's counter and widens the drift it may be diagnosing. It sends only:

- HID Crescendo: SELECT of the three OATH instances `A0000000792300` (slot 1,
  HOTP only, the button slot), `A0000000792301` and `A0000000792302`.
- YubiKey: SELECT of the OTP application (`A0 00 00 05 27 20 01`). Its reply
  starts with the status structure: firmware version, configuration sequence
  and the touch level with the slot flags. Then SELECT of the OATH application
  (`A0 00 00 05 27 21 01`) and LIST (`00 A1 00 00`), which returns each
  account's name, type and algorithm without calculating anything.

Each field comes from a documented reply or is None, which the screen shows as
"unknown". Generating a code is `generate_hotp_code`, a separate function that
needs an explicit acknowledgement that it spends one counter step.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tui.apdu import CommandApdu, Status, StatusKind
from tui.errors import MalformedResponseError, PolicyError
from tui.hotp import from_bcd
from tui.model import Profile
from tui.piv import select_command
from tui.secret import Secret
from tui.settings import SiteSettings
from tui.transport import Channel

# HID Crescendo OATH instances by slot number. Slot 1 is the button slot and
# takes HOTP only, while slots 2 and 3 take HOTP or TOTP.
HID_OATH_INSTANCES = {
    1: bytes.fromhex("A0000000792300"),
    2: bytes.fromhex("A0000000792301"),
    3: bytes.fromhex("A0000000792302"),
}
HID_BUTTON_SLOT = 1

YUBIKEY_OTP_AID = bytes.fromhex("A0000005272001")
YUBIKEY_OATH_AID = bytes.fromhex("A0000005272101")

UNKNOWN = "unknown"


class OtpApplet(str, enum.Enum):
    """The applet a slot or account lives in."""

    HID_OATH = "HID OATH instance"
    YUBIKEY_OTP = "YubiKey OTP application"
    YUBIKEY_OATH = "YubiKey OATH application"


@dataclass
class OtpSlot:
    """One OTP slot or OATH account as the listing read it; None means unknown.

    `touch_triggered` is True when touching the key makes it type this slot's
    output. `inferred` marks fields parsed from an undocumented reply layout
    (lab key, or a site that allows unverified commands).
    """

    applet: OtpApplet
    slot: str
    aid: str
    present: bool | None = None
    configured: bool | None = None
    mode: str | None = None
    algorithm: str | None = None
    digits: int | None = None
    name: str | None = None
    counter: int | None = None
    touch_triggered: bool | None = None
    button_slot: bool = False
    source: str = ""
    inferred: bool = False

    @property
    def label(self) -> str:
        """E.g. "OTP slot 1", "YubiKey OTP short press", "OATH account 2"."""
        if self.applet is OtpApplet.HID_OATH:
            return f"OTP slot {self.slot}"
        if self.applet is OtpApplet.YUBIKEY_OTP:
            return f"YubiKey OTP {self.slot}"
        return f"OATH account {self.slot}"

    def field_texts(self) -> dict[str, str]:
        """Return each field as the screen shows it, "unknown" where it could not be read."""

        def text(value: object) -> str:
            if value is None:
                return UNKNOWN
            if isinstance(value, bool):
                return "yes" if value else "no"
            return str(value)

        if self.present is False:
            configured = "not present"
        elif self.configured is None:
            configured = UNKNOWN
        elif self.configured:
            configured = "configured"
        else:
            configured = "empty"
        return {
            "slot": self.label,
            "state": configured,
            "mode": text(self.mode),
            "algorithm": text(self.algorithm),
            "digits": text(self.digits),
            "name": text(self.name),
            "counter": text(self.counter),
            "types on touch": text(self.touch_triggered),
        }

    def summary(self) -> str:
        """Return one line for lists, e.g. "OTP slot 1: configured, HOTP, SHA-1, 6 digits"."""
        texts = self.field_texts()
        if texts["state"] in ("not present", "empty"):
            return f"{self.label}: {texts['state']}"
        parts = [texts["state"], texts["mode"], texts["algorithm"], f"{texts['digits']} digits"]
        if self.name:
            parts.append(f"name {self.name!r}")
        return f"{self.label}: " + ", ".join(parts)

    def to_dict(self) -> dict:
        """Return the slot as JSON-ready data, with null for unknown fields."""
        return {
            "applet": self.applet.value,
            "slot": self.slot,
            "aid": self.aid,
            "present": self.present,
            "configured": self.configured,
            "mode": self.mode,
            "algorithm": self.algorithm,
            "digits": self.digits,
            "name": self.name,
            "counter": self.counter,
            "touch_triggered": self.touch_triggered,
            "button_slot": self.button_slot,
            "source": self.source,
            "inferred": self.inferred,
        }


@dataclass
class OtpSlots:
    """Every OTP slot and OATH account one token listed (runbook Step 5)."""

    profile: Profile
    slots: list[OtpSlot] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def inferred(self) -> bool:
        """True when any field rests on an undocumented reply layout."""
        return any(slot.inferred for slot in self.slots)

    def present(self) -> list[OtpSlot]:
        """Return the slots whose applet or instance returned 9000 to SELECT."""
        return [slot for slot in self.slots if slot.present]

    def button_slot(self) -> OtpSlot | None:
        """Return the slot the key's button types (HID slot 1, YubiKey short press), if listed."""
        for slot in self.slots:
            if slot.button_slot:
                return slot
        return None

    def to_dict(self) -> dict:
        """Return the listing as JSON-ready data."""
        return {
            "profile": self.profile.value,
            "slots": [slot.to_dict() for slot in self.slots],
            "notes": list(self.notes),
            "inferred": self.inferred,
        }


def inferred_fields_allowed(settings: SiteSettings, is_lab: bool) -> bool:
    """Return True when replies with an undocumented layout may be parsed (lab key or site switch)."""
    return is_lab or settings.allow_unverified_commands


def list_otp_slots(channel: Channel, profile: Profile, settings: SiteSettings, is_lab: bool) -> OtpSlots:
    """List the token's OTP slots and OATH accounts without generating any code (runbook Step 5).

    HID Crescendo keys get their three OATH instances, YubiKeys their OTP
    application slots and OATH accounts. A generic or unknown card is probed
    for both, which costs only SELECTs and LIST. Transport errors propagate as
    `PcscError`.
    """
    result = OtpSlots(profile)
    with channel.transaction():
        if profile in (Profile.HID_CRESCENDO, Profile.GENERIC_PIV, Profile.UNKNOWN):
            _list_hid(channel, result, inferred_fields_allowed(settings, is_lab))
        if profile in (Profile.YUBIKEY, Profile.GENERIC_PIV, Profile.UNKNOWN):
            _list_yubikey_otp(channel, result)
            _list_yubikey_oath(channel, result)

    if profile in (Profile.GENERIC_PIV, Profile.UNKNOWN):
        # Probing both command sets lists the other vendor's absent slots too, so keep the present ones.
        result.slots = [slot for slot in result.slots if slot.present]
    if not result.present():
        result.notes.append("No OTP slot or OATH application answered: this token has no OTP function to check.")
    return result


# --- HID Crescendo OATH instances ---------------------------------------------------------

# NOTE: HID documents SELECT of an OATH instance (reply `6F 2F ...`) but not the
# content of its reply, and no command that reads a slot configuration back.
# The layout below is an inference, and the lab key implements it. The FCI's
# proprietary template A5 carries 80 mode (00 empty, 01 HOTP, 02 TOTP,
# 03 OCRA), 81 HMAC algorithm (01 SHA-1, 02 SHA-256, 03 SHA-512), 82 digits,
# 83 the 8-byte counter and 84 the friendly name. It is parsed only for the
# lab key or with `allow_unverified_commands`; real keys otherwise show unknown.
HID_MODES = {0x01: "HOTP", 0x02: "TOTP", 0x03: "OCRA"}
HID_ALGORITHMS = {0x01: "SHA-1", 0x02: "SHA-256", 0x03: "SHA-512"}
HID_DIGITS = (6, 8, 10)
HID_EMPTY_MODE = 0x00


def parse_simple_tlv(data: bytes) -> list[tuple[int, bytes]]:
    """Split one-byte-tag TLV data (lengths up to 81 xx) into (tag, value) pairs.

    Raises `MalformedResponseError` when a length runs past the data.
    """
    items: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise MalformedResponseError(f"TLV at byte {pos} has no length")
        tag, length = data[pos], data[pos + 1]
        pos += 2
        if length == 0x81:
            if pos >= len(data):
                raise MalformedResponseError(f"TLV tag {tag:02X} has a cut-off length")
            length = data[pos]
            pos += 1
        elif length > 0x81:
            raise MalformedResponseError(f"TLV tag {tag:02X} has an unsupported length byte {length:02X}")
        if pos + length > len(data):
            raise MalformedResponseError(f"TLV tag {tag:02X} claims {length} bytes but only {len(data) - pos} follow")
        items.append((tag, data[pos:pos + length]))
        pos += length
    return items


def parse_hid_oath_select(data: bytes, slot: OtpSlot) -> None:
    """Fill `slot` from an OATH instance SELECT reply, using the inferred layout above.

    Each value is taken only when it is one the token vendor documents as a
    slot option; anything else stays unknown. A reply that does not parse
    leaves every field unknown.
    """
    try:
        fci = dict(parse_simple_tlv(data)).get(0x6F)
        template = dict(parse_simple_tlv(fci)).get(0xA5) if fci is not None else None
        items = dict(parse_simple_tlv(template)) if template is not None else {}
    except MalformedResponseError:
        return

    mode = items.get(0x80)
    if mode is None or len(mode) != 1:
        return
    slot.inferred = True
    slot.source = "SELECT reply (inferred layout)"
    if mode[0] == HID_EMPTY_MODE:
        slot.configured = False
        return
    if mode[0] not in HID_MODES:
        return
    slot.configured = True
    slot.mode = HID_MODES[mode[0]]

    algorithm = items.get(0x81)
    if algorithm is not None and len(algorithm) == 1:
        slot.algorithm = HID_ALGORITHMS.get(algorithm[0])
    digits = items.get(0x82)
    if digits is not None and len(digits) == 1 and digits[0] in HID_DIGITS:
        slot.digits = digits[0]
    counter = items.get(0x83)
    if counter is not None and len(counter) == 8 and slot.mode == "HOTP":
        slot.counter = int.from_bytes(counter, "big")
    name = items.get(0x84)
    if name:
        slot.name = name.rstrip(b"\x00").decode("ascii", errors="replace")


def _list_hid(channel: Channel, result: OtpSlots, allow_inferred: bool) -> None:
    for number, aid in HID_OATH_INSTANCES.items():
        slot = OtpSlot(OtpApplet.HID_OATH, str(number), aid.hex().upper(), button_slot=number == HID_BUTTON_SLOT,
                       source="SELECT status word")
        response, status = channel.send(select_command(aid, f"SELECT OATH slot {number}"))
        if status.kind is StatusKind.NOT_SUPPORTED:
            slot.present = False
            slot.configured = False
        elif status.ok:
            slot.present = True
            if number == HID_BUTTON_SLOT:
                # HID documents slot 1 as HOTP-only, so its mode is known even when its content is not.
                slot.mode = "HOTP"
                slot.touch_triggered = True
            if allow_inferred:
                parse_hid_oath_select(response.data, slot)
        else:
            result.notes.append(f"SELECT OATH slot {number} answered {status}; the slot state is unknown.")
        result.slots.append(slot)

    if not allow_inferred and any(slot.present for slot in result.slots):
        result.notes.append(
            "HID documents no command that reads an OATH slot configuration back, so whether each slot is "
            "configured, its algorithm, digits and name are unknown. Ask the user to press the button in a "
            "text field: a typed code shows slot 1 is configured (and spends one counter step, usable for a resync)."
        )


# --- YubiKey OTP application --------------------------------------------------------------

# Touch level flags in the OTP status structure (little-endian 16 bits), as
# Yubico's ykpers and SDK define them: slot configured from firmware 2.1,
# slot triggered by touch from firmware 3.0.
CONFIG1_VALID = 0x01
CONFIG2_VALID = 0x02
CONFIG1_TOUCH = 0x04
CONFIG2_TOUCH = 0x08


@dataclass(frozen=True)
class OtpStatus:
    """The YubiKey OTP status structure: firmware version, configuration sequence, touch level."""

    version: tuple[int, int, int]
    sequence: int
    touch_level: int


def parse_otp_status(data: bytes) -> OtpStatus:
    """Parse the 6-byte status structure that starts the OTP application's SELECT reply."""
    if len(data) < 6:
        raise MalformedResponseError(f"OTP application status has {len(data)} bytes; expected at least 6")
    return OtpStatus((data[0], data[1], data[2]), data[3], int.from_bytes(data[4:6], "little"))


def _list_yubikey_otp(channel: Channel, result: OtpSlots) -> None:
    response, status = channel.send(select_command(YUBIKEY_OTP_AID, "SELECT OTP"))
    slots = [
        OtpSlot(OtpApplet.YUBIKEY_OTP, "short press", YUBIKEY_OTP_AID.hex().upper(), button_slot=True),
        OtpSlot(OtpApplet.YUBIKEY_OTP, "long press", YUBIKEY_OTP_AID.hex().upper()),
    ]
    if status.kind is StatusKind.NOT_SUPPORTED:
        for slot in slots:
            slot.present = False
        result.slots.extend(slots)
        return
    if not status.ok:
        result.notes.append(f"SELECT OTP answered {status}; the YubiKey OTP slots are unknown.")
        result.slots.extend(slots)
        return

    try:
        otp_status = parse_otp_status(response.data)
    except MalformedResponseError as exc:
        result.notes.append(f"The OTP application status could not be read ({exc}); the YubiKey OTP slots are unknown.")
        result.slots.extend(slots)
        return
    for slot, valid, touch in zip(slots, (CONFIG1_VALID, CONFIG2_VALID), (CONFIG1_TOUCH, CONFIG2_TOUCH)):
        slot.present = True
        slot.source = "OTP application status"
        if otp_status.version >= (2, 1, 0):
            slot.configured = bool(otp_status.touch_level & valid)
        if otp_status.version >= (3, 0, 0) and slot.configured:
            slot.touch_triggered = bool(otp_status.touch_level & touch)
    result.slots.extend(slots)
    if any(slot.configured for slot in slots):
        result.notes.append(
            "The YubiKey OTP status does not say which credential a slot holds (Yubico OTP, OATH-HOTP, static "
            "password or challenge-response), so its mode, algorithm and digits are unknown."
        )


# --- YubiKey OATH application -------------------------------------------------------------

YUBIKEY_OATH_TYPES = {0x1: "HOTP", 0x2: "TOTP"}
YUBIKEY_OATH_ALGORITHMS = {0x1: "SHA-1", 0x2: "SHA-256", 0x3: "SHA-512"}
TAG_NAME = 0x71
TAG_NAME_LIST = 0x72
TAG_CHALLENGE = 0x74
TAG_VERSION = 0x79

LIST_COMMAND = CommandApdu(0x00, 0xA1, 0x00, 0x00, le=0, name="OATH LIST")


def parse_oath_list(data: bytes) -> list[OtpSlot]:
    """Parse the OATH LIST reply: `72 L <type<<4 | algorithm> <name>` per account."""
    accounts = []
    for index, (tag, value) in enumerate(parse_simple_tlv(data), start=1):
        if tag != TAG_NAME_LIST or not value:
            raise MalformedResponseError(f"OATH LIST entry {index} has tag {tag:02X} and {len(value)} bytes; expected tag 72")
        kind = value[0]
        accounts.append(OtpSlot(
            OtpApplet.YUBIKEY_OATH, str(index), YUBIKEY_OATH_AID.hex().upper(),
            present=True, configured=True,
            mode=YUBIKEY_OATH_TYPES.get(kind >> 4), algorithm=YUBIKEY_OATH_ALGORITHMS.get(kind & 0x0F),
            name=value[1:].decode("utf-8", errors="replace"), source="OATH LIST",
        ))
    return accounts


def _list_yubikey_oath(channel: Channel, result: OtpSlots) -> None:
    response, status = channel.send(select_command(YUBIKEY_OATH_AID, "SELECT OATH"))
    if status.kind is StatusKind.NOT_SUPPORTED:
        return
    if not status.ok:
        result.notes.append(f"SELECT OATH answered {status}; the OATH accounts are unknown.")
        return

    # The SELECT reply carries a challenge (tag 74) only when an OATH password is set.
    try:
        select_items = dict(parse_simple_tlv(response.data))
    except MalformedResponseError as exc:
        result.notes.append(f"The OATH application's SELECT reply could not be read ({exc}); the accounts were not listed.")
        return
    if TAG_CHALLENGE in select_items:
        result.notes.append("The OATH accounts are protected by an OATH password, so they were not listed.")
        return

    # NOTE: the YubiKey OATH application documents SEND REMAINING (00 A5) after
    # 61xx; Channel sends GET RESPONSE (00 C0). Whether the key accepts that is
    # unverified, so a long account list may come back cut short.
    response, status = channel.send(LIST_COMMAND)
    if status.kind is StatusKind.SECURITY_STATUS:
        result.notes.append("OATH LIST needs the OATH password, so the accounts were not listed.")
        return
    try:
        accounts = parse_oath_list(response.data)
    except MalformedResponseError as exc:
        result.notes.append(f"The OATH LIST reply could not be read ({exc}); the accounts are unknown.")
        return
    if not status.ok:
        result.notes.append(f"OATH LIST ended with {status}; the account list may be incomplete.")
    result.slots.extend(accounts)
    if any(account.mode == "HOTP" for account in accounts):
        result.notes.append("HOTP accounts are listed, not calculated: calculating one advances its counter.")


# --- generating one HOTP code -------------------------------------------------------------


class HotpOutcome(str, enum.Enum):
    """Outcome of one HOTP generation."""

    CODE = "code"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed out"
    FAILED = "failed"


@dataclass
class HotpGeneration:
    """The result of one explicit HOTP generation. `code` is set only for `CODE`."""

    outcome: HotpOutcome
    code: Secret | None = None
    status: Status | None = None
    button_prompts: int = 0

    def message(self) -> str:
        """Describe the result in words, without the code."""
        if self.outcome is HotpOutcome.CODE:
            return f"One HOTP code generated ({len(self.code or '')} digits); the token's counter advanced by one."
        if self.outcome is HotpOutcome.CANCELLED:
            return "Cancelled while the key waited for its button; no code was generated."
        if self.outcome is HotpOutcome.TIMED_OUT:
            return f"The key's button was not pressed after {self.button_prompts} prompts; no code was generated."
        return f"HOTP AUTHENTICATE failed: {self.status}."


# Called with the number of the prompt (1, 2, ...) each time the key answers
# 6985; return False to cancel.
ButtonPrompt = Callable[[int], bool]

HOTP_AUTHENTICATE = CommandApdu(0x80, 0x88, 0x00, 0x00, le=0, name="HOTP AUTHENTICATE")


def generate_hotp_code(channel: Channel, slot: int = HID_BUTTON_SLOT, *, acknowledge_counter_advance: bool,
                       on_button_prompt: ButtonPrompt, max_prompts: int = 60, poll_interval: float = 0.5,
                       sleep: Callable[[float], None] = time.sleep) -> HotpGeneration:
    """Generate one HOTP code on an HID Crescendo OATH instance (HOTP AUTHENTICATE `80 88 00 00 00`).

    This advances the token's HOTP counter by one, so it needs
    `acknowledge_counter_advance=True`; without it `PolicyError` is raised
    before any APDU. While the key returns 6985 (LED blinking, waiting for its
    button), `on_button_prompt` is called and the command re-sent after
    `poll_interval` seconds, up to `max_prompts` times. The code is returned
    as a `Secret`; the caller audits the action and never logs the code.
    """
    if not acknowledge_counter_advance:
        raise PolicyError(
            "generating an HOTP code advances the token's counter by one and can widen a drift; "
            "confirm that the technician chose to spend one counter step"
        )
    if slot not in HID_OATH_INSTANCES:
        raise ValueError(f"HID OATH slot {slot} does not exist; use 1, 2 or 3")

    with channel.transaction():
        _, status = channel.send(select_command(HID_OATH_INSTANCES[slot], f"SELECT OATH slot {slot}"))
        if not status.ok:
            return HotpGeneration(HotpOutcome.FAILED, status=status)

        prompts = 0
        while True:
            response, status = channel.send(HOTP_AUTHENTICATE)
            if status.ok:
                return HotpGeneration(HotpOutcome.CODE, _decode_code(response.data), status, prompts)
            if status.kind is not StatusKind.CONDITIONS:
                return HotpGeneration(HotpOutcome.FAILED, status=status, button_prompts=prompts)

            if prompts >= max_prompts:
                return HotpGeneration(HotpOutcome.TIMED_OUT, status=status, button_prompts=prompts)
            prompts += 1
            if not on_button_prompt(prompts):
                return HotpGeneration(HotpOutcome.CANCELLED, status=status, button_prompts=prompts)
            sleep(poll_interval)


def _decode_code(data: bytes) -> Secret:
    # HID documents the code as BCD, 3 bytes for 6 digits (755224 -> 75 52 24).
    if not 3 <= len(data) <= 5:
        raise MalformedResponseError(f"HOTP AUTHENTICATE returned {len(data)} bytes; expected 3 to 5 BCD bytes")
    try:
        return Secret(from_bcd(data), "OTP code")
    except ValueError as exc:
        raise MalformedResponseError(str(exc)) from None
