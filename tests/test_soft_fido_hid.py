"""python-fido2's real CtapHidDevice over the software CTAPHID connection."""

from __future__ import annotations

import struct
import threading

import pytest
from fido2.ctap import STATUS, CtapError
from fido2.ctap2 import ClientPin, Ctap2, CredentialManagement
from fido2.hid import CAPABILITY, CTAPHID

from tui.lab.ctap_device import HID_ERR_INVALID_CHANNEL, HID_ERR_INVALID_SEQ, SoftHidConnection, open_soft_hid_device
from tui.lab.soft_fido import SoftAuthenticator, SoftCredential, TouchButton

ERR = CtapError.ERR


def wait_until(condition, limit: int = 500) -> None:
    """Poll `condition` until true; fail after `limit` short waits instead of hanging."""
    event = threading.Event()
    for _ in range(limit):
        if condition():
            return
        event.wait(0.01)
    pytest.fail("condition never became true")


def test_init_allocates_distinct_channels():
    auth = SoftAuthenticator()
    connection = SoftHidConnection(auth)
    first = open_soft_hid_device(auth, connection_factory=lambda a: connection)
    second = open_soft_hid_device(auth, connection_factory=lambda a: connection)
    assert first._channel_id != second._channel_id
    assert first.capabilities & CAPABILITY.CBOR
    assert first.device_version == (5, 7, 4)
    assert first.descriptor.vid == 0x1050


def test_ping_fragments_long_payload():
    device = open_soft_hid_device(SoftAuthenticator())
    payload = bytes(range(256)) * 2  # 512 bytes: one init packet and eight continuations
    assert device.ping(payload) == payload


def test_ctap2_over_hid_reads_and_lists():
    auth = SoftAuthenticator(pin="123456", credentials=[SoftCredential("example.com", "alice"), SoftCredential("example.org", "bob")])
    ctap = Ctap2(open_soft_hid_device(auth))
    assert ctap.info.options["clientPin"] is True
    pin = ClientPin(ctap)
    assert pin.get_pin_retries() == (8, False)
    assert pytest.raises(CtapError, pin.get_pin_token, "000000").value.code == ERR.PIN_INVALID
    assert pin.get_pin_retries() == (7, False)
    token = pin.get_pin_token("123456", ClientPin.PERMISSION.CREDENTIAL_MGMT)
    manager = CredentialManagement(ctap, pin.protocol, token)
    assert len(manager.enumerate_rps()) == 2


def test_reset_keepalive_then_touch():
    button = TouchButton()
    auth = SoftAuthenticator(pin="123456", user_presence=button)
    device = open_soft_hid_device(auth)
    connection = device._connection
    ctap = Ctap2(device)
    statuses: list[STATUS] = []
    outcome: list[object] = []

    def run() -> None:
        try:
            ctap.reset(on_keepalive=statuses.append)
            outcome.append("ok")
        except CtapError as exc:
            outcome.append(exc.code)

    worker = threading.Thread(target=run)
    worker.start()
    wait_until(button.waiting.is_set)
    # The device keeps sending KEEPALIVE while it waits, not just once.
    wait_until(lambda: connection.keepalives_sent >= 3)
    button.press()
    worker.join(5)
    assert outcome == ["ok"]
    assert statuses == [STATUS.UPNEEDED]
    assert not auth.pin_is_set


def test_reset_cancel_over_hid():
    button = TouchButton()
    auth = SoftAuthenticator(pin="123456", user_presence=button)
    device = open_soft_hid_device(auth)
    connection = device._connection
    ctap = Ctap2(device)
    cancel = threading.Event()
    outcome: list[object] = []

    def run() -> None:
        try:
            ctap.reset(event=cancel, on_keepalive=lambda status: None)
            outcome.append("ok")
        except CtapError as exc:
            outcome.append(exc.code)

    worker = threading.Thread(target=run)
    worker.start()
    wait_until(button.waiting.is_set)
    wait_until(lambda: connection.keepalives_sent >= 1)
    cancel.set()
    worker.join(5)
    assert outcome == [ERR.KEEPALIVE_CANCEL]
    assert connection.cancels_received >= 1
    assert auth.pin_is_set


def test_busy_authenticator_answers_channel_busy():
    button = TouchButton()
    auth = SoftAuthenticator(pin="123456", user_presence=button)
    ctap = Ctap2(open_soft_hid_device(auth))
    cancel = threading.Event()
    outcome: list[object] = []

    def run() -> None:
        try:
            ctap.reset(event=cancel)
        except CtapError as exc:
            outcome.append(exc.code)

    worker = threading.Thread(target=run)
    worker.start()
    wait_until(button.waiting.is_set)
    # Another transport's request while the reset waits for touch.
    assert auth.process(b"\x04") == bytes([ERR.CHANNEL_BUSY])
    cancel.set()
    worker.join(5)
    assert outcome == [ERR.KEEPALIVE_CANCEL]


def test_protocol_errors_come_back_as_error_packets():
    auth = SoftAuthenticator()
    connection = SoftHidConnection(auth)
    device = open_soft_hid_device(auth, connection_factory=lambda a: connection)
    cid = device._channel_id

    # A channel that was never allocated.
    connection.write_packet(struct.pack(">IBH", 0x12345678, 0x80 | CTAPHID.PING, 1) + b"x")
    reply = connection.read_packet()
    assert reply[4] == 0x80 | CTAPHID.ERROR
    assert reply[7] == HID_ERR_INVALID_CHANNEL

    # A continuation packet out of sequence.
    connection.write_packet(struct.pack(">IBH", cid, 0x80 | CTAPHID.PING, 100) + b"a" * 57)
    connection.write_packet(struct.pack(">IB", cid, 5) + b"b" * 59)
    reply = connection.read_packet()
    assert reply[4] == 0x80 | CTAPHID.ERROR
    assert reply[7] == HID_ERR_INVALID_SEQ


def test_u2f_messages_not_supported():
    device = open_soft_hid_device(SoftAuthenticator())
    with pytest.raises(CtapError) as caught:
        device.call(CTAPHID.MSG, b"\x00\x03\x00\x00")
    assert caught.value.code == ERR.INVALID_COMMAND
