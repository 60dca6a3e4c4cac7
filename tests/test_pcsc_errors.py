"""PC/SC failure mapping: every hresult and pyscard exception becomes a typed problem."""

import subprocess

import pytest
from smartcard.Exceptions import (CardConnectionException, CardServiceNotFoundException, CardServiceStoppedException,
                                  ListReadersException, NoCardException, NoReadersException)
from smartcard.pcsc.PCSCExceptions import EstablishContextException

from tui.errors import CardRemovedError, PcscError
from tui.model import PcscProblem
from tui.pcsc import PcscBackend, error_for_code, error_for_exception
from tui.scan import scan_all
from tui.settings import SiteSettings

CODES = [
    (0x8010001D, PcscProblem.NO_SERVICE, PcscError),
    (0x8010001E, PcscProblem.SERVICE_STOPPED, PcscError),
    (0x8010006A, PcscProblem.ACCESS_DENIED, PcscError),
    (0x8010002E, PcscProblem.NO_READERS, PcscError),
    (0x8010000C, PcscProblem.NO_CARD, PcscError),
    (0x80100069, PcscProblem.CARD_REMOVED, CardRemovedError),
    (0x80100016, PcscProblem.NOT_TRANSACTED, CardRemovedError),
    (0x80100068, PcscProblem.CARD_RESET, CardRemovedError),
    (0x8010000B, PcscProblem.SHARING_VIOLATION, PcscError),
    (0x80100066, PcscProblem.UNRESPONSIVE_CARD, PcscError),
    (0x80100017, PcscProblem.CARD_REMOVED, CardRemovedError),
    (0x80100009, PcscProblem.UNKNOWN_READER, PcscError),
]


@pytest.mark.parametrize(("code", "problem", "error_class"), CODES)
def test_code_maps_to_problem(code, problem, error_class):
    error = error_for_code(code, "connect")
    assert error.problem is problem
    assert type(error) is error_class
    assert f"0x{code:08X}" in str(error)


@pytest.mark.parametrize(("code", "problem", "error_class"), CODES)
def test_signed_code_maps_too(code, problem, error_class):
    assert error_for_code(code - 0x100000000, "connect").problem is problem


def test_unknown_code_named_in_message():
    error = error_for_code(0x80100099, "list smart-card readers")
    assert error.problem is PcscProblem.UNKNOWN
    assert "0x80100099" in str(error)
    assert "list smart-card readers" in str(error)


@pytest.mark.parametrize(("exc", "problem"), [
    (EstablishContextException(0x8010001D), PcscProblem.NO_SERVICE),
    (EstablishContextException(0x8010006A), PcscProblem.ACCESS_DENIED),
    (ListReadersException(0x8010001E), PcscProblem.SERVICE_STOPPED),
    (CardConnectionException("Unable to connect", hresult=0x8010000B), PcscProblem.SHARING_VIOLATION),
    (CardConnectionException("transmit", hresult=0x80100069), PcscProblem.CARD_REMOVED),
    (CardConnectionException("transmit", hresult=0x80100016), PcscProblem.NOT_TRANSACTED),
    (CardConnectionException("transmit", hresult=0x80100068), PcscProblem.CARD_RESET),
    (NoCardException("Unable to connect", 0x8010000C), PcscProblem.NO_CARD),
    (CardServiceNotFoundException(), PcscProblem.NO_SERVICE),
    (CardServiceStoppedException(), PcscProblem.SERVICE_STOPPED),
    (NoReadersException(), PcscProblem.NO_READERS),
    (CardConnectionException("odd"), PcscProblem.UNKNOWN),
])
def test_pyscard_exception_maps(exc, problem):
    assert error_for_exception(exc, "scan").problem is problem


class FakeScard:
    """A stand-in for `smartcard.scard`: fixed hresults or exceptions per function, calls recorded."""

    SCARD_SCOPE_USER = 0
    SCARD_SHARE_SHARED = 2
    SCARD_PROTOCOL_T0 = 1
    SCARD_PROTOCOL_T1 = 2
    SCARD_PCI_T0 = 1
    SCARD_PCI_T1 = 2
    SCARD_LEAVE_CARD = 0

    def __init__(self):
        self.calls = []
        self.establish = [0]
        self.list = [(0, ["Reader 0"])]
        self.connect_rv = 0
        self.transmit = [(0, [0x90, 0x00])]
        self.begin = [0]
        self.valid = 0

    def _next(self, queue):
        value = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(value, BaseException):
            raise value
        return value

    def SCardEstablishContext(self, scope):
        self.calls.append("establish")
        rv = self._next(self.establish)
        return rv, (f"ctx{len(self.calls)}" if rv == 0 else None)

    def SCardIsValidContext(self, context):
        self.calls.append("is_valid")
        return self.valid

    def SCardReleaseContext(self, context):
        self.calls.append("release")
        return 0

    def SCardListReaders(self, context, groups):
        self.calls.append(f"list:{context}")
        return self._next(self.list)

    def SCardConnect(self, context, reader, share, protocols):
        self.calls.append(f"connect:{share}:{protocols}")
        return self.connect_rv, "card", self.SCARD_PROTOCOL_T1

    def SCardStatus(self, card):
        return 0, "Reader 0", 0, 2, [0x3B, 0x00]

    def SCardTransmit(self, card, pci, apdu):
        self.calls.append(f"transmit:{pci}")
        return self._next(self.transmit)

    def SCardReconnect(self, card, share, protocols, disposition):
        self.calls.append(f"reconnect:{disposition}")
        return 0, self.SCARD_PROTOCOL_T1

    def SCardBeginTransaction(self, card):
        self.calls.append("begin")
        return self._next(self.begin)

    def SCardEndTransaction(self, card, disposition):
        self.calls.append(f"end:{disposition}")
        return 0

    def SCardDisconnect(self, card, disposition):
        self.calls.append(f"disconnect:{disposition}")
        return 0


def test_no_service_on_listing():
    scard = FakeScard()
    scard.establish = [0x8010001D]
    with pytest.raises(PcscError) as info:
        PcscBackend(scard).list_readers()
    assert info.value.problem is PcscProblem.NO_SERVICE


def test_establish_exception_mapped():
    scard = FakeScard()
    scard.establish = [EstablishContextException(0x8010001D)]
    with pytest.raises(PcscError) as info:
        PcscBackend(scard).list_readers()
    assert info.value.problem is PcscProblem.NO_SERVICE


def test_no_readers_is_empty_list():
    scard = FakeScard()
    scard.list = [(0x8010002E, [])]
    assert PcscBackend(scard).list_readers() == []


def test_context_reestablished_after_service_stopped():
    scard = FakeScard()
    scard.list = [(0x8010001E, []), (0, ["Yubico YubiKey OTP+FIDO+CCID 00 00"])]
    backend = PcscBackend(scard)
    with pytest.raises(PcscError) as info:
        backend.list_readers()
    assert info.value.problem is PcscProblem.SERVICE_STOPPED
    assert backend.list_readers() == ["Yubico YubiKey OTP+FIDO+CCID 00 00"]
    assert scard.calls.count("establish") == 2
    assert "release" in scard.calls


def test_valid_context_reused():
    scard = FakeScard()
    backend = PcscBackend(scard)
    backend.list_readers()
    backend.list_readers()
    assert scard.calls.count("establish") == 1


def test_invalid_context_replaced():
    scard = FakeScard()
    backend = PcscBackend(scard)
    backend.list_readers()
    scard.valid = 0x80100003
    backend.list_readers()
    assert scard.calls.count("establish") == 2


def test_connect_shared_t0_or_t1_and_leave_card():
    scard = FakeScard()
    transport = PcscBackend(scard).open("Reader 0")
    assert transport.connect() == bytes([0x3B, 0x00])
    assert "connect:2:3" in scard.calls
    transport.begin_transaction()
    assert transport.transmit_raw(bytes.fromhex("00A4040000")) == bytes([0x90, 0x00])
    transport.end_transaction()
    transport.disconnect()
    assert "transmit:2" in scard.calls
    assert "end:0" in scard.calls
    assert "disconnect:0" in scard.calls


def test_sharing_violation_reported_never_killed(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("keytriage must not start a process to free the reader")

    monkeypatch.setattr(subprocess, "Popen", forbidden)
    monkeypatch.setattr(subprocess, "run", forbidden)
    scard = FakeScard()
    scard.connect_rv = 0x8010000B
    result = scan_all(PcscBackend(scard), SiteSettings())
    assert len(result.tokens) == 1
    token = result.tokens[0]
    assert token.problem is PcscProblem.SHARING_VIOLATION
    assert "scdaemon" in token.problem.message
    assert token.smartcard.pin.remaining is None
    assert result.apdu_count == 0


def test_transmit_removed_raises_card_removed():
    scard = FakeScard()
    scard.transmit = [(0x80100069, [])]
    transport = PcscBackend(scard).open("Reader 0")
    transport.connect()
    with pytest.raises(CardRemovedError) as info:
        transport.transmit_raw(b"\x00\xa4\x04\x00")
    assert info.value.problem is PcscProblem.CARD_REMOVED


def test_transmit_reset_reconnects_then_reports():
    scard = FakeScard()
    scard.transmit = [(0x80100068, [])]
    transport = PcscBackend(scard).open("Reader 0")
    transport.connect()
    with pytest.raises(CardRemovedError) as info:
        transport.transmit_raw(b"\x00\xa4\x04\x00")
    assert info.value.problem is PcscProblem.CARD_RESET
    assert "reconnect:0" in scard.calls


def test_begin_after_reset_retried_once():
    scard = FakeScard()
    scard.begin = [0x80100068, 0]
    transport = PcscBackend(scard).open("Reader 0")
    transport.connect()
    transport.begin_transaction()
    assert scard.calls.count("begin") == 2


def test_repeated_reset_reported_by_scan():
    scard = FakeScard()
    scard.transmit = [(0x80100068, [])]
    result = scan_all(PcscBackend(scard), SiteSettings())
    token = result.tokens[0]
    assert token.problem is PcscProblem.CARD_RESET
    assert token.smartcard.pin.remaining is None
    assert scard.calls.count("begin") == 2


def test_empty_reader_not_a_token():
    scard = FakeScard()
    scard.connect_rv = 0x8010000C
    result = scan_all(PcscBackend(scard), SiteSettings())
    assert result.tokens == []
    assert result.problem is PcscProblem.NO_CARD
    assert result.readers == ["Reader 0"]


def test_listing_failure_is_scan_problem():
    scard = FakeScard()
    scard.establish = [0x8010006A]
    result = scan_all(PcscBackend(scard), SiteSettings())
    assert result.problem is PcscProblem.ACCESS_DENIED
    assert "polkit" in result.problem_detail
