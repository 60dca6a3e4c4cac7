"""Profile detection: which command set a token speaks, decided by the commands it accepts.

SELECT ACA answered 9000 -> HID Crescendo. Otherwise SELECT PIV answered
9000 and GET VERSION (a Yubico instruction in the PIV applet) answered ->
YubiKey; PIV without GET VERSION -> generic PIV. Nothing answered -> unknown.

Minimum APDU list of a full read-only scan per profile (tui.scan), when the
first GET DATA CPLC is answered by the applet selected at the time:
- HID Crescendo (6, or 7 with the ACA status query): GET DATA CPLC, SELECT
  ACA, GET PIN PROPERTIES, GET CHALLENGE, [VERIFY (ACA PIN status), lab key
  or allow_unverified_commands only], SELECT PIV, VERIFY (PIV PIN status).
- YubiKey 5.3+ (8): GET DATA CPLC, SELECT ACA (fails), SELECT PIV, GET
  VERSION, GET SERIAL, GET METADATA PIN, GET METADATA PUK, GET METADATA
  management key. Before 5.3 (6): the three GET METADATA are replaced by
  VERIFY (PIV PIN status).
- Generic PIV (5): GET DATA CPLC, SELECT ACA (fails), SELECT PIV, GET
  VERSION (fails), VERIFY (PIV PIN status).
- Unknown (3): GET DATA CPLC, SELECT ACA, SELECT PIV.
A card whose selected applet does not return the CPLC adds SELECT card
manager and GET DATA CPLC again (up to 4 more APDUs). GET DATA CHUID is added
only when the GUID is the chosen ID source or `--explain` asks for every
candidate. These lists cover profile detection, identity and the PIN
counters only; the certificate, OTP and FIDO reads that the scan adds per
token are listed in the docstring of `tui.scan`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tui.apdu import Status, StatusKind
from tui.aca import parse_aca_version, select_aca
from tui.errors import MalformedResponseError
from tui.model import Profile
from tui.piv import get_version, select_piv
from tui.transport import Channel


@dataclass
class Detection:
    """Detection results, which the scan reuses instead of sending the commands again."""

    profile: Profile
    aca_status: Status | None = None
    aca_version: str | None = None
    piv_status: Status | None = None
    firmware: tuple[int, int, int] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def aca_present(self) -> bool:
        """True when SELECT ACA returned 9000."""
        return self.aca_status is not None and self.aca_status.kind is StatusKind.OK

    @property
    def piv_present(self) -> bool:
        """True when SELECT PIV returned 9000."""
        return self.piv_status is not None and self.piv_status.kind is StatusKind.OK


def detect_profile(channel: Channel) -> Detection:
    """Detect the profile with as few APDUs as possible.

    On a Crescendo this sends SELECT ACA only and leaves the ACA selected;
    on the others it leaves PIV selected when present. The ACA version may
    be None if the SELECT reply does not carry it.
    """
    aca_status, aca_reply = select_aca(channel)
    if aca_status.kind is StatusKind.OK:
        detection = Detection(Profile.HID_CRESCENDO, aca_status)
        try:
            detection.aca_version = parse_aca_version(aca_reply)
        except MalformedResponseError as exc:
            detection.notes.append(f"ACA version not read: {exc}")
        return detection

    piv_status = select_piv(channel)
    if piv_status.kind is not StatusKind.OK:
        return Detection(Profile.UNKNOWN, aca_status, None, piv_status)

    detection = Detection(Profile.GENERIC_PIV, aca_status, None, piv_status)
    try:
        detection.firmware = get_version(channel)
    except MalformedResponseError as exc:
        detection.notes.append(f"GET VERSION reply not understood, so the key is treated as generic PIV: {exc}")
    if detection.firmware is not None:
        detection.profile = Profile.YUBIKEY
    return detection
