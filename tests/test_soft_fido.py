"""The software authenticator driven by python-fido2's real Ctap2, ClientPin and CredentialManagement."""

from __future__ import annotations

import threading

import pytest
from fido2.ctap import STATUS, CtapError
from fido2.ctap2 import ClientPin, Ctap2, CredentialManagement
from fido2.ctap2.pin import PinProtocolV1, PinProtocolV2

from tui.lab.ctap_device import SoftCtapDevice
from tui.lab.soft_fido import (
    CMD_CLIENT_PIN,
    PIN_GET_RETRIES,
    SoftAuthenticator,
    SoftCredential,
    deny_touch,
    touch_times_out,
)

ERR = CtapError.ERR


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def client(auth: SoftAuthenticator) -> tuple[Ctap2, ClientPin]:
    ctap = Ctap2(SoftCtapDevice(auth))
    return ctap, ClientPin(ctap)


def code_of(call) -> CtapError.ERR:
    with pytest.raises(CtapError) as caught:
        call()
    return caught.value.code


def credentials() -> list[SoftCredential]:
    return [SoftCredential("example.com", "alice"), SoftCredential("example.com", "bob"), SoftCredential("example.org", "alice")]


def test_get_info_fields():
    auth = SoftAuthenticator(min_pin_length=6, force_pin_change=True, credentials=credentials())
    ctap, _ = client(auth)
    info = ctap.info
    assert info.versions == ["U2F_V2", "FIDO_2_0", "FIDO_2_1_PRE", "FIDO_2_1"]
    assert info.options["clientPin"] is False
    assert info.options["credMgmt"] is True
    assert info.options["pinUvAuthToken"] is True
    assert info.options["rk"] is True
    assert info.options["up"] is True
    assert info.pin_uv_protocols == [2, 1]
    assert info.min_pin_length == 6
    assert info.force_pin_change is True
    assert info.remaining_disc_creds == 22
    assert info.aaguid == auth.aaguid
    assert info.firmware_version == 0x050704


def test_client_pin_option_missing_variant():
    ctap = Ctap2(SoftCtapDevice(SoftAuthenticator(client_pin_supported=False)))
    assert "clientPin" not in ctap.info.options
    assert ctap.info.pin_uv_protocols == []
    assert code_of(lambda: ctap.client_pin(1, PIN_GET_RETRIES)) == ERR.INVALID_COMMAND


def test_ctap20_variant_omits_21_fields():
    auth = SoftAuthenticator(pin="123456", ctap21=False, pin_retries=6)
    ctap, pin = client(auth)
    assert ctap.info.versions == ["U2F_V2", "FIDO_2_0"]
    assert "pinUvAuthToken" not in ctap.info.options
    assert "credMgmt" not in ctap.info.options
    assert ctap.info.remaining_disc_creds is None
    assert isinstance(pin.protocol, PinProtocolV1)
    assert pin.get_pin_retries() == (6, None)


def test_set_pin_and_policy():
    auth = SoftAuthenticator(min_pin_length=6)
    ctap, pin = client(auth)
    assert pin.get_pin_retries() == (8, False)
    assert code_of(lambda: pin.get_pin_token("123456")) == ERR.PIN_NOT_SET
    assert code_of(lambda: pin.set_pin("1234")) == ERR.PIN_POLICY_VIOLATION
    assert code_of(lambda: pin.set_pin("1" * 64)) == ERR.PIN_POLICY_VIOLATION
    pin.set_pin("123456")
    assert ctap.get_info().options["clientPin"] is True
    assert code_of(lambda: pin.set_pin("654321")) == ERR.NOT_ALLOWED


def test_wrong_pin_decrements_retries():
    auth = SoftAuthenticator(pin="123456")
    _, pin = client(auth)
    assert code_of(lambda: pin.get_pin_token("000000")) == ERR.PIN_INVALID
    assert pin.get_pin_retries() == (7, False)
    assert code_of(lambda: pin.get_pin_token("000000")) == ERR.PIN_INVALID
    assert pin.get_pin_retries() == (6, False)


def test_three_mismatches_auth_block_until_power_cycle():
    auth = SoftAuthenticator(pin="123456")
    _, pin = client(auth)
    results = [code_of(lambda: pin.get_pin_token("000000")) for _ in range(3)]
    assert results == [ERR.PIN_INVALID, ERR.PIN_INVALID, ERR.PIN_AUTH_BLOCKED]
    assert pin.get_pin_retries() == (5, True)

    # While auth-blocked even the right PIN is rejected, and no try is spent.
    assert code_of(lambda: pin.get_pin_token("123456")) == ERR.PIN_AUTH_BLOCKED
    assert pin.get_pin_retries() == (5, True)

    auth.power_cycle()
    _, pin = client(auth)
    assert pin.get_pin_retries() == (5, False)
    assert len(pin.get_pin_token("123456")) == 32
    assert pin.get_pin_retries() == (8, False)


def test_lockout_sequence_ends_pin_blocked():
    auth = SoftAuthenticator(pin="123456")
    seen = []
    for _ in range(8):
        _, pin = client(auth)
        code = code_of(lambda: pin.get_pin_token("000000"))
        seen.append(code)
        if code == ERR.PIN_AUTH_BLOCKED:
            auth.power_cycle()
    assert seen == [
        ERR.PIN_INVALID, ERR.PIN_INVALID, ERR.PIN_AUTH_BLOCKED,
        ERR.PIN_INVALID, ERR.PIN_INVALID, ERR.PIN_AUTH_BLOCKED,
        ERR.PIN_INVALID, ERR.PIN_BLOCKED,
    ]
    _, pin = client(auth)
    assert pin.get_pin_retries() == (0, False)
    assert code_of(lambda: pin.get_pin_token("123456")) == ERR.PIN_BLOCKED


def test_change_pin_both_protocols():
    auth = SoftAuthenticator(pin="123456")
    ctap, _ = client(auth)
    ClientPin(ctap, PinProtocolV1()).change_pin("123456", "abcdef")
    ClientPin(ctap, PinProtocolV2()).change_pin("abcdef", "fedcba")
    pin = ClientPin(ctap)
    assert code_of(lambda: pin.get_pin_token("abcdef")) == ERR.PIN_INVALID
    assert len(pin.get_pin_token("fedcba")) == 32


def test_forced_change_rejects_token_and_same_pin():
    auth = SoftAuthenticator(pin="123456", force_pin_change=True)
    _, pin = client(auth)
    assert code_of(lambda: pin.get_pin_token("123456")) == ERR.PIN_POLICY_VIOLATION
    assert code_of(lambda: pin.change_pin("123456", "123456")) == ERR.PIN_POLICY_VIOLATION
    pin.change_pin("123456", "234567")
    assert auth.force_pin_change is False
    assert len(pin.get_pin_token("234567")) == 32


def test_credential_management_lists_and_deletes():
    auth = SoftAuthenticator(pin="123456", credentials=credentials())
    ctap, pin = client(auth)
    token = pin.get_pin_token("123456", ClientPin.PERMISSION.CREDENTIAL_MGMT)
    manager = CredentialManagement(ctap, pin.protocol, token)
    assert manager.get_metadata() == {1: 3, 2: 22}
    rps = manager.enumerate_rps()
    assert [rp[3]["id"] for rp in rps] == ["example.com", "example.org"]
    users = [cred[6]["name"] for cred in manager.enumerate_creds(rps[0][4])]
    assert users == ["alice", "bob"]

    bob = manager.enumerate_creds(rps[0][4])[1]
    manager.delete_cred(bob[7])
    assert manager.get_metadata() == {1: 2, 2: 23}


def test_credential_management_with_legacy_token_rejected():
    auth = SoftAuthenticator(pin="123456", credentials=credentials())
    ctap, _ = client(auth)
    legacy = ClientPin(ctap, PinProtocolV1())
    token = legacy.get_pin_token("123456")
    manager = CredentialManagement(ctap, legacy.protocol, token)
    assert code_of(manager.get_metadata) == ERR.PIN_AUTH_INVALID


def test_permissive_legacy_token_for_21_pre_keys():
    auth = SoftAuthenticator(pin="123456", credentials=credentials(), legacy_token_permissions=0xFF)
    ctap, _ = client(auth)
    legacy = ClientPin(ctap, PinProtocolV1())
    manager = CredentialManagement(ctap, legacy.protocol, legacy.get_pin_token("123456"))
    assert manager.get_metadata() == {1: 3, 2: 22}


def test_no_credentials_enumerates_empty():
    auth = SoftAuthenticator(pin="123456")
    ctap, pin = client(auth)
    manager = CredentialManagement(ctap, pin.protocol, pin.get_pin_token("123456", ClientPin.PERMISSION.CREDENTIAL_MGMT))
    assert manager.enumerate_rps() == []


@pytest.mark.parametrize("window", [5.0, 10.0])
def test_reset_window_after_power_up(window):
    clock = FakeClock()
    auth = SoftAuthenticator(pin="123456", credentials=credentials(), reset_window_s=window, clock=clock)
    ctap, _ = client(auth)
    clock.now += window + 0.5
    assert code_of(ctap.reset) == ERR.NOT_ALLOWED
    assert auth.pin_is_set

    auth.power_cycle()
    clock.now += window - 0.5
    statuses = []
    ctap.reset(on_keepalive=statuses.append)
    assert statuses == [STATUS.UPNEEDED]
    assert not auth.pin_is_set
    assert auth.credentials == []
    assert ctap.get_info().remaining_disc_creds == 25
    assert ClientPin(ctap).get_pin_retries() == (8, False)


def test_reset_denied_and_timed_out():
    auth = SoftAuthenticator(pin="123456", user_presence=deny_touch)
    ctap, _ = client(auth)
    assert code_of(ctap.reset) == ERR.OPERATION_DENIED
    auth.user_presence = touch_times_out
    assert code_of(ctap.reset) == ERR.USER_ACTION_TIMEOUT
    assert auth.pin_is_set


def test_reset_cancelled_by_event():
    def wait_for_cancel(cancel: threading.Event, timeout: float) -> bool | None:
        cancel.set()  # the client cancels while the key waits
        return None

    auth = SoftAuthenticator(pin="123456", user_presence=wait_for_cancel)
    ctap, _ = client(auth)
    assert code_of(ctap.reset) == ERR.KEEPALIVE_CANCEL
    assert auth.pin_is_set


def test_requests_log_records_subcommands():
    auth = SoftAuthenticator(pin="123456")
    _, pin = client(auth)
    pin.get_pin_retries()
    assert auth.client_pin_subcommands() == [PIN_GET_RETRIES]
    assert (CMD_CLIENT_PIN, PIN_GET_RETRIES) in auth.requests


def test_malformed_requests_rejected():
    auth = SoftAuthenticator()
    device = SoftCtapDevice(auth)
    assert device.call(0x10, b"\x06\xa1\x01")[0] == ERR.INVALID_CBOR
    assert device.call(0x10, b"\x06\x01")[0] == ERR.CBOR_UNEXPECTED_TYPE
    assert device.call(0x10, b"\x01")[0] == ERR.INVALID_COMMAND
    assert device.call(0x10, b"\x06\xa1\x01\x02")[0] == ERR.MISSING_PARAMETER
