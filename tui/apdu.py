"""Command and response APDUs, and the one decoder of ISO 7816 status words.

Every status word the product acts on is decoded here, into a `Status` with a
`StatusKind` and, where the word carries one, a try count. Callers branch on
the kind, never on raw numbers, and the UI shows `Status.words()`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

# Instruction bytes whose data field carries a PIN, PUK, key or seed. Their data
# is never logged, traced or shown: VERIFY, CHANGE REFERENCE DATA, RESET RETRY
# COUNTER and UNLOCK PIN (INS 2C), EXTERNAL AUTHENTICATE (a cryptogram derived
# from the admin key), and the key imports PUT XAUTH KEY / PUT KEY (INS D8) and
# Yubico's IMPORT KEY (INS FE) and SET MANAGEMENT KEY (INS FF).
SENSITIVE_INS = frozenset({0x20, 0x24, 0x2C, 0x82, 0xD8, 0xFE, 0xFF})


class RedactedBytes(bytes):
    """The encoded bytes of a secret-carrying command APDU, whose `repr` shows only the length.

    Crash reports (Textual's, and rich tracebacks with `show_locals`) print
    every frame's local variables with `repr`, and a transport keeps
    the whole APDU in one. The value itself is unchanged, and slices stay
    redacted, because rich prints a long bytes value as a slice.
    """

    def __repr__(self) -> str:
        return f"<{len(self)} bytes redacted>"

    __str__ = __repr__

    def __getitem__(self, index):
        item = super().__getitem__(index)
        return RedactedBytes(item) if isinstance(index, slice) else item


@dataclass(frozen=True)
class CommandApdu:
    """One command APDU (ISO 7816-4, short length encoding).

    `name` is the field term used in logs and on screen ("SELECT PIV",
    "VERIFY (status)"). `sensitive` forces redaction of the data field; it is
    set automatically for the instructions in `SENSITIVE_INS`.
    """

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    le: int | None = None
    name: str = ""
    sensitive: bool = False

    def __post_init__(self) -> None:
        for label, value in (("CLA", self.cla), ("INS", self.ins), ("P1", self.p1), ("P2", self.p2)):
            if not 0 <= value <= 0xFF:
                raise ValueError(f"{label} must be one byte, got {value!r}")
        if len(self.data) > 255:
            raise ValueError(f"data field of {len(self.data)} bytes needs extended length, which is not supported")
        if self.le is not None and not 0 <= self.le <= 256:
            raise ValueError(f"Le must be 0..256, got {self.le}")
        if self.ins in SENSITIVE_INS and self.data and not self.sensitive:
            object.__setattr__(self, "sensitive", True)

    def to_bytes(self) -> bytes:
        """Encode the APDU for transmission (case 1 to 4, short lengths); `RedactedBytes` when sensitive."""
        out = bytearray((self.cla, self.ins, self.p1, self.p2))
        if self.data:
            out.append(len(self.data))
            out += self.data
        if self.le is not None:
            out.append(self.le & 0xFF)
        return RedactedBytes(out) if self.sensitive else bytes(out)

    @property
    def header(self) -> str:
        """CLA INS P1 P2 as upper-case hex, e.g. "00 20 00 80"."""
        return f"{self.cla:02X} {self.ins:02X} {self.p1:02X} {self.p2:02X}"

    def redacted_data(self) -> str:
        """Return the data field as hex, or "[N bytes redacted]" for a sensitive command."""
        if not self.data:
            return ""
        if self.sensitive:
            return f"[{len(self.data)} bytes redacted]"
        return self.data.hex().upper()

    def describe(self) -> str:
        """Return a one-line, secret-free description for logs and the activity panel."""
        parts = [self.name or "APDU", self.header]
        data = self.redacted_data()
        if data:
            parts.append(data)
        return " ".join(parts)

    def __repr__(self) -> str:
        return f"CommandApdu({self.describe()!r})"


@dataclass(frozen=True)
class ResponseApdu:
    """One response APDU: its data field and the status word SW1SW2."""

    data: bytes
    sw: int

    @classmethod
    def from_bytes(cls, raw: bytes) -> ResponseApdu:
        """Split a raw response into data and status word."""
        from tui.errors import MalformedResponseError

        if len(raw) < 2:
            raise MalformedResponseError(f"response of {len(raw)} bytes has no status word")
        return cls(bytes(raw[:-2]), (raw[-2] << 8) | raw[-1])

    @property
    def sw1(self) -> int:
        """The first status byte."""
        return self.sw >> 8

    @property
    def sw2(self) -> int:
        """The second status byte."""
        return self.sw & 0xFF

    def to_bytes(self) -> bytes:
        """Encode as data || SW1 SW2."""
        return self.data + bytes((self.sw1, self.sw2))

    def __repr__(self) -> str:
        # Response data is never secret on the read-only path, but a reply to a
        # future generate command could be an OTP code: print only its length.
        return f"ResponseApdu({len(self.data)} bytes, SW={self.sw:04X})"


class StatusKind(enum.Enum):
    """The meaning of a status word to the product."""

    OK = "ok"
    VERIFY_FAILED = "verify failed"  # 63Cx and 630x: wrong PIN or PUK, x tries left
    WARNING = "warning"  # 6300 from EXTERNAL AUTHENTICATE and other 63xx
    BLOCKED = "blocked"  # 6983
    NOT_DEFINED = "not defined"  # 6A88: referenced data (PIN, key) not defined
    NOT_SUPPORTED = "not supported"  # 6A82 file or application not found, 6D00 INS not supported, 6E00 CLA
    SECURITY_STATUS = "security status not satisfied"  # 6982
    CONDITIONS = "conditions of use not satisfied"  # 6985 (OATH: waiting for a button press)
    WRONG_DATA = "wrong data"  # 6A80
    WRONG_LENGTH = "wrong length"  # 6700
    WRONG_PARAMETERS = "wrong parameters"  # 6A86, 6B00
    MORE_DATA = "more data available"  # 61xx
    WRONG_LE = "wrong Le"  # 6Cxx
    VERIFIED_COUNT_UNKNOWN = "already verified"  # 9000 to a PIV status query
    OTHER = "other"


@dataclass(frozen=True)
class Status:
    """A decoded status word."""

    sw: int
    kind: StatusKind
    tries: int | None = None

    @property
    def ok(self) -> bool:
        """True for 9000 (including 9000 to a status query)."""
        return self.kind in (StatusKind.OK, StatusKind.VERIFIED_COUNT_UNKNOWN)

    def words(self) -> str:
        """Return the status in words, with the try count where the word carries one."""
        if self.kind is StatusKind.VERIFY_FAILED:
            noun = "try" if self.tries == 1 else "tries"
            return f"verify failed, {self.tries} {noun} left"
        if self.kind is StatusKind.VERIFIED_COUNT_UNKNOWN:
            return "already verified in this session, try count not readable"
        if self.kind is StatusKind.OTHER:
            return f"unexpected status word {self.sw:04X}"
        return self.kind.value

    def __str__(self) -> str:
        return f"{self.sw:04X} {self.words()}"


_FIXED = {
    0x9000: StatusKind.OK,
    0x6983: StatusKind.BLOCKED,
    0x6A88: StatusKind.NOT_DEFINED,
    0x6A82: StatusKind.NOT_SUPPORTED,
    0x6D00: StatusKind.NOT_SUPPORTED,
    0x6E00: StatusKind.NOT_SUPPORTED,
    0x6982: StatusKind.SECURITY_STATUS,
    0x6985: StatusKind.CONDITIONS,
    0x6A80: StatusKind.WRONG_DATA,
    0x6700: StatusKind.WRONG_LENGTH,
    0x6A86: StatusKind.WRONG_PARAMETERS,
    0x6B00: StatusKind.WRONG_PARAMETERS,
}


def decode_sw(sw: int, *, status_query: bool = False, counter_in_630x: bool = True) -> Status:
    """Decode a status word into a `Status`.

    `status_query` marks the reply to a VERIFY with no data: there 9000 means
    "already verified", and the try count cannot be read that way.
    `counter_in_630x` reads 630x as "x tries left", the YubiKey NEO form of
    63Cx; EXTERNAL AUTHENTICATE passes False because its 6300 means "bad
    cryptogram".
    """
    if not 0 <= sw <= 0xFFFF:
        raise ValueError(f"status word must be two bytes, got {sw!r}")

    if sw == 0x9000 and status_query:
        return Status(sw, StatusKind.VERIFIED_COUNT_UNKNOWN)
    if sw in _FIXED:
        return Status(sw, _FIXED[sw])

    sw1, sw2 = sw >> 8, sw & 0xFF
    if sw1 == 0x63 and sw2 & 0xF0 == 0xC0:
        return Status(sw, StatusKind.VERIFY_FAILED, tries=sw2 & 0x0F)
    if sw1 == 0x63 and sw2 <= 0x0F and counter_in_630x:
        return Status(sw, StatusKind.VERIFY_FAILED, tries=sw2)
    if sw1 == 0x63:
        return Status(sw, StatusKind.WARNING)
    if sw1 == 0x61:
        return Status(sw, StatusKind.MORE_DATA)
    if sw1 == 0x6C:
        return Status(sw, StatusKind.WRONG_LE)
    return Status(sw, StatusKind.OTHER)


@dataclass
class Exchange:
    """One APDU round trip as the activity log and traces record it."""

    command: CommandApdu
    response: ResponseApdu | None
    status: Status | None = None
    error: str | None = None
    elapsed_ms: float = 0.0
    extra: dict = field(default_factory=dict)

    def describe(self) -> str:
        """Return a secret-free one-line summary: command, status word and its words."""
        if self.response is None:
            return f"{self.command.name or self.command.header}: {self.error or 'no response'}"
        status = self.status or decode_sw(self.response.sw)
        return f"{self.command.name or self.command.header} {status}"
