"""A software CTAP2 authenticator for the lab key and the tests.

It implements what keytriage reads and what the runbook's FIDO steps send:
authenticatorGetInfo, authenticatorClientPIN (PIN/UV auth protocols 1 and 2),
authenticatorCredentialManagement over preset discoverable credentials, and
authenticatorReset with its power-up window and user presence. It does not
implement makeCredential or getAssertion, so credentials exist only as
presets.

`process()` takes a CTAP2 request (command byte || CBOR parameters) and
returns status byte || CBOR response, the payload of a CTAPHID_CBOR message.
The transports in `tui.lab.ctap_device` and `tui.lab.fido_applet` carry it.
Time comes from an injectable clock and user presence from an injectable
callback, so the reset window and touch outcomes are testable without sleeping.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from fido2 import cbor
from fido2.cose import ES256
from fido2.ctap import STATUS, CtapError

log = logging.getLogger("keytriage.lab.fido")

ERR = CtapError.ERR

# CTAP2 command bytes.
CMD_MAKE_CREDENTIAL = 0x01
CMD_GET_ASSERTION = 0x02
CMD_GET_INFO = 0x04
CMD_CLIENT_PIN = 0x06
CMD_RESET = 0x07
CMD_CREDENTIAL_MANAGEMENT = 0x0A
CMD_CREDENTIAL_MANAGEMENT_PREVIEW = 0x41

# clientPin subcommands.
PIN_GET_RETRIES = 0x01
PIN_GET_KEY_AGREEMENT = 0x02
PIN_SET = 0x03
PIN_CHANGE = 0x04
PIN_GET_TOKEN_LEGACY = 0x05
PIN_GET_TOKEN_WITH_PERMISSIONS = 0x09

# credentialManagement subcommands.
CM_METADATA = 0x01
CM_RPS_BEGIN = 0x02
CM_RPS_NEXT = 0x03
CM_CREDS_BEGIN = 0x04
CM_CREDS_NEXT = 0x05
CM_DELETE = 0x06
CM_UPDATE_USER = 0x07

# pinUvAuthToken permissions (CTAP 2.1).
PERMISSION_MC = 0x01
PERMISSION_GA = 0x02
PERMISSION_CM = 0x04

MAX_PIN_RETRIES = 8
MAX_CONSECUTIVE_MISMATCHES = 3
DEFAULT_MIN_PIN_LENGTH = 4
MAX_PIN_BYTES = 63
PADDED_PIN_BYTES = 64

VERSIONS_CTAP21 = ("U2F_V2", "FIDO_2_0", "FIDO_2_1_PRE", "FIDO_2_1")
VERSIONS_CTAP20 = ("U2F_V2", "FIDO_2_0")

# An AAGUID that identifies this emulator's model, not one key.
LAB_AAGUID = bytes.fromhex("6b657974726961676531616200000001")

UserPresence = Callable[[threading.Event, float], "bool | None"]
KeepaliveCallback = Callable[[STATUS], None]


class CtapFailure(Exception):
    """A CTAP status code the authenticator returns instead of a response."""

    def __init__(self, code: int) -> None:
        self.code = code
        super().__init__(f"CTAP status 0x{code:02X}")


def touch_immediately(cancel: threading.Event, timeout: float) -> bool:
    """Return True at once: the user touches the key as soon as asked."""
    return True


def deny_touch(cancel: threading.Event, timeout: float) -> bool:
    """Return False at once: the user declines (a key with a deny gesture)."""
    return False


def touch_times_out(cancel: threading.Event, timeout: float) -> None:
    """Return None at once: the touch timeout elapsed without a touch."""
    return None


class TouchButton:
    """A user-presence button that a test or the lab presses from another thread.

    Called by the authenticator, it sets `waiting` and blocks until `press()`,
    until the client cancels, or until `timeout` seconds of the authenticator's
    clock have passed (None: timed out).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, poll_interval: float = 0.01) -> None:
        self.clock = clock
        self.poll_interval = poll_interval
        self.waiting = threading.Event()
        self._pressed = threading.Event()

    def press(self) -> None:
        """Touch the key."""
        self._pressed.set()

    def __call__(self, cancel: threading.Event, timeout: float) -> bool | None:
        self.waiting.set()
        start = self.clock()
        try:
            while not self._pressed.is_set():
                if cancel.is_set() or self.clock() - start >= timeout:
                    return None
                self._pressed.wait(self.poll_interval)
            return True
        finally:
            self.waiting.clear()
            self._pressed.clear()


@dataclass
class SoftCredential:
    """One discoverable credential stored on the authenticator."""

    rp_id: str
    user_name: str
    user_id: bytes = b""
    display_name: str = ""
    rp_name: str = ""
    credential_id: bytes = field(default_factory=lambda: os.urandom(32))
    private_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))

    def __post_init__(self) -> None:
        if not self.user_id:
            self.user_id = hashlib.sha256(self.user_name.encode()).digest()[:16]

    @property
    def rp_id_hash(self) -> bytes:
        """SHA-256 of the relying-party ID, as credentialManagement reports it."""
        return hashlib.sha256(self.rp_id.encode()).digest()

    def cose_public_key(self) -> dict:
        """Return the public key as a COSE_Key map (ES256)."""
        return dict(ES256.from_cryptography_key(self.private_key.public_key()))

    def user_entity(self) -> dict:
        """Return the PublicKeyCredentialUserEntity map."""
        user: dict[str, Any] = {"id": self.user_id, "name": self.user_name}
        if self.display_name:
            user["displayName"] = self.display_name
        return user

    def rp_entity(self) -> dict:
        """Return the PublicKeyCredentialRpEntity map."""
        rp: dict[str, Any] = {"id": self.rp_id}
        if self.rp_name:
            rp["name"] = self.rp_name
        return rp


class PinUvAuthProtocol:
    """The authenticator side of PIN/UV auth protocol 1 or 2 (ECDH P-256)."""

    def __init__(self, version: int) -> None:
        if version not in (1, 2):
            raise ValueError(f"PIN/UV auth protocol {version} is not 1 or 2")
        self.version = version
        self.regenerate()

    def regenerate(self) -> None:
        """Replace the key-agreement key pair (power-up and every PIN mismatch)."""
        self._key = ec.generate_private_key(ec.SECP256R1())

    def key_agreement(self) -> dict:
        """Return the public key-agreement key as a COSE_Key map (alg -25, ECDH-ES+HKDF-256)."""
        numbers = self._key.public_key().public_numbers()
        return {1: 2, 3: -25, -1: 1, -2: numbers.x.to_bytes(32, "big"), -3: numbers.y.to_bytes(32, "big")}

    def shared_secret(self, peer: Any) -> bytes:
        """Derive the shared secret from the platform's COSE key; INVALID_PARAMETER if malformed."""
        try:
            x = int.from_bytes(peer[-2], "big")
            y = int.from_bytes(peer[-3], "big")
            public_key = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
        except (KeyError, TypeError, ValueError) as exc:
            raise CtapFailure(ERR.INVALID_PARAMETER) from exc
        z = self._key.exchange(ec.ECDH(), public_key)
        if self.version == 1:
            return hashlib.sha256(z).digest()
        return _hkdf(z, b"CTAP2 HMAC key") + _hkdf(z, b"CTAP2 AES key")

    def encrypt(self, key: bytes, plaintext: bytes) -> bytes:
        """AES-256-CBC: a zero IV in protocol 1, a random IV sent in front in protocol 2."""
        if self.version == 1:
            return _aes_cbc(key, bytes(16), plaintext, encrypt=True)
        iv = os.urandom(16)
        return iv + _aes_cbc(key[32:], iv, plaintext, encrypt=True)

    def decrypt(self, key: bytes, ciphertext: bytes) -> bytes:
        """Reverse `encrypt`; INVALID_PARAMETER when the length is not whole AES blocks."""
        if self.version == 1:
            if not ciphertext or len(ciphertext) % 16:
                raise CtapFailure(ERR.INVALID_PARAMETER)
            return _aes_cbc(key, bytes(16), ciphertext, encrypt=False)
        if len(ciphertext) < 32 or len(ciphertext) % 16:
            raise CtapFailure(ERR.INVALID_PARAMETER)
        return _aes_cbc(key[32:], ciphertext[:16], ciphertext[16:], encrypt=False)

    def authenticate(self, key: bytes, message: bytes) -> bytes:
        """HMAC-SHA-256, truncated to 16 bytes in protocol 1; protocol 2 uses the HMAC half of the key."""
        if self.version == 1:
            return hmac.new(key, message, hashlib.sha256).digest()[:16]
        return hmac.new(key[:32], message, hashlib.sha256).digest()

    def verify(self, key: bytes, message: bytes, signature: Any) -> bool:
        """Check a pinUvAuthParam in constant time."""
        if not isinstance(signature, bytes):
            return False
        return hmac.compare_digest(self.authenticate(key, message), signature)


def _hkdf(z: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=bytes(32), info=info).derive(z)


def _aes_cbc(key: bytes, iv: bytes, data: bytes, *, encrypt: bool) -> bytes:
    cipher = Cipher(algorithms.AES(key), modes.CBC(iv))
    worker = cipher.encryptor() if encrypt else cipher.decryptor()
    return worker.update(data) + worker.finalize()


def _pin_hash(pin: str) -> bytes:
    return hashlib.sha256(pin.encode()).digest()[:16]


class SoftAuthenticator:
    """A CTAP2 authenticator in software, with the PIN and lockout rules of CTAP 2.1.

    Preset state: `pin` (None for no PIN), `pin_retries`, `consecutive_mismatches`
    (3 means auth-blocked until a power cycle), `credentials`, `min_pin_length`
    and `force_pin_change`. Variants: `client_pin_supported=False` omits the
    clientPin option and pinUvAuthProtocols from getInfo (and rejects
    clientPin), `ctap21=False` builds a FIDO_2_0-era key without pinUvAuthToken,
    credMgmt, powerCycleState and the CTAP 2.1 getInfo fields.
    `reset_window_s` is 10 on CTAP 2.1 keys and 5 on older YubiKey firmware.
    """

    def __init__(
        self,
        *,
        pin: str | None = None,
        pin_retries: int = MAX_PIN_RETRIES,
        consecutive_mismatches: int = 0,
        credentials: Iterable[SoftCredential] = (),
        max_discoverable: int = 25,
        min_pin_length: int = DEFAULT_MIN_PIN_LENGTH,
        force_pin_change: bool = False,
        client_pin_supported: bool = True,
        ctap21: bool = True,
        report_power_cycle_state: bool | None = None,
        legacy_token_permissions: int = PERMISSION_MC | PERMISSION_GA,
        reset_window_s: float = 10.0,
        touch_timeout_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        user_presence: UserPresence = touch_immediately,
        aaguid: bytes = LAB_AAGUID,
        firmware_version: int = 0x050704,
    ) -> None:
        if not 0 <= pin_retries <= MAX_PIN_RETRIES:
            raise ValueError(f"pin_retries {pin_retries} is outside 0..{MAX_PIN_RETRIES}")
        if len(aaguid) != 16:
            raise ValueError(f"an AAGUID is 16 bytes, not {len(aaguid)}")
        self.clock = clock
        self.user_presence = user_presence
        self.client_pin_supported = client_pin_supported
        self.ctap21 = ctap21
        # CTAP 2.0 has no powerCycleState, so a 2.0-era key omits it unless `report_power_cycle_state` is set.
        self.report_power_cycle_state = ctap21 if report_power_cycle_state is None else report_power_cycle_state
        self.legacy_token_permissions = legacy_token_permissions
        self.reset_window_s = reset_window_s
        self.touch_timeout_s = touch_timeout_s
        self.aaguid = bytes(aaguid)
        self.firmware_version = firmware_version
        self.max_discoverable = max_discoverable

        self.pin_hash: bytes | None = _pin_hash(pin) if pin is not None else None
        self.pin_retries = pin_retries
        self.consecutive_mismatches = consecutive_mismatches
        self.min_pin_length = min_pin_length
        self.force_pin_change = force_pin_change
        self.credentials: list[SoftCredential] = list(credentials)

        self.protocols = {2: PinUvAuthProtocol(2), 1: PinUvAuthProtocol(1)}
        self._token: bytes | None = None
        self._token_permissions = 0
        self._token_protocol: int | None = None
        self._rp_cursor: list[SoftCredential] = []
        self._cred_cursor: list[SoftCredential] = []
        self.boot_time = clock()
        self._busy = threading.Lock()

        # (command, clientPin or credentialManagement subcommand) of every request,
        # so tests can prove what a read sent; subcommand is None for other commands.
        self.requests: list[tuple[int, int | None]] = []
        self.power_cycles = 0

    # -- lifecycle -------------------------------------------------------

    def power_cycle(self) -> None:
        """Simulate removal and re-insertion: clear auth-blocked, new keys, restart the reset window."""
        self.consecutive_mismatches = 0
        for protocol in self.protocols.values():
            protocol.regenerate()
        self._token = None
        self._token_permissions = 0
        self.boot_time = self.clock()
        self.power_cycles += 1

    def restart_reset_window(self) -> None:
        """Start the reset window now without clearing other session state."""
        self.boot_time = self.clock()

    @property
    def pin_is_set(self) -> bool:
        """True when a PIN is set."""
        return self.pin_hash is not None

    @property
    def power_cycle_required(self) -> bool:
        """True after 3 consecutive PIN mismatches since power-up."""
        return self.consecutive_mismatches >= MAX_CONSECUTIVE_MISMATCHES

    def client_pin_subcommands(self) -> list[int]:
        """Return the clientPin subcommands received so far, in order."""
        return [sub for cmd, sub in self.requests if cmd == CMD_CLIENT_PIN and sub is not None]

    # -- request dispatch --------------------------------------------------

    def process(
        self,
        request: bytes,
        event: threading.Event | None = None,
        on_keepalive: KeepaliveCallback | None = None,
    ) -> bytes:
        """Run one CTAP2 request; return status byte || canonical CBOR response."""
        if not request:
            return bytes([ERR.INVALID_LENGTH])
        if not self._busy.acquire(blocking=False):
            return bytes([ERR.CHANNEL_BUSY])
        try:
            return self._process(request, event or threading.Event(), on_keepalive)
        finally:
            self._busy.release()

    def _process(self, request: bytes, event: threading.Event, on_keepalive: KeepaliveCallback | None) -> bytes:
        command = request[0]
        try:
            params = self._decode_params(request[1:])
            self.requests.append((command, self._subcommand_of(command, params)))
            response = self._dispatch(command, params, event, on_keepalive)
        except CtapFailure as failure:
            # Log the command and status only: parameters may carry PIN material or RP IDs.
            log.debug("CTAP command 0x%02X failed with status 0x%02X", command, failure.code)
            return bytes([failure.code])
        if response is None:
            return b"\x00"
        return b"\x00" + cbor.encode(response)

    @staticmethod
    def _subcommand_of(command: int, params: dict) -> int | None:
        if command == CMD_CLIENT_PIN:
            return params.get(2)
        if command in (CMD_CREDENTIAL_MANAGEMENT, CMD_CREDENTIAL_MANAGEMENT_PREVIEW):
            return params.get(1)
        return None

    @staticmethod
    def _decode_params(body: bytes) -> dict:
        if not body:
            return {}
        try:
            params = cbor.decode(body)
        except Exception as exc:  # fido2's decoder raises several exception types on malformed input
            raise CtapFailure(ERR.INVALID_CBOR) from exc
        if not isinstance(params, dict):
            raise CtapFailure(ERR.CBOR_UNEXPECTED_TYPE)
        return params

    def _dispatch(self, command: int, params: dict, event: threading.Event, on_keepalive: KeepaliveCallback | None) -> dict | None:
        if command == CMD_GET_INFO:
            return self.get_info()
        if command == CMD_CLIENT_PIN:
            return self._client_pin(params)
        if command == CMD_RESET:
            return self._reset(event, on_keepalive)
        if command == CMD_CREDENTIAL_MANAGEMENT and self.ctap21:
            return self._credential_management(params)
        if command == CMD_CREDENTIAL_MANAGEMENT_PREVIEW and self.ctap21:
            return self._credential_management(params)
        # NOTE: makeCredential and getAssertion are not emulated; credentials exist only as presets.
        raise CtapFailure(ERR.INVALID_COMMAND)

    # -- authenticatorGetInfo -------------------------------------------

    def get_info(self) -> dict:
        """Build the authenticatorGetInfo response map."""
        options: dict[str, bool] = {"rk": True, "up": True, "plat": False}
        if self.ctap21:
            options["credMgmt"] = True
        if self.client_pin_supported:
            options["clientPin"] = self.pin_is_set
            if self.ctap21:
                options["pinUvAuthToken"] = True
        if self.ctap21:
            options["makeCredUvNotRqd"] = True

        info: dict[int, Any] = {
            0x01: list(VERSIONS_CTAP21 if self.ctap21 else VERSIONS_CTAP20),
            0x03: self.aaguid,
            0x04: options,
            0x05: 1200,
        }
        if self.client_pin_supported:
            info[0x06] = [2, 1] if self.ctap21 else [1]
        if self.ctap21:
            info[0x0C] = self.force_pin_change
            info[0x0D] = self.min_pin_length
            info[0x0E] = self.firmware_version
            info[0x14] = self.remaining_discoverable
        return info

    @property
    def remaining_discoverable(self) -> int:
        """Free discoverable-credential slots."""
        return max(self.max_discoverable - len(self.credentials), 0)

    # -- authenticatorClientPIN -----------------------------------------

    def _client_pin(self, params: dict) -> dict | None:
        if not self.client_pin_supported:
            raise CtapFailure(ERR.INVALID_COMMAND)
        subcommand = params.get(2)
        if subcommand is None:
            raise CtapFailure(ERR.MISSING_PARAMETER)
        if subcommand == PIN_GET_RETRIES:
            response: dict[int, Any] = {3: self.pin_retries}
            if self.report_power_cycle_state:
                response[4] = self.power_cycle_required
            return response

        protocol = self._protocol(params)
        if subcommand == PIN_GET_KEY_AGREEMENT:
            return {1: protocol.key_agreement()}
        if subcommand == PIN_SET:
            return self._set_pin(protocol, params)
        if subcommand == PIN_CHANGE:
            return self._change_pin(protocol, params)
        if subcommand == PIN_GET_TOKEN_LEGACY:
            return self._get_pin_token(protocol, params, with_permissions=False)
        if subcommand == PIN_GET_TOKEN_WITH_PERMISSIONS and self.ctap21:
            return self._get_pin_token(protocol, params, with_permissions=True)
        raise CtapFailure(ERR.INVALID_SUBCOMMAND)

    def _protocol(self, params: dict) -> PinUvAuthProtocol:
        version = params.get(1)
        if version is None:
            raise CtapFailure(ERR.MISSING_PARAMETER)
        supported = (2, 1) if self.ctap21 else (1,)
        if version not in supported:
            raise CtapFailure(ERR.INVALID_PARAMETER)
        return self.protocols[version]

    @staticmethod
    def _require(params: dict, *keys: int) -> None:
        if any(params.get(key) is None for key in keys):
            raise CtapFailure(ERR.MISSING_PARAMETER)

    def _decrypt_new_pin(self, protocol: PinUvAuthProtocol, shared: bytes, new_pin_enc: bytes) -> bytes:
        padded = protocol.decrypt(shared, new_pin_enc)
        if len(padded) != PADDED_PIN_BYTES:
            raise CtapFailure(ERR.INVALID_PARAMETER)
        # A 64-byte PIN leaves no terminating zero: longer than the 63-byte maximum.
        if padded[-1] != 0:
            raise CtapFailure(ERR.PIN_POLICY_VIOLATION)
        new_pin = padded.split(b"\x00", 1)[0]
        try:
            code_points = len(new_pin.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise CtapFailure(ERR.PIN_POLICY_VIOLATION) from exc
        if code_points < self.min_pin_length or len(new_pin) > MAX_PIN_BYTES:
            raise CtapFailure(ERR.PIN_POLICY_VIOLATION)
        return new_pin

    def _set_pin(self, protocol: PinUvAuthProtocol, params: dict) -> None:
        self._require(params, 3, 4, 5)
        if self.pin_is_set:
            raise CtapFailure(ERR.NOT_ALLOWED)
        shared = protocol.shared_secret(params[3])
        if not protocol.verify(shared, params[5], params[4]):
            raise CtapFailure(ERR.PIN_AUTH_INVALID)
        new_pin = self._decrypt_new_pin(protocol, shared, params[5])
        self.pin_hash = hashlib.sha256(new_pin).digest()[:16]
        self.pin_retries = MAX_PIN_RETRIES
        self.consecutive_mismatches = 0
        return None

    def _change_pin(self, protocol: PinUvAuthProtocol, params: dict) -> None:
        self._require(params, 3, 4, 5, 6)
        if not self.pin_is_set:
            raise CtapFailure(ERR.PIN_NOT_SET)
        if self.pin_retries == 0:
            raise CtapFailure(ERR.PIN_BLOCKED)
        shared = protocol.shared_secret(params[3])
        if not protocol.verify(shared, params[5] + params[6], params[4]):
            raise CtapFailure(ERR.PIN_AUTH_INVALID)
        self._check_pin(protocol, shared, params[6])
        new_pin = self._decrypt_new_pin(protocol, shared, params[5])
        new_hash = hashlib.sha256(new_pin).digest()[:16]
        if self.force_pin_change and hmac.compare_digest(new_hash, self.pin_hash or b""):
            raise CtapFailure(ERR.PIN_POLICY_VIOLATION)
        self.pin_hash = new_hash
        self.force_pin_change = False
        self._token = None
        return None

    def _get_pin_token(self, protocol: PinUvAuthProtocol, params: dict, *, with_permissions: bool) -> dict:
        self._require(params, 3, 6)
        if with_permissions:
            self._require(params, 9)
            if params[9] == 0:
                raise CtapFailure(ERR.INVALID_PARAMETER)
        elif params.get(9) is not None or params.get(10) is not None:
            raise CtapFailure(ERR.INVALID_PARAMETER)
        if not self.pin_is_set:
            raise CtapFailure(ERR.PIN_NOT_SET)
        if self.pin_retries == 0:
            raise CtapFailure(ERR.PIN_BLOCKED)
        shared = protocol.shared_secret(params[3])
        self._check_pin(protocol, shared, params[6])
        if self.force_pin_change:
            raise CtapFailure(ERR.PIN_POLICY_VIOLATION)

        self._token = os.urandom(32)
        self._token_protocol = protocol.version
        self._token_permissions = params[9] if with_permissions else self.legacy_token_permissions
        return {2: protocol.encrypt(shared, self._token)}

    def _check_pin(self, protocol: PinUvAuthProtocol, shared: bytes, pin_hash_enc: Any) -> None:
        """Compare a pinHashEnc with the stored PIN hash, applying the CTAP 2.1 retry rules.

        The order follows CTAP 2.1. An auth-blocked key rejects the attempt
        before decrementing. Otherwise the retry counter drops first and only
        a match restores it, as on real keys, where pulling the key during the
        check must not save a try.
        """
        if self.power_cycle_required:
            raise CtapFailure(ERR.PIN_AUTH_BLOCKED)
        if not isinstance(pin_hash_enc, bytes):
            raise CtapFailure(ERR.INVALID_PARAMETER)
        self.pin_retries -= 1
        candidate = protocol.decrypt(shared, pin_hash_enc)
        if not hmac.compare_digest(candidate, self.pin_hash or b""):
            protocol.regenerate()
            self.consecutive_mismatches += 1
            if self.pin_retries == 0:
                raise CtapFailure(ERR.PIN_BLOCKED)
            if self.power_cycle_required:
                raise CtapFailure(ERR.PIN_AUTH_BLOCKED)
            raise CtapFailure(ERR.PIN_INVALID)
        self.pin_retries = MAX_PIN_RETRIES
        self.consecutive_mismatches = 0

    # -- authenticatorCredentialManagement --------------------------------

    def _credential_management(self, params: dict) -> dict | None:
        subcommand = params.get(1)
        if subcommand is None:
            raise CtapFailure(ERR.MISSING_PARAMETER)
        if subcommand in (CM_RPS_NEXT, CM_CREDS_NEXT):
            return self._enumeration_next(subcommand)
        if subcommand not in (CM_METADATA, CM_RPS_BEGIN, CM_CREDS_BEGIN, CM_DELETE, CM_UPDATE_USER):
            raise CtapFailure(ERR.INVALID_SUBCOMMAND)
        self._check_cm_auth(subcommand, params)
        sub_params = params.get(2) or {}

        if subcommand == CM_METADATA:
            return {1: len(self.credentials), 2: self.remaining_discoverable}
        if subcommand == CM_RPS_BEGIN:
            return self._rps_begin()
        if subcommand == CM_CREDS_BEGIN:
            return self._creds_begin(sub_params)
        if subcommand == CM_DELETE:
            self.credentials.remove(self._find_credential(sub_params))
            return None
        credential = self._find_credential(sub_params)
        user = sub_params.get(3)
        if not isinstance(user, dict) or user.get("id") != credential.user_id:
            raise CtapFailure(ERR.INVALID_PARAMETER)
        credential.user_name = user.get("name", "")
        credential.display_name = user.get("displayName", "")
        return None

    def _check_cm_auth(self, subcommand: int, params: dict) -> None:
        if params.get(4) is None:
            raise CtapFailure(ERR.PUAT_REQUIRED)
        protocol = self._protocol({1: params.get(3)})
        if self._token is None or self._token_protocol != protocol.version:
            raise CtapFailure(ERR.PIN_AUTH_INVALID)
        message = bytes([subcommand])
        if params.get(2) is not None:
            message += cbor.encode(params[2])
        if not protocol.verify(self._token, message, params[4]):
            raise CtapFailure(ERR.PIN_AUTH_INVALID)
        if not self._token_permissions & PERMISSION_CM:
            raise CtapFailure(ERR.PIN_AUTH_INVALID)

    def _rps_begin(self) -> dict:
        by_rp: dict[str, SoftCredential] = {}
        for credential in self.credentials:
            by_rp.setdefault(credential.rp_id, credential)
        if not by_rp:
            raise CtapFailure(ERR.NO_CREDENTIALS)
        first, *rest = by_rp.values()
        self._rp_cursor = rest
        return {3: first.rp_entity(), 4: first.rp_id_hash, 5: len(by_rp)}

    def _creds_begin(self, sub_params: dict) -> dict:
        rp_id_hash = sub_params.get(1)
        if not isinstance(rp_id_hash, bytes):
            raise CtapFailure(ERR.MISSING_PARAMETER)
        matches = [c for c in self.credentials if c.rp_id_hash == rp_id_hash]
        if not matches:
            raise CtapFailure(ERR.NO_CREDENTIALS)
        first, *rest = matches
        self._cred_cursor = rest
        response = self._credential_entry(first)
        response[9] = len(matches)
        return response

    def _enumeration_next(self, subcommand: int) -> dict:
        cursor = self._rp_cursor if subcommand == CM_RPS_NEXT else self._cred_cursor
        if not cursor:
            raise CtapFailure(ERR.NOT_ALLOWED)
        entry = cursor.pop(0)
        if subcommand == CM_RPS_NEXT:
            return {3: entry.rp_entity(), 4: entry.rp_id_hash}
        return self._credential_entry(entry)

    @staticmethod
    def _credential_entry(credential: SoftCredential) -> dict:
        return {
            6: credential.user_entity(),
            7: {"type": "public-key", "id": credential.credential_id},
            8: credential.cose_public_key(),
            10: 1,  # credProtect level 1: userVerificationOptional
        }

    def _find_credential(self, sub_params: dict) -> SoftCredential:
        descriptor = sub_params.get(2)
        if not isinstance(descriptor, dict) or not isinstance(descriptor.get("id"), bytes):
            raise CtapFailure(ERR.MISSING_PARAMETER)
        for credential in self.credentials:
            if credential.credential_id == descriptor["id"]:
                return credential
        raise CtapFailure(ERR.NO_CREDENTIALS)

    # -- authenticatorReset ---------------------------------------------

    def _reset(self, event: threading.Event, on_keepalive: KeepaliveCallback | None) -> None:
        if self.clock() - self.boot_time > self.reset_window_s:
            raise CtapFailure(ERR.NOT_ALLOWED)
        if on_keepalive is not None:
            on_keepalive(STATUS.UPNEEDED)
        touched = self.user_presence(event, self.touch_timeout_s)
        if event.is_set():
            raise CtapFailure(ERR.KEEPALIVE_CANCEL)
        if touched is None:
            raise CtapFailure(ERR.USER_ACTION_TIMEOUT)
        if not touched:
            raise CtapFailure(ERR.OPERATION_DENIED)

        self.credentials.clear()
        self.pin_hash = None
        self.pin_retries = MAX_PIN_RETRIES
        self.consecutive_mismatches = 0
        self.min_pin_length = DEFAULT_MIN_PIN_LENGTH
        self.force_pin_change = False
        self._token = None
        for protocol in self.protocols.values():
            protocol.regenerate()
        log.info("lab authenticator reset: credentials and PIN erased")
        return None
