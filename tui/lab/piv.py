"""The lab PIV applet: SP 800-73-4 PIN handling and data objects, plus the YubiKey extensions.

Status words follow SP 800-73-4 Part 2 and Yubico's published APDU pages:
VERIFY with no data is a status query that spends no try: it returns 63Cx,
9000 when already verified, or 6983 when blocked. A wrong PIN returns 63Cx
with the tries left, 63C0 on the attempt that blocks it, and 6983 afterwards.
NOTE: whether real cards return 63C0 or 6983 on the blocking attempt varies;
hosts must treat both as blocked. `PivQuirks`
switches on the deviations that OpenSC records for real YubiKeys.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from tui.lab.card import (
    SW_BLOCKED,
    SW_CLA_NOT_SUPPORTED,
    SW_CONDITIONS,
    SW_INS_NOT_SUPPORTED,
    SW_NOT_DEFINED,
    SW_NOT_FOUND,
    SW_OK,
    SW_WRONG_DATA,
    SW_WRONG_P1P2,
    AdminKey,
    AdminKeyType,
    Applet,
    CredentialStore,
    ReferenceData,
    pad_ff,
    reference,
    strip_ff,
    tlv,
    tries_sw,
)
from tui.secret import Secret

PIV_AID = bytes.fromhex("A000000308000010000100")

# The application property template a YubiKey returns to SELECT PIV (Yubico's
# VERIFY page shows it): PIX 0000100001 00 and the coexistent tag allocation authority A000000308.
PIV_SELECT_REPLY = bytes.fromhex("61114F0600001000010079074F05A000000308")

INS_VERIFY = 0x20
INS_CHANGE_REFERENCE = 0x24
INS_RESET_RETRY_COUNTER = 0x2C
INS_GET_DATA = 0xCB
INS_GET_METADATA = 0xF7
INS_GET_SERIAL = 0xF8
INS_RESET = 0xFB
INS_GET_VERSION = 0xFD

KEY_REF_PIN = 0x80
KEY_REF_PUK = 0x81
KEY_REF_MANAGEMENT = 0x9B

CHUID_TAG = bytes.fromhex("5FC102")

# Certificate data object of each key slot (SP 800-73-4 Part 1, table of container IDs).
SLOT_CERTIFICATE_TAGS = {
    0x9A: bytes.fromhex("5FC105"),  # PIV authentication
    0x9C: bytes.fromhex("5FC10A"),  # digital signature
    0x9D: bytes.fromhex("5FC10B"),  # key management
    0x9E: bytes.fromhex("5FC101"),  # card authentication
}

# YubiKey factory values: PIN 123456, PUK 12345678, 3 tries each, and the 3DES
# management key 0102030405060708 repeated three times (before firmware 5.7).
YUBIKEY_DEFAULT_PIN = b"123456"
YUBIKEY_DEFAULT_PUK = b"12345678"
YUBIKEY_DEFAULT_TRIES = 3
YUBIKEY_DEFAULT_MANAGEMENT_KEY = bytes.fromhex("010203040506070801020304050607080102030405060708")

# The FASC-N that yubico-piv-tool writes into every CHUID it generates (lib/util.c).
YUBIKEY_FASC_N = bytes.fromhex("D4E739DA739CED39CE739D836858210842108421C84210C3EB")

# GET METADATA algorithm byte per key reference type (Yubico metadata page).
_METADATA_ALGORITHM_PIN = 0xFF
_METADATA_ALGORITHM = {AdminKeyType.TDES: 0x03, AdminKeyType.AES128: 0x08}

METADATA_MIN_FIRMWARE = (5, 3, 0)


@dataclass
class PivQuirks:
    """Known deviations of real PIV cards, each off by default.

    - `counter_in_630x`: YubiKey NEO returns 630x instead of 63Cx.
    - `metadata_absent`: GET METADATA returns 6D00 whatever the firmware.
    - `status_query_never_ok`: a status query returns 63Cx even when verified
      (YubiKey before 4.3.2, per OpenSC's CI_VERIFY_LC0_FAIL).
    - `status_query_clears_verified`: a status query also drops the verified
      state (reported for YubiKey firmware 5.3.1).
    - `lose_state_on_deselect`: selecting another applet drops the verified
      PIN (YubiKey 4 and 5, per OpenSC's CI_OTHER_AID_LOSE_STATE).
    """

    counter_in_630x: bool = False
    metadata_absent: bool = False
    status_query_never_ok: bool = False
    status_query_clears_verified: bool = False
    lose_state_on_deselect: bool = False


@dataclass
class YubiKeyInfo:
    """YubiKey identity of a PIV applet: firmware version and device serial."""

    firmware: tuple[int, int, int] = (5, 4, 3)
    serial: int | None = None

    @property
    def has_metadata(self) -> bool:
        """True from firmware 5.3, which added GET METADATA."""
        return self.firmware >= METADATA_MIN_FIRMWARE


# --- data object builders -----------------------------------------------------------------


def chuid_object(guid: bytes, *, fasc_n: bytes = YUBIKEY_FASC_N, expiry: str = "20300101") -> bytes:
    """Build the content of a CHUID data object (the value inside tag 53).

    Layout as yubico-piv-tool writes it: 30 FASC-N, 34 GUID, 35 expiration
    date YYYYMMDD, 3E empty issuer signature, FE empty error detection code.
    """
    if len(guid) != 16:
        raise ValueError(f"a CHUID GUID has 16 bytes, got {len(guid)}")
    return tlv(0x30, fasc_n) + tlv(0x34, guid) + tlv(0x35, expiry.encode("ascii")) + tlv(0x3E, b"") + tlv(0xFE, b"")


def certificate_object(der: bytes) -> bytes:
    """Build the content of a certificate data object: 70 certificate, 71 uncompressed, FE empty EDC."""
    return tlv(0x70, der) + tlv(0x71, b"\x00") + tlv(0xFE, b"")


def self_signed_certificate(common_name: str, not_before: dt.datetime, not_after: dt.datetime) -> bytes:
    """Generate a self-signed P-256 certificate (DER) valid from `not_before` to `not_after`.

    The key is thrown away: the lab only needs certificates whose dates and
    subject a scan can read.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(Encoding.DER)


# --- the applet ---------------------------------------------------------------------------


class PivApplet(Applet):
    """A PIV applet over a shared `CredentialStore`; a YubiKey one when `yubikey` is given.

    `objects` maps a data object tag (3 bytes, e.g. 5FC102) to its content,
    the bytes inside tag 53. `pin_lengths` is the accepted length range of a
    new PIN or PUK in CHANGE REFERENCE DATA and RESET RETRY COUNTER.
    """

    aid = PIV_AID

    def __init__(self, store: CredentialStore, *, objects: dict[bytes, bytes] | None = None,
                 yubikey: YubiKeyInfo | None = None, quirks: PivQuirks | None = None,
                 pin_lengths: tuple[int, int] = (6, 8)) -> None:
        self.store = store
        self.objects: dict[bytes, bytes] = dict(objects or {})
        self.yubikey = yubikey
        self.quirks = quirks or PivQuirks()
        self.pin_lengths = pin_lengths

    # --- scenario helpers ---

    def put_certificate(self, slot: int, der: bytes) -> None:
        """Store a DER certificate in the data object of key slot `slot` (9A, 9C, 9D or 9E)."""
        try:
            tag = SLOT_CERTIFICATE_TAGS[slot]
        except KeyError:
            raise ValueError(f"slot {slot:02X} has no certificate object; use one of 9A, 9C, 9D, 9E") from None
        self.objects[tag] = certificate_object(der)

    # --- applet hooks ---

    def select(self, p1: int, p2: int, data: bytes) -> bytes:
        """Return the application property template."""
        return PIV_SELECT_REPLY + SW_OK

    def deselect(self) -> None:
        """Drop the verified PIN when the card has the YubiKey "other AID loses state" quirk."""
        if self.quirks.lose_state_on_deselect:
            self.store.pin_verified = False

    def on_power_on(self) -> None:
        """Drop the verified PIN and the admin authentication."""
        self.store.reset_security_state()

    def on_card_reset(self) -> None:
        """Delete every data object (ACA RESET CARD wipes the PIV containers)."""
        self.objects.clear()

    # --- dispatch ---

    def process(self, cla: int, ins: int, p1: int, p2: int, data: bytes, le: int | None) -> bytes:
        """Handle one PIV or YubiKey command."""
        if cla & 0x80:
            return SW_CLA_NOT_SUPPORTED

        handlers = {
            INS_VERIFY: self._verify,
            INS_CHANGE_REFERENCE: self._change_reference,
            INS_RESET_RETRY_COUNTER: self._reset_retry_counter,
            INS_GET_DATA: self._get_data,
        }
        if self.yubikey is not None:
            handlers.update({
                INS_GET_METADATA: self._get_metadata,
                INS_GET_SERIAL: self._get_serial,
                INS_GET_VERSION: self._get_version,
                INS_RESET: self._reset,
            })
        handler = handlers.get(ins)
        if handler is None:
            return SW_INS_NOT_SUPPORTED
        return handler(p1, p2, data)

    def _failed(self, tries_left: int) -> bytes:
        return tries_sw(tries_left, nibble_form=self.quirks.counter_in_630x)

    # --- PIN commands ---

    def _verify(self, p1: int, p2: int, data: bytes) -> bytes:
        if p2 != KEY_REF_PIN:
            return SW_NOT_DEFINED
        if p1 == 0xFF and not data:
            # P1=FF with no data resets the verified state (SP 800-73-4).
            self.store.pin_verified = False
            return SW_OK
        if p1 != 0x00:
            return SW_WRONG_P1P2

        pin = self.store.pin
        if pin is None:
            return SW_NOT_DEFINED
        if not data:
            return self._status_query(pin)
        if pin.blocked:
            return SW_BLOCKED
        if len(data) != 8:
            return SW_WRONG_DATA

        if pin.attempt(data):
            self.store.pin_verified = True
            return SW_OK
        self.store.pin_verified = False
        return self._failed(pin.tries_left)

    def _status_query(self, pin: ReferenceData) -> bytes:
        if pin.blocked:
            return SW_BLOCKED
        verified = self.store.pin_verified
        if self.quirks.status_query_clears_verified:
            self.store.pin_verified = False
        if verified and not self.quirks.status_query_never_ok:
            return SW_OK
        return self._failed(pin.tries_left)

    def _valid_new_value(self, block: bytes) -> bool:
        value = strip_ff(block)
        low, high = self.pin_lengths
        return low <= len(value) <= high

    def _change_reference(self, p1: int, p2: int, data: bytes) -> bytes:
        if p1 != 0x00:
            return SW_WRONG_P1P2
        if p2 == KEY_REF_PIN:
            target = self.store.pin
        elif p2 == KEY_REF_PUK:
            target = self.store.puk
        else:
            return SW_NOT_DEFINED
        if target is None:
            return SW_NOT_DEFINED
        if target.blocked:
            return SW_BLOCKED
        if len(data) != 16:
            return SW_WRONG_DATA

        old, new = data[:8], data[8:]
        # The new value's format is checked first, so a malformed request spends no try.
        if not self._valid_new_value(new):
            return SW_WRONG_DATA
        if not target.attempt(old):
            if p2 == KEY_REF_PIN:
                self.store.pin_verified = False
            return self._failed(target.tries_left)
        target.set_value(strip_ff(new))
        return SW_OK

    def _reset_retry_counter(self, p1: int, p2: int, data: bytes) -> bytes:
        if p1 != 0x00 or p2 != KEY_REF_PIN:
            return SW_WRONG_P1P2
        puk, pin = self.store.puk, self.store.pin
        if puk is None or pin is None:
            return SW_NOT_DEFINED
        if puk.blocked:
            return SW_BLOCKED
        if len(data) != 16:
            return SW_WRONG_DATA

        if not self._valid_new_value(data[8:]):
            return SW_WRONG_DATA
        if not puk.attempt(data[:8]):
            return self._failed(puk.tries_left)
        pin.set_value(strip_ff(data[8:]))
        self.store.pin_verified = False
        return SW_OK

    # --- data objects ---

    def _get_data(self, p1: int, p2: int, data: bytes) -> bytes:
        if (p1, p2) != (0x3F, 0xFF):
            return SW_WRONG_P1P2
        # The data field is a tag list: 5C <length> <tag>.
        if len(data) < 3 or data[0] != 0x5C or data[1] != len(data) - 2:
            return SW_WRONG_DATA
        content = self.objects.get(bytes(data[2:]))
        if content is None:
            return SW_NOT_FOUND
        return tlv(0x53, content) + SW_OK

    # --- YubiKey extensions ---

    def _get_serial(self, p1: int, p2: int, data: bytes) -> bytes:
        assert self.yubikey is not None
        if self.yubikey.serial is None:
            return SW_INS_NOT_SUPPORTED
        return self.yubikey.serial.to_bytes(4, "big") + SW_OK

    def _get_version(self, p1: int, p2: int, data: bytes) -> bytes:
        assert self.yubikey is not None
        return bytes(self.yubikey.firmware) + SW_OK

    def _get_metadata(self, p1: int, p2: int, data: bytes) -> bytes:
        assert self.yubikey is not None
        if not self.yubikey.has_metadata or self.quirks.metadata_absent:
            return SW_INS_NOT_SUPPORTED
        if p1 != 0x00:
            return SW_WRONG_P1P2

        if p2 in (KEY_REF_PIN, KEY_REF_PUK):
            target = self.store.pin if p2 == KEY_REF_PIN else self.store.puk
            if target is None:
                return SW_NOT_DEFINED
            return (tlv(0x01, bytes((_METADATA_ALGORITHM_PIN,)))
                    + tlv(0x05, b"\x01" if target.is_default else b"\x00")
                    + tlv(0x06, bytes((target.max_tries, target.tries_left)))
                    + SW_OK)
        if p2 == KEY_REF_MANAGEMENT:
            key = self.store.admin_key
            if key is None:
                return SW_NOT_DEFINED
            return (tlv(0x01, bytes((_METADATA_ALGORITHM[key.key_type],)))
                    + tlv(0x05, b"\x01" if key.is_default else b"\x00")
                    + SW_OK)
        # NOTE: key slot metadata (9A, 9C, 9D, 9E) is not emulated; the lab has no private keys.
        return SW_NOT_FOUND

    def _reset(self, p1: int, p2: int, data: bytes) -> bytes:
        pin, puk = self.store.pin, self.store.puk
        if pin is None or puk is None or not (pin.blocked and puk.blocked):
            return SW_CONDITIONS
        self.reset_to_factory()
        return SW_OK

    def reset_to_factory(self) -> None:
        """Apply a YubiKey PIV reset: default PIN, PUK and management key, no data objects."""
        self.store.pin = yubikey_pin()
        self.store.puk = yubikey_puk()
        self.store.admin_key = yubikey_management_key()
        self.store.reset_security_state()
        self.objects.clear()


def yubikey_pin(value: bytes = YUBIKEY_DEFAULT_PIN, tries_left: int | None = None,
                max_tries: int = YUBIKEY_DEFAULT_TRIES) -> ReferenceData:
    """Build a YubiKey PIV PIN, whose default value is 123456."""
    return reference(value, max_tries, tries_left, kind="PIV PIN", default=YUBIKEY_DEFAULT_PIN)


def yubikey_puk(value: bytes = YUBIKEY_DEFAULT_PUK, tries_left: int | None = None,
                max_tries: int = YUBIKEY_DEFAULT_TRIES) -> ReferenceData:
    """Build a YubiKey PIV PUK, whose default value is 12345678."""
    return reference(value, max_tries, tries_left, kind="PIV PUK", default=YUBIKEY_DEFAULT_PUK)


def yubikey_management_key(value: bytes = YUBIKEY_DEFAULT_MANAGEMENT_KEY) -> AdminKey:
    """Build a YubiKey 3DES management key, whose default is 0102030405060708 three times."""
    return AdminKey(AdminKeyType.TDES, Secret(value, "PIV management key"),
                    default_value=YUBIKEY_DEFAULT_MANAGEMENT_KEY)


def pin_block(value: str | bytes) -> bytes:
    """Encode a PIN or PUK as the 8-byte FF-padded block VERIFY and friends carry."""
    raw = value.encode() if isinstance(value, str) else value
    return pad_ff(raw)


__all__ = [
    "CHUID_TAG",
    "PIV_AID",
    "PivApplet",
    "PivQuirks",
    "SLOT_CERTIFICATE_TAGS",
    "YubiKeyInfo",
    "certificate_object",
    "chuid_object",
    "pin_block",
    "self_signed_certificate",
    "yubikey_management_key",
    "yubikey_pin",
    "yubikey_puk",
]
