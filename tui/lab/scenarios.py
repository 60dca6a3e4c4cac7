"""Lab scenarios: named sets of emulated keys in known states, for tests, training and demos.

A `Scenario` builds fresh `LabKey`s each time, so state changed by one run
never leaks into the next. Register a new scenario with the `scenario`
decorator in this module; the key builders (`crescendo_key`, `piv_key`,
`yubikey`) take the states that scenarios vary.

Every lab ID comes from the reserved lab ranges in `tui.lab.gp`: CPLC data
carries the lab fabricator code and YubiKey serials start with 99.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from tui.errors import LabError
from tui.lab.aca import AcaApplet, aca_admin_key, aca_pin
from tui.lab.card import AdminKeyType, Applet, CredentialStore, ReferenceData, VirtualCard, reference
from tui.lab.fido_applet import FidoApplet, attach_fido_applet
from tui.lab.gp import LAB_CPLC_FABRICATOR, CardManager, CplcMode, lab_cplc, lab_serial
from tui.lab.oath import hotp_slot, install_hid_oath
from tui.lab.piv import (
    CHUID_TAG,
    PivApplet,
    PivQuirks,
    YubiKeyInfo,
    chuid_object,
    self_signed_certificate,
    yubikey_management_key,
    yubikey_pin,
    yubikey_puk,
)
from tui.lab.soft_fido import SoftAuthenticator, SoftCredential
from tui.secret import Secret

# Reader names as pcscd reports the real devices (name, then slot and index).
READER_CRESCENDO = "HID Global Crescendo Key 00 00"
READER_CRESCENDO_SECOND = "HID Global Crescendo Key 01 00"
READER_YUBIKEY = "Yubico YubiKey OTP+FIDO+CCID 00 00"
READER_GENERIC_PIV = "Generic PIV reader 00 00"
READER_EMPTY = "Generic USB Smart Card Reader 00 00"

# ATR of an HID Crescendo C2300 card as listed in Ludovic Rousseau's smartcard_list.txt.
# NOTE: the ATR of a Crescendo Key (the USB form) was not found; the lab key uses the C2300 one.
ATR_CRESCENDO = bytes.fromhex("3BD596FF8191FE1FC34332333030CC")
# ATR of a YubiKey 5 (T=1, historical bytes include "YubiKey").
ATR_YUBIKEY_5 = bytes.fromhex("3BFD1300008131FE158073C021C057597562694B657940")

# The fixed AES-128 admin key of lab Crescendo keys: never a real key, and its
# first bytes repeat the lab fabricator code so a lab key is recognisable in a trace.
LAB_ADMIN_KEY = bytes.fromhex("1AB01AB0000000000000000000004C41")
# An older lab admin key that no lab token holds any more: the stale record "on file".
LAB_STALE_ADMIN_KEY = bytes.fromhex("1AB01AB0000000000000000000005354")


def lab_atr(historical: bytes) -> bytes:
    """Build a T=1 ATR (3B 8n 80 01 <historical bytes> TCK) with a valid check byte."""
    if not 1 <= len(historical) <= 15:
        raise ValueError(f"an ATR carries 1..15 historical bytes, got {len(historical)}")
    body = bytes((0x80 | len(historical), 0x80, 0x01)) + historical
    check = 0
    for byte in body:
        check ^= byte
    return b"\x3b" + body + bytes((check,))


ATR_GENERIC_PIV = lab_atr(b"LAB PIV")


@dataclass
class LabKey:
    """One emulated key in one reader.

    `card` is None for an empty reader. `escrow` contains the values "on file"
    that seed the lab escrow store (keys such as "piv-puk", "aca-pin",
    "admin-key"). `holder_knows` contains what the key's user remembers, for demos.
    """

    reader: str
    card: VirtualCard | None
    store: CredentialStore | None
    escrow: dict[str, Secret] = field(default_factory=dict)
    holder_knows: dict[str, Secret] = field(default_factory=dict)
    description: str = ""

    def applet(self, kind: type[Applet]) -> Applet | None:
        """Return the card's first applet of class `kind`, or None (also for an empty reader)."""
        return None if self.card is None else self.card.applet(kind)

    @property
    def piv(self) -> PivApplet | None:
        """The PIV applet, if the key has one."""
        return self.applet(PivApplet)  # type: ignore[return-value]

    @property
    def aca(self) -> AcaApplet | None:
        """The ACA, if the key has one."""
        return self.applet(AcaApplet)  # type: ignore[return-value]

    @property
    def card_manager(self) -> CardManager | None:
        """The GlobalPlatform card manager, if the key has one."""
        return self.applet(CardManager)  # type: ignore[return-value]


@dataclass(frozen=True)
class Scenario:
    """A named lab setup; `build()` returns new keys in the stated state on every call."""

    name: str
    description: str
    builder: Callable[[], list[LabKey]]

    def build(self) -> list[LabKey]:
        """Build the scenario's keys afresh."""
        return self.builder()


SCENARIOS: dict[str, Scenario] = {}


def scenario(name: str, description: str) -> Callable[[Callable[[], list[LabKey]]], Callable[[], list[LabKey]]]:
    """Register the decorated builder as scenario `name`; raise LabError for a taken name."""

    def register(builder: Callable[[], list[LabKey]]) -> Callable[[], list[LabKey]]:
        if name in SCENARIOS:
            raise LabError(f"lab scenario {name!r} is already registered; pick another name")
        SCENARIOS[name] = Scenario(name, description, builder)
        return builder

    return register


def get_scenario(name: str) -> Scenario:
    """Return scenario `name`; raise LabError naming it and listing the valid names when unknown."""
    try:
        return SCENARIOS[name]
    except KeyError:
        valid = ", ".join(sorted(SCENARIOS))
        raise LabError(f"unknown lab scenario {name!r}; valid scenarios: {valid}") from None


# --- key builders -------------------------------------------------------------------------


def lab_guid(chip: int) -> bytes:
    """Return the CHUID GUID of lab chip `chip`: the lab fabricator code, then the chip number."""
    return uuid.UUID(int=(LAB_CPLC_FABRICATOR << 112) | chip).bytes


def _valid_certificate(common_name: str) -> bytes:
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    return self_signed_certificate(common_name, now - dt.timedelta(days=180), now + dt.timedelta(days=545))


def crescendo_key(chip: int, *, reader: str = READER_CRESCENDO, pin: ReferenceData | None = None,
                  admin_key: bytes | None = LAB_ADMIN_KEY, admin_key_type: AdminKeyType | None = None,
                  cplc_mode: CplcMode = CplcMode.ANY_TIME, certificate: bool = True) -> LabKey:
    """Build an HID Crescendo-style key: ACA, PIV and a card manager sharing one PIN.

    `chip` selects the lab CPLC serial and CHUID GUID; keys in one scenario
    need different chips. The default PIN is 00000000 with 8 of 8 tries.
    """
    store = CredentialStore(pin=pin if pin is not None else aca_pin())
    if admin_key is not None:
        store.admin_key = aca_admin_key(admin_key, admin_key_type)

    piv = PivApplet(store, objects={CHUID_TAG: chuid_object(lab_guid(chip))})
    if certificate:
        piv.put_certificate(0x9A, _valid_certificate(f"Lab Crescendo {chip}"))
    aca = AcaApplet(store, pin_lengths=(6, 8), numeric_only=True)
    manager = CardManager(lab_cplc(chip), mode=cplc_mode)

    card = VirtualCard([aca, piv, manager], ATR_CRESCENDO, default_applet=manager)
    return LabKey(reader, card, store, description="HID Crescendo-style key (ACA, PIV, card manager)")


def piv_key(chip: int, *, reader: str = READER_GENERIC_PIV, pin: ReferenceData | None = None,
            puk: ReferenceData | None = None) -> LabKey:
    """Build a generic PIV card with a card manager (CPLC) and a CHUID; `pin=None` leaves no PIN defined."""
    store = CredentialStore(pin=pin, puk=puk)
    piv = PivApplet(store, objects={CHUID_TAG: chuid_object(lab_guid(chip))})
    manager = CardManager(lab_cplc(chip), mode=CplcMode.ANY_TIME)
    card = VirtualCard([piv, manager], ATR_GENERIC_PIV, default_applet=manager)
    return LabKey(reader, card, store, description="generic PIV card (PIV, card manager)")


def yubikey(serial_index: int, *, reader: str = READER_YUBIKEY, firmware: tuple[int, int, int] = (5, 4, 3),
            pin: ReferenceData | None = None, puk: ReferenceData | None = None,
            quirks: PivQuirks | None = None) -> LabKey:
    """Build a YubiKey-style key: PIV with the Yubico extensions, no card manager.

    Defaults are the factory state: PIN 123456 and PUK 12345678 with 3 tries
    each, the default 3DES management key, no data objects. Selecting another
    applet drops the verified PIN, as on YubiKey 4 and 5.
    """
    store = CredentialStore(pin=pin or yubikey_pin(), puk=puk or yubikey_puk(), admin_key=yubikey_management_key())
    piv = PivApplet(store, yubikey=YubiKeyInfo(firmware, lab_serial(serial_index)),
                    quirks=quirks or PivQuirks(lose_state_on_deselect=True))
    card = VirtualCard([piv], ATR_YUBIKEY_5)
    return LabKey(reader, card, store, description=f"YubiKey-style key, firmware {'.'.join(map(str, firmware))}")


def generic_pin(value: str, tries_left: int | None = None, max_tries: int = 8) -> ReferenceData:
    """Build a generic PIV PIN (no vendor default)."""
    return reference(value, max_tries, tries_left, kind="PIV PIN")


def generic_puk(value: str, tries_left: int | None = None, max_tries: int = 10) -> ReferenceData:
    """Build a generic PIV PUK (no vendor default)."""
    return reference(value, max_tries, tries_left, kind="PIV PUK")


def with_fido(key: LabKey, authenticator: SoftAuthenticator, **applet_options) -> LabKey:
    """Add a FIDO applet backed by `authenticator` to `key`'s card, reachable over PC/SC and the lab's USB HID."""
    if key.card is None:
        raise LabError(f"lab reader {key.reader!r} has no card to carry a FIDO applet")
    attach_fido_applet(key.card, authenticator, **applet_options)
    key.description += " + FIDO2"
    return key


def lab_fido_credentials(*pairs: tuple[str, str]) -> list[SoftCredential]:
    """Build discoverable credentials from (relying-party ID, user name) pairs; lab names only."""
    return [SoftCredential(rp_id, user_name, display_name=user_name.title()) for rp_id, user_name in pairs]


# --- the scenarios ------------------------------------------------------------------------


@scenario("healthy", "HID Crescendo-style key, nothing locked: PIN 8 of 8 tries, AES-128 admin key, CPLC readable, FIDO PIN 8 of 8")
def _healthy() -> list[LabKey]:
    key = crescendo_key(1, pin=aca_pin("13572468"))
    key.holder_knows["aca-pin"] = Secret("13572468", "ACA PIN")
    with_fido(key, SoftAuthenticator(pin="246813", credentials=lab_fido_credentials(("login.example.com", "lab-user"))))
    key.holder_knows["fido-pin"] = Secret("246813", "FIDO PIN")
    return [key]


@scenario("wrong-pin", "Generic PIV key after wrong PIN entries: 3 of 8 tries left, PUK set")
def _wrong_pin() -> list[LabKey]:
    key = piv_key(2, pin=generic_pin("24681357", tries_left=3), puk=generic_puk("86420975"))
    key.holder_knows["piv-pin"] = Secret("24681357", "PIV PIN")
    key.escrow["piv-puk"] = Secret("86420975", "PIV PUK")
    return [key]


@scenario("pin-locked-puk", "Generic PIV key with the PIN blocked (0 of 8) and a PUK on file")
def _pin_locked_puk() -> list[LabKey]:
    key = piv_key(3, pin=generic_pin("31415926", tries_left=0), puk=generic_puk("73910264"))
    key.escrow["piv-puk"] = Secret("73910264", "PIV PUK")
    return [key]


@scenario("pin-locked-no-puk", "Generic PIV key with the PIN blocked (0 of 8) and the PUK blocked (0 of 10)")
def _pin_locked_no_puk() -> list[LabKey]:
    key = piv_key(4, pin=generic_pin("27182818", tries_left=0), puk=generic_puk("16180339", tries_left=0))
    return [key]


@scenario("no-pin", "Generic PIV key with no PIN defined (VERIFY answers 6A88)")
def _no_pin() -> list[LabKey]:
    return [piv_key(5, pin=None, puk=None)]


@scenario("yubikey-healthy", "YubiKey-style key, firmware 5.4.3: default PIN and PUK, 3 of 3 tries each")
def _yubikey_healthy() -> list[LabKey]:
    key = yubikey(1)
    key.holder_knows["piv-pin"] = Secret("123456", "PIV PIN")
    return [key]


@scenario("two-tokens", "Two HID Crescendo-style keys in two readers with different IDs; the second has 5 of 8 PIN tries")
def _two_tokens() -> list[LabKey]:
    first = crescendo_key(7, reader=READER_CRESCENDO)
    second = crescendo_key(8, reader=READER_CRESCENDO_SECOND, pin=aca_pin(tries_left=5))
    return [first, second]


@scenario("no-token", "One reader with no card in it")
def _no_token() -> list[LabKey]:
    return [LabKey(READER_EMPTY, None, None, description="empty reader")]


@scenario("otp-drift", "HID Crescendo-style key, smart card healthy, OTP slot 1 HOTP configured and 1042 codes in (server behind)")
def _otp_drift() -> list[LabKey]:
    key = crescendo_key(9, pin=aca_pin("86421357"))
    install_hid_oath(key.card, {1: hotp_slot(counter=1042, name="VPN OTP")}, store=key.store)
    key.holder_knows["aca-pin"] = Secret("86421357", "ACA PIN")
    return [key]


@scenario("xauth-stale", "HID Crescendo-style key with an AES-128 admin key; the admin key on file is an older, stale one")
def _xauth_stale() -> list[LabKey]:
    key = crescendo_key(10, pin=aca_pin("97531864"), admin_key=LAB_ADMIN_KEY)
    key.escrow["admin-key"] = Secret(LAB_STALE_ADMIN_KEY.hex().upper(), "admin key")
    key.holder_knows["aca-pin"] = Secret("97531864", "ACA PIN")
    return [key]


@scenario("fido-not-set", "HID Crescendo-style key with PIV and FIDO2; no FIDO PIN set (clientPin false)")
def _fido_not_set() -> list[LabKey]:
    return [with_fido(crescendo_key(21), SoftAuthenticator())]


@scenario("fido-healthy", "HID Crescendo-style key with PIV and FIDO2; FIDO PIN set, 8 of 8 tries, credentials for two relying parties")
def _fido_healthy() -> list[LabKey]:
    credentials = lab_fido_credentials(("example.com", "alice"), ("example.com", "bob"), ("example.org", "alice"))
    key = with_fido(crescendo_key(22), SoftAuthenticator(pin="975310", credentials=credentials))
    key.holder_knows["fido-pin"] = Secret("975310", "FIDO PIN")
    return [key]


@scenario("fido-auth-blocked", "HID Crescendo-style key with PIV and FIDO2 after 3 wrong FIDO PINs in a row: 5 of 8 tries, power cycle required")
def _fido_auth_blocked() -> list[LabKey]:
    authenticator = SoftAuthenticator(pin="864201", pin_retries=5, consecutive_mismatches=3,
                                      credentials=lab_fido_credentials(("example.com", "alice")))
    key = with_fido(crescendo_key(23), authenticator)
    key.holder_knows["fido-pin"] = Secret("864201", "FIDO PIN")
    return [key]


@scenario("fido-blocked", "HID Crescendo-style key with PIV and FIDO2; FIDO PIN blocked (0 of 8 tries), only a FIDO reset recovers it")
def _fido_blocked() -> list[LabKey]:
    authenticator = SoftAuthenticator(pin="531864", pin_retries=0, credentials=lab_fido_credentials(("example.com", "alice")))
    return [with_fido(crescendo_key(24), authenticator)]


@scenario("admin-key-on-file", "HID Crescendo-style key with the PIN blocked (0 of 8); its AES-128 admin key is on file in escrow")
def _admin_key_on_file() -> list[LabKey]:
    key = crescendo_key(25, pin=aca_pin("24681357", tries_left=0), admin_key=LAB_ADMIN_KEY)
    key.escrow["admin-key"] = Secret(LAB_ADMIN_KEY.hex().upper(), "admin key")
    return [key]


@scenario("crescendo-no-admin-key", "HID Crescendo-style key with the PIN blocked (0 of 8) and no admin key (XAUTH1 not initialised)")
def _crescendo_no_admin_key() -> list[LabKey]:
    return [crescendo_key(26, pin=aca_pin("35792468", tries_left=0), admin_key=None)]


@scenario("cert-expired", "Generic PIV key, PIN healthy (8 of 8), but the 9A login certificate expired 30 days ago")
def _cert_expired() -> list[LabKey]:
    key = piv_key(27, pin=generic_pin("46813579"), puk=generic_puk("80246913"))
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    expired = self_signed_certificate("Lab PIV 27", now - dt.timedelta(days=395), now - dt.timedelta(days=30))
    key.piv.put_certificate(0x9A, expired)
    key.holder_knows["piv-pin"] = Secret("46813579", "PIV PIN")
    key.escrow["piv-puk"] = Secret("80246913", "PIV PUK")
    return [key]


@scenario("puk-blocked-pin-known", "YubiKey-style key, PIN 3 of 3 and known to the user, PUK blocked (0 of 3)")
def _puk_blocked_pin_known() -> list[LabKey]:
    key = yubikey(2, pin=yubikey_pin(b"58203716"), puk=yubikey_puk(b"61730482", tries_left=0))
    key.holder_knows["piv-pin"] = Secret("58203716", "PIV PIN")
    return [key]


@scenario("yubikey-pin-locked", "YubiKey-style key with the PIN blocked (0 of 3) and the PUK on file (3 of 3)")
def _yubikey_pin_locked() -> list[LabKey]:
    key = yubikey(3, pin=yubikey_pin(b"70318264", tries_left=0), puk=yubikey_puk(b"93027461"))
    key.escrow["piv-puk"] = Secret("93027461", "PIV PUK")
    return [key]


@scenario("yubikey-all-blocked", "YubiKey-style key with the PIN and the PUK both blocked (0 of 3 each): only a PIV reset helps")
def _yubikey_all_blocked() -> list[LabKey]:
    return [yubikey(4, pin=yubikey_pin(b"40917253", tries_left=0), puk=yubikey_puk(b"52840196", tries_left=0))]


__all__ = [
    "ATR_CRESCENDO",
    "ATR_GENERIC_PIV",
    "ATR_YUBIKEY_5",
    "FidoApplet",
    "LabKey",
    "SCENARIOS",
    "Scenario",
    "crescendo_key",
    "generic_pin",
    "generic_puk",
    "get_scenario",
    "lab_atr",
    "lab_fido_credentials",
    "lab_guid",
    "piv_key",
    "scenario",
    "with_fido",
    "yubikey",
]
