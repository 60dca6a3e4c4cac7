"""Read-only PIV commands: SELECT, the PIN status query, YubiKey GET VERSION, GET SERIAL and GET METADATA, CHUID.

Nothing here sends a PIN, PUK or key. The PIN status query is VERIFY with
no data field (`00 20 00 80`), which SP 800-73-4 defines as a query that
spends no try. The BER-TLV parser used by the other applet readers lives
here too, because PIV is where the product reads the most TLV data.
"""

from __future__ import annotations

from dataclasses import dataclass

from tui.apdu import CommandApdu, Status, StatusKind
from tui.errors import MalformedResponseError
from tui.model import Counter, PinState, Source
from tui.transport import Channel

PIV_AID = bytes.fromhex("A000000308000010000100")

PIN_REFERENCE = 0x80
PUK_REFERENCE = 0x81
MANAGEMENT_KEY_REFERENCE = 0x9B

# YubiKey firmware that supports GET METADATA (Yubico documents it from 5.3).
METADATA_MIN_FIRMWARE = (5, 3, 0)

# PIV algorithm identifiers of the management key, as GET METADATA returns them
# in tag 01 (SP 800-78: 03 = 3DES, 08/0A/0C = AES-128/192/256).
MANAGEMENT_KEY_ALGORITHMS = {0x03: "3DES", 0x08: "AES-128", 0x0A: "AES-192", 0x0C: "AES-256"}


def parse_ber_tlv(data: bytes) -> list[tuple[int, bytes]]:
    """Split BER-TLV data into (tag, value) pairs, one level deep.

    Multi-byte tags (first byte xx011111) are returned as one integer, e.g.
    0x9F7F. Raises `MalformedResponseError` when a length runs past the data.
    """
    items: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        # Padding bytes 00 and FF between objects are allowed by ISO 7816-4.
        if data[pos] in (0x00, 0xFF):
            pos += 1
            continue

        tag = data[pos]
        pos += 1
        if tag & 0x1F == 0x1F:
            while True:
                if pos >= len(data):
                    raise MalformedResponseError(f"BER-TLV tag {tag:X} is cut off at byte {pos}")
                tag = (tag << 8) | data[pos]
                pos += 1
                if not data[pos - 1] & 0x80:
                    break

        if pos >= len(data):
            raise MalformedResponseError(f"BER-TLV tag {tag:X} has no length byte")
        length = data[pos]
        pos += 1
        if length & 0x80:
            count = length & 0x7F
            if count == 0 or count > 3 or pos + count > len(data):
                raise MalformedResponseError(f"BER-TLV tag {tag:X} has an invalid length field")
            length = int.from_bytes(data[pos:pos + count], "big")
            pos += count

        if pos + length > len(data):
            raise MalformedResponseError(f"BER-TLV tag {tag:X} claims {length} bytes but only {len(data) - pos} follow")
        items.append((tag, data[pos:pos + length]))
        pos += length
    return items


def find_tlv(data: bytes, tag: int) -> bytes | None:
    """Return the value of the first `tag` at the top level of `data`, or None."""
    for item_tag, value in parse_ber_tlv(data):
        if item_tag == tag:
            return value
    return None


def select_command(aid: bytes, name: str) -> CommandApdu:
    """Build SELECT by AID (`00 A4 04 00 Lc AID 00`)."""
    return CommandApdu(0x00, 0xA4, 0x04, 0x00, aid, le=0, name=name)


def select_piv(channel: Channel) -> Status:
    """Select the PIV applet and return the status (9000 when present)."""
    _, status = channel.send(select_command(PIV_AID, "SELECT PIV"))
    return status


def status_query_command(reference: int = PIN_REFERENCE) -> CommandApdu:
    """Build the PIV status query: VERIFY with no data field, which spends no try."""
    return CommandApdu(0x00, 0x20, 0x00, reference, name="VERIFY (PIV PIN status)")


def counter_from_status_query(status: Status, source: Source) -> Counter:
    """Turn the reply to a VERIFY status query into a `Counter`.

    63Cx gives x tries (0 is blocked), 6983 blocked, 6A88 no PIN defined and
    9000 "already verified", whose count cannot be read this way.
    """
    if status.kind is StatusKind.VERIFY_FAILED:
        state = PinState.BLOCKED if status.tries == 0 else PinState.OK
        return Counter(state, remaining=status.tries, source=source)
    if status.kind is StatusKind.BLOCKED:
        return Counter(PinState.BLOCKED, remaining=0, source=source)
    if status.kind is StatusKind.NOT_DEFINED:
        return Counter(PinState.NOT_SET, source=source, detail="no PIN is defined on this token (6A88)")
    if status.kind is StatusKind.VERIFIED_COUNT_UNKNOWN:
        return Counter(PinState.VERIFIED_COUNT_UNKNOWN, source=source,
                       detail="the PIN is already verified in this session, so the status query cannot return the count")
    return Counter(PinState.UNKNOWN, source=source, detail=f"{source.value} returned {status}")


def query_pin_status(channel: Channel) -> Counter:
    """Read the PIV PIN counter with the status query (no try is spent)."""
    _, status = channel.send(status_query_command(), status_query=True)
    return counter_from_status_query(status, Source.STATUS_QUERY)


def get_version(channel: Channel) -> tuple[int, int, int] | None:
    """Read the YubiKey firmware version with GET VERSION (`00 FD`); None when not answered."""
    response, status = channel.send(CommandApdu(0x00, 0xFD, 0x00, 0x00, le=0, name="GET VERSION"))
    if status.kind is not StatusKind.OK:
        return None
    if len(response.data) != 3:
        raise MalformedResponseError(f"GET VERSION returned {len(response.data)} bytes; a YubiKey returns 3 (major, minor, patch)")
    return response.data[0], response.data[1], response.data[2]


def get_serial(channel: Channel) -> int | None:
    """Read the YubiKey serial number with GET SERIAL (`00 F8`); None when not answered."""
    response, status = channel.send(CommandApdu(0x00, 0xF8, 0x00, 0x00, le=0, name="GET SERIAL"))
    if status.kind is not StatusKind.OK:
        return None
    if len(response.data) != 4:
        raise MalformedResponseError(f"GET SERIAL returned {len(response.data)} bytes; a YubiKey returns 4")
    return int.from_bytes(response.data, "big")


@dataclass
class Metadata:
    """The parts of a YubiKey GET METADATA reply that the scan uses."""

    algorithm: int | None = None
    is_default: bool | None = None
    total: int | None = None
    remaining: int | None = None


def parse_metadata(data: bytes) -> Metadata:
    """Parse GET METADATA TLVs: 01 algorithm, 05 default flag, 06 retries (total, remaining)."""
    metadata = Metadata()
    for tag, value in parse_ber_tlv(data):
        if tag == 0x01 and len(value) >= 1:
            metadata.algorithm = value[0]
        elif tag == 0x05 and len(value) == 1:
            metadata.is_default = value[0] == 0x01
        elif tag == 0x06:
            if len(value) != 2:
                raise MalformedResponseError(f"GET METADATA retries field has {len(value)} bytes; expected 2 (total, remaining)")
            metadata.total, metadata.remaining = value[0], value[1]
    return metadata


def get_metadata(channel: Channel, reference: int) -> tuple[Metadata | None, Status]:
    """Send GET METADATA (`00 F7 00 <reference>`); the metadata is None unless the key returned 9000."""
    names = {PIN_REFERENCE: "PIN", PUK_REFERENCE: "PUK", MANAGEMENT_KEY_REFERENCE: "management key"}
    name = f"GET METADATA ({names.get(reference, f'{reference:02X}')})"
    response, status = channel.send(CommandApdu(0x00, 0xF7, 0x00, reference, le=0, name=name))
    if status.kind is not StatusKind.OK:
        return None, status
    return parse_metadata(response.data), status


def counter_from_metadata(metadata: Metadata, what: str) -> Counter:
    """Turn PIN or PUK metadata into a `Counter` (0 remaining is blocked)."""
    if metadata.remaining is None:
        return Counter(PinState.UNKNOWN, source=Source.METADATA, detail=f"GET METADATA returned no retries field for the {what}")
    state = PinState.BLOCKED if metadata.remaining == 0 else PinState.OK
    return Counter(state, metadata.remaining, metadata.total, Source.METADATA, is_default=metadata.is_default)


CHUID_COMMAND = CommandApdu(0x00, 0xCB, 0x3F, 0xFF, bytes.fromhex("5C035FC102"), le=0, name="GET DATA CHUID")


def parse_chuid_guid(data: bytes) -> str | None:
    """Return the GUID (tag 34, 16 bytes) of a CHUID reply `53 L {...}` as 32 hex digits.

    An all-zero GUID identifies nothing and is returned as None.
    """
    body = find_tlv(data, 0x53)
    if body is None:
        raise MalformedResponseError("GET DATA CHUID reply has no 53 template")
    guid = find_tlv(body, 0x34)
    if guid is None:
        return None
    if len(guid) != 16:
        raise MalformedResponseError(f"CHUID GUID has {len(guid)} bytes; expected 16")
    if not any(guid):
        return None
    return guid.hex().upper()


def read_chuid_guid(channel: Channel) -> tuple[str | None, Status]:
    """Read the CHUID and return its GUID (None when unset) and the status word."""
    response, status = channel.send(CHUID_COMMAND)
    if status.kind is not StatusKind.OK:
        return None, status
    return parse_chuid_guid(response.data), status
