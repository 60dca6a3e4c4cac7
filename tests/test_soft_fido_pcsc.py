"""python-fido2's real CtapPcscDevice against the lab card's FIDO applet, through the lab transport."""

from __future__ import annotations

import threading

import pytest
from fido2.ctap import STATUS, CtapError
from fido2.ctap2 import ClientPin, Ctap2, CredentialManagement

from tui.fido.discovery import open_pcsc_ctap
from tui.fido.errors import FidoErrorKind, decode_ctap_error
from tui.lab.backend import LabBackend
from tui.lab.fido_applet import FidoApplet
from tui.lab.soft_fido import SoftCredential, TouchButton

ERR = CtapError.ERR


def wait_until(condition, limit: int = 500) -> None:
    """Poll `condition` until true; fail after `limit` short waits instead of hanging."""
    event = threading.Event()
    for _ in range(limit):
        if condition():
            return
        event.wait(0.01)
    pytest.fail("condition never became true")


def lab(name: str) -> tuple[LabBackend, str, FidoApplet]:
    backend = LabBackend(name)
    reader = backend.list_readers()[0]
    applet = backend.key(reader).applet(FidoApplet)
    assert applet is not None
    return backend, reader, applet


def record(backend: LabBackend, reader: str) -> list[tuple[bytes, bytes]]:
    return backend.key(reader).card.start_recording()


def test_pcsc_reads_info_and_retries():
    backend, reader, _ = lab("fido-healthy")
    device = open_pcsc_ctap(reader, backend)
    ctap = Ctap2(device)
    assert ctap.info.options["clientPin"] is True
    assert ClientPin(ctap).get_pin_retries() == (8, False)
    device.close()


def test_pcsc_wrong_pin_decrements():
    backend, reader, applet = lab("fido-healthy")
    ctap = Ctap2(open_pcsc_ctap(reader, backend))
    pin = ClientPin(ctap)
    with pytest.raises(CtapError) as caught:
        pin.get_pin_token("000000")
    assert caught.value.code == ERR.PIN_INVALID
    assert pin.get_pin_retries() == (7, False)
    assert applet.authenticator.pin_retries == 7


def test_pcsc_lists_credentials():
    backend, reader, _ = lab("fido-healthy")
    ctap = Ctap2(open_pcsc_ctap(reader, backend))
    pin = ClientPin(ctap)
    manager = CredentialManagement(ctap, pin.protocol, pin.get_pin_token("975310", ClientPin.PERMISSION.CREDENTIAL_MGMT))
    assert manager.get_metadata() == {1: 3, 2: 22}
    assert len(manager.enumerate_rps()) == 2


def test_piv_and_fido_on_one_card():
    backend, reader, _ = lab("fido-healthy")
    transport = backend.open(reader)
    transport.connect()
    # PIV status query on the same card, then FIDO through another handle.
    assert transport.transmit_raw(bytes.fromhex("00A4040005A000000308"))[-2:] == b"\x90\x00"
    assert transport.transmit_raw(bytes.fromhex("00200080"))[-2:] == b"\x63\xc8"
    ctap = Ctap2(open_pcsc_ctap(reader, backend))
    assert ClientPin(ctap).get_pin_retries() == (8, False)


def test_long_request_is_chained():
    backend, reader, _ = lab("fido-not-set")
    ctap = Ctap2(open_pcsc_ctap(reader, backend))
    apdus = record(backend, reader)
    # getInfo ignores parameters, so a 600-byte parameter map only exercises chaining.
    response = ctap.send_cbor(0x04, {0x20: b"x" * 600})
    assert response[1] == ["U2F_V2", "FIDO_2_0", "FIDO_2_1_PRE", "FIDO_2_1"]
    chained = [command for command, _ in apdus if command[0] == 0x90 and command[1] == 0x10]
    assert len(chained) == 2


def test_long_response_uses_get_response():
    backend, reader, applet = lab("fido-not-set")
    auth = applet.authenticator
    auth.credentials.append(SoftCredential("example.com", "u" * 60, display_name="d" * 60, credential_id=b"\x01" * 200))
    auth.pin_hash = None
    ctap = Ctap2(open_pcsc_ctap(reader, backend))
    pin = ClientPin(ctap)
    pin.set_pin("123456")
    manager = CredentialManagement(ctap, pin.protocol, pin.get_pin_token("123456", ClientPin.PERMISSION.CREDENTIAL_MGMT))
    apdus = record(backend, reader)
    (credential,) = manager.enumerate_creds(SoftCredential("example.com", "x").rp_id_hash)
    assert credential[7]["id"] == b"\x01" * 200
    get_responses = [command for command, _ in apdus if command[1] == 0xC0]
    assert len(get_responses) >= 1


def test_reset_polls_with_keepalive_then_touch():
    backend, reader, applet = lab("fido-blocked")
    button = TouchButton()
    applet.authenticator.user_presence = button
    ctap = Ctap2(open_pcsc_ctap(reader, backend))
    apdus = record(backend, reader)
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
    wait_until(lambda: any(response[-2:] == b"\x91\x00" for _, response in list(apdus)))
    button.press()
    worker.join(5)
    assert outcome == ["ok"]
    assert statuses == [STATUS.UPNEEDED]
    assert any(command[:4] == b"\x80\x11\x00\x00" for command, _ in apdus)
    assert ClientPin(ctap).get_pin_retries() == (8, False)


def test_reset_cancel_over_pcsc():
    backend, reader, applet = lab("fido-healthy")
    button = TouchButton()
    applet.authenticator.user_presence = button
    ctap = Ctap2(open_pcsc_ctap(reader, backend))
    apdus = record(backend, reader)
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
    cancel.set()
    worker.join(5)
    assert outcome == [ERR.KEEPALIVE_CANCEL]
    assert any(command[:4] == b"\x80\x11\x11\x00" for command, _ in apdus)
    assert applet.authenticator.pin_is_set


def test_errors_as_sw_become_other():
    backend, reader, applet = lab("fido-healthy")
    applet.errors_as_sw = True
    ctap = Ctap2(open_pcsc_ctap(reader, backend))
    apdus = record(backend, reader)
    with pytest.raises(CtapError) as caught:
        ClientPin(ctap).get_pin_token("000000")
    assert caught.value.code == ERR.OTHER
    assert apdus[-1][1] == b"\x6f\x31"
    result = decode_ctap_error(caught.value, transport="pcsc")
    assert result.kind is FidoErrorKind.OTHER_OVER_PCSC
    assert result.message.startswith("unknown CTAP error over PC/SC, retry over USB HID if available")


def test_reinsert_is_power_cycle_but_reconnect_is_not():
    backend, reader, applet = lab("fido-auth-blocked")
    ctap = Ctap2(open_pcsc_ctap(reader, backend))
    assert ClientPin(ctap).get_pin_retries() == (5, True)

    # A PC/SC power-up (every pyscard disconnect) keeps the auth-blocked state.
    backend.key(reader).card.power_on()
    ctap = Ctap2(open_pcsc_ctap(reader, backend))
    assert ClientPin(ctap).get_pin_retries() == (5, True)

    backend.remove(reader)
    backend.insert(reader)
    ctap = Ctap2(open_pcsc_ctap(reader, backend))
    assert ClientPin(ctap).get_pin_retries() == (5, False)
    assert applet.authenticator.power_cycles == 1


def test_reader_without_fido_applet_returns_none():
    backend = LabBackend("wrong-pin")
    assert open_pcsc_ctap(backend.list_readers()[0], backend) is None
