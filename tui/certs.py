"""Read-only summary of the PIV certificates in slots 9A, 9C, 9D and 9E.

The scan reads each slot's certificate data object with GET DATA
(`00 CB 3F FF 05 5C 03 <tag> 00`): 5FC105 for 9A, 5FC10A for 9C, 5FC10B for
9D and 5FC101 for 9E (SP 800-73-4 Part 1, container IDs). The object is
`53 L { 70 certificate, 71 CertInfo, FE EDC }`. The runbook needs the dates:
an expired certificate makes a smart-card login fail with a healthy PIN, and
that is not a lockout. Nothing here sends a PIN or changes the token.
"""

from __future__ import annotations

import datetime as dt
import gzip
import zlib
from dataclasses import dataclass

from tui.apdu import CommandApdu, StatusKind
from tui.errors import MalformedResponseError
from tui.piv import find_tlv
from tui.transport import Channel

# Key slot -> certificate data object tag, in the order the scan reads them.
CERTIFICATE_OBJECTS: dict[str, bytes] = {
    "9A": bytes.fromhex("5FC105"),
    "9C": bytes.fromhex("5FC10A"),
    "9D": bytes.fromhex("5FC10B"),
    "9E": bytes.fromhex("5FC101"),
}

SLOT_PURPOSES = {
    "9A": "PIV authentication",
    "9C": "digital signature",
    "9D": "key management",
    "9E": "card authentication",
}

# Bit 0 of CertInfo (tag 71) marks a gzip-compressed certificate (SP 800-73-4 Part 1).
CERTINFO_COMPRESSED = 0x01


@dataclass
class CertificateInfo:
    """One slot's certificate as the scan read it.

    `present` is None when GET DATA returned neither the object nor 6A82.
    A present certificate that could not be parsed has `error` set and the
    other fields None. `expired` compares `not_after` with the scan time.
    """

    slot: str
    present: bool | None
    subject: str | None = None
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None
    expired: bool | None = None
    error: str | None = None

    def text(self) -> str:
        """Word the certificate state, e.g. "expired 2024-01-31", "valid to 2026-09-12", "none"."""
        if self.present is None:
            return "unknown"
        if not self.present:
            return "none"
        if self.error is not None:
            return "present, unreadable"
        if self.not_after is None:
            return "present"
        date = self.not_after.date().isoformat()
        return f"expired {date}" if self.expired else f"valid to {date}"

    def to_dict(self) -> dict:
        """Return the certificate as JSON-ready data, dates in ISO 8601 (UTC), unknown as null."""
        return {
            "slot": self.slot,
            "purpose": SLOT_PURPOSES.get(self.slot),
            "present": self.present,
            "subject": self.subject,
            "not_before": self.not_before.isoformat() if self.not_before else None,
            "not_after": self.not_after.isoformat() if self.not_after else None,
            "expired": self.expired,
            "error": self.error,
        }


def certificate_command(slot: str) -> CommandApdu:
    """Build GET DATA of `slot`'s certificate object; raise KeyError naming the valid slots."""
    try:
        tag = CERTIFICATE_OBJECTS[slot]
    except KeyError:
        raise KeyError(f"slot {slot!r} has no certificate object; use one of {', '.join(CERTIFICATE_OBJECTS)}") from None
    return CommandApdu(0x00, 0xCB, 0x3F, 0xFF, b"\x5c\x03" + tag, le=0, name=f"GET DATA certificate {slot}")


def parse_certificate_object(slot: str, data: bytes, now: dt.datetime) -> CertificateInfo:
    """Summarise a GET DATA reply for `slot`; a malformed object is "present, unreadable", never an exception.

    `now` is the scan time (timezone-aware) that `expired` is computed against.
    """
    from cryptography import x509

    try:
        der = _certificate_der(data)
        certificate = x509.load_der_x509_certificate(der)
        not_before = certificate.not_valid_before_utc
        not_after = certificate.not_valid_after_utc
        subject = _subject_text(certificate)
    except (MalformedResponseError, ValueError, OSError, EOFError, zlib.error) as exc:
        # cryptography raises ValueError for DER it cannot parse; gzip raises
        # OSError (BadGzipFile), EOFError or zlib.error for a broken stream.
        return CertificateInfo(slot, True, error=f"certificate in slot {slot} is unreadable: {exc}")
    return CertificateInfo(slot, True, subject, not_before, not_after, now > not_after)


def _certificate_der(data: bytes) -> bytes:
    body = find_tlv(data, 0x53)
    if body is None:
        raise MalformedResponseError("the reply has no 53 template")
    der = find_tlv(body, 0x70)
    if der is None:
        raise MalformedResponseError("the data object has no certificate (tag 70)")
    info = find_tlv(body, 0x71)
    if info and info[0] & CERTINFO_COMPRESSED:
        der = gzip.decompress(der)
    return der


def _subject_text(certificate) -> str:
    from cryptography.x509.oid import NameOID

    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if names:
        value = names[0].value
        return value if isinstance(value, str) else value.decode("utf-8", errors="replace")
    return certificate.subject.rfc4514_string() or "(empty subject)"


def read_certificates(channel: Channel, now: dt.datetime) -> list[CertificateInfo]:
    """Read the four slot certificates with one GET DATA each; PIV must be selected.

    6A82 means no certificate. Another status word leaves the slot unknown
    with the status in `error`. Transport errors propagate as `PcscError`.
    """
    certificates = []
    for slot in CERTIFICATE_OBJECTS:
        response, status = channel.send(certificate_command(slot))
        if status.ok:
            certificates.append(parse_certificate_object(slot, response.data, now))
        elif status.sw == 0x6A82:
            certificates.append(CertificateInfo(slot, False))
        elif status.kind is StatusKind.SECURITY_STATUS:
            certificates.append(CertificateInfo(slot, None, error=f"GET DATA needs the PIN on this token ({status})"))
        else:
            certificates.append(CertificateInfo(slot, None, error=f"GET DATA returned {status}"))
    return certificates
