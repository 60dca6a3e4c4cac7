"""Transports that let python-fido2's real client classes reach the software authenticator.

`SoftCtapDevice` is a `fido2.ctap.CtapDevice` that calls the authenticator
directly. `SoftHidConnection` is a `fido2.hid.base.CtapHidConnection` that
speaks CTAPHID at the level of 64-byte packets, so fido2's own
`CtapHidDevice` runs unchanged over it. It covers INIT with channel
allocation, fragmentation into initialization and continuation packets,
KEEPALIVE every 100 ms while a request runs, CANCEL, and ERROR packets. The machines this
project runs on have no kernel uhid, so this is the lab's USB HID path.
"""

from __future__ import annotations

import errno
import logging
import queue
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from fido2.ctap import STATUS, CtapDevice, CtapError
from fido2.hid import CAPABILITY, CTAPHID, CtapHidDevice
from fido2.hid.base import CtapHidConnection, HidDescriptor

from tui.lab.soft_fido import SoftAuthenticator

log = logging.getLogger("keytriage.lab.fido")

BROADCAST_CID = 0xFFFFFFFF
TYPE_INIT = 0x80
CTAPHID_PROTOCOL_VERSION = 2
# CTAPHID limits a message to one initialization packet plus 128 continuation packets.
MAX_MESSAGE_BYTES = 7609

# CTAPHID ERROR codes (CTAP 2.1, section 11.2.9.1.6).
HID_ERR_INVALID_CMD = 0x01
HID_ERR_INVALID_PAR = 0x02
HID_ERR_INVALID_LEN = 0x03
HID_ERR_INVALID_SEQ = 0x04
HID_ERR_CHANNEL_BUSY = 0x06
HID_ERR_INVALID_CHANNEL = 0x0B

# Yubico's USB vendor ID and the YubiKey 5 OTP+FIDO+CCID product ID, so the lab
# key looks like the keys technicians see.
LAB_VID = 0x1050
LAB_PID = 0x0407
LAB_PRODUCT_NAME = "YubiKey OTP+FIDO+CCID"


class SoftCtapDevice(CtapDevice):
    """A `CtapDevice` that hands CTAPHID_CBOR payloads straight to a `SoftAuthenticator`."""

    def __init__(self, authenticator: SoftAuthenticator, name: str = "lab") -> None:
        self.authenticator = authenticator
        self.name = name

    def __repr__(self) -> str:
        return f"SoftCtapDevice({self.name!r})"

    @property
    def capabilities(self) -> int:
        """CBOR and WINK; NMSG because CTAP1/U2F messages are not emulated."""
        return CAPABILITY.CBOR | CAPABILITY.WINK | CAPABILITY.NMSG

    def call(self, cmd, data=b"", event=None, on_keepalive=None) -> bytes:
        """Run one CTAPHID command: CBOR goes to the authenticator, PING echoes, WINK is a no-op."""
        if cmd == CTAPHID.CBOR:
            return self.authenticator.process(bytes(data), event, on_keepalive)
        if cmd == CTAPHID.PING:
            return bytes(data)
        if cmd == CTAPHID.WINK:
            return b""
        raise CtapError(CtapError.ERR.INVALID_COMMAND)

    @classmethod
    def list_devices(cls) -> Iterator[SoftCtapDevice]:
        """Yield nothing: software devices are handed out by the lab, not discovered."""
        return iter(())


@dataclass
class _Assembly:
    cid: int
    cmd: int
    length: int
    data: bytearray
    next_seq: int = 0


@dataclass
class _Job:
    cid: int
    cancel: threading.Event
    status: STATUS = STATUS.PROCESSING
    done: bool = False


class SoftHidConnection(CtapHidConnection):
    """A CTAPHID device at packet level, backed by a `SoftAuthenticator`.

    `write_packet` receives host-to-device reports and `read_packet` returns
    device-to-host reports. While a CBOR request runs on its worker thread,
    every `keepalive_interval` seconds without a reply produces a KEEPALIVE
    packet with the request's current status (PROCESSING, or UPNEEDED while
    waiting for touch). fido2's `CtapHidDevice` sends CANCEL only between two
    reads, so a device that fell silent while waiting would never see it.
    """

    def __init__(
        self,
        authenticator: SoftAuthenticator,
        *,
        packet_size: int = 64,
        keepalive_interval: float = 0.1,
        idle_read_timeout: float = 5.0,
        device_version: tuple[int, int, int] = (5, 7, 4),
    ) -> None:
        self.authenticator = authenticator
        self.packet_size = packet_size
        self.keepalive_interval = keepalive_interval
        self.idle_read_timeout = idle_read_timeout
        self.device_version = device_version
        self.capabilities = CAPABILITY.CBOR | CAPABILITY.WINK | CAPABILITY.NMSG

        self._outbox: queue.Queue[bytes] = queue.Queue()
        self._lock = threading.Lock()
        self._assembly: _Assembly | None = None
        self._job: _Job | None = None
        self._channels: set[int] = set()
        self._next_cid = 1
        self._closed = False

        # Counters for tests and the lab's activity view.
        self.keepalives_sent = 0
        self.cancels_received = 0
        self.winks = 0

    # -- host to device ----------------------------------------------------

    def write_packet(self, data: bytes) -> None:
        """Accept one host-to-device report (without the report ID byte)."""
        if self._closed:
            raise OSError(errno.EBADF, "the software HID connection is closed")
        packet = bytes(data).ljust(self.packet_size, b"\0")[: self.packet_size]
        (cid,) = struct.unpack_from(">I", packet)
        with self._lock:
            if packet[4] & TYPE_INIT:
                self._on_init_packet(cid, packet[4] & 0x7F, packet)
            else:
                self._on_continuation(cid, packet[4], packet[5:])

    def _on_init_packet(self, cid: int, cmd: int, packet: bytes) -> None:
        if cmd == CTAPHID.CANCEL:
            # CANCEL has no reply; the running request ends with KEEPALIVE_CANCEL.
            self.cancels_received += 1
            if self._job is not None and self._job.cid == cid:
                self._job.cancel.set()
            return
        if cid == 0 or (cid == BROADCAST_CID and cmd != CTAPHID.INIT):
            self._send_error(cid, HID_ERR_INVALID_CHANNEL)
            return
        if cid != BROADCAST_CID and cid not in self._channels:
            self._send_error(cid, HID_ERR_INVALID_CHANNEL)
            return
        if cmd != CTAPHID.INIT:
            if self._assembly is not None and self._assembly.cid != cid:
                self._send_error(cid, HID_ERR_CHANNEL_BUSY)
                return
            if self._job is not None:
                self._send_error(cid, HID_ERR_CHANNEL_BUSY)
                return

        (length,) = struct.unpack_from(">H", packet, 5)
        if length > MAX_MESSAGE_BYTES:
            self._send_error(cid, HID_ERR_INVALID_LEN)
            return
        first = packet[7 : 7 + min(length, self.packet_size - 7)]
        self._assembly = _Assembly(cid, cmd, length, bytearray(first))
        self._complete_if_whole()

    def _on_continuation(self, cid: int, seq: int, body: bytes) -> None:
        assembly = self._assembly
        if assembly is None or assembly.cid != cid:
            return  # A stray continuation packet is ignored, as the specification requires.
        if seq != assembly.next_seq:
            self._assembly = None
            self._send_error(cid, HID_ERR_INVALID_SEQ)
            return
        assembly.next_seq += 1
        assembly.data += body[: assembly.length - len(assembly.data)]
        self._complete_if_whole()

    def _complete_if_whole(self) -> None:
        assembly = self._assembly
        if assembly is None or len(assembly.data) < assembly.length:
            return
        self._assembly = None
        self._dispatch(assembly.cid, assembly.cmd, bytes(assembly.data))

    def _dispatch(self, cid: int, cmd: int, payload: bytes) -> None:
        if cmd == CTAPHID.INIT:
            self._init(cid, payload)
        elif cmd == CTAPHID.PING:
            self._send(cid, CTAPHID.PING, payload)
        elif cmd == CTAPHID.WINK:
            self.winks += 1
            self._send(cid, CTAPHID.WINK, b"")
        elif cmd == CTAPHID.CBOR:
            if not payload:
                self._send_error(cid, HID_ERR_INVALID_LEN)
                return
            self._start_job(cid, payload)
        else:
            # CTAPHID_MSG (CTAP1/U2F) and LOCK are not emulated.
            self._send_error(cid, HID_ERR_INVALID_CMD)

    def _init(self, cid: int, nonce: bytes) -> None:
        if len(nonce) != 8:
            self._send_error(cid, HID_ERR_INVALID_LEN)
            return
        if cid == BROADCAST_CID:
            new_cid = self._next_cid
            self._next_cid += 1
            self._channels.add(new_cid)
        else:
            new_cid = cid  # INIT on an allocated channel resynchronises it.
        major, minor, build = self.device_version
        reply = nonce + struct.pack(">IBBBBB", new_cid, CTAPHID_PROTOCOL_VERSION, major, minor, build, self.capabilities)
        self._send(cid, CTAPHID.INIT, reply)

    def _start_job(self, cid: int, request: bytes) -> None:
        job = _Job(cid, threading.Event())
        self._job = job

        def on_keepalive(status: STATUS) -> None:
            job.status = status

        def run() -> None:
            try:
                response = self.authenticator.process(request, job.cancel, on_keepalive)
            except Exception:  # The worker must always send a response, or the host waits forever.
                log.exception("software authenticator failed on a CTAPHID_CBOR request")
                response = bytes([CtapError.ERR.OTHER])
            with self._lock:
                self._send(cid, CTAPHID.CBOR, response)
                job.done = True
                if self._job is job:
                    self._job = None

        threading.Thread(target=run, name="soft-ctaphid", daemon=True).start()

    # -- device to host ----------------------------------------------------

    def _send(self, cid: int, cmd: int, payload: bytes) -> None:
        header = struct.pack(">IBH", cid, TYPE_INIT | cmd, len(payload))
        first = self.packet_size - len(header)
        self._outbox.put((header + payload[:first]).ljust(self.packet_size, b"\0"))
        remaining = payload[first:]
        seq = 0
        while remaining:
            body_size = self.packet_size - 5
            packet = struct.pack(">IB", cid, seq) + remaining[:body_size]
            self._outbox.put(packet.ljust(self.packet_size, b"\0"))
            remaining = remaining[body_size:]
            seq += 1

    def _send_error(self, cid: int, code: int) -> None:
        self._send(cid, CTAPHID.ERROR, bytes([code]))

    def read_packet(self) -> bytes:
        """Return the next device-to-host report, producing KEEPALIVEs while a request runs.

        Raises OSError(ETIMEDOUT) after `idle_read_timeout` seconds with no
        request running and nothing to send, where a real device would block.
        """
        idle = 0.0
        while True:
            if self._closed:
                raise OSError(errno.EBADF, "the software HID connection is closed")
            try:
                return self._outbox.get(timeout=self.keepalive_interval)
            except queue.Empty:
                pass
            with self._lock:
                job = self._job
                if job is not None and not job.done and self._outbox.empty():
                    self.keepalives_sent += 1
                    packet = struct.pack(">IBHB", job.cid, TYPE_INIT | CTAPHID.KEEPALIVE, 1, job.status)
                    return packet.ljust(self.packet_size, b"\0")
                if job is None:
                    idle += self.keepalive_interval
            if idle >= self.idle_read_timeout:
                raise OSError(errno.ETIMEDOUT, "the software HID device has nothing to send")

    def close(self) -> None:
        """Close the connection; later reads and writes raise OSError."""
        self._closed = True


def lab_hid_descriptor(path: str, serial: str | None = None, product_name: str = LAB_PRODUCT_NAME) -> HidDescriptor:
    """Build the HID descriptor the lab key reports (64-byte reports)."""
    return HidDescriptor(path, LAB_VID, LAB_PID, 64, 64, product_name, serial)


def open_soft_hid_device(
    authenticator: SoftAuthenticator,
    path: str = "lab://hidraw0",
    *,
    serial: str | None = None,
    product_name: str = LAB_PRODUCT_NAME,
    connection_factory: Callable[[SoftAuthenticator], SoftHidConnection] = SoftHidConnection,
) -> CtapHidDevice:
    """Open fido2's real `CtapHidDevice` over a new `SoftHidConnection` (runs CTAPHID_INIT)."""
    descriptor = lab_hid_descriptor(path, serial, product_name)
    return CtapHidDevice(descriptor, connection_factory(authenticator))
