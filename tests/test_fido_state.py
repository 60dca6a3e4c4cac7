"""Read-only FIDO state from every lab scenario, over each transport, in the model and in JSON."""

from __future__ import annotations

import json

import pytest
from fido2.ctap import CtapError

from tui.errors import PcscError
from tui.fido.discovery import find_fido_devices, not_accessible_for
from tui.fido.errors import decode_ctap_error
from tui.fido.export import to_json
from tui.fido.state import FidoPinState, PinReason, read_discovered_state, read_fido_state
from tui.lab.backend import LabBackend
from tui.lab.ctap_device import SoftCtapDevice, open_soft_hid_device
from tui.lab.fido_applet import FidoApplet
from tui.lab.soft_fido import PIN_GET_RETRIES, SoftAuthenticator
from tui.model import PcscProblem

EXPECTED = {
    "fido-not-set": (FidoPinState.NOT_SET, 8, False),
    "fido-healthy": (FidoPinState.HEALTHY, 8, False),
    "healthy": (FidoPinState.HEALTHY, 8, False),
    "fido-auth-blocked": (FidoPinState.TEMPORARILY_BLOCKED, 5, True),
    "fido-blocked": (FidoPinState.PERMANENTLY_BLOCKED, 0, False),
}


def scenario_device(name: str, transport: str):
    """Return (device, authenticator) for the scenario's key over `transport`."""
    backend = LabBackend(name)
    reader = backend.list_readers()[0]
    auth = backend.key(reader).applet(FidoApplet).authenticator
    if transport == "direct":
        return SoftCtapDevice(auth), auth
    if transport == "usb-hid":
        return open_soft_hid_device(auth), auth
    discovery = find_fido_devices(reader, backend, include_hid=False)
    (endpoint,) = discovery.endpoints
    return endpoint.device, auth


@pytest.mark.parametrize("transport", ["direct", "usb-hid", "pcsc"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_scenario_state(name, transport):
    device, auth = scenario_device(name, transport)
    state = read_fido_state(device, transport=transport)
    expected_state, expected_retries, power_cycle = EXPECTED[name]
    assert state.pin.state is expected_state
    assert state.pin.retries == expected_retries
    assert state.pin.power_cycle_required is power_cycle
    # Reading the state never sends a PIN: getPINRetries is the only clientPin subcommand.
    assert auth.client_pin_subcommands() == [PIN_GET_RETRIES]
    assert auth.pin_retries == expected_retries


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_scenario_state_in_json(name):
    device, _ = scenario_device(name, "usb-hid")
    document = json.loads(json.dumps(to_json(read_fido_state(device, transport="usb-hid"))))
    expected_state, expected_retries, _ = EXPECTED[name]
    assert document["pin"]["state"] == expected_state.value
    assert document["pin"]["retries"] == expected_retries
    assert document["versions"] == ["U2F_V2", "FIDO_2_0", "FIDO_2_1_PRE", "FIDO_2_1"]
    assert document["aaguid_note"] == "identifies the authenticator model, not this key"


def test_every_pin_state_distinct():
    states = {}
    for name in EXPECTED:
        device, _ = scenario_device(name, "direct")
        states[name] = read_fido_state(device).pin.state
    states["option-missing"] = read_fido_state(SoftCtapDevice(SoftAuthenticator(client_pin_supported=False))).pin.state
    states["not-accessible"] = read_fido_state(None, not_accessible=not_accessible_for("/dev/hidraw3", "usb-hid", PermissionError(13, "denied"), platform="linux")).pin.state
    states["unknown"] = read_fido_state(BrokenDevice(CtapError(CtapError.ERR.OTHER))).pin.state
    assert set(states.values()) == set(FidoPinState)
    json_values = {state.value for state in states.values()}
    assert json_values == {"not_supported", "not_accessible", "not_set", "healthy", "temporarily_blocked", "permanently_blocked", "unknown"}


def test_not_set_explains_registrations_without_pin():
    device, _ = scenario_device("fido-not-set", "direct")
    state = read_fido_state(device)
    assert state.client_pin_option is False
    assert "does not mean FIDO is unused" in state.pin.explanation
    assert to_json(state)["client_pin"] == "false"


def test_option_missing_is_not_supported():
    state = read_fido_state(SoftCtapDevice(SoftAuthenticator(client_pin_supported=False)))
    assert state.pin.state is FidoPinState.NOT_SUPPORTED
    assert state.pin.reason is PinReason.CLIENT_PIN_OPTION_MISSING
    assert state.pin.retries is None
    assert to_json(state)["client_pin"] == "missing"


def test_no_device_is_not_supported_without_authenticator():
    state = read_fido_state(None)
    assert state.pin.state is FidoPinState.NOT_SUPPORTED
    assert state.pin.reason is PinReason.NO_AUTHENTICATOR
    assert state.found is False
    assert to_json(state)["client_pin"] is None


def test_other_fields_read_from_get_info():
    auth = SoftAuthenticator(pin="123456", min_pin_length=6, force_pin_change=True)
    state = read_fido_state(SoftCtapDevice(auth))
    assert state.min_pin_length == 6
    assert state.force_pin_change is True
    assert state.remaining_discoverable_credentials == 25
    assert state.aaguid == "6b657974-7269-6167-6531-616200000001"
    assert state.pin_uv_protocols == [2, 1]
    assert state.credential_management is True
    assert any("forcePINChange" in note for note in state.notes)


def test_ctap20_key_uses_pin_auth_blocked_answer():
    # A CTAP 2.0 key reports no powerCycleState; only an earlier PIN_AUTH_BLOCKED answer tells.
    auth = SoftAuthenticator(pin="123456", ctap21=False, pin_retries=5, consecutive_mismatches=3)
    state = read_fido_state(SoftCtapDevice(auth))
    assert state.pin.state is FidoPinState.HEALTHY
    assert state.pin.power_cycle_required is None
    assert state.min_pin_length is None

    answer = decode_ctap_error(CtapError(CtapError.ERR.PIN_AUTH_BLOCKED), transport="usb-hid")
    state = read_fido_state(SoftCtapDevice(auth), last_pin_result=answer)
    assert state.pin.state is FidoPinState.TEMPORARILY_BLOCKED
    assert state.pin.reason is PinReason.PIN_AUTH_BLOCKED_ANSWER
    assert state.pin.retries == 5
    assert auth.client_pin_subcommands() == [PIN_GET_RETRIES, PIN_GET_RETRIES]


def test_power_cycle_state_outranks_old_answer():
    auth = SoftAuthenticator(pin="123456", pin_retries=5)
    answer = decode_ctap_error(CtapError(CtapError.ERR.PIN_AUTH_BLOCKED))
    state = read_fido_state(SoftCtapDevice(auth), last_pin_result=answer)
    assert state.pin.state is FidoPinState.HEALTHY
    assert state.pin.power_cycle_required is False


class BrokenDevice(SoftCtapDevice):
    """A device whose every CTAP call raises `error`."""

    def __init__(self, error: Exception) -> None:
        super().__init__(SoftAuthenticator())
        self.error = error

    def call(self, cmd, data=b"", event=None, on_keepalive=None):
        raise self.error


class RetriesFailDevice(SoftCtapDevice):
    """getInfo works; clientPin answers with a fixed CTAP status."""

    def __init__(self, status: int) -> None:
        super().__init__(SoftAuthenticator(pin="123456"))
        self.status = status

    def call(self, cmd, data=b"", event=None, on_keepalive=None):
        if data[:1] == b"\x06":
            return bytes([self.status])
        return super().call(cmd, data, event, on_keepalive)


def test_other_over_pcsc_is_unknown_with_hint():
    state = read_fido_state(RetriesFailDevice(0x7F), transport="pcsc")
    assert state.pin.state is FidoPinState.UNKNOWN
    assert state.pin.retries is None
    assert "unknown CTAP error over PC/SC, retry over USB HID if available" in state.pin.explanation
    assert to_json(state)["error"]["kind"] == "other_over_pcsc"


def test_retries_answered_with_lockout_codes():
    blocked = read_fido_state(RetriesFailDevice(0x32), transport="usb-hid")
    assert blocked.pin.state is FidoPinState.PERMANENTLY_BLOCKED
    assert blocked.pin.retries == 0
    auth_blocked = read_fido_state(RetriesFailDevice(0x34), transport="usb-hid")
    assert auth_blocked.pin.state is FidoPinState.TEMPORARILY_BLOCKED
    assert auth_blocked.pin.retries is None


def test_pcsc_service_down_is_not_a_fido_answer():
    state = read_fido_state(BrokenDevice(PcscError(PcscProblem.NO_SERVICE)), transport="pcsc")
    assert state.pin.state is FidoPinState.UNKNOWN
    assert "pcscd" in state.pin.explanation
    assert "not allowed" not in state.pin.explanation.lower()


def test_permission_error_during_read_is_not_accessible():
    state = read_fido_state(BrokenDevice(PermissionError(13, "Permission denied")), transport="usb-hid", label="/dev/hidraw2")
    assert state.pin.state is FidoPinState.NOT_ACCESSIBLE
    assert state.not_accessible.path == "/dev/hidraw2"


def test_discovered_state_prefers_hid_and_notes_pcsc():
    backend = LabBackend("fido-auth-blocked")
    reader = backend.list_readers()[0]
    discovery = find_fido_devices(reader, backend)
    assert [endpoint.transport for endpoint in discovery.endpoints] == ["pcsc", "usb-hid"]
    state = read_discovered_state(discovery)
    assert state.transport == "usb-hid"
    assert state.pin.state is FidoPinState.TEMPORARILY_BLOCKED
    discovery.close()


def test_json_carries_no_relying_party_or_user():
    device, _ = scenario_device("fido-healthy", "direct")
    text = json.dumps(to_json(read_fido_state(device)))
    for private in ("example.com", "example.org", "alice", "bob"):
        assert private not in text


def test_state_read_logs_no_relying_party(caplog):
    caplog.set_level(1)
    for transport in ("direct", "usb-hid", "pcsc"):
        device, _ = scenario_device("fido-healthy", transport)
        read_fido_state(device, transport=transport)
    for private in ("example.com", "example.org", "alice", "bob", "975310"):
        assert private not in caplog.text
