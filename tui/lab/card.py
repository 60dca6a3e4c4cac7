"""The emulated card core: APDU parsing, applet selection, chaining, and the credential store.

A `VirtualCard` receives raw command APDUs exactly as a reader delivers them
(from `tui.lab.backend` in process, or from pcscd through a vpcd link) and
returns raw responses (data || SW1 SW2). It does what a Java Card runtime does
for its applets: SELECT by AID with partial-AID matching, response chaining
with 61xx and GET RESPONSE, and assembly of chained commands (CLA bit 0x10).
The applets see one complete command at a time.

Every method of `VirtualCard` takes the card's lock, so a serving thread and
lab controls (remove, insert, counter edits) can use one card concurrently.
"""

from __future__ import annotations

import enum
import hmac
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tui.errors import LabError
from tui.secret import Secret

SW_OK = b"\x90\x00"
SW_WRONG_LENGTH = b"\x67\x00"
SW_SECURITY_STATUS = b"\x69\x82"
SW_BLOCKED = b"\x69\x83"
SW_CONDITIONS = b"\x69\x85"
SW_WRONG_DATA = b"\x6a\x80"
SW_NOT_FOUND = b"\x6a\x82"
SW_WRONG_P1P2 = b"\x6a\x86"
SW_NOT_DEFINED = b"\x6a\x88"
SW_LAST_IN_CHAIN_EXPECTED = b"\x68\x83"
SW_INS_NOT_SUPPORTED = b"\x6d\x00"
SW_CLA_NOT_SUPPORTED = b"\x6e\x00"

INS_SELECT = 0xA4
INS_GET_RESPONSE = 0xC0
CLA_CHAINING = 0x10

# A short response carries at most 256 data bytes. Longer data goes out in
# pieces ending in 61xx, so the host fetches the rest with GET RESPONSE.
MAX_SHORT_RESPONSE = 256


def sw_bytes(sw: int) -> bytes:
    """Encode a status word as the two bytes SW1 SW2."""
    return bytes((sw >> 8 & 0xFF, sw & 0xFF))


def tries_sw(tries_left: int, *, nibble_form: bool = False) -> bytes:
    """Encode "verify failed, N tries left" as 63Cx, or as 630x for a card with the NEO quirk."""
    tries = max(0, min(tries_left, 0x0F))
    return bytes((0x63, tries if nibble_form else 0xC0 | tries))


def ber_length(length: int) -> bytes:
    """Encode a BER-TLV length (short form below 128, else 81 xx or 82 xx xx)."""
    if length < 0x80:
        return bytes((length,))
    if length <= 0xFF:
        return bytes((0x81, length))
    if length <= 0xFFFF:
        return bytes((0x82, length >> 8, length & 0xFF))
    raise ValueError(f"TLV value of {length} bytes is too long for a two-byte BER length")


def tlv(tag: bytes | int, value: bytes) -> bytes:
    """Encode one BER-TLV: tag bytes, BER length, value."""
    tag_bytes = bytes((tag,)) if isinstance(tag, int) else tag
    return tag_bytes + ber_length(len(value)) + value


def pad_ff(value: bytes, size: int = 8) -> bytes:
    """Right-pad `value` with 0xFF to `size` bytes, the PIN block format of PIV and the ACA."""
    if len(value) > size:
        raise ValueError(f"value of {len(value)} bytes does not fit a {size}-byte PIN block")
    return value + b"\xff" * (size - len(value))


def strip_ff(block: bytes) -> bytes:
    """Remove the 0xFF padding from a PIN block."""
    return block.rstrip(b"\xff")


# --- the credential store -----------------------------------------------------------------


@dataclass
class ReferenceData:
    """A PIN or PUK: its value, retry counter and factory default.

    `value` is the unpadded secret, compared as an 8-byte FF-padded block.
    """

    value: Secret
    max_tries: int
    tries_left: int
    default_value: bytes | None = None

    @property
    def blocked(self) -> bool:
        """True once no try is left."""
        return self.tries_left <= 0

    @property
    def is_default(self) -> bool:
        """True while the value equals the factory default."""
        if self.default_value is None:
            return False
        return hmac.compare_digest(self.value.reveal_bytes(), self.default_value)

    def matches(self, block: bytes) -> bool:
        """Compare a PIN block (padded or not) with the value, without changing the counter."""
        try:
            candidate = pad_ff(block)
        except ValueError:
            return False
        return hmac.compare_digest(candidate, pad_ff(self.value.reveal_bytes()))

    def attempt(self, block: bytes) -> bool:
        """Check `block` as a real verification does: reset the counter on success, spend a try on failure."""
        if self.matches(block):
            self.tries_left = self.max_tries
            return True
        self.tries_left = max(0, self.tries_left - 1)
        return False

    def set_value(self, value: bytes) -> None:
        """Set a new value and restore every try."""
        self.value = Secret(value, self.value.kind)
        self.tries_left = self.max_tries


def reference(value: str | bytes, max_tries: int, tries_left: int | None = None, *, kind: str = "PIN",
              default: str | bytes | None = None) -> ReferenceData:
    """Build a `ReferenceData` from text or bytes; `tries_left` defaults to `max_tries`."""
    raw = value.encode() if isinstance(value, str) else value
    default_raw = default.encode() if isinstance(default, str) else default
    left = max_tries if tries_left is None else tries_left
    if not 0 <= left <= max_tries <= 15:
        raise ValueError(f"{kind} tries {left} of {max_tries} are out of range: need 0 <= left <= max <= 15")
    return ReferenceData(Secret(raw, kind), max_tries, left, default_raw)


class AdminKeyType(str, enum.Enum):
    """Algorithm of the external-authentication admin key (the ACA XAUTH1 key or the PIV management key)."""

    TDES = "3DES"
    AES128 = "AES-128"

    @property
    def block_size(self) -> int:
        """Cipher block size in bytes, which is also the GET CHALLENGE length."""
        return 8 if self is AdminKeyType.TDES else 16

    @property
    def key_length(self) -> int:
        """Key length in bytes: 24 for three-key 3DES, 16 for AES-128."""
        return 24 if self is AdminKeyType.TDES else 16


def _tdes_algorithm(key: bytes):
    # cryptography 43 moved TripleDES to the decrepit module and deprecated
    # the old location; older releases only have the old one.
    try:
        from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    except ImportError:  # pragma: no cover - depends on the installed cryptography
        from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES
    return TripleDES(key)


def ecb_encrypt(key_type: AdminKeyType, key: bytes, data: bytes) -> bytes:
    """Encrypt `data` (a whole number of blocks) with the admin key in ECB mode."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    algorithm = _tdes_algorithm(key) if key_type is AdminKeyType.TDES else algorithms.AES(key)
    encryptor = Cipher(algorithm, modes.ECB()).encryptor()
    return encryptor.update(data) + encryptor.finalize()


@dataclass
class AdminKey:
    """The admin key and the try counter of the unlock path that depends on it."""

    key_type: AdminKeyType
    key: Secret
    unlock_max_tries: int = 3
    unlock_tries_left: int = 3
    default_value: bytes | None = None

    def __post_init__(self) -> None:
        if len(self.key) != self.key_type.key_length:
            raise ValueError(f"a {self.key_type.value} admin key has {self.key_type.key_length} bytes, got {len(self.key)}")

    @property
    def is_default(self) -> bool:
        """True while the key equals the factory default."""
        if self.default_value is None:
            return False
        return hmac.compare_digest(self.key.reveal_bytes(), self.default_value)

    def encrypt(self, data: bytes) -> bytes:
        """Encrypt `data` with this key in ECB mode (the XAUTH cryptogram)."""
        return ecb_encrypt(self.key_type, self.key.reveal_bytes(), data)


@dataclass
class CredentialStore:
    """The secrets and security state of one card, shared by its applets.

    On an HID Crescendo key the ACA and the PIV applet verify the same PIN, so
    both applets hold this one store. `pin` or `puk` is None when not defined;
    `admin_key` is None when no admin key is set.
    """

    pin: ReferenceData | None = None
    puk: ReferenceData | None = None
    admin_key: AdminKey | None = None
    pin_verified: bool = False
    xauth1: bool = False

    def reset_security_state(self) -> None:
        """Drop the verified PIN and the XAUTH1 grant, as a power-up does."""
        self.pin_verified = False
        self.xauth1 = False


# --- applets ------------------------------------------------------------------------------


class Applet:
    """One applet on the card: subclasses set `aid` and override `process`.

    `select` returns data || SW; only a 9000 reply makes the applet current.
    `process` gets every other command while the applet is selected, with
    chained commands already joined into one data field.
    """

    aid: bytes = b""
    card: VirtualCard | None = None

    @property
    def aids(self) -> tuple[bytes, ...]:
        """Every AID that selects this applet (a card manager has several)."""
        return (self.aid,)

    def select(self, p1: int, p2: int, data: bytes) -> bytes:
        """Handle a SELECT that matched this applet; `data` is the AID as sent, possibly truncated."""
        return SW_OK

    def deselect(self) -> None:
        """Handle another applet being selected in place of this one."""

    def process(self, cla: int, ins: int, p1: int, p2: int, data: bytes, le: int | None) -> bytes:
        """Handle one command APDU and return data || SW."""
        return SW_INS_NOT_SUPPORTED

    def handles_unselected(self, cla: int, ins: int, p1: int, p2: int) -> bool:
        """Return True for a command this applet takes even while another applet is selected.

        Used for card-global commands such as GET DATA CPLC on cards whose OS
        processes it whatever applet is selected.
        """
        return False

    def on_power_on(self) -> None:
        """Handle a PC/SC power-up (cold or warm reset): drop session state."""

    def on_insert(self) -> None:
        """Handle a physical insertion; runs after `on_power_on`."""

    def on_card_reset(self) -> None:
        """Return to manufacturing state after an ACA RESET CARD."""


@dataclass
class Command:
    """One parsed short command APDU. `le` is None when absent and 256 for an Le byte of 00."""

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes
    le: int | None


def parse_apdu(apdu: bytes) -> Command | None:
    """Parse a short command APDU (cases 1 to 4); return None for a malformed or extended-length one."""
    if len(apdu) < 4:
        return None
    cla, ins, p1, p2 = apdu[:4]
    body = apdu[4:]
    if not body:
        return Command(cla, ins, p1, p2, b"", None)
    if len(body) == 1:
        return Command(cla, ins, p1, p2, b"", body[0] or 256)

    lc = body[0]
    if lc == 0:
        # Lc=00 followed by more bytes is extended length, which the lab key does not support.
        return None
    if len(body) == 1 + lc:
        return Command(cla, ins, p1, p2, bytes(body[1:]), None)
    if len(body) == 2 + lc:
        return Command(cla, ins, p1, p2, bytes(body[1:-1]), body[-1] or 256)
    return None


Recorder = Callable[[bytes, bytes], None]


class VirtualCard:
    """An emulated card that receives raw APDUs and dispatches them to its applets.

    `no_applet_sw` is the status word for a command when no applet is
    selected (6D00, as a card runtime without a default applet returns).
    `default_applet` is the applet selected by a SELECT with an empty AID,
    as a GlobalPlatform card selects its card manager.
    """

    def __init__(self, applets: Iterable[Applet], atr: bytes, *, no_applet_sw: int = 0x6D00,
                 default_applet: Applet | None = None) -> None:
        self.applets: list[Applet] = list(applets)
        self.atr = bytes(atr)
        self.no_applet_sw = no_applet_sw
        self.default_applet = default_applet
        self.lock = threading.RLock()
        self.apdu_count = 0
        self.recording: list[tuple[bytes, bytes]] | None = None
        self.recorders: list[Recorder] = []
        self.powered = True
        self.selected: Applet | None = None
        self._pending = b""
        self._pending_sw = SW_OK
        self._chain: tuple[int, int, int] | None = None
        self._chain_data = b""
        for applet in self.applets:
            applet.card = self

    # --- lab controls ---

    def start_recording(self) -> list[tuple[bytes, bytes]]:
        """Start recording every (command, response) pair and return the list that fills."""
        with self.lock:
            self.recording = []
            return self.recording

    def applet(self, kind: type[Applet]) -> Applet | None:
        """Return the first applet of class `kind`, or None."""
        for applet in self.applets:
            if isinstance(applet, kind):
                return applet
        return None

    def power_on(self) -> None:
        """Power the card up (cold or warm reset): deselect, drop chaining and session state."""
        with self.lock:
            self.powered = True
            self._reset_session()
            for applet in self.applets:
                applet.on_power_on()

    def inserted(self) -> None:
        """Insert the card: a power-up, then each applet's insertion hook."""
        with self.lock:
            self.power_on()
            for applet in self.applets:
                applet.on_insert()

    def removed(self) -> None:
        """Pull the card: it loses power, and with it every session state."""
        with self.lock:
            self.powered = False
            self._reset_session()

    def factory_reset(self) -> None:
        """Return every applet to manufacturing state (the effect of ACA RESET CARD)."""
        with self.lock:
            for applet in self.applets:
                applet.on_card_reset()

    def _reset_session(self) -> None:
        if self.selected is not None:
            self.selected.deselect()
        self.selected = None
        self._pending = b""
        self._pending_sw = SW_OK
        self._chain = None
        self._chain_data = b""

    # --- APDU processing ---

    def transmit(self, apdu: bytes) -> bytes:
        """Process one raw command APDU and return data || SW1 SW2."""
        with self.lock:
            if not self.powered:
                raise LabError("the lab card is not powered (removed); insert it before sending APDUs")
            self.apdu_count += 1
            response = self._transmit(bytes(apdu))
            if self.recording is not None:
                self.recording.append((bytes(apdu), response))
            for recorder in self.recorders:
                recorder(bytes(apdu), response)
            return response

    def _transmit(self, apdu: bytes) -> bytes:
        command = parse_apdu(apdu)
        if command is None:
            return SW_WRONG_LENGTH

        if command.ins == INS_GET_RESPONSE:
            # Channel sends GET RESPONSE with the CLA class of the command it follows (00 or 80).
            if not self._pending:
                return SW_CONDITIONS
            return self._next_piece(command.le)
        self._pending = b""

        if command.cla & CLA_CHAINING:
            header = (command.ins, command.p1, command.p2)
            if self._chain is not None and self._chain != header:
                self._chain, self._chain_data = None, b""
                return SW_LAST_IN_CHAIN_EXPECTED
            self._chain = header
            self._chain_data += command.data
            return SW_OK
        if self._chain is not None:
            # The last command of a chain has the chaining bit clear and the same INS P1 P2.
            expected, chained = self._chain, self._chain_data
            self._chain, self._chain_data = None, b""
            if (command.ins, command.p1, command.p2) != expected:
                return SW_LAST_IN_CHAIN_EXPECTED
            command.data = chained + command.data

        response = self._dispatch(command)
        return self._limit(response, command.le)

    def _dispatch(self, command: Command) -> bytes:
        if command.ins == INS_SELECT and command.p1 == 0x04 and command.cla & 0x80 == 0:
            return self._select(command)

        for applet in self.applets:
            if applet is not self.selected and applet.handles_unselected(command.cla, command.ins, command.p1, command.p2):
                return applet.process(command.cla, command.ins, command.p1, command.p2, command.data, command.le)

        if self.selected is None:
            return sw_bytes(self.no_applet_sw)
        return self.selected.process(command.cla, command.ins, command.p1, command.p2, command.data, command.le)

    def _select(self, command: Command) -> bytes:
        aid = command.data
        target = self._find_applet(aid)
        if target is None:
            # A failed SELECT leaves the current applet selected.
            return SW_NOT_FOUND

        response = target.select(command.p1, command.p2, aid)
        if response[-2:] != SW_OK:
            return response
        if self.selected is not None and self.selected is not target:
            self.selected.deselect()
        self.selected = target
        if command.p2 & 0x0C == 0x0C:
            # P2=0C requests no response data.
            return SW_OK
        return response

    def _find_applet(self, aid: bytes) -> Applet | None:
        if not aid:
            return self.default_applet
        if not 5 <= len(aid) <= 16:
            return None

        # ISO 7816-4 partial selection: the sent AID may be a prefix (at least
        # the 5-byte RID) of the full AID, so A000000308 selects PIV.
        for applet in self.applets:
            for full in applet.aids:
                if full.startswith(aid):
                    return applet
        return None

    def _limit(self, response: bytes, le: int | None) -> bytes:
        data, sw = response[:-2], response[-2:]
        limit = MAX_SHORT_RESPONSE if le is None else le
        if len(data) <= limit:
            return response
        self._pending, self._pending_sw = data[limit:], sw
        return data[:limit] + self._more_sw()

    def _next_piece(self, le: int | None) -> bytes:
        limit = MAX_SHORT_RESPONSE if le is None else le
        piece, self._pending = self._pending[:limit], self._pending[limit:]
        if self._pending:
            return piece + self._more_sw()
        return piece + self._pending_sw

    def _more_sw(self) -> bytes:
        # 61xx with xx = bytes still waiting; 00 means 256 or more.
        remaining = len(self._pending)
        return bytes((0x61, remaining if remaining < 256 else 0))


__all__ = [
    "AdminKey",
    "AdminKeyType",
    "Applet",
    "Command",
    "CredentialStore",
    "ReferenceData",
    "VirtualCard",
    "ber_length",
    "ecb_encrypt",
    "pad_ff",
    "parse_apdu",
    "reference",
    "strip_ff",
    "sw_bytes",
    "tlv",
    "tries_sw",
]

