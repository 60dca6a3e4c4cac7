"""The PC/SC backend against the real pcscd and a stand-in card: readers, removal, reset, no service, exclusive access."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from .conftest import SLOTS, wait_reader
from tui.errors import CardRemovedError, PcscError
from tui.model import PcscProblem

ATR = bytes.fromhex("3BF81300008131FE15597562696B657934D4")


class StandInCard:
    """A card that returns its INS byte and 9000 to every APDU, and counts power-ups."""

    atr = ATR

    def __init__(self) -> None:
        self.power_ups = 0

    def transmit(self, apdu: bytes) -> bytes:
        return bytes([apdu[1]]) + b"\x90\x00"

    def power_on(self) -> None:
        self.power_ups += 1

    def inserted(self) -> None:
        pass

    def removed(self) -> None:
        pass


@pytest.fixture
def backend():
    from tui.pcsc import PcscBackend

    backend = PcscBackend()
    yield backend
    backend.release()


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env}, cwd=os.getcwd())


def test_every_vpcd_reader_listed(pcscd, backend):
    readers = backend.list_readers()

    for slot in SLOTS:
        assert slot.reader in readers


def test_apdu_round_trip(attach, backend):
    key = attach(StandInCard(), 0)
    transport = backend.open(key.reader)

    atr = transport.connect()
    response = transport.transmit_raw(bytes.fromhex("00200080"))
    transport.disconnect()

    assert atr == ATR
    assert response == bytes.fromhex("209000")
    assert key.link.apdu_count == 1


def test_empty_reader_no_card(pcscd, backend):
    wait_reader(SLOTS[1].reader, present=False)

    with pytest.raises(PcscError) as caught:
        backend.open(SLOTS[1].reader).connect()

    assert caught.value.problem is PcscProblem.NO_CARD


def test_removal_mid_session_typed(attach, backend):
    key = attach(StandInCard(), 0)
    transport = backend.open(key.reader)
    transport.connect()

    key.remove_now()
    with pytest.raises(CardRemovedError) as caught:
        transport.transmit_raw(bytes.fromhex("00200080"))

    # Before pcscd's next presence poll the exchange fails as "not
    # transacted", after it as "removed"; both are a removal.
    assert caught.value.problem in (PcscProblem.NOT_TRANSACTED, PcscProblem.CARD_REMOVED)


def test_reinsert_after_removal(attach, backend):
    key = attach(StandInCard(), 0)
    key.remove()

    with pytest.raises(PcscError) as caught:
        backend.open(key.reader).connect()
    key.insert()
    transport = backend.open(key.reader)

    assert caught.value.problem is PcscProblem.NO_CARD
    assert transport.connect() == ATR
    assert transport.transmit_raw(bytes.fromhex("00A40400")) == bytes.fromhex("A49000")
    transport.disconnect()


def test_reset_by_other_connection(attach, backend):
    from smartcard import scard

    key = attach(StandInCard(), 0)
    transport = backend.open(key.reader)
    transport.connect()

    # Another program connects and disconnects with SCARD_RESET_CARD, as
    # pyscard's default UNPOWER also does: our handle is now stale.
    hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    hresult, other, _protocol = scard.SCardConnect(context, key.reader, scard.SCARD_SHARE_SHARED,
                                                   scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1)
    assert hresult == scard.SCARD_S_SUCCESS
    scard.SCardDisconnect(other, scard.SCARD_RESET_CARD)
    scard.SCardReleaseContext(context)

    with pytest.raises(CardRemovedError) as caught:
        transport.transmit_raw(bytes.fromhex("00200080"))
    retried = transport.transmit_raw(bytes.fromhex("00200080"))
    transport.disconnect()

    assert caught.value.problem is PcscProblem.CARD_RESET
    assert "0x80100068" in str(caught.value)
    # The transport reconnected, so the next APDU goes through.
    assert retried == bytes.fromhex("209000")


def test_pcscd_not_running_typed(pcscd):
    result = run_python("""
        import json
        from tui.errors import PcscError
        from tui.pcsc import PcscBackend
        try:
            PcscBackend().list_readers()
        except PcscError as exc:
            print(json.dumps({"problem": exc.problem.name, "message": str(exc)}))
        """, PCSCLITE_CSOCK_NAME="/nonexistent/x")

    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["problem"] == "NO_SERVICE"
    assert "0x8010001D" in outcome["message"]


def test_exclusive_holder_sharing_violation(attach, backend):
    key = attach(StandInCard(), 0)
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from smartcard import scard
            hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
            hresult, card, protocol = scard.SCardConnect(context, {key.reader!r}, scard.SCARD_SHARE_EXCLUSIVE,
                                                         scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1)
            print(hex(hresult & 0xFFFFFFFF), flush=True)
            sys.stdin.readline()
            scard.SCardDisconnect(card, scard.SCARD_LEAVE_CARD)
            scard.SCardReleaseContext(context)
            """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "0x0"

        with pytest.raises(PcscError) as caught:
            backend.open(key.reader).connect()

        assert caught.value.problem is PcscProblem.SHARING_VIOLATION
        assert holder.poll() is None, "the exclusive holder must still run"
    finally:
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(10)

    transport = backend.open(key.reader)
    assert transport.connect() == ATR
    transport.disconnect()
