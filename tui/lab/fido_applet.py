"""The software authenticator as an applet on the lab card (FIDO over PC/SC).

The applet speaks the CTAP-over-ISO 7816 framing that python-fido2's
`CtapPcscDevice` uses: SELECT of AID A0000006472F0001, NFCCTAP_MSG (80 10)
carrying a CTAP2 request, and NFCCTAP_GETRESPONSE (80 11) polling while the
authenticator works, answered with a keepalive status byte and SW 9100 (P1 11
cancels). The card core (`tui.lab.card.VirtualCard`) joins chained commands
(CLA bit 0x10) and splits long replies behind 61xx for GET RESPONSE.

The same `SoftAuthenticator` can also be reached over USB HID through
`lab_hid_devices`, so one lab token shows FIDO both ways, as a YubiKey does.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from tui.lab.card import SW_CONDITIONS, SW_INS_NOT_SUPPORTED, SW_OK, Applet, VirtualCard
from tui.lab.soft_fido import SoftAuthenticator

log = logging.getLogger("keytriage.lab.fido")

FIDO_AID = bytes.fromhex("A0000006472F0001")
CLA_PROPRIETARY = 0x80
INS_NFCCTAP_MSG = 0x10
INS_NFCCTAP_GETRESPONSE = 0x11
P1_GETRESPONSE_CANCEL = 0x11
SW_KEEPALIVE = b"\x91\x00"


@dataclass
class _Job:
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    status: int = 1  # STATUS.PROCESSING until the authenticator requests a touch (UPNEEDED)
    response: bytes = b""


class FidoApplet(Applet):
    """The FIDO applet of a lab card, backed by a `SoftAuthenticator`.

    `errors_as_sw=True` answers a failing CTAP command with SW 6Fxx (xx = the
    CTAP status) in place of 9000 and a status byte, as Yubico documents for
    its APDU path; python-fido2 then only sees CTAP 0x7F OTHER.
    `hid_accessible=False` makes the lab's USB HID path report the key as
    present but not accessible to this login.
    `reply_within_s` is how long a command may run before the applet answers
    9100 and lets the host poll.
    """

    aid = FIDO_AID

    def __init__(
        self,
        authenticator: SoftAuthenticator,
        *,
        errors_as_sw: bool = False,
        hid_accessible: bool = True,
        reply_within_s: float = 0.05,
    ) -> None:
        self.authenticator = authenticator
        self.errors_as_sw = errors_as_sw
        self.hid_accessible = hid_accessible
        self.reply_within_s = reply_within_s
        self._job: _Job | None = None
        self.insertions = 0

    def select(self, p1: int, p2: int, data: bytes) -> bytes:
        """Return the applet version string for SELECT, as CTAP over NFC specifies."""
        return b"FIDO_2_0" + SW_OK

    def process(self, cla: int, ins: int, p1: int, p2: int, data: bytes, le: int | None) -> bytes:
        """Handle NFCCTAP_MSG and NFCCTAP_GETRESPONSE; other instructions get 6D00."""
        if cla & CLA_PROPRIETARY and ins == INS_NFCCTAP_MSG:
            if self._job is not None and not self._job.done.is_set():
                return SW_CONDITIONS
            return self._start(data)
        if cla & CLA_PROPRIETARY and ins == INS_NFCCTAP_GETRESPONSE:
            job = self._job
            if job is None:
                return SW_CONDITIONS
            if p1 == P1_GETRESPONSE_CANCEL:
                job.cancel.set()
            return self._reply(job)
        return SW_INS_NOT_SUPPORTED

    def on_insert(self) -> None:
        """Treat a physical insertion as a FIDO power-up (clears PIN_AUTH_BLOCKED, opens the reset window).

        A PC/SC power-up alone (`on_power_on`) is not one: pyscard unpowers the
        card on every disconnect, and that must not clear the lockout state.
        """
        self.insertions += 1
        card = self.card
        if self.insertions == 1 and card is not None and card.apdu_count == 0:
            # The first insertion before any APDU is the one the scenario's preset
            # state describes (a vpcd link inserts the card once at start-up).
            # NOTE: an in-process lab key removed and re-inserted before its first APDU keeps the preset too.
            self.authenticator.restart_reset_window()
            return
        self.authenticator.power_cycle()

    def _start(self, request: bytes) -> bytes:
        job = _Job()
        self._job = job

        def on_keepalive(status: Any) -> None:
            job.status = int(status)

        def run() -> None:
            try:
                job.response = self.authenticator.process(request, job.cancel, on_keepalive)
            except Exception:  # The host polls until it gets a reply, so one must always come.
                log.exception("software authenticator failed on an NFCCTAP_MSG request")
                job.response = b"\x7f"
            job.done.set()

        threading.Thread(target=run, name="lab-fido-applet", daemon=True).start()
        return self._reply(job)

    def _reply(self, job: _Job) -> bytes:
        if not job.done.wait(self.reply_within_s):
            return bytes([job.status]) + SW_KEEPALIVE
        self._job = None
        response = job.response
        if self.errors_as_sw and response[:1] != b"\x00":
            return bytes([0x6F, response[0]])
        return response + SW_OK


def attach_fido_applet(card: VirtualCard, authenticator: SoftAuthenticator, **options: Any) -> FidoApplet:
    """Add a `FidoApplet` for `authenticator` to a lab card and return it."""
    applet = FidoApplet(authenticator, **options)
    applet.card = card
    card.applets.append(applet)
    return applet


def lab_hid_devices(key: Any, *, present: bool = True) -> list[Any]:
    """Return the lab key's FIDO USB HID devices: fido2 `CtapHidDevice`s, or `NotAccessible` entries.

    `key` is a `tui.lab.scenarios.LabKey`; an absent or FIDO-less key has none.
    """
    from tui.fido.discovery import not_accessible_for
    from tui.fido.errors import TRANSPORT_USB_HID
    from tui.lab.ctap_device import open_soft_hid_device

    card = getattr(key, "card", None)
    if card is None or not present:
        return []
    # The HID product name is the reader name without its slot numbers, as for real keys.
    product_name = re.sub(r"(\s+[0-9A-Fa-f]{2})+$", "", key.reader)
    devices: list[Any] = []
    for index, applet in enumerate(a for a in card.applets if isinstance(a, FidoApplet)):
        path = f"lab://{key.reader}/hidraw{index}"
        if not applet.hid_accessible:
            error = PermissionError(13, "Permission denied", path)
            devices.append(not_accessible_for(path, TRANSPORT_USB_HID, error, platform="linux", product_name=product_name))
            continue
        devices.append(open_soft_hid_device(applet.authenticator, path, product_name=product_name))
    return devices


def lab_backend_hid_devices(backend: Any, reader: str | None) -> list[Any]:
    """Return the FIDO USB HID devices of the lab key in `reader` (of every present key when None)."""
    readers = backend.list_readers() if reader is None else [reader]
    devices: list[Any] = []
    for name in readers:
        devices.extend(lab_hid_devices(backend.key(name), present=backend.is_present(name)))
    return devices


def install_touch_buttons(key: Any, clock: Any = None) -> list[Any]:
    """Give every FIDO authenticator of lab key `key` a `TouchButton` for user presence, and return the buttons.

    An authenticator that already has one keeps it, so a wizard reopened on
    the same key presses the same button.
    """
    from tui.lab.soft_fido import TouchButton

    card = getattr(key, "card", None)
    if card is None:
        return []
    buttons = []
    for applet in (a for a in card.applets if isinstance(a, FidoApplet)):
        authenticator = applet.authenticator
        if not isinstance(authenticator.user_presence, TouchButton):
            authenticator.user_presence = TouchButton(clock or authenticator.clock)
        buttons.append(authenticator.user_presence)
    return buttons
