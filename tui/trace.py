"""Redacted APDU traces: a JSON-lines writer, and a backend that replays a trace.

`keytriage scan --trace FILE` (and the TUI's `--trace`) records every APDU
exchange, so a trace captured on a real key can be replayed later as a
regression test, with no key and no pcscd. One JSON object per line:

    {"type": "header", "format": "keytriage-apdu-trace", "version": 1, "tool": "keytriage 0.1.0", "time": "..."}
    {"type": "readers", "readers": ["HID Global Crescendo Key 00 00"]}
    {"type": "card", "reader": "...", "atr": "3B...", "lab": false}
    {"type": "exchange", "index": 0, "reader": "...", "name": "SELECT ACA", "header": "00 A4 04 00",
     "data": "A0000000791000", "le": 0, "response": "6F12...", "sw": "9000"}
    {"type": "result", "reader": "...", "profile": "hid-crescendo", "token_id": "cplc:..."}

The data field of a sensitive command (`CommandApdu.sensitive`: VERIFY,
CHANGE REFERENCE DATA, key imports and the like) is written as
`{"redacted": N}`, its length only, so no PIN, PUK or key ever reaches the
file. The response data of those commands and of OTP-generating commands is
redacted the same way. A failed exchange has "error" (and "problem", the
`PcscProblem` name) in place of "response" and "sw". A failed connect or
reader listing is a "card" or "readers" line with "problem" and "error".

Exchanges are recorded at the `Channel` level: a response that the card
chained with 61xx/GET RESPONSE, or that needed a 6Cxx resend, is one
exchange with the whole data and the final status word.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tui import __version__
from tui.apdu import SENSITIVE_INS, CommandApdu, Exchange
from tui.errors import CardRemovedError, KeytriageError, MalformedResponseError, PcscError
from tui.model import PcscProblem
from tui.transport import ReaderBackend, Transport

TRACE_FORMAT = "keytriage-apdu-trace"
TRACE_VERSION = 1

# Instructions whose response data is secret although their command data is
# not: HOTP/TOTP AUTHENTICATE (INS 88) and OCRA AUTHENTICATE (INS 87) return
# one-time codes.
SECRET_RESPONSE_INS = frozenset({0x87, 0x88})

# PC/SC problems that mean the card went away or was reset under the
# connection; they replay as `CardRemovedError`, as the PC/SC backend raises.
_REMOVAL_PROBLEMS = frozenset({PcscProblem.CARD_REMOVED, PcscProblem.NOT_TRANSACTED, PcscProblem.CARD_RESET})


class TraceError(KeytriageError):
    """A trace file cannot be read: missing, not JSON lines, or another format or version."""


class ReplayMismatchError(KeytriageError):
    """The product sent a command that differs from the trace, or more commands than it holds.

    `index` is the exchange index in the trace file (None past its end);
    `expected` and `got` are secret-free descriptions of the two commands.
    """

    def __init__(self, reader: str, index: int | None, expected: str, got: str) -> None:
        self.reader = reader
        self.index = index
        self.expected = expected
        self.got = got
        where = f"exchange {index}" if index is not None else "the end of the trace"
        super().__init__(
            f"trace replay mismatch at {where} on reader {reader!r}: expected {expected}, got {got}. "
            "The scan now sends other commands than when the trace was recorded; "
            "check the change, then record the trace again if the new order is right."
        )


def _problem_of(exc: BaseException) -> PcscProblem | None:
    problem = getattr(exc, "problem", None)
    return problem if isinstance(problem, PcscProblem) else None


def _response_is_secret(command: CommandApdu) -> bool:
    return command.sensitive or (command.cla & 0x80 == 0x80 and command.ins in SECRET_RESPONSE_INS)


class TraceWriter:
    """Writes APDU exchanges to a JSON-lines trace; call it as a `Channel` observer.

    `wrap(backend)` returns a backend whose transports also record the reader
    list, each connect (reader and ATR) and which reader every exchange went
    to. Without it, exchange lines carry no reader, and `begin_card()` must
    be called before each card's exchanges. The writer is thread-safe and
    flushes every line, so a trace survives a crash of the tool.
    """

    def __init__(self, stream: IO[str], *, name: str = "<stream>") -> None:
        self.name = name
        self._stream = stream
        self._lock = threading.RLock()
        self._index = 0
        self._reader: str | None = None
        self._last_problem: PcscProblem | None = None
        self._write({
            "type": "header",
            "format": TRACE_FORMAT,
            "version": TRACE_VERSION,
            "tool": f"keytriage {__version__}",
            "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        })

    @property
    def exchange_count(self) -> int:
        """Number of exchange lines written so far."""
        return self._index

    def __call__(self, exchange: Exchange) -> None:
        """Write one exchange line (the `ExchangeObserver` interface)."""
        command = exchange.command
        # The index is assigned under the lock below; the key is set here to keep it second.
        line: dict[str, Any] = {"type": "exchange", "index": None, "reader": self._reader,
                                "name": command.name, "header": command.header}
        if command.sensitive and command.data:
            line["data"] = {"redacted": len(command.data)}
        else:
            line["data"] = command.data.hex().upper()
        line["le"] = command.le

        if exchange.response is None:
            line["error"] = exchange.error or "no response"
            if self._last_problem is not None:
                line["problem"] = self._last_problem.name
        elif _response_is_secret(command) and exchange.response.data:
            line["response"] = {"redacted": len(exchange.response.data)}
            line["sw"] = f"{exchange.response.sw:04X}"
        else:
            line["response"] = exchange.response.data.hex().upper()
            line["sw"] = f"{exchange.response.sw:04X}"

        with self._lock:
            line["index"] = self._index
            self._index += 1
            self._last_problem = None
            self._write(line)

    def begin_card(self, reader: str, atr: bytes, *, is_lab: bool = False) -> None:
        """Write a card line; exchanges that follow are attributed to `reader`."""
        self._reader = reader
        self._write({"type": "card", "reader": reader, "atr": atr.hex().upper(), "lab": is_lab})

    def record_result(self, result: Any) -> None:
        """Write one result line per token of a `ScanResult`: reader, profile and token ID."""
        for token in getattr(result, "tokens", []):
            profile = getattr(token.profile, "value", token.profile)
            token_id = str(token.token_id) if token.token_id is not None else None
            self._write({"type": "result", "reader": token.reader, "profile": profile, "token_id": token_id})

    def wrap(self, backend: ReaderBackend) -> ReaderBackend:
        """Return `backend` with reader listings and connects recorded to this trace."""
        return _TracingBackend(backend, self)

    def close(self) -> None:
        """Close the underlying file."""
        with self._lock:
            if not self._stream.closed:
                self._stream.close()

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _write(self, line: dict[str, Any]) -> None:
        text = json.dumps(line, separators=(", ", ": "))
        with self._lock:
            self._stream.write(text + "\n")
            self._stream.flush()


def open_trace_writer(path: str | os.PathLike[str]) -> TraceWriter:
    """Create (or truncate) the trace file at `path`, mode 0600, and return its writer.

    Raises `TraceError` naming the path when it cannot be created.
    """
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise TraceError(f"cannot create the trace file {os.fspath(path)}: {exc.strerror}. Choose a writable path.") from exc
    return TraceWriter(os.fdopen(descriptor, "w", encoding="utf-8"), name=os.fspath(path))


class _TracingBackend:
    """A `ReaderBackend` wrapper that writes readers and card lines to a trace."""

    def __init__(self, inner: ReaderBackend, writer: TraceWriter) -> None:
        self.inner = inner
        self.writer = writer
        self.is_lab = inner.is_lab

    def list_readers(self) -> list[str]:
        try:
            readers = self.inner.list_readers()
        except Exception as exc:
            self.writer._write(_failure_line("readers", exc))
            raise
        self.writer._write({"type": "readers", "readers": list(readers)})
        return readers

    def open(self, reader: str) -> Transport:
        return _TracingTransport(self.inner.open(reader), self.writer, self.is_lab)

    def __getattr__(self, name: str) -> Any:
        # Anything else the product reads from the backend (close(), a lab
        # scenario name) passes through unchanged.
        return getattr(self.inner, name)


class _TracingTransport:
    """A `Transport` wrapper that writes a card line on connect and tags exchanges with the reader."""

    def __init__(self, inner: Transport, writer: TraceWriter, is_lab: bool) -> None:
        self.inner = inner
        self.writer = writer
        self.reader = inner.reader
        self.is_lab = is_lab

    def connect(self) -> bytes:
        try:
            atr = self.inner.connect()
        except Exception as exc:
            line = _failure_line("card", exc)
            line["reader"] = self.reader
            self.writer._write(line)
            raise
        self.writer.begin_card(self.reader, atr, is_lab=self.is_lab)
        return atr

    def transmit_raw(self, apdu: bytes) -> bytes:
        self.writer._reader = self.reader
        try:
            return self.inner.transmit_raw(apdu)
        except Exception as exc:
            self.writer._last_problem = _problem_of(exc)
            raise

    def begin_transaction(self) -> None:
        self.inner.begin_transaction()

    def end_transaction(self) -> None:
        self.inner.end_transaction()

    def disconnect(self) -> None:
        self.inner.disconnect()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _failure_line(kind: str, exc: BaseException) -> dict[str, Any]:
    problem = _problem_of(exc)
    return {"type": kind, "problem": problem.name if problem else None, "error": str(exc)}


# ---------------------------------------------------------------------------
# Replay


@dataclass(frozen=True)
class TracedExchange:
    """One exchange line of a trace, as the replay matches it and returns its response."""

    index: int
    reader: str | None
    name: str
    header: str
    data: str | None  # upper-case hex, or None when redacted
    data_length: int
    le: int | None
    response: bytes | None  # data || SW1 SW2; None for a failed exchange
    problem: PcscProblem | None = None
    error: str | None = None

    @property
    def redacted(self) -> bool:
        """True when the trace stores only the data length."""
        return self.data is None

    def describe(self) -> str:
        """Describe the recorded command without secrets: name, header, data or its length, Le."""
        parts = [self.name or "APDU", self.header]
        if self.redacted:
            parts.append(f"[{self.data_length} bytes redacted]")
        elif self.data:
            parts.append(self.data)
        if self.le is not None:
            parts.append(f"Le={self.le:02X}")
        return " ".join(parts)


@dataclass
class _CardEvent:
    atr: bytes | None
    problem: PcscProblem | None = None
    error: str | None = None


def parse_command(raw: bytes) -> tuple[str, bytes, int | None]:
    """Split an encoded short APDU into ("CLA INS P1 P2" hex, data, Le).

    Raises `MalformedResponseError` for bytes that are not a short APDU.
    """
    if len(raw) < 4:
        raise MalformedResponseError(f"command APDU of {len(raw)} bytes has no header")
    header = " ".join(f"{byte:02X}" for byte in raw[:4])
    body = raw[4:]
    if not body:
        return header, b"", None
    if len(body) == 1:
        return header, b"", body[0]
    length = body[0]
    if len(body) == 1 + length:
        return header, bytes(body[1:]), None
    if len(body) == 2 + length:
        return header, bytes(body[1:-1]), body[-1]
    raise MalformedResponseError(f"command APDU {header} has Lc={length} but {len(body) - 1} more bytes")


def _describe_sent(raw: bytes, force_redacted: bool) -> str:
    try:
        header, data, le = parse_command(raw)
    except MalformedResponseError:
        return f"{len(raw)} bytes that do not parse as a short APDU"
    ins = raw[1]
    parts = [header]
    if data and (force_redacted or ins in SENSITIVE_INS):
        parts.append(f"[{len(data)} bytes redacted]")
    elif data:
        parts.append(data.hex().upper())
    if le is not None:
        parts.append(f"Le={le:02X}")
    return " ".join(parts)


class Trace:
    """A parsed trace file: its header, reader listings, card events and exchanges."""

    def __init__(self, lines: Iterable[dict[str, Any]], *, name: str = "<trace>") -> None:
        self.name = name
        self.header: dict[str, Any] = {}
        self.reader_listings: list[list[str] | _CardEvent] = []
        self.cards: dict[str, list[_CardEvent]] = {}
        self.exchanges: list[TracedExchange] = []
        self.results: list[dict[str, Any]] = []
        self.is_lab = False
        self._load(lines)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Trace:
        """Read and validate a trace file. Raises `TraceError` naming the file and line."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise TraceError(f"cannot read the trace file {path}: {exc.strerror}") from exc

        lines = []
        for number, raw_line in enumerate(text.splitlines(), start=1):
            if not raw_line.strip():
                continue
            try:
                lines.append(json.loads(raw_line))
            except json.JSONDecodeError as exc:
                raise TraceError(f"{path} line {number} is not valid JSON: {exc.msg}") from exc
        return cls(lines, name=str(path))

    def _load(self, lines: Iterable[dict[str, Any]]) -> None:
        for position, line in enumerate(lines):
            kind = line.get("type") if isinstance(line, dict) else None
            if position == 0:
                self._check_header(line)
                continue
            if kind == "readers":
                self.reader_listings.append(_failure_event(line) if "problem" in line else list(line["readers"]))
            elif kind == "card":
                event = _failure_event(line) if "problem" in line else _CardEvent(bytes.fromhex(line["atr"]))
                self.cards.setdefault(line["reader"], []).append(event)
                self.is_lab = self.is_lab or bool(line.get("lab"))
            elif kind == "exchange":
                self.exchanges.append(self._exchange(line))
            elif kind == "result":
                self.results.append(line)
            else:
                raise TraceError(f"{self.name}: line {position + 1} has unknown type {kind!r}")

    def _check_header(self, line: Any) -> None:
        if not isinstance(line, dict) or line.get("type") != "header" or line.get("format") != TRACE_FORMAT:
            raise TraceError(f"{self.name} is not a keytriage APDU trace: its first line is not a {TRACE_FORMAT} header")
        if line.get("version") != TRACE_VERSION:
            raise TraceError(f"{self.name} is trace format version {line.get('version')!r}; this keytriage reads version {TRACE_VERSION}")
        self.header = line

    def _exchange(self, line: dict[str, Any]) -> TracedExchange:
        data = line.get("data", "")
        if isinstance(data, dict):
            data_hex, data_length = None, int(data["redacted"])
        else:
            data_hex, data_length = data.upper(), len(data) // 2

        response: bytes | None = None
        if "sw" in line:
            body = line.get("response", "")
            # A redacted response replays as zero bytes of the recorded length.
            payload = bytes(body["redacted"]) if isinstance(body, dict) else bytes.fromhex(body)
            response = payload + bytes.fromhex(line["sw"])
        problem = PcscProblem[line["problem"]] if line.get("problem") else None
        return TracedExchange(int(line["index"]), line.get("reader"), line.get("name", ""), line["header"],
                              data_hex, data_length, line.get("le"), response, problem, line.get("error"))

    def readers(self) -> list[str]:
        """Return the readers of the first listing, else every reader with a card line, in trace order."""
        for listing in self.reader_listings:
            if isinstance(listing, list):
                return list(listing)
        names = list(self.cards)
        for exchange in self.exchanges:
            if exchange.reader is not None and exchange.reader not in names:
                names.append(exchange.reader)
        return names


def _failure_event(line: dict[str, Any]) -> _CardEvent:
    problem = PcscProblem[line["problem"]] if line.get("problem") else PcscProblem.UNKNOWN
    return _CardEvent(None, problem, line.get("error"))


def _raise_problem(problem: PcscProblem, error: str | None) -> None:
    if problem in _REMOVAL_PROBLEMS:
        raise CardRemovedError(problem, error or None)
    raise PcscError(problem, error or None)


class ReplayBackend:
    """A `ReaderBackend` that plays a recorded trace back to the product.

    Each reader's exchanges are matched in order: header, data (or only its
    length when the trace redacted it) and Le must equal what the product
    sends, else `ReplayMismatchError`. Recorded failures (a removed card,
    no service) are raised again as the typed `PcscError`. `is_lab` is what
    the recording backend was, so the scan sends the same commands.
    """

    def __init__(self, trace: Trace) -> None:
        self.trace = trace
        self.is_lab = trace.is_lab
        self._listings = deque(trace.reader_listings)
        self._last_listing: list[str] | _CardEvent = trace.readers()
        self._queues: dict[str | None, deque[TracedExchange]] = {}
        for exchange in trace.exchanges:
            self._queues.setdefault(exchange.reader, deque()).append(exchange)
        self._cards = {reader: deque(events) for reader, events in trace.cards.items()}
        self._last_card: dict[str, _CardEvent] = {}

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> ReplayBackend:
        """Load the trace at `path` and return a backend replaying it."""
        return cls(Trace.load(path))

    def list_readers(self) -> list[str]:
        """Return the next recorded reader listing (the last one again once all were used)."""
        if self._listings:
            self._last_listing = self._listings.popleft()
        listing = self._last_listing
        if isinstance(listing, _CardEvent):
            _raise_problem(listing.problem or PcscProblem.UNKNOWN, listing.error)
        return list(listing)

    def open(self, reader: str) -> ReplayTransport:
        """Return a transport replaying `reader`'s exchanges."""
        return ReplayTransport(self, reader)

    def remaining(self) -> list[TracedExchange]:
        """Return the recorded exchanges that were not replayed yet, in trace order."""
        left = [exchange for queue in self._queues.values() for exchange in queue]
        return sorted(left, key=lambda exchange: exchange.index)

    def assert_complete(self) -> None:
        """Raise `ReplayMismatchError` when the product stopped before the end of the trace."""
        left = self.remaining()
        if left:
            first = left[0]
            raise ReplayMismatchError(first.reader or "?", first.index, first.describe(),
                                      f"no command ({len(left)} recorded exchanges were never sent)")

    def _next_card(self, reader: str) -> _CardEvent:
        events = self._cards.get(reader)
        if events:
            self._last_card[reader] = events.popleft()
        event = self._last_card.get(reader)
        if event is None:
            # A reader listed but never connected in the recording: no card.
            return _CardEvent(None, PcscProblem.NO_CARD, None)
        return event

    def _next_exchange(self, reader: str) -> TracedExchange | None:
        queue = self._queues.get(reader) or self._queues.get(None)
        if not queue:
            return None
        return queue.popleft()


class ReplayTransport:
    """A `Transport` that returns a `ReplayBackend`'s recorded responses for one reader."""

    def __init__(self, backend: ReplayBackend, reader: str) -> None:
        self.backend = backend
        self.reader = reader
        self.connected = False

    def connect(self) -> bytes:
        """Return the recorded ATR, or raise the recorded connect failure."""
        event = self.backend._next_card(self.reader)
        if event.atr is None:
            _raise_problem(event.problem or PcscProblem.UNKNOWN, event.error)
        self.connected = True
        return event.atr

    def transmit_raw(self, apdu: bytes) -> bytes:
        """Match `apdu` against the next recorded exchange and return its recorded response."""
        expected = self.backend._next_exchange(self.reader)
        if expected is None:
            raise ReplayMismatchError(self.reader, None, "no further command", _describe_sent(apdu, False))

        try:
            header, data, le = parse_command(apdu)
        except MalformedResponseError:
            raise ReplayMismatchError(self.reader, expected.index, expected.describe(), _describe_sent(apdu, True)) from None
        if expected.redacted:
            same_data = len(data) == expected.data_length
        else:
            same_data = data.hex().upper() == expected.data
        if header != expected.header or not same_data or le != expected.le:
            raise ReplayMismatchError(self.reader, expected.index, expected.describe(),
                                      _describe_sent(apdu, expected.redacted))

        if expected.response is None:
            if expected.problem is not None:
                _raise_problem(expected.problem, expected.error)
            raise MalformedResponseError(expected.error or "the recorded exchange failed")
        return expected.response

    def begin_transaction(self) -> None:
        """Do nothing: a replay has no other process to exclude."""

    def end_transaction(self) -> None:
        """Do nothing."""

    def disconnect(self) -> None:
        """Forget the connection."""
        self.connected = False
