"""The scan's FIDO and OTP parts: the four FIDO PIN states, the transport chosen, and failure isolation."""

from __future__ import annotations

import pytest

import tui.fido.discovery
import tui.oath
from tests.fakes import FakeBackend, FakeTransport, generic_piv_card
from tui.backends import open_backend
from tui.errors import CardRemovedError
from tui.fido.errors import TRANSPORT_PCSC, TRANSPORT_USB_HID
from tui.fido.state import FidoPinState
from tui.model import PcscProblem, PinState
from tui.scan import scan_all
from tui.settings import SiteSettings

FIDO_STATES = {
    "fido-not-set": (FidoPinState.NOT_SET, 8),
    "fido-healthy": (FidoPinState.HEALTHY, 8),
    "fido-auth-blocked": (FidoPinState.TEMPORARILY_BLOCKED, 5),
    "fido-blocked": (FidoPinState.PERMANENTLY_BLOCKED, 0),
}


@pytest.mark.parametrize("usb_hid, transport", [(True, TRANSPORT_USB_HID), (False, TRANSPORT_PCSC)])
@pytest.mark.parametrize("name", sorted(FIDO_STATES))
def test_fido_state_per_scenario(name, usb_hid, transport):
    token = scan_all(open_backend(name), SiteSettings(), usb_hid=usb_hid).tokens[0]
    state, retries = FIDO_STATES[name]
    assert token.fido.pin.state is state
    assert token.fido.pin.retries == retries
    assert token.fido.transport == transport


def test_power_cycle_flag_only_when_auth_blocked():
    flags = {name: scan_all(open_backend(name), SiteSettings()).tokens[0].fido.pin.power_cycle_required
             for name in FIDO_STATES}
    assert flags["fido-auth-blocked"] is True
    assert [name for name, flag in flags.items() if flag] == ["fido-auth-blocked"]


def test_usb_hid_read_sends_no_fido_apdu():
    backend = open_backend("fido-healthy")
    recording = backend.key(backend.list_readers()[0]).card.start_recording()
    scan_all(backend, SiteSettings())
    assert not [command for command, _ in recording if command.startswith(bytes.fromhex("00A4040008A0000006472F0001"))]


def test_fido_read_last_over_pcsc():
    # The FIDO AID stays selected, so nothing may follow it on the card.
    backend = open_backend("fido-healthy")
    recording = backend.key(backend.list_readers()[0]).card.start_recording()
    scan_all(backend, SiteSettings(), usb_hid=False)
    commands = [command for command, _ in recording]
    first_fido = commands.index(bytes.fromhex("00A4040008A0000006472F000100"))
    assert all(command[0] & 0x80 or command[1] == 0xC0 for command in commands[first_fido + 1:])


def test_no_fido_applet_not_supported():
    token = scan_all(open_backend("wrong-pin"), SiteSettings()).tokens[0]
    assert token.fido.pin.state is FidoPinState.NOT_SUPPORTED
    assert token.fido.found is False


def test_fido_failure_keeps_smart_card(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("HID stack exploded")

    monkeypatch.setattr(tui.fido.discovery, "find_fido_devices", broken)
    token = scan_all(open_backend("wrong-pin"), SiteSettings()).tokens[0]
    assert token.problem is None
    assert token.smartcard.pin.remaining == 3
    assert token.fido.pin.state is FidoPinState.UNKNOWN
    assert "HID stack exploded" in token.fido.error_text
    assert token.otp is not None


def test_otp_failure_keeps_smart_card(monkeypatch):
    def removed(*args, **kwargs):
        raise CardRemovedError(PcscProblem.CARD_REMOVED)

    monkeypatch.setattr(tui.oath, "list_otp_slots", removed)
    token = scan_all(open_backend("otp-drift"), SiteSettings()).tokens[0]
    assert token.problem is None
    assert token.smartcard.pin.state is PinState.OK
    assert token.otp.slots == []
    assert "could not be read" in token.otp.notes[0]


def test_card_removed_in_fido_keeps_smart_card():
    # The card answers the smart-card reads, then fails every later APDU.
    card = generic_piv_card()
    transport = FakeTransport("r0", card)
    original = card.reply

    def reply(apdu):
        if apdu.startswith(bytes.fromhex("00A4040008A0000006472F0001")):
            raise CardRemovedError(PcscProblem.CARD_REMOVED)
        return original(apdu)

    card.reply = reply
    token = scan_all(FakeBackend([transport]), SiteSettings(), usb_hid=False).tokens[0]
    assert token.problem is None
    assert token.smartcard.pin.remaining == 5
    assert token.fido.pin.state is FidoPinState.NOT_SUPPORTED
    assert any("failed" in note for note in token.fido.notes)


def test_smart_card_failure_skips_otp_and_fido():
    transport = FakeTransport("r0", generic_piv_card(), transmit_errors=[CardRemovedError(PcscProblem.CARD_REMOVED)])
    token = scan_all(FakeBackend([transport]), SiteSettings(), usb_hid=False).tokens[0]
    assert token.problem is PcscProblem.CARD_REMOVED
    assert token.fido is None
    assert token.otp is None
