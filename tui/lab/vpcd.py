"""The socket link that attaches a virtual card to pcscd through vsmartcard's vpcd driver.

vpcd (the `libifdvpcd.so` pcscd driver) listens on TCP, one port per reader
slot, and the card connects to it: connecting is inserting the card and
closing the socket is removing it. Every message in either direction is a
2-byte big-endian length followed by the payload. A 1-byte payload from vpcd
is a control code (0 power off, 1 power on, 2 reset, 4 send the ATR); any
longer payload is a command APDU, answered with exactly one response APDU.

pcscd polls card presence about every 400 ms, and the driver sends control
code 4 on every poll, so the link answers ATR requests at any time.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Protocol

from tui.errors import LabError

log = logging.getLogger("keytriage.lab.vpcd")

DEFAULT_HOST = "127.0.0.1"
# The first slot of the CHANNELID 0x8C7B entry that Debian's vsmartcard-vpcd
# package ships; the entry's second slot is 35964.
DEFAULT_PORT = 35963

CONTROL_POWER_OFF = 0x00
CONTROL_POWER_ON = 0x01
CONTROL_RESET = 0x02
CONTROL_SEND_ATR = 0x04

# Linux only, and not sticky: the kernel clears it again after it sends an ACK,
# so the link sets it after every recv. Without it, vpcd 0.8 (Debian 12) costs
# about 44 ms per APDU, because it writes the length and the body in two send()
# calls without TCP_NODELAY, and Nagle holds the body until our delayed ACK.
_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)

# The injected-latency delay; a module attribute so tests can record it.
_sleep = time.sleep


class Card(Protocol):
    """The card interface the link drives (`tui.lab.card.VirtualCard` implements it)."""

    atr: bytes

    def transmit(self, apdu: bytes) -> bytes:
        """Process one command APDU and return data || SW1 SW2."""

    def power_on(self) -> None:
        """Drop volatile state (selected applet, pending 61xx data) as a power cycle does."""

    def inserted(self) -> None:
        """Handle a physical insertion (a FIDO power-up)."""

    def removed(self) -> None:
        """Handle a physical removal."""


class VpcdLinkError(LabError):
    """The link could not reach vpcd (pcscd not running, or no vpcd driver on the port)."""


def _arm_quickack(sock: socket.socket) -> None:
    if _TCP_QUICKACK is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)


def recv_exact(sock: socket.socket, size: int) -> bytes | None:
    """Read exactly `size` bytes, looping on short reads. Return None once the peer has closed.

    TCP_QUICKACK is re-armed after every recv, including the short ones.
    """
    buffer = bytearray()
    while len(buffer) < size:
        try:
            chunk = sock.recv(size - len(buffer))
        except OSError:
            # The socket was shut down under us by remove(), or the peer reset it.
            return None
        if not chunk:
            return None
        _arm_quickack(sock)
        buffer += chunk
    return bytes(buffer)


def frame(payload: bytes) -> bytes:
    """Prefix `payload` with its 2-byte big-endian length."""
    if len(payload) > 0xFFFF:
        raise ValueError(f"vpcd message of {len(payload)} bytes exceeds the 65535-byte frame limit")
    return struct.pack("!H", len(payload)) + payload


class VpcdLink:
    """One virtual card attached to one vpcd slot on `host:port`.

    `insert()` connects (the card appears in the reader) and `remove()`
    closes the socket (the reader reports it empty). A served connection runs
    on a daemon thread. `latency_s` delays every APDU response, to imitate a
    real key's processing time in benchmarks. `on_closed` is called with the
    link when vpcd closes the connection by itself (pcscd stopped).
    """

    def __init__(self, card: Card, port: int = DEFAULT_PORT, *, host: str = DEFAULT_HOST,
                 latency_s: float = 0.0, on_closed: Callable[[VpcdLink], None] | None = None) -> None:
        self.card = card
        self.host = host
        self.port = port
        self.latency_s = latency_s
        self.on_closed = on_closed
        self.apdu_count = 0
        self.control_log: list[int] = []
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._polled = threading.Event()
        self._lock = threading.Lock()

    @property
    def inserted(self) -> bool:
        """True while the card is connected to vpcd."""
        return self._sock is not None

    def insert(self, connect_timeout_s: float = 5.0) -> None:
        """Connect to vpcd, which pcscd reports as a card insertion.

        Connection refusals are retried until `connect_timeout_s` has passed,
        because pcscd may still be starting. Raises `VpcdLinkError` when
        nothing accepts the connection in time. Inserting an inserted card
        does nothing.
        """
        with self._lock:
            if self._sock is not None:
                return
            sock = self._connect(connect_timeout_s)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _arm_quickack(sock)
            sock.settimeout(None)

            self._polled.clear()
            self.card.inserted()
            self._sock = sock
            self._thread = threading.Thread(target=self._serve, args=(sock,), name=f"vpcd-{self.port}", daemon=True)
            self._thread.start()
        log.info("card inserted on vpcd %s:%d", self.host, self.port)

    def remove(self) -> None:
        """Close the connection, which pcscd reports as a card removal. Removing twice does nothing."""
        with self._lock:
            sock, self._sock = self._sock, None
            thread, self._thread = self._thread, None
        if sock is None:
            return

        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        if thread is not None and thread is not threading.current_thread():
            thread.join(2.0)
        self.card.removed()
        log.info("card removed from vpcd %s:%d", self.host, self.port)

    def wait_polled(self, timeout_s: float) -> bool:
        """Wait until vpcd sent its first message on this connection; return False on timeout.

        vpcd accepts a second card on a busy port but never polls it until the
        first leaves, so a timeout here usually means the slot is taken.
        """
        return self._polled.wait(timeout_s)

    def _connect(self, timeout_s: float) -> socket.socket:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return socket.create_connection((self.host, self.port), timeout=2.0)
            except (ConnectionRefusedError, ConnectionResetError) as exc:
                if time.monotonic() >= deadline:
                    raise VpcdLinkError(
                        f"nothing accepts connections on {self.host}:{self.port} after {timeout_s:g} s ({exc.strerror}). "
                        "Start pcscd with a vpcd reader entry for this port, then retry."
                    ) from exc
                time.sleep(0.1)
            except OSError as exc:
                raise VpcdLinkError(f"cannot connect to vpcd on {self.host}:{self.port}: {exc}") from exc

    def _serve(self, sock: socket.socket) -> None:
        while True:
            header = recv_exact(sock, 2)
            if header is None:
                break
            (length,) = struct.unpack("!H", header)
            payload = recv_exact(sock, length) if length else b""
            if payload is None:
                break
            self._polled.set()

            try:
                reply = self._handle(payload)
            except Exception:
                # A card bug must not leave vpcd waiting for a response forever.
                log.exception("virtual card failed on a %d-byte message; sending 6F00", length)
                reply = b"\x6f\x00" if length > 1 else None
            if reply is None:
                continue
            try:
                sock.sendall(frame(reply))
            except OSError:
                break

        self._closed_by_peer(sock)

    def _handle(self, payload: bytes) -> bytes | None:
        if len(payload) == 1:
            return self._control(payload[0])
        if not payload:
            log.warning("vpcd sent an empty message; ignored")
            return None

        self.apdu_count += 1
        response = self.card.transmit(payload)
        if self.latency_s > 0:
            _sleep(self.latency_s)
        return response

    def _control(self, code: int) -> bytes | None:
        self.control_log.append(code)
        if code == CONTROL_SEND_ATR:
            return bytes(self.card.atr)
        if code in (CONTROL_POWER_OFF, CONTROL_POWER_ON, CONTROL_RESET):
            # Power off, power on and reset all lose the volatile state.
            self.card.power_on()
            return None
        log.warning("vpcd sent unknown control code 0x%02X; ignored", code)
        return None

    def _closed_by_peer(self, sock: socket.socket) -> None:
        with self._lock:
            mine = self._sock is sock
            if mine:
                self._sock = None
                self._thread = None
        if not mine:
            return  # remove() closed it and does the bookkeeping.

        sock.close()
        self.card.removed()
        log.warning("vpcd on %s:%d closed the connection (pcscd stopped?); the card counts as removed", self.host, self.port)
        if self.on_closed is not None:
            self.on_closed(self)
