"""Shared pieces of the sweep: canary secrets, the fault-injecting backend, case limits and counts.

Every secret the sweep puts on a lab key is a canary: a value that appears
nowhere else, so finding it (as text, upper- or lower-case hex, or an
FF-padded PIN block in hex) in a log, trace, audit line, screen or error
text proves a leak. Faults are injected at the transport seam as the typed
`PcscError` the PC/SC backend raises, so the code under test cannot tell
them from a real card pull or pcscd stop.
"""

from __future__ import annotations

import contextlib
import enum
import signal
from collections import Counter as Tally
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from tui.errors import PcscError
from tui.pcsc import error_for_code

# --- counts for the summary line --------------------------------------------------------


@dataclass
class SweepStats:
    """Cases tried and failures per category, printed when the session ends."""

    cases: Tally = field(default_factory=Tally)
    failures: Tally = field(default_factory=Tally)
    expected_failures: Tally = field(default_factory=Tally)

    def add(self, category: str, count: int = 1) -> None:
        """Count `count` more cases tried in `category`."""
        self.cases[category] += count


STATS = SweepStats()

CATEGORIES = ("hygiene", "canary", "faults", "fuzz", "terminals", "pcscd")


def category_of(nodeid: str) -> str:
    """Return the sweep category of a test node ID from its module name (test_faults_ui.py -> faults)."""
    module = nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
    name = module.removeprefix("test_").removesuffix(".py").split("_")[0]
    return name if name in CATEGORIES else "other"


# --- case time limit --------------------------------------------------------------------


class CaseTimeout(BaseException):
    """One fuzz case ran past its limit: the code under test hangs on that input.

    A BaseException, so an `except Exception` in the code under test cannot
    swallow it.
    """


@contextlib.contextmanager
def time_limit(seconds: float, what: str) -> Iterator[None]:
    """Raise `CaseTimeout` naming `what` when the body runs longer than `seconds` (main thread only)."""

    def expire(signum, frame):
        raise CaseTimeout(f"{what} did not return within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --- canaries ---------------------------------------------------------------------------

CANARY_PIV_PIN = "730519"
CANARY_ACA_PIN = "61938274"
CANARY_PUK = "48120967"
CANARY_NEW_PUK = "90817263"
CANARY_NEW_PIN = "582047"
CANARY_FIDO_PIN = "canary-fido-8841"
CANARY_AES_ADMIN_KEY = bytes.fromhex("C4A7A11E5EC12E7000C0FFEE8841D00D")
CANARY_TDES_ADMIN_KEY = bytes.fromhex("C4A7A11E5EC12E70D15EA5EDBEEF8841F00DFACE0BADC0DE")
CANARY_OTP_SEED = b"canary-otp-seed-8841"
CANARY_VAULT_TOKEN = "hvs.canary-vault-token-8841"
# Relying-party IDs and user names are personal data: they must stay out of logs and audit.
CANARY_RP_ID = "canary-rp-8841.example"
CANARY_USER_NAME = "canary-user-8841"


def canary_forms(value: str | bytes) -> set[str]:
    """Return every form a leaked `value` may take: text, hex in both cases, FF-padded PIN block hex."""
    raw = value.encode() if isinstance(value, str) else value
    forms = {raw.hex().upper(), raw.hex()}
    if isinstance(value, str):
        forms.add(value)
    else:
        # A binary key shown as text in groups of four, the way the show-once view groups it.
        upper = raw.hex().upper()
        forms.add(" ".join(upper[i:i + 4] for i in range(0, len(upper), 4)))
    if len(raw) < 8:
        padded = raw + b"\xff" * (8 - len(raw))
        forms |= {padded.hex().upper(), padded.hex()}
    return forms


@dataclass
class Canaries:
    """The canary values of one run, by name; `add` puts in derived ones (generated secrets, OTP codes)."""

    values: dict[str, str | bytes] = field(default_factory=lambda: dict(DEFAULT_CANARIES))

    def add(self, name: str, value: str | bytes) -> None:
        """Add a canary found during the run (a generated secret, an OTP code)."""
        self.values[name] = value

    def hits(self, text: str | bytes, where: str) -> list[str]:
        """Return "canary <name> (<form>) in <where>" for every canary form found in `text`."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        found = []
        for name, value in self.values.items():
            for form in sorted(canary_forms(value)):
                if form and form in text:
                    found.append(f"canary {name} ({form!r}) in {where}")
        return found


DEFAULT_CANARIES: dict[str, str | bytes] = {
    "PIV PIN": CANARY_PIV_PIN,
    "ACA PIN": CANARY_ACA_PIN,
    "PUK": CANARY_PUK,
    "new PUK": CANARY_NEW_PUK,
    "new PIN": CANARY_NEW_PIN,
    "FIDO PIN": CANARY_FIDO_PIN,
    "AES admin key": CANARY_AES_ADMIN_KEY,
    "3DES admin key": CANARY_TDES_ADMIN_KEY,
    "OTP seed": CANARY_OTP_SEED,
    "Vault token": CANARY_VAULT_TOKEN,
    "relying-party ID": CANARY_RP_ID,
    "user name": CANARY_USER_NAME,
}


def canarify(keys: Iterable) -> None:
    """Replace every secret of built lab keys by its canary, keeping try counters and types.

    Crescendo keys (with an ACA) get the 8-digit ACA canary PIN because their
    policy is numeric 6 to 8 digits; PIV-only keys get the 6-digit one.
    """
    from tui.lab.aca import AcaApplet
    from tui.lab.card import AdminKeyType
    from tui.lab.fido_applet import FidoApplet
    from tui.lab.oath import HidOathInstance
    from tui.lab.soft_fido import SoftCredential, _pin_hash
    from tui.secret import Secret

    for key in keys:
        if key.card is None or key.store is None:
            continue
        store = key.store
        has_aca = key.card.applet(AcaApplet) is not None
        pin = CANARY_ACA_PIN if has_aca else CANARY_PIV_PIN
        if store.pin is not None:
            store.pin.value = Secret(pin.encode(), store.pin.value.kind)
        if store.puk is not None:
            store.puk.value = Secret(CANARY_PUK.encode(), store.puk.value.kind)
        if store.admin_key is not None:
            canary_key = CANARY_AES_ADMIN_KEY if store.admin_key.key_type is AdminKeyType.AES128 else CANARY_TDES_ADMIN_KEY
            store.admin_key.key = Secret(canary_key, store.admin_key.key.kind)
        for applet in key.card.applets:
            if isinstance(applet, FidoApplet):
                authenticator = applet.authenticator
                if authenticator.pin_hash is not None:
                    authenticator.pin_hash = _pin_hash(CANARY_FIDO_PIN)
                authenticator.credentials = [
                    SoftCredential(CANARY_RP_ID, f"{CANARY_USER_NAME}-{index}", display_name=CANARY_USER_NAME)
                    for index, _ in enumerate(authenticator.credentials)
                ]
            if isinstance(applet, HidOathInstance) and applet.config.mode is not None:
                applet.config.seed = Secret(CANARY_OTP_SEED, applet.config.seed.kind)

        replacements = {"piv-pin": pin, "aca-pin": pin, "piv-puk": CANARY_PUK, "fido-pin": CANARY_FIDO_PIN}
        for table in (key.escrow, key.holder_knows):
            for name, secret in list(table.items()):
                if name == "admin-key":
                    tdes = store.admin_key is not None and store.admin_key.key_type is AdminKeyType.TDES
                    table[name] = Secret((CANARY_TDES_ADMIN_KEY if tdes else CANARY_AES_ADMIN_KEY).hex().upper(), secret.kind)
                elif name in replacements:
                    table[name] = Secret(replacements[name], secret.kind)


# --- injected PC/SC faults --------------------------------------------------------------


class Fault(str, enum.Enum):
    """A PC/SC failure class, with the return code pcscd gives for it."""

    CARD_REMOVED = "card removed"
    CARD_RESET = "reset by another connection"
    SERVICE_STOPPED = "PC/SC service stopped"
    SHARING_VIOLATION = "sharing violation"

    @property
    def code(self) -> int:
        """The SCARD_* return code of this failure."""
        return {
            Fault.CARD_REMOVED: 0x80100069,
            Fault.CARD_RESET: 0x80100068,
            Fault.SERVICE_STOPPED: 0x8010001E,
            Fault.SHARING_VIOLATION: 0x8010000B,
        }[self]


class FaultyBackend:
    """A `ReaderBackend` over a lab backend that fails APDU number `at` (0-based, all readers).

    `after=True` lets the card process the APDU before the failure, so its
    response is lost (the command took effect). A card-removed fault also
    pulls the lab card, and a reset powers it up again, so the lab state
    matches what the error reports. `at=None` injects nothing.
    """

    def __init__(self, inner, fault: Fault, at: int | None, *, after: bool = False) -> None:
        self.inner = inner
        self.fault = fault
        self.at = at
        self.after = after
        self.sent = 0
        self.fired: int | None = None
        self.is_lab = inner.is_lab

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def list_readers(self) -> list[str]:
        """Return the inner backend's readers."""
        return self.inner.list_readers()

    def open(self, reader: str) -> FaultyTransport:
        """Return a transport that counts APDUs and fails the chosen one."""
        return FaultyTransport(self, self.inner.open(reader), reader)

    def _fail(self, reader: str) -> PcscError:
        if self.fault is Fault.CARD_REMOVED:
            with contextlib.suppress(Exception):
                self.inner.remove(reader)
        elif self.fault is Fault.CARD_RESET:
            self.inner.key(reader).card.power_on()
        return error_for_code(self.fault.code, f"send an APDU to the card in {reader}")


class FaultyTransport:
    """One transport of a `FaultyBackend`."""

    def __init__(self, backend: FaultyBackend, inner, reader: str) -> None:
        self.backend = backend
        self.inner = inner
        self.reader = reader

    def connect(self) -> bytes:
        """Connect through the inner transport."""
        return self.inner.connect()

    def transmit_raw(self, apdu: bytes) -> bytes:
        """Send `apdu`, or fail it when it is the chosen one."""
        backend = self.backend
        index = backend.sent
        backend.sent += 1
        if index != backend.at:
            return self.inner.transmit_raw(apdu)

        backend.fired = index
        if backend.after:
            self.inner.transmit_raw(apdu)
        raise backend._fail(self.reader)

    def begin_transaction(self) -> None:
        """Begin a transaction on the inner transport."""
        self.inner.begin_transaction()

    def end_transaction(self) -> None:
        """End the transaction on the inner transport."""
        self.inner.end_transaction()

    def disconnect(self) -> None:
        """Disconnect the inner transport."""
        self.inner.disconnect()


# --- crash reports ----------------------------------------------------------------------


def crash_reports(exc: BaseException, *, skip_frames: int = 1) -> dict[str, str]:
    """Render `exc` as the crash reports that print local variables, and return their text by name.

    The first `skip_frames` frames (the test that caught the exception, whose
    locals hold the canary table) are left out. "textual" uses the settings of Textual 8's `App._fatal_error` (the report
    printed when an action raises), "rich" the defaults of
    `rich.traceback.install(show_locals=True)`.
    """
    import io

    import rich
    from rich.console import Console
    from rich.traceback import Traceback

    traceback = exc.__traceback__
    for _ in range(skip_frames):
        if traceback is not None and traceback.tb_next is not None:
            traceback = traceback.tb_next
    reports = {}
    settings = {
        "textual": {"show_locals": True, "width": None, "locals_max_length": 5, "suppress": [rich]},
        "rich": {"show_locals": True},
    }
    for name, options in settings.items():
        console = Console(file=io.StringIO(), width=160, record=True, color_system=None)
        console.print(Traceback.from_exception(type(exc), exc, traceback, **options))
        reports[name] = console.export_text()
    return reports


# --- a pyscard stand-in over a lab backend ------------------------------------------------


class LabScard:
    """The functions and constants of pyscard's `smartcard.scard` over a lab backend, for `PcscBackend`.

    `explode_at` makes SCardTransmit number N (0-based) raise `explosion()`,
    an exception pyscard does not document, such as a driver's SystemError.
    """

    SCARD_S_SUCCESS = 0
    SCARD_SCOPE_USER = 0
    SCARD_SHARE_SHARED = 2
    SCARD_PROTOCOL_T0 = 1
    SCARD_PROTOCOL_T1 = 2
    SCARD_PCI_T0 = 1
    SCARD_PCI_T1 = 2
    SCARD_LEAVE_CARD = 0

    def __init__(self, lab, explode_at: int | None = None, explosion=lambda: SystemError("driver fault")) -> None:
        self.lab = lab
        self.explode_at = explode_at
        self.explosion = explosion
        self.sent = 0
        self.handles: dict[int, object] = {}

    def SCardEstablishContext(self, scope):
        return 0, 1

    def SCardIsValidContext(self, context):
        return 0

    def SCardReleaseContext(self, context):
        return 0

    def SCardListReaders(self, context, groups):
        return 0, self.lab.list_readers()

    def SCardConnect(self, context, reader, share, protocols):
        transport = self.lab.open(reader)
        transport.connect()
        handle = len(self.handles) + 1
        self.handles[handle] = transport
        return 0, handle, self.SCARD_PROTOCOL_T1

    def SCardStatus(self, card):
        transport = self.handles[card]
        return 0, transport.reader, 0, self.SCARD_PROTOCOL_T1, list(self.lab.key(transport.reader).card.atr)

    def SCardTransmit(self, card, pci, apdu):
        index = self.sent
        self.sent += 1
        if index == self.explode_at:
            raise self.explosion()
        return 0, list(self.handles[card].transmit_raw(bytes(apdu)))

    def SCardReconnect(self, card, share, protocols, disposition):
        return 0, self.SCARD_PROTOCOL_T1

    def SCardBeginTransaction(self, card):
        self.handles[card].begin_transaction()
        return 0

    def SCardEndTransaction(self, card, disposition):
        self.handles[card].end_transaction()
        return 0

    def SCardDisconnect(self, card, disposition):
        self.handles.pop(card).disconnect()
        return 0


# --- recovery actions on a lab session ------------------------------------------------------


@dataclass
class RecoveryRig:
    """A canary lab scenario wired to a session, with the channel to its first token behind `FaultyBackend`."""

    lab: object  # tui.lab.backend.LabBackend
    backend: FaultyBackend
    scan: object  # tui.model.ScanResult
    token: object  # tui.model.TokenScan
    channel: object  # tui.transport.Channel
    session: object  # tui.session.Session
    store: object  # tui.escrow.memory.MemoryStore

    @property
    def key(self):
        """The lab key of the token."""
        return self.lab.key(self.token.reader)


class _SetupView:
    """The lab backend through a second handle, so setup reads do not count toward faults."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.is_lab = True

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def recovery_rig(name: str, audit_path, fault: Fault = Fault.CARD_REMOVED, at: int | None = None, *,
                 after: bool = False, settings=None, observers=()) -> RecoveryRig:
    """Build scenario `name` with canaries, seed its escrow records, scan it and connect to its first token."""
    from tui.audit import AuditTrail
    from tui.escrow.context import EscrowContext
    from tui.escrow.flow import EscrowFlow
    from tui.escrow.memory import MemoryStore
    from tui.escrow.records import Encoding, SecretKind
    from tui.lab.backend import LabBackend
    from tui.scan import scan_all
    from tui.session import Session
    from tui.settings import SiteSettings
    from tui.transport import Channel

    settings = settings or SiteSettings()
    lab = LabBackend(name)
    canarify(lab.keys)
    scan = scan_all(_SetupView(lab), settings, usb_hid=False)
    token = scan.tokens[0]
    kinds = {"piv-puk": (SecretKind.PIV_PUK, Encoding.ASCII_FF_PADDED.value),
             "admin-key": (SecretKind.ADMIN_KEY, Encoding.HEX.value)}
    store = MemoryStore()
    for name_on_file, value in lab.key(token.reader).escrow.items():
        kind, encoding = kinds[name_on_file]
        store.seed(token.token_id, kind, value, encoding=encoding)
    audit = AuditTrail(audit_path, lab=True)
    session = Session(settings, audit, lab_scenario=name,
                      escrow=EscrowContext(EscrowFlow(store, user="sweep", audit=audit), label="lab store"))
    backend = FaultyBackend(lab, fault, at, after=after)
    transport = backend.open(token.reader)
    transport.connect()
    return RecoveryRig(lab, backend, scan, token, Channel(transport, list(observers)), session, store)
