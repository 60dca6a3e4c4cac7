"""Lab OTP applets: HID Crescendo OATH instances and YubiKey OTP and OATH application stubs.

The HID instances return the slot configuration to SELECT in the layout that
`tui.oath` infers, because HID documents the `6F ...` reply but not its
content. HOTP AUTHENTICATE `80 88 00 00 00` returns the code as BCD and
advances the counter. TOTP AUTHENTICATE `80 88 11 00 04 <time>` needs a
verified PIN. A slot can be set to need a button press: it then answers 6985
until `press_button()` is called, as the real key does while its LED blinks.

The YubiKey stubs cover what the listing reads: the OTP application's status
structure, and the OATH application's SELECT, LIST and CALCULATE. Each applet
counts its code calculations so tests can prove a listing made none.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tui.hotp import ALGORITHMS, hotp, hotp_value, to_bcd
from tui.lab.card import (
    SW_CONDITIONS,
    SW_INS_NOT_SUPPORTED,
    SW_NOT_DEFINED,
    SW_OK,
    SW_SECURITY_STATUS,
    SW_WRONG_DATA,
    SW_WRONG_LENGTH,
    SW_WRONG_P1P2,
    Applet,
    CredentialStore,
    VirtualCard,
    tlv,
)
from tui.oath import HID_ALGORITHMS, HID_EMPTY_MODE, HID_MODES, YUBIKEY_OATH_ALGORITHMS, YUBIKEY_OATH_TYPES
from tui.secret import Secret

HID_OATH_AIDS = {
    1: bytes.fromhex("A0000000792300"),
    2: bytes.fromhex("A0000000792301"),
    3: bytes.fromhex("A0000000792302"),
}
YUBIKEY_OTP_AID = bytes.fromhex("A0000005272001")
YUBIKEY_OATH_AID = bytes.fromhex("A0000005272101")

INS_OATH_AUTHENTICATE = 0x88
P1_HOTP = 0x00
P1_TOTP = 0x11

# The codes of the inferred SELECT layout, taken from the host-side parser so both agree.
MODE_CODES = {None: HID_EMPTY_MODE} | {mode: code for code, mode in HID_MODES.items() if mode != "OCRA"}
ALGORITHM_CODES = {name: code for code, name in HID_ALGORITHMS.items()}

# The RFC 4226 test seed: lab slots use it so their codes can be checked against the RFC table.
RFC_4226_SEED = b"12345678901234567890"


@dataclass
class OathSlotConfig:
    """One HID OATH slot: `mode` None means empty; `seed` is the HMAC key."""

    mode: str | None = None
    algorithm: str = "SHA-1"
    digits: int = 6
    name: str = ""
    seed: Secret = field(default_factory=lambda: Secret(RFC_4226_SEED, "OATH seed"))
    counter: int = 0
    time_step: int = 30

    def __post_init__(self) -> None:
        if self.mode not in MODE_CODES:
            raise ValueError(f"OATH slot mode {self.mode!r} is not HOTP, TOTP or None (empty)")
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"OATH slot algorithm {self.algorithm!r} is not one of {', '.join(ALGORITHMS)}")
        if self.digits not in (6, 8, 10):
            raise ValueError(f"HID OATH slots have 6, 8 or 10 digits, got {self.digits}")


def hotp_slot(*, counter: int = 0, name: str = "OATH HOTP", digits: int = 6, algorithm: str = "SHA-1",
              seed: bytes = RFC_4226_SEED) -> OathSlotConfig:
    """Build a configured HOTP slot."""
    return OathSlotConfig("HOTP", algorithm, digits, name, Secret(seed, "OATH seed"), counter)


def totp_slot(*, name: str = "OATH TOTP", digits: int = 6, algorithm: str = "SHA-1", time_step: int = 30,
              seed: bytes = RFC_4226_SEED) -> OathSlotConfig:
    """Build a configured TOTP slot."""
    return OathSlotConfig("TOTP", algorithm, digits, name, Secret(seed, "OATH seed"), time_step=time_step)


class HidOathInstance(Applet):
    """One HID Crescendo OATH instance (slot 1, 2 or 3).

    `needs_button` makes OTP generation return 6985 until `press_button()`
    is called, and the next code spends the press. `store` is the card's
    credential store, for the PIN that TOTP AUTHENTICATE needs.
    """

    def __init__(self, slot: int, config: OathSlotConfig | None = None, *, store: CredentialStore | None = None,
                 needs_button: bool = False) -> None:
        if slot not in HID_OATH_AIDS:
            raise ValueError(f"HID OATH slot {slot} does not exist; use 1, 2 or 3")
        if slot == 1 and config is not None and config.mode == "TOTP":
            raise ValueError("HID OATH slot 1 holds HOTP only")
        self.slot = slot
        self.aid = HID_OATH_AIDS[slot]
        self.config = config or OathSlotConfig()
        self.store = store
        self.needs_button = needs_button
        self.button_pressed = False
        self.waiting_for_button = False
        self.codes_generated = 0

    def press_button(self) -> None:
        """Press the key's button: the next pending or future generation goes through."""
        self.button_pressed = True

    def select(self, p1: int, p2: int, data: bytes) -> bytes:
        """Return the FCI with the slot configuration in the proprietary template A5."""
        config = self.config
        fields = tlv(0x80, bytes((MODE_CODES[config.mode],)))
        if config.mode is not None:
            fields += tlv(0x81, bytes((ALGORITHM_CODES[config.algorithm],)))
            fields += tlv(0x82, bytes((config.digits,)))
            if config.mode == "HOTP":
                fields += tlv(0x83, config.counter.to_bytes(8, "big"))
            fields += tlv(0x84, config.name.encode("ascii"))
        return tlv(0x6F, tlv(0x84, self.aid) + tlv(0xA5, fields)) + SW_OK

    def on_power_on(self) -> None:
        """Forget a pending button wait; the slot configuration and counter persist."""
        self.button_pressed = False
        self.waiting_for_button = False

    def on_card_reset(self) -> None:
        """Empty the slot, as RESET CARD wipes every OATH slot."""
        self.config = OathSlotConfig()

    def process(self, cla: int, ins: int, p1: int, p2: int, data: bytes, le: int | None) -> bytes:
        """Handle HOTP and TOTP AUTHENTICATE."""
        if ins != INS_OATH_AUTHENTICATE or cla not in (0x80, 0x90):
            return SW_INS_NOT_SUPPORTED
        if p1 == P1_HOTP and p2 == 0x00:
            return self._hotp(data)
        if p1 == P1_TOTP and p2 == 0x00:
            return self._totp(data)
        return SW_WRONG_P1P2

    def _hotp(self, data: bytes) -> bytes:
        config = self.config
        if data:
            return SW_WRONG_LENGTH
        if config.mode != "HOTP":
            # NOTE: the status word of HOTP AUTHENTICATE on an empty or TOTP slot is not documented.
            return SW_NOT_DEFINED
        if not self._button_ready():
            return SW_CONDITIONS

        code = hotp(config.seed.reveal_bytes(), config.counter, digits=config.digits, algorithm=config.algorithm)
        config.counter += 1
        self.codes_generated += 1
        return to_bcd(code) + SW_OK

    def _totp(self, data: bytes) -> bytes:
        config = self.config
        if len(data) != 4:
            return SW_WRONG_LENGTH
        if config.mode != "TOTP":
            return SW_NOT_DEFINED
        if self.store is None or not self.store.pin_verified:
            return SW_SECURITY_STATUS
        if not self._button_ready():
            return SW_CONDITIONS

        step = int.from_bytes(data, "big") // config.time_step
        code = hotp(config.seed.reveal_bytes(), step, digits=config.digits, algorithm=config.algorithm)
        self.codes_generated += 1
        return to_bcd(code) + SW_OK

    def _button_ready(self) -> bool:
        if not self.needs_button:
            return True
        if self.button_pressed:
            self.button_pressed = False
            self.waiting_for_button = False
            return True
        self.waiting_for_button = True
        return False


def install_applets(card: VirtualCard, applets: list[Applet]) -> None:
    """Add applets to an existing lab card (the key builders make cards without OTP applets)."""
    with card.lock:
        for applet in applets:
            applet.card = card
            card.applets.append(applet)


def install_hid_oath(card: VirtualCard, slots: dict[int, OathSlotConfig], *, store: CredentialStore | None = None,
                     needs_button: bool = False) -> list[HidOathInstance]:
    """Add the three HID OATH instances to `card`, configured from `slots` (missing slots are empty)."""
    instances = [HidOathInstance(number, slots.get(number), store=store, needs_button=needs_button)
                 for number in sorted(HID_OATH_AIDS)]
    install_applets(card, list(instances))
    return instances


# --- YubiKey OTP application --------------------------------------------------------------


class YubiKeyOtpApplet(Applet):
    """The YubiKey OTP application, as far as its status structure goes.

    SELECT and READ STATUS (`00 03 00 00`) return firmware version,
    configuration sequence and the touch level, whose low byte flags slot 1
    and 2 as configured (01, 02) and touch-triggered (04, 08).
    """

    aid = YUBIKEY_OTP_AID

    def __init__(self, firmware: tuple[int, int, int] = (5, 4, 3), *, short_press: bool = True,
                 long_press: bool = False, sequence: int = 1) -> None:
        self.firmware = firmware
        self.short_press = short_press
        self.long_press = long_press
        self.sequence = sequence

    def status(self) -> bytes:
        """The 6-byte status structure: version, sequence, touch level (little-endian)."""
        flags = 0
        if self.short_press:
            flags |= 0x01 | 0x04
        if self.long_press:
            flags |= 0x02 | 0x08
        sequence = self.sequence if (self.short_press or self.long_press) else 0
        return bytes((*self.firmware, sequence)) + flags.to_bytes(2, "little")

    def select(self, p1: int, p2: int, data: bytes) -> bytes:
        """Return the status structure."""
        return self.status() + SW_OK

    def process(self, cla: int, ins: int, p1: int, p2: int, data: bytes, le: int | None) -> bytes:
        """Handle READ STATUS; other OTP commands are not emulated."""
        if ins == 0x03 and (p1, p2) == (0x00, 0x00):
            return self.status() + SW_OK
        return SW_INS_NOT_SUPPORTED


# --- YubiKey OATH application -------------------------------------------------------------


@dataclass
class OathAccount:
    """One account of the YubiKey OATH application."""

    name: str
    oath_type: str = "TOTP"
    algorithm: str = "SHA-1"
    digits: int = 6
    seed: Secret = field(default_factory=lambda: Secret(RFC_4226_SEED, "OATH seed"))
    counter: int = 0


YUBIKEY_TYPE_CODES = {name: code for code, name in YUBIKEY_OATH_TYPES.items()}
YUBIKEY_ALGORITHM_CODES = {name: code for code, name in YUBIKEY_OATH_ALGORITHMS.items()}


class YubiKeyOathApplet(Applet):
    """The YubiKey OATH application: SELECT, LIST and CALCULATE of one account.

    `calculations` counts CALCULATE commands, and an HOTP calculation advances
    that account's counter as on the real key.
    """

    aid = YUBIKEY_OATH_AID

    def __init__(self, accounts: list[OathAccount], *, version: tuple[int, int, int] = (5, 4, 3),
                 password_set: bool = False) -> None:
        self.accounts = accounts
        self.version = version
        self.password_set = password_set
        self.calculations = 0

    def select(self, p1: int, p2: int, data: bytes) -> bytes:
        """Return 79 version and 71 device ID, plus 74 challenge when a password is set."""
        reply = tlv(0x79, bytes(self.version)) + tlv(0x71, bytes.fromhex("1AB01AB01AB01AB0"))
        if self.password_set:
            reply += tlv(0x74, bytes(8)) + tlv(0x7B, b"\x01")
        return reply + SW_OK

    def process(self, cla: int, ins: int, p1: int, p2: int, data: bytes, le: int | None) -> bytes:
        """Handle LIST (A1) and CALCULATE (A2)."""
        if self.password_set and ins in (0xA1, 0xA2, 0xA4):
            return SW_SECURITY_STATUS
        if ins == 0xA1:
            entries = b"".join(
                tlv(0x72, bytes((YUBIKEY_TYPE_CODES[a.oath_type] << 4 | YUBIKEY_ALGORITHM_CODES[a.algorithm],)) + a.name.encode())
                for a in self.accounts
            )
            return entries + SW_OK
        if ins == 0xA2:
            return self._calculate(data)
        return SW_INS_NOT_SUPPORTED

    def _calculate(self, data: bytes) -> bytes:
        # Data: 71 name, 74 challenge (8-byte time step for TOTP, empty for HOTP).
        if len(data) < 2 or data[0] != 0x71:
            return SW_WRONG_DATA
        name = data[2:2 + data[1]].decode(errors="replace")
        account = next((a for a in self.accounts if a.name == name), None)
        if account is None:
            return b"\x69\x84"
        challenge = data[4 + data[1]:]

        self.calculations += 1
        if account.oath_type == "HOTP":
            # The challenge is ignored: the account's own counter is the moving factor.
            moving_factor = account.counter
            account.counter += 1
        else:
            moving_factor = int.from_bytes(challenge, "big")
        value = hotp_value(account.seed.reveal_bytes(), moving_factor, algorithm=account.algorithm)
        return tlv(0x76, bytes((account.digits,)) + value.to_bytes(4, "big")) + SW_OK


def install_yubikey_otp(card: VirtualCard, accounts: list[OathAccount], **otp_options) -> tuple[YubiKeyOtpApplet, YubiKeyOathApplet]:
    """Add the YubiKey OTP and OATH applications to `card`."""
    otp = YubiKeyOtpApplet(**otp_options)
    oath = YubiKeyOathApplet(accounts)
    install_applets(card, [otp, oath])
    return otp, oath


__all__ = [
    "HID_OATH_AIDS",
    "HidOathInstance",
    "OathAccount",
    "OathSlotConfig",
    "YubiKeyOathApplet",
    "YubiKeyOtpApplet",
    "hotp_slot",
    "install_applets",
    "install_hid_oath",
    "install_yubikey_otp",
    "totp_slot",
]
