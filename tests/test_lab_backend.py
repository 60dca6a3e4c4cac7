"""LabBackend and LabTransport: readers, ATR, removal and insertion, transactions."""

from __future__ import annotations

import threading

import pytest

from tui.apdu import CommandApdu, StatusKind
from tui.errors import CardRemovedError, LabError, PcscError
from tui.lab.backend import LabBackend, LabTransport
from tui.lab.scenarios import ATR_CRESCENDO
from tui.model import PcscProblem
from tui.transport import Channel, ReaderBackend, Transport

SELECT_PIV = bytes.fromhex("00A4040005A000000308")
STATUS_QUERY = bytes.fromhex("00200080")


def connected(backend: LabBackend, index: int = 0) -> LabTransport:
    transport = backend.open(backend.list_readers()[index])
    transport.connect()
    return transport


def test_backend_and_transport_satisfy_protocols():
    backend = LabBackend("healthy")
    assert isinstance(backend, ReaderBackend)
    assert backend.is_lab is True
    assert isinstance(backend.open(backend.list_readers()[0]), Transport)


def test_list_readers_and_atr():
    backend = LabBackend("two-tokens")
    assert backend.list_readers() == ["HID Global Crescendo Key 00 00", "HID Global Crescendo Key 01 00"]
    transport = backend.open("HID Global Crescendo Key 00 00")
    assert transport.connect() == ATR_CRESCENDO
    assert backend.scenario_name == "two-tokens"


def test_unknown_scenario_raises_lab_error():
    with pytest.raises(LabError, match="unknown lab scenario 'nope'"):
        LabBackend("nope")


def test_unknown_reader_raises_pcsc_error():
    backend = LabBackend("healthy")
    with pytest.raises(PcscError, match="'Other Reader 00 00' not found"):
        backend.open("Other Reader 00 00")


def test_empty_reader_connect_raises_no_card():
    backend = LabBackend("no-token")
    transport = backend.open(backend.list_readers()[0])
    with pytest.raises(PcscError) as caught:
        transport.connect()
    assert caught.value.problem is PcscProblem.NO_CARD
    assert not isinstance(caught.value, CardRemovedError)


def test_transmit_after_remove_raises_card_removed():
    backend = LabBackend("wrong-pin")
    transport = connected(backend)
    assert transport.transmit_raw(SELECT_PIV)[-2:] == b"\x90\x00"

    backend.remove(transport.reader)
    with pytest.raises(CardRemovedError) as caught:
        transport.transmit_raw(STATUS_QUERY)
    assert caught.value.problem is PcscProblem.CARD_REMOVED


def test_old_handle_fails_after_reinsert_until_reconnect():
    backend = LabBackend("wrong-pin")
    transport = connected(backend)
    transport.transmit_raw(SELECT_PIV)
    backend.remove(transport.reader)
    backend.insert(transport.reader)

    with pytest.raises(CardRemovedError):
        transport.transmit_raw(STATUS_QUERY)

    transport.connect()
    # The insertion powered the card up, so no applet is selected any more.
    assert transport.transmit_raw(STATUS_QUERY) == b"\x6d\x00"
    transport.transmit_raw(SELECT_PIV)
    assert transport.transmit_raw(STATUS_QUERY) == b"\x63\xc3"


def test_connect_while_removed_raises_no_card():
    backend = LabBackend("healthy")
    reader = backend.list_readers()[0]
    backend.remove(reader)
    assert backend.is_present(reader) is False
    with pytest.raises(PcscError) as caught:
        backend.open(reader).connect()
    assert caught.value.problem is PcscProblem.NO_CARD


def test_remove_and_insert_misuse():
    backend = LabBackend("healthy")
    reader = backend.list_readers()[0]
    with pytest.raises(LabError, match="already in reader"):
        backend.insert(reader)
    backend.remove(reader)
    with pytest.raises(LabError, match="no card to remove"):
        backend.remove(reader)

    empty = LabBackend("no-token")
    with pytest.raises(LabError, match="leaves it empty"):
        empty.insert(empty.list_readers()[0])


def test_disconnect_leaves_card_powered():
    backend = LabBackend("wrong-pin")
    transport = connected(backend)
    transport.transmit_raw(SELECT_PIV)
    transport.disconnect()
    assert transport.connected is False

    # SCARD_LEAVE_CARD: a new connection finds the PIV applet still selected.
    again = connected(backend)
    assert again.transmit_raw(STATUS_QUERY) == b"\x63\xc3"


def test_transmit_before_connect_raises():
    backend = LabBackend("healthy")
    transport = backend.open(backend.list_readers()[0])
    with pytest.raises(LabError, match="not connected"):
        transport.transmit_raw(SELECT_PIV)


def test_transaction_nesting_and_misuse():
    backend = LabBackend("healthy")
    transport = connected(backend)
    with pytest.raises(LabError, match="without a matching begin_transaction"):
        transport.end_transaction()

    transport.begin_transaction()
    transport.begin_transaction()
    assert transport.transaction_depth == 2
    transport.end_transaction()
    transport.end_transaction()
    assert transport.transaction_depth == 0
    with pytest.raises(LabError):
        transport.end_transaction()


def test_transaction_excludes_other_threads():
    backend = LabBackend("healthy")
    transport = connected(backend)
    other = connected(backend)
    lock = transport._slot.transaction_lock
    acquired = []

    def try_lock():
        got = lock.acquire(blocking=False)
        acquired.append(got)
        if got:
            lock.release()

    transport.begin_transaction()
    thread = threading.Thread(target=try_lock)
    thread.start()
    thread.join()
    assert acquired == [False]

    # The owning thread still transmits on any handle of the card.
    assert other.transmit_raw(SELECT_PIV)[-2:] == b"\x90\x00"

    transport.disconnect()
    thread = threading.Thread(target=try_lock)
    thread.start()
    thread.join()
    assert acquired == [False, True]


def test_begin_transaction_on_removed_card():
    backend = LabBackend("healthy")
    transport = connected(backend)
    backend.remove(transport.reader)
    with pytest.raises(CardRemovedError):
        transport.begin_transaction()
    assert transport.transaction_depth == 0


def test_channel_over_lab_transport_and_apdu_count():
    backend = LabBackend("pin-locked-puk")
    channel = Channel(connected(backend))
    with channel.transaction():
        channel.send(CommandApdu(0x00, 0xA4, 0x04, 0x00, SELECT_PIV[5:], name="SELECT PIV"))
        _, status = channel.send(CommandApdu(0x00, 0x20, 0x00, 0x80, name="VERIFY (status)"), status_query=True)
    assert status.kind is StatusKind.BLOCKED
    assert backend.apdu_count == 2
    assert len(channel.exchanges) == 2
