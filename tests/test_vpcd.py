"""The vpcd socket link against a fake vpcd driver on 127.0.0.1 and a stand-in card."""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

from tui.lab import vpcd
from tui.lab.vpcd import VpcdLink, VpcdLinkError, frame, recv_exact


class StandInCard:
    """The smallest card the link accepts: fixed ATR, echoes the INS back with 9000."""

    atr = bytes.fromhex("3BF81300008131FE15597562696B657934D4")

    def __init__(self) -> None:
        self.events: list[str] = []
        self.apdus: list[bytes] = []

    def transmit(self, apdu: bytes) -> bytes:
        self.apdus.append(apdu)
        return bytes([apdu[1]]) + b"\x90\x00"

    def power_on(self) -> None:
        self.events.append("power_on")

    def inserted(self) -> None:
        self.events.append("inserted")

    def removed(self) -> None:
        self.events.append("removed")


class FakeVpcd:
    """A one-connection TCP listener that plays the driver's side of the protocol."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.conn: socket.socket | None = None

    def accept(self) -> socket.socket:
        self.listener.settimeout(5)
        self.conn, _ = self.listener.accept()
        self.conn.settimeout(5)
        return self.conn

    def send(self, payload: bytes, *, split: bool = False) -> None:
        data = frame(payload)
        if not split:
            self.conn.sendall(data)
            return
        # One byte per send() with a pause, so the card sees short reads.
        for byte in data:
            self.conn.sendall(bytes([byte]))
            time.sleep(0.005)

    def receive(self) -> bytes:
        header = recv_exact(self.conn, 2)
        assert header is not None, "card closed the connection"
        (length,) = struct.unpack("!H", header)
        return recv_exact(self.conn, length)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.listener.close()


@pytest.fixture
def fake():
    server = FakeVpcd()
    yield server
    server.close()


@pytest.fixture
def attached(fake):
    card = StandInCard()
    link = VpcdLink(card, fake.port)
    link.insert()
    fake.accept()
    yield card, link
    link.remove()


def test_insert_calls_inserted(attached):
    card, link = attached

    assert link.inserted
    assert card.events == ["inserted"]


def test_atr_request_answered(attached, fake):
    card, link = attached

    fake.send(b"\x04")

    assert fake.receive() == card.atr
    assert link.control_log == [4]


def test_apdu_answered_once(attached, fake):
    card, link = attached

    fake.send(bytes.fromhex("00200080"))
    fake.send(bytes.fromhex("00A4040007A0000000791000"))

    assert fake.receive() == bytes.fromhex("209000")
    assert fake.receive() == bytes.fromhex("A49000")
    assert card.apdus == [bytes.fromhex("00200080"), bytes.fromhex("00A4040007A0000000791000")]
    assert link.apdu_count == 2


def test_short_reads_reassembled(attached, fake):
    card, _ = attached

    fake.send(bytes.fromhex("00CA9F7F00"), split=True)

    assert fake.receive() == bytes.fromhex("CA9000")
    assert card.apdus == [bytes.fromhex("00CA9F7F00")]


@pytest.mark.parametrize("code", [0, 1, 2])
def test_power_codes_reset_card(attached, fake, code):
    card, link = attached

    fake.send(bytes([code]))
    fake.send(b"\x04")  # the ATR reply proves the control code was processed first

    assert fake.receive() == card.atr
    assert card.events == ["inserted", "power_on"]
    assert link.control_log == [code, 4]


def test_unknown_control_ignored(attached, fake):
    card, link = attached

    fake.send(b"\x07")
    fake.send(b"\x04")

    assert fake.receive() == card.atr
    assert card.events == ["inserted"]


def test_remove_closes_socket(attached, fake):
    card, link = attached

    link.remove()

    assert not link.inserted
    assert card.events == ["inserted", "removed"]
    assert fake.conn.recv(1) == b""


def test_remove_twice_is_harmless(attached):
    card, link = attached

    link.remove()
    link.remove()

    assert card.events == ["inserted", "removed"]


def test_peer_close_counts_as_removal(fake):
    card = StandInCard()
    closed = threading.Event()
    link = VpcdLink(card, fake.port, on_closed=lambda _link: closed.set())
    link.insert()
    fake.accept()

    fake.conn.close()

    assert closed.wait(5)
    assert not link.inserted
    assert card.events == ["inserted", "removed"]


def test_connection_refused_retried():
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    servers: list[socket.socket] = []

    def listen_later() -> None:
        time.sleep(0.3)
        servers.append(socket.create_server(("127.0.0.1", port)))

    starter = threading.Thread(target=listen_later)
    starter.start()
    card = StandInCard()
    link = VpcdLink(card, port)
    try:
        link.insert(connect_timeout_s=5)
        assert link.inserted
    finally:
        starter.join()
        link.remove()
        for server in servers:
            server.close()


def test_connection_refused_gives_up():
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    link = VpcdLink(StandInCard(), port)

    with pytest.raises(VpcdLinkError) as caught:
        link.insert(connect_timeout_s=0.3)

    assert f"127.0.0.1:{port}" in str(caught.value)
    assert "Start pcscd" in str(caught.value)
    assert not link.inserted


def test_quickack_armed_after_every_recv(fake, monkeypatch):
    armed: list[socket.socket] = []
    monkeypatch.setattr(vpcd, "_arm_quickack", armed.append)
    card = StandInCard()
    link = VpcdLink(card, fake.port)
    link.insert()
    fake.accept()
    try:
        armed.clear()
        fake.send(b"\x04")
        fake.receive()
        fake.send(bytes.fromhex("00200080"))
        fake.receive()

        # Two frames, each read by the card as a length recv and a body recv.
        # (The fake driver's own recv_exact calls are counted apart.)
        card_side = [sock for sock in armed if sock is link._sock]
        assert len(card_side) == 4
    finally:
        link.remove()


def test_latency_injected_per_apdu(fake, monkeypatch):
    delays: list[float] = []
    monkeypatch.setattr(vpcd, "_sleep", delays.append)
    link = VpcdLink(StandInCard(), fake.port, latency_s=0.03)
    link.insert()
    fake.accept()
    try:
        fake.send(b"\x04")
        fake.receive()
        fake.send(bytes.fromhex("00200080"))
        fake.receive()

        # Only the APDU is delayed, not the ATR poll.
        assert delays == [0.03]
    finally:
        link.remove()


def test_card_failure_answers_6f00(fake):
    class BrokenCard(StandInCard):
        def transmit(self, apdu: bytes) -> bytes:
            raise RuntimeError("applet bug")

    link = VpcdLink(BrokenCard(), fake.port)
    link.insert()
    fake.accept()
    try:
        fake.send(bytes.fromhex("00200080"))

        assert fake.receive() == bytes.fromhex("6F00")
    finally:
        link.remove()


def test_frame_rejects_oversize():
    with pytest.raises(ValueError, match="65536 bytes"):
        frame(b"\x00" * 65536)
