"""Read-only commands of the HID Crescendo access control applet (ACA).

SELECT ACA (version from the reply), GET PIN PROPERTIES (length and
character rules), GET CHALLENGE (admin key type from the challenge length)
and, under a site switch, the ACA VERIFY status query. None of them sends a
PIN or key, and GET CHALLENGE spends no try.
"""

from __future__ import annotations

from tui.apdu import CommandApdu, Status, StatusKind
from tui.errors import MalformedResponseError, PolicyError
from tui.model import AdminKey, Counter, PinPolicy, Source
from tui.piv import counter_from_status_query, find_tlv, parse_ber_tlv, select_command
from tui.transport import Channel

ACA_AID = bytes.fromhex("A0000000791000")

# The family byte that precedes the four version bytes in the SELECT reply.
ACA_FAMILY = 0x10

# Challenge length -> admin (XAUTH) key type, as HID documents for GET CHALLENGE.
CHALLENGE_KEY_TYPES = {8: "3DES", 16: "AES-128"}


def parse_aca_version(data: bytes) -> str | None:
    """Return the applet version from a SELECT ACA reply, e.g. "3.0.3 build 1".

    The reply is `6F { 84 AID, A5 { 01 { 10 v1 v2 v3 build } } }`; a reply
    without the A5 template returns None. Raises `MalformedResponseError`
    for TLV data that does not parse.
    """
    body = find_tlv(data, 0x6F)
    template = find_tlv(body if body is not None else data, 0xA5)
    if template is None:
        return None
    value = find_tlv(template, 0x01)
    if value is None:
        return None
    if len(value) != 5 or value[0] != ACA_FAMILY:
        raise MalformedResponseError(f"ACA version field is {value.hex().upper()}; expected family byte 10 and 4 version bytes")
    major, minor, patch, build = value[1:]
    return f"{major}.{minor}.{patch} build {build}"


def select_aca(channel: Channel) -> tuple[Status, bytes]:
    """Select the ACA; return the status (9000 when present) and the reply data for `parse_aca_version`."""
    response, status = channel.send(select_command(ACA_AID, "SELECT ACA"))
    return status, response.data


PIN_PROPERTIES_COMMAND = CommandApdu(0x00, 0x56, 0x02, 0x00, b"\x31", le=0, name="GET PIN PROPERTIES")


def parse_pin_properties(data: bytes) -> PinPolicy:
    """Parse `31 05 <min> <max> RFU RFU <numeric>` into a `PinPolicy`.

    HID documents min and max each in 4..8; anything else is rejected as
    malformed rather than trusted.
    """
    items = dict(parse_ber_tlv(data))
    value = items.get(0x31)
    if value is None or len(value) != 5:
        raise MalformedResponseError(f"GET PIN PROPERTIES reply {data.hex().upper()} has no 5-byte 31 field")
    min_length, max_length, numeric = value[0], value[1], value[4]
    if not 4 <= min_length <= max_length <= 8:
        raise MalformedResponseError(f"GET PIN PROPERTIES gives PIN length {min_length} to {max_length}; HID documents 4 to 8")
    return PinPolicy(min_length, max_length, numeric_only=numeric != 0, source=Source.PIN_PROPERTIES)


def get_pin_properties(channel: Channel) -> tuple[PinPolicy | None, Status]:
    """Read the PIN policy (GET PIN PROPERTIES); None unless the key returned 9000."""
    response, status = channel.send(PIN_PROPERTIES_COMMAND)
    if status.kind is not StatusKind.OK:
        return None, status
    return parse_pin_properties(response.data), status


GET_CHALLENGE_COMMAND = CommandApdu(0x00, 0x84, 0x00, 0x00, le=0, name="GET CHALLENGE")


def admin_key_from_challenge(status: Status, challenge: bytes) -> AdminKey:
    """Derive the admin key state from a GET CHALLENGE reply.

    8 bytes is a 3DES key, 16 bytes AES-128, 6A88 no key (XAUTH1 not
    initialised). Any other reply leaves the state unknown.
    """
    if status.kind is StatusKind.NOT_DEFINED:
        return AdminKey(False, None, Source.GET_CHALLENGE)
    if status.kind is StatusKind.OK and len(challenge) in CHALLENGE_KEY_TYPES:
        return AdminKey(True, CHALLENGE_KEY_TYPES[len(challenge)], Source.GET_CHALLENGE)
    if status.kind is StatusKind.OK:
        return AdminKey(True, None, Source.GET_CHALLENGE)
    return AdminKey(None)


def get_challenge(channel: Channel) -> tuple[AdminKey, Status]:
    """Send GET CHALLENGE and return the admin key state it reveals; it spends no try."""
    response, status = channel.send(GET_CHALLENGE_COMMAND)
    return admin_key_from_challenge(status, response.data), status


def aca_status_query_command() -> CommandApdu:
    """Build the ACA PIN status query: VERIFY `00 20 00 00` with no data field."""
    # NOTE: HID documents VERIFY PIN only with a PIN; that an empty VERIFY returns
    # 63Cx without spending a try is the ISO 7816-4 convention, not confirmed on a
    # Crescendo. Send it only to the lab key or with allow_unverified_commands.
    return CommandApdu(0x00, 0x20, 0x00, 0x00, name="VERIFY (ACA PIN status)")


def query_aca_pin_status(channel: Channel, *, allowed: bool) -> Counter:
    """Read the ACA PIN counter with the unconfirmed status query.

    `allowed` must be True (lab key, or the site enabled
    `allow_unverified_commands`); otherwise `PolicyError` is raised and
    nothing is sent.
    """
    if not allowed:
        raise PolicyError("the ACA VERIFY status query is unconfirmed on real keys; set [site] allow_unverified_commands = true to send it")
    _, status = channel.send(aca_status_query_command(), status_query=True)
    return counter_from_status_query(status, Source.ACA_STATUS_QUERY)
