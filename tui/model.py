"""Plain data the scan produces and the UI, `scan --json` and the runbook read.

Nothing here talks to a device. A number that could not be read is `None`
and its state gives the reason ("unknown", "not readable"); it is never 0.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class PcscProblem(enum.Enum):
    """A PC/SC failure as a typed state: (code, check that failed, plain message)."""

    NO_SERVICE = (0x8010001D, "smart-card service", "The smart-card service (pcscd) is not running or not reachable. Start pcscd, then rescan.")
    SERVICE_STOPPED = (0x8010001E, "smart-card service", "The smart-card service stopped. Rescan once it is running again.")
    ACCESS_DENIED = (0x8010006A, "PC/SC access policy", "The PC/SC access policy (polkit) refused this login; common over SSH. Ask an administrator to allow pcscd access for this user, then rescan.")
    NO_READERS = (0x8010002E, "readers", "No smart-card reader is connected. Check the USB connection, try another port, then rescan.")
    NO_CARD = (0x8010000C, "card in reader", "The reader reports no card. Reinsert the key, then rescan.")
    CARD_REMOVED = (0x80100069, "card in reader", "The key was removed during the operation. Nothing was misread; reinsert it and rescan.")
    NOT_TRANSACTED = (0x80100016, "card in reader", "The exchange with the key failed, most likely because it was removed. Reinsert it and rescan.")
    CARD_RESET = (0x80100068, "card session", "Another connection reset the key. The tool reconnects; rescan if this persists.")
    SHARING_VIOLATION = (0x8010000B, "reader access", "Another process holds the reader exclusively (often gpg's scdaemon). Ask its owner to release it; keytriage never kills it. Then rescan.")
    UNKNOWN_READER = (0x80100009, "reader", "The reader is gone (unplugged or renamed since the last scan). Rescan to list the readers again.")
    UNRESPONSIVE_CARD = (0x80100066, "card answer", "The key did not answer a reset. Reinsert it, then rescan.")
    UNKNOWN = (0, "smart-card stack", "The smart-card stack reported an unexpected error.")

    def __init__(self, code: int, check: str, message: str) -> None:
        self.code = code
        self.check = check
        self.message = message

    @classmethod
    def from_code(cls, code: int) -> PcscProblem:
        """Map a PC/SC return code to its problem, `UNKNOWN` when unmapped."""
        code &= 0xFFFFFFFF
        for problem in cls:
            if problem.code == code:
                return problem
        return cls.UNKNOWN


class Profile(str, enum.Enum):
    """The command set a token speaks, chosen by the commands it accepts."""

    HID_CRESCENDO = "hid-crescendo"
    YUBIKEY = "yubikey"
    GENERIC_PIV = "piv"
    UNKNOWN = "unknown"

    @property
    def label(self) -> str:
        """The name shown to technicians."""
        return {
            Profile.HID_CRESCENDO: "HID Crescendo",
            Profile.YUBIKEY: "YubiKey",
            Profile.GENERIC_PIV: "Generic PIV",
            Profile.UNKNOWN: "Unknown card",
        }[self]


class PinState(str, enum.Enum):
    """State of a smart-card PIN or PUK, as far as it can be read without spending a try."""

    OK = "ok"
    BLOCKED = "blocked"
    NOT_SET = "not_set"
    VERIFIED_COUNT_UNKNOWN = "verified_count_unknown"
    NOT_READABLE = "not_readable"
    NOT_SUPPORTED = "not_supported"
    UNKNOWN = "unknown"

    @property
    def label(self) -> str:
        """The state in words, upper-case where it calls for action."""
        return {
            PinState.OK: "ok",
            PinState.BLOCKED: "BLOCKED",
            PinState.NOT_SET: "NOT SET",
            PinState.VERIFIED_COUNT_UNKNOWN: "verified, count unknown",
            PinState.NOT_READABLE: "unknown (not readable)",
            PinState.NOT_SUPPORTED: "not supported",
            PinState.UNKNOWN: "unknown",
        }[self]


class Source(str, enum.Enum):
    """The method that produced a number; every counter carries one."""

    METADATA = "GET METADATA"
    STATUS_QUERY = "PIV status query"
    ACA_STATUS_QUERY = "ACA status query"
    ESCROW = "escrow record"
    GET_CHALLENGE = "GET CHALLENGE length"
    PIN_PROPERTIES = "GET PIN PROPERTIES"
    NONE = "not readable"


# At or below this many tries left (and below the total), a counter reads "LOW".
LOW_TRIES = 3


@dataclass
class Counter:
    """A retry counter: tries remaining of total, its state and how it was read."""

    state: PinState
    remaining: int | None = None
    total: int | None = None
    source: Source = Source.NONE
    detail: str = ""
    is_default: bool | None = None

    def text(self) -> str:
        """E.g. "0/8 BLOCKED", "3/? ok, LOW", "unknown (not readable)"."""
        if self.remaining is None:
            return self.state.label
        total = "?" if self.total is None else str(self.total)
        label = self.state.label
        # Few tries left after failures is worth a word: the next wrong entries
        # block the PIN. A full counter (3 of 3 on a YubiKey) is not low.
        if self.state is PinState.OK and 0 < self.remaining <= LOW_TRIES and self.remaining != self.total:
            label = f"{label}, LOW"
        return f"{self.remaining}/{total} {label}"


@dataclass
class PinPolicy:
    """PIN length and character rules read from the key (ACA GET PIN PROPERTIES)."""

    min_length: int
    max_length: int
    numeric_only: bool
    source: Source = Source.PIN_PROPERTIES


@dataclass
class AdminKey:
    """Presence and type of the external-authentication admin key."""

    present: bool | None
    key_type: str | None = None  # "3DES", "AES-128" or None when unknown
    source: Source = Source.NONE

    def text(self) -> str:
        """E.g. "AES-128", "none", "unknown"."""
        if self.present is None:
            return "unknown"
        if not self.present:
            return "none"
        return self.key_type or "present, type unknown"


@dataclass(frozen=True)
class TokenId:
    """A token ID typed `source:value`, e.g. `cplc:4790516856781A2B3C4D`."""

    source: str
    value: str

    def __str__(self) -> str:
        return f"{self.source}:{self.value}"

    @classmethod
    def parse(cls, text: str) -> TokenId:
        """Parse `source:value`; raise ValueError naming the bad input."""
        source, sep, value = text.partition(":")
        if not sep or not source or not value:
            raise ValueError(f"token ID {text!r} is not of the form source:value (for example cplc:4790516856781A2B3C4D)")
        return cls(source, value)


@dataclass
class IdCandidate:
    """One way to identify the token, shown by `keytriage id --explain`."""

    source: str
    value: str
    description: str


@dataclass
class SmartCardState:
    """The findings of the read-only smart-card scan (runbook Step 3)."""

    pin: Counter = field(default_factory=lambda: Counter(PinState.UNKNOWN))
    puk: Counter = field(default_factory=lambda: Counter(PinState.NOT_READABLE))
    pin_policy: PinPolicy | None = None
    admin_key: AdminKey = field(default_factory=lambda: AdminKey(None))
    aca_version: str | None = None
    piv_present: bool = False
    aca_present: bool = False
    serial: int | None = None
    firmware: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class TokenScan:
    """One token as the read-only scan saw it."""

    index: int
    reader: str
    atr: str = ""
    profile: Profile = Profile.UNKNOWN
    token_id: TokenId | None = None
    id_reason: str = ""  # why token_id is None; escrow quotes it when it refuses
    cuid: str | None = None
    cuid_source: str | None = None
    id_candidates: list[IdCandidate] = field(default_factory=list)
    smartcard: SmartCardState = field(default_factory=SmartCardState)
    problem: PcscProblem | None = None
    error: str | None = None
    is_lab: bool = False
    # Filled by the FIDO, OTP and certificate readers; typed loosely here so the
    # model does not import those layers (tui.fido.state.FidoState,
    # tui.oath.OtpSlots, a list of certificate summaries).
    fido: object | None = None
    otp: object | None = None
    certificates: list = field(default_factory=list)

    @property
    def name(self) -> str:
        """Profile label and reader, for lists."""
        return f"{self.profile.label} in {self.reader}"


@dataclass
class ScanResult:
    """The result of one read-only scan of every reader."""

    tokens: list[TokenScan] = field(default_factory=list)
    problem: PcscProblem | None = None
    problem_detail: str = ""
    readers: list[str] = field(default_factory=list)
    lab_scenario: str | None = None
    apdu_count: int = 0
