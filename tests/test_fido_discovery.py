"""Discovery of a token's CTAP devices: one reader only, and keys this login may not open."""

from __future__ import annotations

import pytest
from fido2.hid.base import HidDescriptor

from tui.fido.discovery import (
    FidoEndpoint,
    enumerate_usb_hid,
    find_fido_devices,
    match_hid_to_reader,
    not_accessible_for,
)
from tui.fido.export import to_json
from tui.fido.state import FidoPinState, read_discovered_state
from tui.lab.backend import LabBackend
from tui.lab.ctap_device import SoftHidConnection
from tui.lab.fido_applet import FidoApplet
from tui.lab.scenarios import crescendo_key, with_fido
from tui.lab.soft_fido import SoftAuthenticator

# HID report descriptor of a FIDO device: usage page F1D0, usage 01, 64-byte input and output reports.
FIDO_REPORT_DESCRIPTOR = bytes.fromhex("06d0f10901a1010920150026ff007508954081020921150026ff00750895409102c0")
# A keyboard's report descriptor (usage page 01, usage 06): not FIDO.
KEYBOARD_REPORT_DESCRIPTOR = bytes.fromhex("05010906a101050719e029e71500250175019508810295017508810195057501050819012905910295017503910195067508150025650507190029658100c0")


def fake_sysfs(tmp_path, nodes: dict[str, tuple[bytes, str]]) -> str:
    root = tmp_path / "hidraw"
    for name, (descriptor, hid_name) in nodes.items():
        device = root / name / "device"
        device.mkdir(parents=True)
        (device / "report_descriptor").write_bytes(descriptor)
        (device / "uevent").write_text(f"DRIVER=hid-generic\nHID_ID=0003:00001050:00000407\nHID_NAME={hid_name}\n")
    return str(root)


def denied(path: str):
    raise PermissionError(13, "Permission denied", path)


def test_hidraw_permission_error_is_not_accessible(tmp_path):
    sysfs = fake_sysfs(tmp_path, {"hidraw0": (FIDO_REPORT_DESCRIPTOR, "Yubico YubiKey OTP+FIDO+CCID")})
    endpoints, notes = enumerate_usb_hid(
        platform="linux",
        hidraw_glob=lambda pattern: ["/dev/hidraw0"],
        get_descriptor=denied,
        open_connection=lambda descriptor: pytest.fail("must not open a node it could not read"),
        sysfs_root=sysfs,
    )
    (endpoint,) = endpoints
    assert endpoint.device is None
    assert endpoint.not_accessible.path == "/dev/hidraw0"
    assert "not accessible" in endpoint.not_accessible.message
    assert "udev rule" in endpoint.not_accessible.fix
    assert "SSH" in endpoint.not_accessible.fix
    assert notes == []

    state = read_discovered_state(find_fido_devices(None, hid_enumerator=lambda: (endpoints, notes)))
    assert state.pin.state is FidoPinState.NOT_ACCESSIBLE
    assert state.pin.retries is None
    document = to_json(state)
    assert document["pin"]["state"] == "not_accessible"
    assert document["not_accessible"]["fix"] == endpoint.not_accessible.fix
    assert "No FIDO authenticator" not in state.pin.explanation


def test_denied_non_fido_hidraw_is_ignored(tmp_path):
    sysfs = fake_sysfs(tmp_path, {"hidraw1": (KEYBOARD_REPORT_DESCRIPTOR, "Some Keyboard")})
    endpoints, notes = enumerate_usb_hid(platform="linux", hidraw_glob=lambda pattern: ["/dev/hidraw1"], get_descriptor=denied,
                                         open_connection=lambda d: None, sysfs_root=sysfs)
    assert endpoints == []
    assert notes == []


def test_denied_hidraw_without_sysfs_gets_note(tmp_path):
    endpoints, notes = enumerate_usb_hid(platform="linux", hidraw_glob=lambda pattern: ["/dev/hidraw5"], get_descriptor=denied,
                                         open_connection=lambda d: None, sysfs_root=str(tmp_path / "missing"))
    assert endpoints == []
    assert len(notes) == 1
    assert "/dev/hidraw5" in notes[0]


def test_readable_but_not_writable_hidraw(tmp_path):
    descriptor = HidDescriptor("/dev/hidraw2", 0x1050, 0x0407, 64, 64, "Yubico YubiKey OTP+FIDO+CCID", None)

    def open_read_only(d):
        raise PermissionError(13, "Permission denied", d.path)

    endpoints, _ = enumerate_usb_hid(platform="linux", hidraw_glob=lambda pattern: ["/dev/hidraw2"],
                                     get_descriptor=lambda path: descriptor, open_connection=open_read_only)
    (endpoint,) = endpoints
    assert endpoint.not_accessible is not None
    assert endpoint.not_accessible.product_name == "Yubico YubiKey OTP+FIDO+CCID"


def test_windows_unelevated_is_not_accessible():
    descriptor = HidDescriptor(b"\\\\?\\hid#vid_1050", 0x1050, 0x0407, 64, 64, "YubiKey OTP+FIDO+CCID", None)

    def open_denied(d):
        raise OSError(13, "Access is denied")

    endpoints, _ = enumerate_usb_hid(platform="win32", list_descriptors=lambda: [descriptor], open_connection=open_denied)
    (endpoint,) = endpoints
    assert endpoint.not_accessible is not None
    assert "elevated" in endpoint.not_accessible.fix
    assert "Administrator" in endpoint.not_accessible.fix


def test_accessible_hidraw_opens_real_ctaphid_device():
    auth = SoftAuthenticator(pin="123456")
    descriptor = HidDescriptor("/dev/hidraw4", 0x1050, 0x0407, 64, 64, "Yubico YubiKey OTP+FIDO+CCID", None)
    endpoints, _ = enumerate_usb_hid(platform="linux", hidraw_glob=lambda pattern: ["/dev/hidraw4"],
                                     get_descriptor=lambda path: descriptor, open_connection=lambda d: SoftHidConnection(auth))
    (endpoint,) = endpoints
    state = read_discovered_state(find_fido_devices(None, hid_enumerator=lambda: (endpoints, [])))
    assert state.pin.state is FidoPinState.HEALTHY
    assert state.device == "/dev/hidraw4"


def hid_endpoint(path: str, product: str) -> FidoEndpoint:
    problem = not_accessible_for(path, "usb-hid", platform="linux", product_name=product)
    return FidoEndpoint("usb-hid", path, None, problem)


def test_hid_matched_to_reader_by_product_name():
    yubikey = hid_endpoint("/dev/hidraw0", "Yubico YubiKey OTP+FIDO+CCID")
    other = hid_endpoint("/dev/hidraw1", "Nitrokey 3")
    matched, notes = match_hid_to_reader("Yubico YubiKey OTP+FIDO+CCID 00 00", [yubikey, other])
    assert matched == [yubikey]
    assert yubikey.match == "product name"
    assert notes == []


def test_two_keys_of_one_model_not_guessed():
    first = hid_endpoint("/dev/hidraw0", "Yubico YubiKey OTP+FIDO+CCID")
    second = hid_endpoint("/dev/hidraw1", "Yubico YubiKey OTP+FIDO+CCID")
    matched, notes = match_hid_to_reader("Yubico YubiKey OTP+FIDO+CCID 01 00", [first, second])
    assert matched == []
    assert "cannot tell which" in notes[0]


class TwoKeyBackend(LabBackend):
    """The two-tokens scenario, each key given a FIDO applet."""

    def __init__(self) -> None:
        super().__init__("two-tokens")
        for key in self.keys:
            with_fido(key, SoftAuthenticator(pin="123456"))


def test_pcsc_discovery_stays_on_chosen_reader():
    backend = TwoKeyBackend()
    first, second = backend.list_readers()
    before = backend.key(second).card.apdu_count
    discovery = find_fido_devices(first, backend)
    assert [endpoint.label for endpoint in discovery.endpoints if endpoint.transport == "pcsc"] == [first]
    assert backend.key(second).card.apdu_count == before
    discovery.close()


def test_lab_hid_not_accessible_falls_back_to_pcsc():
    key = with_fido(crescendo_key(31), SoftAuthenticator(pin="123456"), hid_accessible=False)
    backend = LabBackend("healthy")
    backend.keys[0].card = key.card  # serve the variant card in the healthy scenario's reader
    reader = backend.list_readers()[0]
    discovery = find_fido_devices(reader, backend)
    transports = sorted((e.transport, e.device is not None) for e in discovery.endpoints)
    assert transports == [("pcsc", True), ("usb-hid", False)]
    state = read_discovered_state(discovery)
    assert state.transport == "pcsc"
    assert state.pin.state is FidoPinState.HEALTHY
    assert any("not accessible" in note for note in state.notes)


def test_lab_hid_only_not_accessible():
    backend = LabBackend("fido-healthy")
    reader = backend.list_readers()[0]
    backend.key(reader).applet(FidoApplet).hid_accessible = False
    state = read_discovered_state(find_fido_devices(reader, backend, include_pcsc=False))
    assert state.pin.state is FidoPinState.NOT_ACCESSIBLE


def test_removed_lab_key_has_no_devices():
    backend = LabBackend("fido-healthy")
    reader = backend.list_readers()[0]
    backend.remove(reader)
    discovery = find_fido_devices(reader, backend)
    assert discovery.endpoints == []
    assert any("PC/SC" in note for note in discovery.notes)
