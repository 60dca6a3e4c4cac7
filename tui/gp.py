"""GlobalPlatform CPLC (card production life cycle) data: GET DATA tag 9F7F and its fields.

The CPLC is the usual per-chip production record, and its IC serial number
and batch give a 10-byte card unique ID (CUID). Which applet returns the
CPLC to GET DATA 9F7F is card-specific, so the reader tries the selected applet first
and then the card managers (issuer security domains) by AID.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from tui.apdu import CommandApdu, StatusKind
from tui.errors import MalformedResponseError
from tui.piv import select_command
from tui.transport import Channel

GET_CPLC_COMMAND = CommandApdu(0x80, 0xCA, 0x9F, 0x7F, le=0, name="GET DATA CPLC")

# Card manager AIDs to select when the current applet does not return the CPLC:
# the GlobalPlatform ISD, then the older Visa Open Platform one.
CARD_MANAGER_AIDS = (bytes.fromhex("A000000151000000"), bytes.fromhex("A000000003000000"))

CPLC_LENGTH = 42

# Status words that mean "this applet or card has no CPLC": INS not supported,
# data not found, file or application not found.
NO_CPLC_KINDS = frozenset({StatusKind.NOT_SUPPORTED, StatusKind.NOT_DEFINED})


@dataclass(frozen=True)
class Cplc:
    """The 42 CPLC bytes split into their named fields (widths in bytes in the comments)."""

    ic_fabricator: bytes  # 2
    ic_type: bytes  # 2
    os_id: bytes  # 2
    os_release_date: bytes  # 2
    os_release_level: bytes  # 2
    ic_fabrication_date: bytes  # 2
    ic_serial_number: bytes  # 4
    ic_batch_identifier: bytes  # 2
    ic_module_fabricator: bytes  # 2
    ic_module_packaging_date: bytes  # 2
    icc_manufacturer: bytes  # 2
    ic_embedding_date: bytes  # 2
    ic_pre_personalizer: bytes  # 2
    ic_pre_personalization_date: bytes  # 2
    ic_pre_personalization_equipment_id: bytes  # 4
    ic_personalizer: bytes  # 2
    ic_personalization_date: bytes  # 2
    ic_personalization_equipment_id: bytes  # 4

    def as_hex(self) -> dict[str, str]:
        """Return every field as upper-case hex, keyed by field name."""
        return {f.name: getattr(self, f.name).hex().upper() for f in fields(self)}


CPLC_FIELD_WIDTHS = (2, 2, 2, 2, 2, 2, 4, 2, 2, 2, 2, 2, 2, 2, 4, 2, 2, 4)


def parse_cplc(data: bytes) -> Cplc:
    """Parse a GET DATA 9F7F reply (`9F 7F 2A` + 42 bytes, or the 42 bytes alone).

    Raises `MalformedResponseError` for a reply of another length or tag.
    """
    if data[:2] == b"\x9f\x7f":
        if len(data) < 3 or data[2] != CPLC_LENGTH or len(data) != 3 + CPLC_LENGTH:
            raise MalformedResponseError(f"CPLC reply of {len(data)} bytes does not hold 9F 7F 2A and 42 data bytes")
        body = data[3:]
    elif len(data) == CPLC_LENGTH:
        body = data
    else:
        raise MalformedResponseError(f"CPLC reply has {len(data)} bytes; expected 45 (9F 7F 2A + 42) or 42")

    values = []
    pos = 0
    for width in CPLC_FIELD_WIDTHS:
        values.append(body[pos:pos + width])
        pos += width
    return Cplc(*values)


@dataclass
class CplcRead:
    """The outcome of `read_cplc`: the CPLC, or None with the reason."""

    cplc: Cplc | None
    reason: str = ""
    card_manager: bytes | None = None


def read_cplc(channel: Channel) -> CplcRead:
    """Read the CPLC: GET DATA in the current applet, then after selecting each card manager.

    Leaves the card manager selected when one was needed, so the caller
    selects the applet it wants next. Raises `MalformedResponseError` when a
    9000 reply does not parse.
    """
    response, status = channel.send(GET_CPLC_COMMAND)
    if status.kind is StatusKind.OK:
        return CplcRead(parse_cplc(response.data))
    reasons = [f"GET DATA CPLC returned {status}"]

    for aid in CARD_MANAGER_AIDS:
        _, select_status = channel.send(select_command(aid, "SELECT card manager"))
        if select_status.kind is not StatusKind.OK:
            reasons.append(f"SELECT {aid.hex().upper()} returned {select_status}")
            continue
        response, status = channel.send(GET_CPLC_COMMAND)
        if status.kind is StatusKind.OK:
            return CplcRead(parse_cplc(response.data), card_manager=aid)
        # This card manager exists but has no CPLC, so another one will not have it either.
        reasons.append(f"GET DATA CPLC in {aid.hex().upper()} returned {status}")
        break

    return CplcRead(None, "; ".join(reasons))
