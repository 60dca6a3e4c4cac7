"""The APDU transport seam and the `Channel` that every applet reader talks through.

A `Transport` is a raw pipe to one card in one reader: pyscard in production
(`tui.pcsc`), the lab key in process (`tui.lab`), a replayed trace, or a
recording fake in tests. A `ReaderBackend` lists readers and opens transports.
The `Channel` above a transport adds what every caller needs once: GET
RESPONSE chaining, status-word decoding, redacted traffic logging and the
exchange log that the activity panel, traces and tests read.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Protocol, runtime_checkable

from tui.apdu import CommandApdu, Exchange, ResponseApdu, Status, StatusKind, decode_sw

# Below DEBUG: one line per APDU. The data field of every secret-carrying
# command is already redacted by `CommandApdu.describe`, but response data is
# logged as length only, and even so this level is meant for a technician's
# own trace, not for a shared log.
TRAFFIC = 5
logging.addLevelName(TRAFFIC, "TRAFFIC")

log = logging.getLogger("keytriage.apdu")

# GET RESPONSE chains stop after this many rounds: a card that keeps answering
# 61xx beyond 64 KiB of data is broken, and looping on it would hang the scan.
MAX_GET_RESPONSE_ROUNDS = 256


@runtime_checkable
class Transport(Protocol):
    """A raw APDU pipe to the card in one reader."""

    reader: str

    def connect(self) -> bytes:
        """Connect to the card and return its ATR. Raises `PcscError`."""

    def transmit_raw(self, apdu: bytes) -> bytes:
        """Send one encoded command APDU and return data || SW1 SW2. Raises `PcscError`."""

    def begin_transaction(self) -> None:
        """Start an exclusive PC/SC transaction around a multi-APDU sequence."""

    def end_transaction(self) -> None:
        """End the transaction started by `begin_transaction`."""

    def disconnect(self) -> None:
        """Disconnect, leaving the card powered (SCARD_LEAVE_CARD)."""


@runtime_checkable
class ReaderBackend(Protocol):
    """Lists readers and opens a `Transport` on one of them."""

    is_lab: bool

    def list_readers(self) -> list[str]:
        """Return the reader names. Raises `PcscError` for every PC/SC failure."""

    def open(self, reader: str) -> Transport:
        """Return an unconnected transport for `reader`."""


ExchangeObserver = Callable[[Exchange], None]


class Channel:
    """APDU exchanges with one card: chaining, decoding, logging, recording."""

    def __init__(self, transport: Transport, observers: list[ExchangeObserver] | None = None) -> None:
        self.transport = transport
        self.observers: list[ExchangeObserver] = list(observers or [])
        self.exchanges: list[Exchange] = []

    def send(
        self,
        command: CommandApdu,
        *,
        status_query: bool = False,
        counter_in_630x: bool = True,
        continuation_ins: int = 0xC0,
    ) -> tuple[ResponseApdu, Status]:
        """Send `command`, follow 61xx and 6Cxx, and return the final response and its status.

        `continuation_ins` is the instruction that fetches the rest of a 61xx
        answer: GET RESPONSE (C0) by ISO 7816-4, SEND REMAINING (A5) on the
        YubiKey OATH application.

        Transport errors propagate as `PcscError`; the failed exchange is still
        recorded so the activity log shows what was in flight.
        """
        started = time.perf_counter()
        try:
            response = self._transmit(command)
            data = response.data

            if response.sw1 == 0x6C:
                # Wrong Le: the card tells the right length in SW2; resend once with it.
                command_le = CommandApdu(command.cla, command.ins, command.p1, command.p2, command.data,
                                         response.sw2 or 256, command.name, command.sensitive)
                response = self._transmit(command_le)
                data = response.data

            rounds = 0
            while response.sw1 == 0x61:
                rounds += 1
                if rounds > MAX_GET_RESPONSE_ROUNDS:
                    from tui.errors import MalformedResponseError

                    raise MalformedResponseError(f"{command.name or command.header}: card kept answering 61xx")
                name = "GET RESPONSE" if continuation_ins == 0xC0 else "SEND REMAINING"
                get_response = CommandApdu(command.cla & 0x80, continuation_ins, 0x00, 0x00, le=response.sw2 or 256, name=name)
                response = self._transmit(get_response)
                data += response.data
            response = ResponseApdu(data, response.sw)
        except Exception as exc:
            self._record(Exchange(command, None, error=str(exc), elapsed_ms=(time.perf_counter() - started) * 1000))
            raise

        status = decode_sw(response.sw, status_query=status_query, counter_in_630x=counter_in_630x)
        self._record(Exchange(command, response, status, elapsed_ms=(time.perf_counter() - started) * 1000))
        return response, status

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Channel]:
        """Hold a PC/SC transaction for the body, so no other process interleaves APDUs."""
        self.transport.begin_transaction()
        try:
            yield self
        finally:
            with contextlib.suppress(Exception):
                self.transport.end_transaction()

    def _transmit(self, command: CommandApdu) -> ResponseApdu:
        raw = self.transport.transmit_raw(command.to_bytes())
        response = ResponseApdu.from_bytes(raw)
        log.log(TRAFFIC, "%s -> %d bytes, SW %04X", command.describe(), len(response.data), response.sw)
        return response

    def _record(self, exchange: Exchange) -> None:
        self.exchanges.append(exchange)
        for observer in self.observers:
            observer(exchange)


def is_ok(status: Status) -> bool:
    """Return True for a plain 9000."""
    return status.kind is StatusKind.OK
