"""The lab card core: APDU parsing, SELECT, response and command chaining, power events."""

from __future__ import annotations

import threading

import pytest

from tui.errors import LabError
from tui.lab.card import SW_OK, Applet, VirtualCard, parse_apdu, tlv


class EchoApplet(Applet):
    """Returns its data field, or `size` bytes for INS 0x10, and records hook calls."""

    aid = bytes.fromhex("F00000000101")

    def __init__(self) -> None:
        self.events: list[str] = []
        self.seen: list[tuple[int, int, bytes]] = []

    def select(self, p1, p2, data):
        return b"\x01\x02" + SW_OK

    def deselect(self):
        self.events.append("deselect")

    def process(self, cla, ins, p1, p2, data, le):
        self.seen.append((cla, ins, data))
        if ins == 0x10:
            size = p1 << 8 | p2
            return bytes(i & 0xFF for i in range(size)) + SW_OK
        return data + SW_OK

    def on_power_on(self):
        self.events.append("power-on")

    def on_insert(self):
        self.events.append("insert")


class OtherApplet(Applet):
    aid = bytes.fromhex("F00000000202")


def make_card():
    echo, other = EchoApplet(), OtherApplet()
    return VirtualCard([echo, other], bytes.fromhex("3B80800101")), echo, other


def send(card: VirtualCard, hex_apdu: str) -> tuple[bytes, int]:
    raw = card.transmit(bytes.fromhex(hex_apdu))
    return raw[:-2], raw[-2] << 8 | raw[-1]


# --- parsing ---


def test_parse_apdu_cases():
    case1 = parse_apdu(bytes.fromhex("00A40400"))
    assert (case1.data, case1.le) == (b"", None)

    case2 = parse_apdu(bytes.fromhex("00CA9F7F00"))
    assert (case2.data, case2.le) == (b"", 256)

    case3 = parse_apdu(bytes.fromhex("0020008008313233343536FFFF"))
    assert (case3.data, case3.le) == (bytes.fromhex("313233343536FFFF"), None)

    case4 = parse_apdu(bytes.fromhex("00A4040005A00000030810"))
    assert (case4.data, case4.le) == (bytes.fromhex("A000000308"), 16)


def test_parse_apdu_rejects_malformed():
    assert parse_apdu(b"\x00\xa4\x04") is None
    assert parse_apdu(bytes.fromhex("00A4040005A000")) is None
    # Extended length (Lc 00 followed by two length bytes) is not supported.
    assert parse_apdu(bytes.fromhex("00A40400000005A000000308")) is None


def test_malformed_apdu_answers_6700():
    card, _, _ = make_card()
    assert send(card, "00A4040005A000") == (b"", 0x6700)


# --- SELECT ---


def test_select_full_and_partial_aid():
    card, echo, other = make_card()
    assert send(card, "00A4040006F00000000101") == (b"\x01\x02", 0x9000)
    assert card.selected is echo

    # A prefix of at least five bytes selects too (ISO 7816-4 partial DF name).
    assert send(card, "00A4040005F000000002") == (b"", 0x9000)
    assert card.selected is other
    assert echo.events == ["deselect"]


def test_select_unknown_aid_keeps_selection():
    card, echo, _ = make_card()
    send(card, "00A4040006F00000000101")
    assert send(card, "00A4040005A000000999") == (b"", 0x6A82)
    assert card.selected is echo


def test_select_p2_0c_returns_no_data():
    card, echo, _ = make_card()
    assert send(card, "00A4040C06F00000000101") == (b"", 0x9000)
    assert card.selected is echo


def test_command_without_selection_answers_6d00():
    card, _, _ = make_card()
    assert send(card, "0020008000") == (b"", 0x6D00)


def test_no_applet_status_word_configurable():
    card = VirtualCard([EchoApplet()], b"\x3b\x00", no_applet_sw=0x6A82)
    assert send(card, "00200080") == (b"", 0x6A82)


def test_empty_aid_selects_default_applet():
    echo = EchoApplet()
    card = VirtualCard([echo], b"\x3b\x00", default_applet=echo)
    assert send(card, "00A4040000") == (b"\x01\x02", 0x9000)
    assert card.selected is echo


# --- response chaining ---


def test_long_response_goes_out_in_pieces():
    card, _, _ = make_card()
    send(card, "00A4040006F00000000101")
    expected = bytes(i & 0xFF for i in range(600))

    first, sw = send(card, "0010025800")
    assert len(first) == 256
    assert sw == 0x6100  # 344 bytes left: 256 or more is written as 00

    second, sw = send(card, "00C0000000")
    assert len(second) == 256
    assert sw == 0x6158  # 88 bytes left

    third, sw = send(card, "00C0000058")
    assert sw == 0x9000
    assert first + second + third == expected


def test_response_limited_by_le():
    card, _, _ = make_card()
    send(card, "00A4040006F00000000101")
    data, sw = send(card, "0010001420")  # 20 bytes fit in Le=0x20
    assert (len(data), sw) == (20, 0x9000)

    data, sw = send(card, "0010002810")  # 40 bytes, Le=16
    assert (len(data), sw) == (16, 0x6118)
    rest, sw = send(card, "00C0000018")
    assert (data + rest, sw) == (bytes(range(40)), 0x9000)


def test_get_response_without_pending_data():
    card, _, _ = make_card()
    send(card, "00A4040006F00000000101")
    assert send(card, "00C0000000") == (b"", 0x6985)


def test_get_response_with_proprietary_class():
    card, _, _ = make_card()
    send(card, "00A4040006F00000000101")
    send(card, "0010012C00")
    data, sw = send(card, "80C0000000")
    assert (len(data), sw) == (44, 0x9000)


def test_other_command_drops_pending_response():
    card, _, _ = make_card()
    send(card, "00A4040006F00000000101")
    send(card, "0010025800")
    send(card, "0020000001AA")
    assert send(card, "00C0000000") == (b"", 0x6985)


# --- command chaining ---


def test_command_chaining_joins_data():
    card, echo, _ = make_card()
    send(card, "00A4040006F00000000101")
    assert send(card, "1022000003010203") == (b"", 0x9000)
    assert send(card, "1022000002040500") == (b"", 0x9000)
    data, sw = send(card, "00220000010600")
    assert sw == 0x9000
    assert data == bytes.fromhex("010203040506")
    # The applet saw one command, with the chaining bit clear.
    assert echo.seen == [(0x00, 0x22, bytes.fromhex("010203040506"))]


def test_command_chaining_header_mismatch():
    card, echo, _ = make_card()
    send(card, "00A4040006F00000000101")
    send(card, "1022000003010203")
    assert send(card, "0024000001AA") == (b"", 0x6883)
    assert echo.seen == []
    # The broken chain is dropped: the next command stands alone.
    assert send(card, "0022000001BB") == (b"\xbb", 0x9000)


# --- power and insertion ---


def test_power_on_deselects():
    card, echo, _ = make_card()
    send(card, "00A4040006F00000000101")
    card.power_on()
    assert card.selected is None
    assert send(card, "0022000001BB") == (b"", 0x6D00)
    assert echo.events == ["deselect", "power-on"]


def test_insert_runs_power_on_then_insert_hook():
    card, echo, _ = make_card()
    card.removed()
    card.inserted()
    assert echo.events == ["power-on", "insert"]


def test_removed_card_rejects_apdus():
    card, _, _ = make_card()
    card.removed()
    with pytest.raises(LabError, match="not powered"):
        card.transmit(bytes.fromhex("00A4040006F00000000101"))


# --- counters and recording ---


def test_counter_and_recording():
    card, _, _ = make_card()
    recording = card.start_recording()
    seen = []
    card.recorders.append(lambda command, response: seen.append(command))
    send(card, "00A4040006F00000000101")
    send(card, "0022000001BB")
    assert card.apdu_count == 2
    assert recording == [
        (bytes.fromhex("00A4040006F00000000101"), bytes.fromhex("01029000")),
        (bytes.fromhex("0022000001BB"), bytes.fromhex("BB9000")),
    ]
    assert len(seen) == 2


def test_concurrent_transmit_counts_every_apdu():
    card, _, _ = make_card()
    send(card, "00A4040006F00000000101")
    results = []

    def worker():
        for _ in range(200):
            results.append(card.transmit(bytes.fromhex("0022000001BB")))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert card.apdu_count == 801
    assert set(results) == {bytes.fromhex("BB9000")}


def test_tlv_long_lengths():
    assert tlv(0x53, b"\x00" * 5)[:2] == b"\x53\x05"
    assert tlv(0x53, b"\x00" * 200)[:3] == b"\x53\x81\xc8"
    assert tlv(0x53, b"\x00" * 300)[:4] == b"\x53\x82\x01\x2c"
