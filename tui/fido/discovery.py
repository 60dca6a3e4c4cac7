"""Find the CTAP devices of one physical token: USB HID and PC/SC.

PC/SC: python-fido2's `CtapPcscDevice.list_devices()` connects to every
reader and unpowers each card when it disconnects, which would disturb keys
that are not being triaged. Discovery therefore opens only the chosen reader,
through keytriage's own `ReaderBackend` (whose transports leave the card
powered on disconnect), and hands fido2's real `CtapPcscDevice` an adapter.

USB HID: python-fido2 drops a /dev/hidraw* node it cannot open and logs that
only at DEBUG, so a key that this login may not open looks like "no FIDO".
Discovery enumerates itself and reports such a key as `NotAccessible` with
the fix. The same happens on Windows, where only elevated processes may open
FIDO HID devices (Windows 10 1903 and later).

For a lab backend (`is_lab`), discovery asks `backend.fido_hid_devices(reader)`
when the backend has it, else `tui.lab.fido_applet.lab_backend_hid_devices`,
in place of the real USB enumeration.
"""

from __future__ import annotations

import errno
import functools
import glob as globbing
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tui.errors import KeytriageError
from tui.fido.errors import TRANSPORT_PCSC, TRANSPORT_USB_HID

log = logging.getLogger("keytriage.fido")

FIDO_AID = bytes.fromhex("A0000006472F0001")
WINDOWS_ACCESS_DENIED = 5


@dataclass(frozen=True)
class NotAccessible:
    """A FIDO device that is present but that this login may not open."""

    path: str
    transport: str
    message: str
    fix: str
    product_name: str | None = None


def not_accessible_for(path: str, transport: str, exc: OSError | None = None, *, platform: str = sys.platform, product_name: str | None = None) -> NotAccessible:
    """Describe a permission failure on a FIDO device, with the fix for this platform."""
    what = f"FIDO device {product_name} at {path}" if product_name else f"FIDO device at {path}"
    if platform == "win32":
        return NotAccessible(
            path,
            transport,
            f"The {what} is present but not accessible: Windows lets only elevated processes open FIDO USB HID devices.",
            "Run keytriage in an elevated (Administrator) session; the smart-card checks work either way.",
            product_name,
        )
    if platform.startswith("linux"):
        return NotAccessible(
            path,
            transport,
            f"The {what} is present but not accessible to this login (permission denied on the hidraw node).",
            "Add a udev rule that gives this user's group read-write access to FIDO hidraw devices "
            '(for example SUBSYSTEM=="hidraw", ATTRS{idVendor}=="1050", GROUP="plugdev", MODE="0660") '
            "and add the user to that group, then re-plug the key. TAG+=\"uaccess\" rules cover only local desktop "
            "sessions, not SSH logins.",
            product_name,
        )
    reason = os.strerror(exc.errno) if exc is not None and exc.errno else "permission denied"
    return NotAccessible(path, transport, f"The {what} is present but not accessible ({reason}).", "Give this login access to the device, or run keytriage with the rights to open it.", product_name)


def _is_permission_error(exc: BaseException) -> bool:
    if isinstance(exc, PermissionError):
        return True
    if isinstance(exc, OSError):
        return exc.errno in (errno.EACCES, errno.EPERM) or getattr(exc, "winerror", None) == WINDOWS_ACCESS_DENIED
    return False


@dataclass
class FidoEndpoint:
    """One way to reach a token's authenticator: an open CTAP device, or why it cannot be opened."""

    transport: str
    label: str
    device: Any = None  # a fido2 CtapDevice, or None when `not_accessible` is set
    not_accessible: NotAccessible | None = None
    match: str = ""  # how the endpoint was tied to the token: "same reader", "product name", "only device"

    def close(self) -> None:
        """Close the CTAP device, leaving a PC/SC card powered."""
        if self.device is not None:
            try:
                self.device.close()
            except (OSError, KeytriageError) as exc:
                log.debug("closing FIDO device %s failed: %s", self.label, exc)


@dataclass
class FidoDiscovery:
    """The CTAP endpoints found for one token, plus notes on what could not be tied to it."""

    endpoints: list[FidoEndpoint] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def best(self) -> FidoEndpoint | None:
        """Return the endpoint to read state from: accessible USB HID, then PC/SC, then inaccessible."""
        ranked = sorted(
            self.endpoints,
            key=lambda e: (e.device is None, e.transport != TRANSPORT_USB_HID),
        )
        return ranked[0] if ranked else None

    def close(self) -> None:
        """Close every endpoint's device."""
        for endpoint in self.endpoints:
            endpoint.close()


# -- PC/SC -----------------------------------------------------------------


class TransportCardConnection:
    """The part of pyscard's `CardConnection` that fido2's `CtapPcscDevice` calls, over a keytriage `Transport`.

    `disconnect` goes to `Transport.disconnect`, which leaves the card powered,
    so FIDO discovery does not power-cycle the key (a power cycle would clear
    PIN_AUTH_BLOCKED and restart the reset window).
    """

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self._atr = b""

    def connect(self, protocol: Any = None, mode: Any = None, disposition: Any = None) -> None:
        """Connect the transport and keep the ATR."""
        self._atr = bytes(self.transport.connect() or b"")

    def transmit(self, command: list[int], protocol: Any = None) -> tuple[list[int], int, int]:
        """Send one APDU; return (data, SW1, SW2) as pyscard does."""
        raw = bytes(self.transport.transmit_raw(bytes(command)))
        if len(raw) < 2:
            from tui.errors import MalformedResponseError

            raise MalformedResponseError(f"the card returned {len(raw)} bytes, fewer than a status word")
        return list(raw[:-2]), raw[-2], raw[-1]

    def getATR(self) -> list[int]:  # noqa: N802 - pyscard's method name
        """Return the ATR read at connect time."""
        return list(self._atr)

    def control(self, control_code: int, command: list[int]) -> list[int]:
        """Reject reader control codes, which no keytriage transport forwards."""
        raise NotImplementedError("reader control codes are not available through a keytriage transport")

    def disconnect(self) -> None:
        """Disconnect the transport, leaving the card powered."""
        self.transport.disconnect()


def open_pcsc_ctap(reader: str, backend: Any = None, *, transport: Any = None) -> Any:
    """Open fido2's `CtapPcscDevice` on `reader` only; return None when the card has no FIDO applet.

    Pass a `ReaderBackend` (its `open(reader)` supplies the transport) or a
    ready `transport`. PC/SC failures raise `PcscError` from the transport,
    so a stopped smart-card service is reported as such, not as "no FIDO".
    """
    from fido2.pcsc import CtapPcscDevice

    if transport is None:
        if backend is None:
            raise ValueError("open_pcsc_ctap needs a backend or a transport")
        transport = backend.open(reader)
    connection = TransportCardConnection(transport)
    try:
        return CtapPcscDevice(connection, reader)
    except ValueError:
        # fido2 raises ValueError when SELECT of the FIDO AID fails or getInfo fails.
        log.debug("no FIDO applet found on reader %s", reader)
        connection.disconnect()
        return None


# -- USB HID -----------------------------------------------------------------


@dataclass
class _SysfsInfo:
    is_fido: bool | None
    product_name: str | None = None


def _sysfs_info(hidraw_path: str, sysfs_root: str) -> _SysfsInfo:
    """Read a hidraw node's report descriptor and name from sysfs, which is world-readable."""
    from fido2.hid.base import parse_report_descriptor

    node = os.path.join(sysfs_root, os.path.basename(hidraw_path), "device")
    name = None
    try:
        with open(os.path.join(node, "uevent"), encoding="utf-8", errors="replace") as uevent:
            for line in uevent:
                if line.startswith("HID_NAME="):
                    name = line.split("=", 1)[1].strip() or None
    except OSError:
        pass
    try:
        with open(os.path.join(node, "report_descriptor"), "rb") as descriptor:
            data = descriptor.read()
    except OSError:
        return _SysfsInfo(None, name)
    try:
        parse_report_descriptor(data)
    except ValueError:
        return _SysfsInfo(False, name)
    return _SysfsInfo(True, name)


def enumerate_usb_hid(
    *,
    platform: str = sys.platform,
    hidraw_glob: Callable[[str], Iterable[str]] = globbing.glob,
    get_descriptor: Callable[[str], Any] | None = None,
    open_connection: Callable[[Any], Any] | None = None,
    list_descriptors: Callable[[], Iterable[Any]] | None = None,
    sysfs_root: str = "/sys/class/hidraw",
) -> tuple[list[FidoEndpoint], list[str]]:
    """Open every FIDO USB HID device; report the ones this login may not open.

    Returns (endpoints, notes). The keyword arguments replace python-fido2's
    platform functions in tests.
    """
    from fido2.hid import CtapHidDevice

    if platform.startswith("linux"):
        if get_descriptor is None or open_connection is None:
            from fido2.hid import linux

            get_descriptor = get_descriptor or linux.get_descriptor
            open_connection = open_connection or linux.open_connection
        candidates = _linux_descriptors(hidraw_glob, get_descriptor, sysfs_root, platform)
    else:
        if list_descriptors is None or open_connection is None:
            import fido2.hid

            list_descriptors = list_descriptors or fido2.hid.list_descriptors
            open_connection = open_connection or fido2.hid.open_connection
        candidates = ([], [])
        try:
            candidates[0].extend(list_descriptors())
        except OSError as exc:
            candidates[1].append(f"USB HID enumeration failed: {exc}")

    descriptors, notes = candidates
    endpoints: list[FidoEndpoint] = []
    for item in descriptors:
        if isinstance(item, FidoEndpoint):
            endpoints.append(item)
            continue
        path = item.path.decode(errors="replace") if isinstance(item.path, bytes) else str(item.path)
        try:
            device = CtapHidDevice(item, open_connection(item))
        except OSError as exc:
            if _is_permission_error(exc):
                problem = not_accessible_for(path, TRANSPORT_USB_HID, exc, platform=platform, product_name=item.product_name)
                endpoints.append(FidoEndpoint(TRANSPORT_USB_HID, path, None, problem))
            else:
                notes.append(f"FIDO device at {path} could not be opened: {exc}")
            continue
        except Exception as exc:  # fido2 raises its own ConnectionFailure for a bad CTAPHID_INIT reply
            notes.append(f"FIDO device at {path} did not answer CTAPHID_INIT: {exc}")
            continue
        endpoints.append(FidoEndpoint(TRANSPORT_USB_HID, path, device))
    return endpoints, notes


def _linux_descriptors(
    hidraw_glob: Callable[[str], Iterable[str]],
    get_descriptor: Callable[[str], Any],
    sysfs_root: str,
    platform: str,
) -> tuple[list[Any], list[str]]:
    items: list[Any] = []
    notes: list[str] = []
    for path in sorted(hidraw_glob("/dev/hidraw*")):
        try:
            items.append(get_descriptor(path))
        except ValueError:
            continue  # not a FIDO device
        except OSError as exc:
            if not _is_permission_error(exc):
                notes.append(f"HID device {path} could not be read: {exc}")
                continue
            info = _sysfs_info(path, sysfs_root)
            if info.is_fido is False:
                continue
            if info.is_fido is None:
                notes.append(f"HID device {path} is not readable by this login and its type is unknown; it may be a FIDO key.")
                continue
            problem = not_accessible_for(path, TRANSPORT_USB_HID, exc, platform=platform, product_name=info.product_name)
            items.append(FidoEndpoint(TRANSPORT_USB_HID, path, None, problem))
    return items, notes


def _reader_model(reader: str) -> str:
    """Strip PC/SC's trailing slot and index numbers ("... 00 00") from a reader name."""
    return re.sub(r"(\s+[0-9A-Fa-f]{2})+$", "", reader).strip().lower()


def _hid_name(endpoint: FidoEndpoint) -> str:
    if endpoint.device is not None:
        name = getattr(endpoint.device, "product_name", None)
    else:
        name = endpoint.not_accessible.product_name if endpoint.not_accessible else None
    return (name or "").strip().lower()


def match_hid_to_reader(reader: str, endpoints: list[FidoEndpoint]) -> tuple[list[FidoEndpoint], list[str]]:
    """Pick the HID endpoints that belong to the token in `reader`, by product name.

    A match needs the HID product name and the reader name (without its slot
    numbers) to contain one another, and exactly one HID device to match,
    because two keys of the same model look identical by name.
    """
    model = _reader_model(reader)
    matches = []
    for endpoint in endpoints:
        name = _hid_name(endpoint)
        if name and (name in model or model in name):
            matches.append(endpoint)
    if len(matches) == 1:
        matches[0].match = "product name"
        return matches, []
    if len(matches) > 1:
        return [], [f"{len(matches)} FIDO USB HID devices of the same model as reader {reader} are connected; keytriage cannot tell which one is this token. Connect one key at a time."]
    return [], []


# -- the entry point -----------------------------------------------------


def find_fido_devices(
    reader: str | None,
    backend: Any = None,
    *,
    transport: Any = None,
    include_pcsc: bool = True,
    include_hid: bool = True,
    hid_enumerator: Callable[[], tuple[list[FidoEndpoint], list[str]]] | None = None,
) -> FidoDiscovery:
    """Return the CTAP endpoints of the token in `reader` (every USB HID key when `reader` is None).

    PC/SC: only `reader` is opened, through `backend.open(reader)` or the
    given `transport`. USB HID: `backend.fido_hid_devices(reader)` when the
    backend provides it (the lab), else `hid_enumerator`, else the real USB
    enumeration; the HID devices are then matched to the reader by product
    name. The caller closes the result (`FidoDiscovery.close()`).
    """
    discovery = FidoDiscovery()

    if include_pcsc and reader is not None and (backend is not None or transport is not None):
        try:
            device = open_pcsc_ctap(reader, backend, transport=transport)
        except KeytriageError as exc:
            discovery.notes.append(f"FIDO over PC/SC on reader {reader} failed: {exc}")
        else:
            if device is not None:
                discovery.endpoints.append(FidoEndpoint(TRANSPORT_PCSC, reader, device, match="same reader"))

    if include_hid:
        lab_source = getattr(backend, "fido_hid_devices", None)
        if lab_source is None and getattr(backend, "is_lab", False):
            from tui.lab.fido_applet import lab_backend_hid_devices

            lab_source = functools.partial(lab_backend_hid_devices, backend)
        if lab_source is not None:
            endpoints = _lab_endpoints(lab_source(reader))
            for endpoint in endpoints:
                endpoint.match = "lab key"
            discovery.endpoints.extend(endpoints)
        else:
            endpoints, notes = (hid_enumerator or enumerate_usb_hid)()
            discovery.notes.extend(notes)
            if reader is None:
                discovery.endpoints.extend(endpoints)
            else:
                matched, match_notes = match_hid_to_reader(reader, endpoints)
                discovery.endpoints.extend(matched)
                discovery.notes.extend(match_notes)
                for endpoint in endpoints:
                    if endpoint not in matched:
                        endpoint.close()
    return discovery


def _lab_endpoints(items: Iterable[Any]) -> list[FidoEndpoint]:
    endpoints = []
    for item in items:
        if isinstance(item, NotAccessible):
            endpoints.append(FidoEndpoint(item.transport, item.path, None, item))
        elif isinstance(item, FidoEndpoint):
            endpoints.append(item)
        else:
            descriptor = getattr(item, "descriptor", None)
            label = str(descriptor.path) if descriptor is not None else repr(item)
            endpoints.append(FidoEndpoint(TRANSPORT_USB_HID, label, item))
    return endpoints
