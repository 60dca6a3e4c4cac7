"""The PC/SC reader backend and transport over pyscard's `smartcard.scard` layer.

Every PC/SC return code and pyscard exception becomes a `PcscError` (or
`CardRemovedError`) carrying a `PcscProblem`, so callers never see a raw
hresult. The backend owns one PC/SC context and is not thread-safe: create
and use it on the device thread only (`tui.device.DeviceOwner`), as PC/SC
contexts must not be shared across threads.

A context that reported "no service" or "service stopped" is dropped, and
the next call establishes a new one, so the key reappears after pcscd
restarts without restarting keytriage. A sharing violation (another process
has exclusive access to the reader, often gpg's scdaemon) is reported as such;
keytriage never kills that process and never counts it as a PIN failure.
"""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any

from tui.apdu import RedactedBytes
from tui.errors import CardRemovedError, PcscError
from tui.model import PcscProblem

log = logging.getLogger("keytriage.pcsc")

SCARD_S_SUCCESS = 0
SCARD_E_NO_READERS_AVAILABLE = 0x8010002E
SCARD_E_INVALID_HANDLE = 0x80100003
SCARD_E_READER_UNAVAILABLE = 0x80100017

# Codes after which the context is dead and must be established again.
DEAD_CONTEXT_PROBLEMS = frozenset({PcscProblem.NO_SERVICE, PcscProblem.SERVICE_STOPPED})

# Codes that mean the card left (or lost its session) during an exchange.
REMOVED_PROBLEMS = frozenset({PcscProblem.CARD_REMOVED, PcscProblem.NOT_TRANSACTED, PcscProblem.CARD_RESET})

# A USB key is its own reader, so a reader that vanished means the key was pulled.
CODE_ALIASES = {
    SCARD_E_READER_UNAVAILABLE: PcscProblem.CARD_REMOVED,
    SCARD_E_NO_READERS_AVAILABLE: PcscProblem.NO_READERS,
}

# pyscard exception class names whose hresult may be missing (-1), with their meaning.
EXCEPTION_CLASS_PROBLEMS = {
    "CardServiceNotFoundException": PcscProblem.NO_SERVICE,
    "CardServiceStoppedException": PcscProblem.SERVICE_STOPPED,
    "NoReadersException": PcscProblem.NO_READERS,
    "NoCardException": PcscProblem.NO_CARD,
}


def problem_for_code(code: int) -> PcscProblem:
    """Map a PC/SC return code (signed or unsigned) to its `PcscProblem`."""
    code &= 0xFFFFFFFF
    if code in CODE_ALIASES:
        return CODE_ALIASES[code]
    return PcscProblem.from_code(code)


def error_for_code(code: int, operation: str) -> PcscError:
    """Build the typed error for a failed PC/SC call; `operation` names the failed step."""
    code &= 0xFFFFFFFF
    problem = problem_for_code(code)
    if problem is PcscProblem.UNKNOWN:
        message = (f"{operation} failed with PC/SC error 0x{code:08X}. "
                   f"Rescan; if it persists, check that pcscd runs and read its log.")
    else:
        message = f"{operation}: {problem.message} (PC/SC 0x{code:08X})"
    error_class = CardRemovedError if problem in REMOVED_PROBLEMS else PcscError
    return error_class(problem, message)


def error_for_exception(exc: BaseException, operation: str) -> PcscError:
    """Map a pyscard exception (any class carrying `hresult`) to a typed error."""
    if isinstance(exc, PcscError):
        return exc
    hresult = getattr(exc, "hresult", -1)
    if isinstance(hresult, int) and hresult not in (-1, 0):
        return error_for_code(hresult, operation)

    problem = EXCEPTION_CLASS_PROBLEMS.get(type(exc).__name__)
    if problem is not None:
        error_class = CardRemovedError if problem in REMOVED_PROBLEMS else PcscError
        return error_class(problem, f"{operation}: {problem.message}")
    return PcscError(PcscProblem.UNKNOWN, f"{operation} failed: {type(exc).__name__}: {exc}. "
                                          f"Rescan; if it persists, check that pcscd runs and read its log.")


def _load_scard() -> ModuleType:
    try:
        from smartcard import scard
    except ImportError as exc:
        raise PcscError(PcscProblem.NO_SERVICE,
                        f"pyscard could not be loaded ({exc}); install pyscard and libpcsclite, then rescan.") from exc
    return scard


class PcscBackend:
    """Lists PC/SC readers and opens transports; not thread-safe (device thread only).

    `scard` is pyscard's `smartcard.scard` module; tests pass a fake with the
    same functions and constants.
    """

    is_lab = False

    def __init__(self, scard: Any = None) -> None:
        self.scard = scard if scard is not None else _load_scard()
        self._context: Any = None

    def call(self, operation: str, function_name: str, *args: Any) -> Any:
        """Call one `scard` function and map a raised pyscard exception to `PcscError`."""
        try:
            return getattr(self.scard, function_name)(*args)
        except Exception as exc:  # pyscard raises its own classes and SWIG errors
            error = error_for_exception(exc, operation)
            self.note_problem(error.problem)
            raise error from exc

    def check(self, hresult: int, operation: str) -> None:
        """Raise the typed error for a non-zero `hresult`, dropping a dead context first."""
        if hresult == SCARD_S_SUCCESS:
            return
        error = error_for_code(hresult, operation)
        self.note_problem(error.problem)
        raise error

    def note_problem(self, problem: PcscProblem) -> None:
        """Drop the context when `problem` means the PC/SC service went away."""
        if problem in DEAD_CONTEXT_PROBLEMS:
            self.release()

    def context(self) -> Any:
        """Return a valid PC/SC context, establishing a new one when needed."""
        if self._context is not None:
            hresult = self.call("check the PC/SC context", "SCardIsValidContext", self._context)
            if hresult == SCARD_S_SUCCESS:
                return self._context
            log.info("PC/SC context no longer valid (0x%08X); establishing a new one", hresult & 0xFFFFFFFF)
            self.release()

        hresult, context = self.call("connect to the smart-card service", "SCardEstablishContext", self.scard.SCARD_SCOPE_USER)
        self.check(hresult, "connect to the smart-card service")
        self._context = context
        return context

    def release(self) -> None:
        """Release the context, ignoring errors (it may already be dead)."""
        context, self._context = self._context, None
        if context is None:
            return
        try:
            self.scard.SCardReleaseContext(context)
        except Exception as exc:  # a dead context may refuse release; it is gone either way
            log.debug("releasing the PC/SC context failed: %s", exc)

    def list_readers(self) -> list[str]:
        """Return the reader names; an empty list when none is connected."""
        context = self.context()
        hresult, readers = self.call("list smart-card readers", "SCardListReaders", context, [])
        if hresult & 0xFFFFFFFF == SCARD_E_NO_READERS_AVAILABLE:
            return []
        self.check(hresult, "list smart-card readers")
        return list(readers or [])

    def open(self, reader: str) -> PcscTransport:
        """Return an unconnected transport to the card in `reader`."""
        return PcscTransport(self, reader)


class _RedactedList(list):
    """The byte list of a secret-carrying APDU as pyscard takes it, with a `repr` that shows only the length."""

    def __repr__(self) -> str:
        return f"<{len(self)} bytes redacted>"


class PcscTransport:
    """APDU transport to the card in one reader: shared mode, T=0 or T=1, card left powered."""

    def __init__(self, backend: PcscBackend, reader: str) -> None:
        self.backend = backend
        self.reader = reader
        self._card: Any = None
        self._protocol: int | None = None

    @property
    def scard(self) -> Any:
        """The pyscard `scard` module of the backend."""
        return self.backend.scard

    def connect(self) -> bytes:
        """Connect in shared mode with T=0 or T=1 and return the ATR."""
        scard = self.scard
        operation = f"connect to the card in {self.reader}"
        hresult, card, protocol = self.backend.call(operation, "SCardConnect", self.backend.context(), self.reader,
                                                    scard.SCARD_SHARE_SHARED, scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1)
        self.backend.check(hresult, operation)
        self._card, self._protocol = card, protocol

        status = self.backend.call(f"read the ATR in {self.reader}", "SCardStatus", card)
        hresult, atr = status[0], status[-1]
        self.backend.check(hresult, f"read the ATR in {self.reader}")
        return bytes(atr)

    def _require_card(self) -> Any:
        if self._card is None:
            raise PcscError(PcscProblem.UNKNOWN, f"no connection to the card in {self.reader}; connect first")
        return self._card

    def _reconnect(self) -> None:
        """Reconnect after another connection reset the card (SCARD_W_RESET_CARD)."""
        scard = self.scard
        operation = f"reconnect to the card in {self.reader}"
        hresult, protocol = self.backend.call(operation, "SCardReconnect", self._require_card(), scard.SCARD_SHARE_SHARED,
                                              scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1, scard.SCARD_LEAVE_CARD)
        self.backend.check(hresult, operation)
        self._protocol = protocol

    def transmit_raw(self, apdu: bytes) -> bytes:
        """Send one APDU and return data || SW1 SW2.

        After a reset by another connection the transport reconnects and
        raises `CardRemovedError(CARD_RESET)`: the applet selection is gone,
        so the caller restarts its sequence instead of this APDU being resent.
        """
        scard = self.scard
        card = self._require_card()
        pci = scard.SCARD_PCI_T1 if self._protocol == scard.SCARD_PROTOCOL_T1 else scard.SCARD_PCI_T0
        operation = f"send an APDU to the card in {self.reader}"
        # pyscard takes a list of ints; a secret-carrying APDU stays redacted in crash reports.
        payload = _RedactedList(apdu) if isinstance(apdu, RedactedBytes) else list(apdu)
        del apdu
        hresult, response = self.backend.call(operation, "SCardTransmit", card, pci, payload)
        if hresult != SCARD_S_SUCCESS and problem_for_code(hresult) is PcscProblem.CARD_RESET:
            self._reconnect()
        self.backend.check(hresult, operation)
        return bytes(response)

    def begin_transaction(self) -> None:
        """Start an exclusive transaction; after a reset, reconnect and try once more."""
        operation = f"start a transaction on {self.reader}"
        hresult = self.backend.call(operation, "SCardBeginTransaction", self._require_card())
        if hresult != SCARD_S_SUCCESS and problem_for_code(hresult) is PcscProblem.CARD_RESET:
            self._reconnect()
            hresult = self.backend.call(operation, "SCardBeginTransaction", self._require_card())
        self.backend.check(hresult, operation)

    def end_transaction(self) -> None:
        """End the transaction, leaving the card as it is."""
        operation = f"end the transaction on {self.reader}"
        hresult = self.backend.call(operation, "SCardEndTransaction", self._require_card(), self.scard.SCARD_LEAVE_CARD)
        self.backend.check(hresult, operation)

    def disconnect(self) -> None:
        """Disconnect with SCARD_LEAVE_CARD, so the key stays powered for other programs."""
        card, self._card = self._card, None
        if card is None:
            return
        operation = f"disconnect from {self.reader}"
        hresult = self.backend.call(operation, "SCardDisconnect", card, self.scard.SCARD_LEAVE_CARD)
        self.backend.check(hresult, operation)
