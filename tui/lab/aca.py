"""The lab ACA: HID Crescendo's access control applet (PIN, admin key, RESET CARD).

Commands and status words follow HID's low-level Crescendo API pages:
SELECT, GET PIN PROPERTIES, VERIFY PIN, CHANGE PIN, GET CHALLENGE, EXTERNAL
AUTHENTICATE, UNLOCK PIN, PUT XAUTH KEY and RESET CARD. PINs travel as ASCII
padded with FF to 8 bytes. The ACA shares its `CredentialStore` with the PIV
applet, because a Crescendo key has one PIN for both.
"""

from __future__ import annotations

import hmac
import os

from tui.lab.card import (
    SW_BLOCKED,
    SW_CLA_NOT_SUPPORTED,
    SW_CONDITIONS,
    SW_INS_NOT_SUPPORTED,
    SW_NOT_DEFINED,
    SW_OK,
    SW_SECURITY_STATUS,
    SW_WRONG_DATA,
    SW_WRONG_LENGTH,
    SW_WRONG_P1P2,
    AdminKey,
    AdminKeyType,
    Applet,
    CredentialStore,
    reference,
    strip_ff,
    tlv,
    tries_sw,
)
from tui.secret import Secret

ACA_AID = bytes.fromhex("A0000000791000")

# Applet family byte in the SELECT reply (tag A5, TLV 01: family || version).
ACA_FAMILY = 0x10

# RESET CARD returns the PIN to "00000000" (HID reset-card page).
ACA_DEFAULT_PIN = b"00000000"

INS_VERIFY_PIN = 0x20
INS_CHANGE_PIN = 0x24
INS_UNLOCK_PIN = 0x2C
INS_RESET_CARD = 0x38
INS_GET_PIN_PROPERTIES = 0x56
INS_EXTERNAL_AUTHENTICATE = 0x82
INS_GET_CHALLENGE = 0x84
INS_PUT_XAUTH_KEY = 0xD8

PIN_PROPERTIES_TAG = 0x31
XAUTH1_KEY_INDEX = 0x01
SW_BAD_CRYPTOGRAM = b"\x63\x00"


def aca_pin(value: str | bytes = ACA_DEFAULT_PIN, tries_left: int | None = None, max_tries: int = 8):
    """Build an ACA PIN (default value 00000000)."""
    return reference(value, max_tries, tries_left, kind="ACA PIN", default=ACA_DEFAULT_PIN)


def aca_admin_key(key: bytes, key_type: AdminKeyType | None = None, *, unlock_tries: int = 3) -> AdminKey:
    """Build an ACA admin (XAUTH1) key; the type follows the length when not given (16 AES-128, 24 3DES)."""
    if key_type is None:
        key_type = AdminKeyType.AES128 if len(key) == 16 else AdminKeyType.TDES
    return AdminKey(key_type, Secret(key, "admin key"), unlock_tries, unlock_tries,
                    default_value=bytes(key_type.key_length))


class AcaApplet(Applet):
    """An HID Crescendo ACA over a shared `CredentialStore`.

    `version` is (major, minor, patch, build) as the SELECT reply carries it.
    `pin_lengths` and `numeric_only` are what GET PIN PROPERTIES returns and
    what CHANGE PIN and UNLOCK PIN enforce for a new PIN.
    """

    aid = ACA_AID

    def __init__(self, store: CredentialStore, *, version: tuple[int, int, int, int] = (3, 0, 3, 1),
                 pin_lengths: tuple[int, int] = (4, 8), numeric_only: bool = True,
                 bad_cryptogram_spends_unlock_try: bool = True,
                 unauthenticated_unlock_spends_try: bool = True) -> None:
        low, high = pin_lengths
        if not 4 <= low <= high <= 8:
            raise ValueError(f"ACA PIN lengths {low}..{high} are out of range: HID allows 4..8")
        self.store = store
        self.version = version
        self.pin_lengths = pin_lengths
        self.numeric_only = numeric_only
        # NOTE: HID does not document which command spends a try of the unlock
        # counter, only that UNLOCK PIN returns 63CX "XAUTH1 not authenticated,
        # X unlock tries left". Both switches on is the strict guess, so a host
        # that probes UNLOCK PIN or tries a wrong admin key loses tries here.
        self.bad_cryptogram_spends_unlock_try = bad_cryptogram_spends_unlock_try
        self.unauthenticated_unlock_spends_try = unauthenticated_unlock_spends_try
        self._challenge: bytes | None = None

    # --- applet hooks ---

    def select(self, p1: int, p2: int, data: bytes) -> bytes:
        """Return the FCI: 84 AID, A5 { 01 family || version }."""
        self._challenge = None
        proprietary = tlv(0x01, bytes((ACA_FAMILY, *self.version)))
        return tlv(0x6F, tlv(0x84, ACA_AID) + tlv(0xA5, proprietary)) + SW_OK

    def on_power_on(self) -> None:
        """Drop the verified PIN, the XAUTH1 grant and any outstanding challenge."""
        self.store.reset_security_state()
        self._challenge = None

    def on_card_reset(self) -> None:
        """Return the PIN to 00000000 and delete the admin key and the PUK."""
        max_tries = self.store.pin.max_tries if self.store.pin is not None else 8
        self.store.pin = aca_pin(max_tries=max_tries)
        self.store.puk = None
        self.store.admin_key = None
        self.store.reset_security_state()
        self._challenge = None

    # --- dispatch ---

    def process(self, cla: int, ins: int, p1: int, p2: int, data: bytes, le: int | None) -> bytes:
        """Handle one ACA command."""
        if cla & 0x80:
            return SW_CLA_NOT_SUPPORTED
        handlers = {
            INS_GET_PIN_PROPERTIES: self._get_pin_properties,
            INS_VERIFY_PIN: self._verify_pin,
            INS_CHANGE_PIN: self._change_pin,
            INS_GET_CHALLENGE: self._get_challenge,
            INS_EXTERNAL_AUTHENTICATE: self._external_authenticate,
            INS_UNLOCK_PIN: self._unlock_pin,
            INS_PUT_XAUTH_KEY: self._put_xauth_key,
            INS_RESET_CARD: self._reset_card,
        }
        handler = handlers.get(ins)
        if handler is None:
            return SW_INS_NOT_SUPPORTED

        # A challenge is good for the EXTERNAL AUTHENTICATE right after it only.
        challenge, self._challenge = self._challenge, None
        if ins == INS_EXTERNAL_AUTHENTICATE:
            return self._external_authenticate(p1, p2, data, challenge)
        return handler(p1, p2, data)

    def valid_new_pin(self, block: bytes) -> bool:
        """Check a new PIN block against the length and character rules."""
        value = strip_ff(block)
        low, high = self.pin_lengths
        if not low <= len(value) <= high or b"\xff" in value:
            return False
        if self.numeric_only:
            return all(0x30 <= byte <= 0x39 for byte in value)
        return True

    # --- PIN ---

    def _get_pin_properties(self, p1: int, p2: int, data: bytes) -> bytes:
        if (p1, p2) != (0x02, 0x00) or data != bytes((PIN_PROPERTIES_TAG,)):
            return SW_WRONG_P1P2
        low, high = self.pin_lengths
        value = bytes((low, high, 0x00, 0x00, 0x01 if self.numeric_only else 0x00))
        return tlv(PIN_PROPERTIES_TAG, value) + SW_OK

    def _verify_pin(self, p1: int, p2: int, data: bytes) -> bytes:
        if (p1, p2) != (0x00, 0x00):
            return SW_WRONG_P1P2
        pin = self.store.pin
        if pin is None:
            return SW_NOT_DEFINED
        if len(data) > 8:
            return SW_WRONG_LENGTH
        if pin.blocked:
            return SW_BLOCKED

        if not data:
            # NOTE: HID documents Lc 00..08 but not what an empty VERIFY does. The lab
            # follows the ISO 7816-4 convention (63CX, no try spent, 9000 once verified).
            return SW_OK if self.store.pin_verified else tries_sw(pin.tries_left)

        if pin.attempt(data):
            self.store.pin_verified = True
            return SW_OK
        self.store.pin_verified = False
        return tries_sw(pin.tries_left)

    def _change_pin(self, p1: int, p2: int, data: bytes) -> bytes:
        if (p1, p2) != (0x01, 0x00):
            return SW_WRONG_P1P2
        pin = self.store.pin
        if pin is None:
            return SW_NOT_DEFINED
        if len(data) != 16:
            return SW_WRONG_LENGTH
        if pin.blocked:
            return SW_BLOCKED
        # The new PIN's format is checked first, so a malformed request spends no try.
        if not self.valid_new_pin(data[8:]):
            return SW_WRONG_DATA

        if not pin.attempt(data[:8]):
            self.store.pin_verified = False
            return tries_sw(pin.tries_left)
        pin.set_value(strip_ff(data[8:]))
        return SW_OK

    # --- admin key ---

    def _get_challenge(self, p1: int, p2: int, data: bytes) -> bytes:
        if (p1, p2) != (0x00, 0x00):
            return SW_WRONG_P1P2
        key = self.store.admin_key
        if key is None:
            return SW_NOT_DEFINED
        # The challenge length reveals the key type: 8 bytes 3DES, 16 bytes AES-128.
        self._challenge = os.urandom(key.key_type.block_size)
        return self._challenge + SW_OK

    def _external_authenticate(self, p1: int, p2: int, data: bytes, challenge: bytes | None = None) -> bytes:
        if (p1, p2) != (0x00, XAUTH1_KEY_INDEX):
            return SW_WRONG_P1P2
        key = self.store.admin_key
        if key is None:
            return SW_NOT_DEFINED
        if challenge is None:
            return SW_CONDITIONS
        if key.unlock_tries_left <= 0:
            return SW_BLOCKED

        expected = key.encrypt(challenge)
        if len(data) == len(expected) and hmac.compare_digest(data, expected):
            self.store.xauth1 = True
            return SW_OK
        self.store.xauth1 = False
        if self.bad_cryptogram_spends_unlock_try:
            key.unlock_tries_left -= 1
        return SW_BAD_CRYPTOGRAM

    def _unlock_pin(self, p1: int, p2: int, data: bytes) -> bytes:
        if (p1, p2) != (0x02, 0x00):
            return SW_WRONG_P1P2
        key = self.store.admin_key
        if key is None:
            return SW_NOT_DEFINED
        if key.unlock_tries_left <= 0:
            return SW_BLOCKED
        if not self.store.xauth1:
            if self.unauthenticated_unlock_spends_try:
                key.unlock_tries_left -= 1
            return tries_sw(key.unlock_tries_left)
        if not 1 <= len(data) <= 8 or not self.valid_new_pin(data):
            return SW_WRONG_DATA

        new_pin = strip_ff(data)
        if self.store.pin is None:
            self.store.pin = aca_pin(new_pin)
        else:
            self.store.pin.set_value(new_pin)
        key.unlock_tries_left = key.unlock_max_tries
        return SW_OK

    def _put_xauth_key(self, p1: int, p2: int, data: bytes) -> bytes:
        if (p1, p2) != (0x01, 0x00):
            return SW_WRONG_P1P2
        if not (self.store.pin_verified or self.store.xauth1):
            return SW_SECURITY_STATUS

        # Data: RFU 00, algorithm ID, key length, real key length, key, KCV length 00.
        # NOTE: HID's page does not list the algorithm ID values, so the lab
        # takes the key type from the length (16 AES-128, 24 3DES) and ignores the ID.
        if len(data) < 5:
            return SW_WRONG_LENGTH
        length = data[2]
        if length not in (16, 24) or len(data) < 4 + length:
            return SW_WRONG_DATA
        unlock_tries = self.store.admin_key.unlock_max_tries if self.store.admin_key is not None else 3
        self.store.admin_key = aca_admin_key(bytes(data[4:4 + length]), unlock_tries=unlock_tries)
        return SW_OK

    # --- destructive ---

    def _reset_card(self, p1: int, p2: int, data: bytes) -> bytes:
        if (p1, p2) != (0x00, 0x00):
            return SW_WRONG_P1P2
        if not (self.store.pin_verified or self.store.xauth1):
            return SW_SECURITY_STATUS
        if self.card is not None:
            self.card.factory_reset()
        else:
            self.on_card_reset()
        return SW_OK


__all__ = ["ACA_AID", "ACA_DEFAULT_PIN", "AcaApplet", "aca_admin_key", "aca_pin"]
