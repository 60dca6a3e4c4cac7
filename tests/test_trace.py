"""APDU traces: what the writer records and redacts, and how the replay matches and fails.

The vectors are HID's published Crescendo APDU traces: the ACA SELECT reply
`6F128407A0000000791000A507010510030003019000` and a VERIFY of the default
PIN "00000000" (`3030303030303030`) answered 9000.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tui.apdu import CommandApdu, StatusKind
from tui.errors import CardRemovedError, PcscError
from tui.model import PcscProblem
from tui.trace import (
    ReplayBackend,
    ReplayMismatchError,
    Trace,
    TraceError,
    TraceWriter,
    open_trace_writer,
    parse_command,
)
from tui.transport import Channel

READER = "HID Global Crescendo Key 00 00"
ATR = bytes.fromhex("3BDB9600801F030031C06477E30300829000C1")

SELECT_ACA = CommandApdu(0x00, 0xA4, 0x04, 0x00, bytes.fromhex("A0000000791000"), name="SELECT ACA")
SELECT_ACA_REPLY = bytes.fromhex("6F128407A0000000791000A507010510030003019000")
DEFAULT_PIN = b"00000000"
VERIFY_PIN = CommandApdu(0x00, 0x20, 0x00, 0x00, DEFAULT_PIN, name="VERIFY PIN")
VERIFY_STATUS = CommandApdu(0x00, 0x20, 0x00, 0x80, name="VERIFY (status)")
GET_CPLC = CommandApdu(0x80, 0xCA, 0x9F, 0x7F, le=0, name="GET DATA CPLC")


class ScriptedTransport:
    """A transport that returns fixed responses per encoded command, and records what it got."""

    def __init__(self, reader: str, script: dict[bytes, list[bytes]], atr: bytes = ATR) -> None:
        self.reader = reader
        self.script = {command: list(replies) for command, replies in script.items()}
        self.atr = atr
        self.sent: list[bytes] = []
        self.fail_with: Exception | None = None

    def connect(self) -> bytes:
        return self.atr

    def transmit_raw(self, apdu: bytes) -> bytes:
        self.sent.append(apdu)
        if self.fail_with is not None:
            raise self.fail_with
        replies = self.script[apdu]
        return replies.pop(0) if len(replies) > 1 else replies[0]

    def begin_transaction(self) -> None:
        pass

    def end_transaction(self) -> None:
        pass

    def disconnect(self) -> None:
        pass


class ScriptedBackend:
    """A backend with one scripted transport per reader."""

    is_lab = False

    def __init__(self, transports: dict[str, ScriptedTransport], failure: Exception | None = None) -> None:
        self.transports = transports
        self.failure = failure

    def list_readers(self) -> list[str]:
        if self.failure is not None:
            raise self.failure
        return list(self.transports)

    def open(self, reader: str) -> ScriptedTransport:
        return self.transports[reader]


def hid_script() -> dict[bytes, list[bytes]]:
    return {
        SELECT_ACA.to_bytes(): [SELECT_ACA_REPLY],
        VERIFY_PIN.to_bytes(): [bytes.fromhex("9000")],
        VERIFY_STATUS.to_bytes(): [bytes.fromhex("63C5")],
    }


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def record(path: Path, commands: list[CommandApdu], script: dict[bytes, list[bytes]] | None = None) -> list:
    """Record one card session on READER through a wrapped backend; return the responses."""
    backend = ScriptedBackend({READER: ScriptedTransport(READER, script or hid_script())})
    with open_trace_writer(path) as writer:
        traced = writer.wrap(backend)
        traced.list_readers()
        transport = traced.open(READER)
        transport.connect()
        channel = Channel(transport, observers=[writer])
        return [channel.send(command) for command in commands]


def replay_channel(path: Path) -> tuple[ReplayBackend, Channel]:
    backend = ReplayBackend.from_file(path)
    transport = backend.open(READER)
    transport.connect()
    return backend, Channel(transport)


# --- writer ------------------------------------------------------------------


def test_header_line_fields(tmp_path):
    path = tmp_path / "scan.trace"

    record(path, [])

    header = read_lines(path)[0]
    assert header["type"] == "header"
    assert header["format"] == "keytriage-apdu-trace"
    assert header["version"] == 1
    assert header["tool"].startswith("keytriage ")
    assert header["time"].endswith("+00:00")


def test_reader_and_card_lines(tmp_path):
    path = tmp_path / "scan.trace"

    record(path, [])

    lines = read_lines(path)
    assert lines[1] == {"type": "readers", "readers": [READER]}
    assert lines[2] == {"type": "card", "reader": READER, "atr": ATR.hex().upper(), "lab": False}


def test_exchange_line_golden_select(tmp_path):
    path = tmp_path / "scan.trace"

    record(path, [SELECT_ACA])

    line = read_lines(path)[3]
    assert line == {
        "type": "exchange", "index": 0, "reader": READER, "name": "SELECT ACA", "header": "00 A4 04 00",
        "data": "A0000000791000", "le": None, "response": "6F128407A0000000791000A50701051003000301",
        "sw": "9000",
    }


def test_verify_data_redacted(tmp_path):
    path = tmp_path / "scan.trace"

    record(path, [VERIFY_PIN])

    text = path.read_text()
    line = read_lines(path)[3]
    assert line["data"] == {"redacted": 8}
    assert line["sw"] == "9000"
    assert DEFAULT_PIN.hex() not in text.lower()
    assert DEFAULT_PIN.decode() not in text


def test_otp_response_redacted(tmp_path):
    hotp = CommandApdu(0x80, 0x88, 0x00, 0x00, le=0, name="HOTP AUTHENTICATE")
    path = tmp_path / "scan.trace"

    record(path, [hotp], {hotp.to_bytes(): [bytes.fromhex("7552249000")]})

    line = read_lines(path)[3]
    assert line["response"] == {"redacted": 3}
    assert "755224" not in path.read_text()


def test_status_query_not_redacted(tmp_path):
    path = tmp_path / "scan.trace"

    record(path, [VERIFY_STATUS])

    line = read_lines(path)[3]
    assert line["data"] == ""
    assert line["sw"] == "63C5"


def test_chained_response_one_exchange(tmp_path):
    path = tmp_path / "scan.trace"
    cplc = bytes.fromhex("9F7F2A") + bytes(range(42))
    script = {
        GET_CPLC.to_bytes(): [bytes.fromhex("6110")],
        bytes.fromhex("80C0000010"): [cplc[:16] + bytes.fromhex("611D")],
        bytes.fromhex("80C000001D"): [cplc[16:] + bytes.fromhex("9000")],
    }

    record(path, [GET_CPLC], script)

    exchanges = [line for line in read_lines(path) if line["type"] == "exchange"]
    assert len(exchanges) == 1
    assert exchanges[0]["response"] == cplc.hex().upper()
    assert exchanges[0]["sw"] == "9000"


def test_failed_exchange_records_problem(tmp_path):
    path = tmp_path / "scan.trace"
    transport = ScriptedTransport(READER, hid_script())
    transport.fail_with = CardRemovedError(PcscProblem.CARD_REMOVED)
    with open_trace_writer(path) as writer:
        traced = writer.wrap(ScriptedBackend({READER: transport})).open(READER)
        traced.connect()
        with pytest.raises(CardRemovedError):
            Channel(traced, observers=[writer]).send(SELECT_ACA)

    line = read_lines(path)[2]
    assert line["problem"] == "CARD_REMOVED"
    assert "removed" in line["error"]
    assert "sw" not in line


def test_listing_failure_recorded(tmp_path):
    path = tmp_path / "scan.trace"
    backend = ScriptedBackend({}, failure=PcscError(PcscProblem.NO_SERVICE))
    with open_trace_writer(path) as writer, pytest.raises(PcscError):
        writer.wrap(backend).list_readers()

    line = read_lines(path)[1]
    assert line["type"] == "readers"
    assert line["problem"] == "NO_SERVICE"


def test_result_lines(tmp_path):
    from tui.model import Profile, ScanResult, TokenId, TokenScan

    path = tmp_path / "scan.trace"
    result = ScanResult(tokens=[TokenScan(0, READER, profile=Profile.HID_CRESCENDO, token_id=TokenId("cplc", "47905168A1B2C3D45678"))])
    with open_trace_writer(path) as writer:
        writer.record_result(result)

    line = read_lines(path)[1]
    assert line == {"type": "result", "reader": READER, "profile": "hid-crescendo", "token_id": "cplc:47905168A1B2C3D45678"}


def test_trace_file_mode_0600(tmp_path):
    path = tmp_path / "scan.trace"

    open_trace_writer(path).close()

    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_unwritable_path_typed_error(tmp_path):
    with pytest.raises(TraceError) as caught:
        open_trace_writer(tmp_path / "missing-dir" / "scan.trace")

    assert "missing-dir" in str(caught.value)


def test_writer_without_wrap(tmp_path):
    path = tmp_path / "scan.trace"
    transport = ScriptedTransport(READER, hid_script())
    with open_trace_writer(path) as writer:
        writer.begin_card(READER, ATR, is_lab=True)
        Channel(transport, observers=[writer]).send(SELECT_ACA)

    lines = read_lines(path)
    assert lines[1]["lab"] is True
    assert lines[2]["reader"] == READER
    backend, channel = replay_channel(path)
    assert backend.is_lab
    assert channel.send(SELECT_ACA)[1].kind is StatusKind.OK


# --- replay ------------------------------------------------------------------


def test_replay_returns_recorded_responses(tmp_path):
    path = tmp_path / "scan.trace"
    recorded = record(path, [SELECT_ACA, VERIFY_STATUS, VERIFY_PIN])

    backend, channel = replay_channel(path)
    replayed = [channel.send(command) for command in (SELECT_ACA, VERIFY_STATUS, VERIFY_PIN)]

    assert [response.to_bytes() for response, _ in replayed] == [response.to_bytes() for response, _ in recorded]
    assert replayed[1][1].tries == 5
    assert backend.remaining() == []
    assert backend.list_readers() == [READER]


def test_replay_returns_recorded_atr(tmp_path):
    path = tmp_path / "scan.trace"
    record(path, [])

    backend = ReplayBackend.from_file(path)

    assert backend.open(READER).connect() == ATR


def test_redacted_matches_other_secret(tmp_path):
    path = tmp_path / "scan.trace"
    record(path, [VERIFY_PIN])
    backend, channel = replay_channel(path)

    response, status = channel.send(CommandApdu(0x00, 0x20, 0x00, 0x00, b"12345678", name="VERIFY PIN"))

    assert status.kind is StatusKind.OK


def test_redacted_length_mismatch(tmp_path):
    path = tmp_path / "scan.trace"
    record(path, [VERIFY_PIN])
    backend, channel = replay_channel(path)

    with pytest.raises(ReplayMismatchError) as caught:
        channel.send(CommandApdu(0x00, 0x20, 0x00, 0x00, b"123456", name="VERIFY PIN"))

    error = caught.value
    assert error.index == 0
    assert error.expected == "VERIFY PIN 00 20 00 00 [8 bytes redacted]"
    assert error.got == "00 20 00 00 [6 bytes redacted]"
    assert "123456" not in str(error)
    assert "313233" not in str(error)


def test_mismatch_names_index(tmp_path):
    path = tmp_path / "scan.trace"
    record(path, [SELECT_ACA, VERIFY_STATUS])
    backend, channel = replay_channel(path)
    channel.send(SELECT_ACA)

    with pytest.raises(ReplayMismatchError) as caught:
        channel.send(GET_CPLC)

    error = caught.value
    assert error.index == 1
    assert error.reader == READER
    assert error.expected == "VERIFY (status) 00 20 00 80"
    assert error.got == "80 CA 9F 7F Le=00"
    assert "exchange 1" in str(error)


def test_mismatch_on_le(tmp_path):
    path = tmp_path / "scan.trace"
    record(path, [GET_CPLC], {GET_CPLC.to_bytes(): [bytes.fromhex("6A88")]})
    backend, channel = replay_channel(path)

    with pytest.raises(ReplayMismatchError):
        channel.send(CommandApdu(0x80, 0xCA, 0x9F, 0x7F, name="GET DATA CPLC"))


def test_replay_past_end(tmp_path):
    path = tmp_path / "scan.trace"
    record(path, [SELECT_ACA])
    backend, channel = replay_channel(path)
    channel.send(SELECT_ACA)

    with pytest.raises(ReplayMismatchError) as caught:
        channel.send(VERIFY_STATUS)

    assert caught.value.index is None
    assert "end of the trace" in str(caught.value)


def test_assert_complete_lists_unsent(tmp_path):
    path = tmp_path / "scan.trace"
    record(path, [SELECT_ACA, VERIFY_STATUS])
    backend, channel = replay_channel(path)
    channel.send(SELECT_ACA)

    with pytest.raises(ReplayMismatchError) as caught:
        backend.assert_complete()

    assert caught.value.index == 1
    assert len(backend.remaining()) == 1


def test_replayed_removal_is_typed(tmp_path):
    path = tmp_path / "scan.trace"
    transport = ScriptedTransport(READER, hid_script())
    transport.fail_with = CardRemovedError(PcscProblem.NOT_TRANSACTED)
    with open_trace_writer(path) as writer:
        traced = writer.wrap(ScriptedBackend({READER: transport})).open(READER)
        traced.connect()
        with pytest.raises(CardRemovedError):
            Channel(traced, observers=[writer]).send(SELECT_ACA)
    backend, channel = replay_channel(path)

    with pytest.raises(CardRemovedError) as caught:
        channel.send(SELECT_ACA)

    assert caught.value.problem is PcscProblem.NOT_TRANSACTED


def test_replayed_no_service(tmp_path):
    path = tmp_path / "scan.trace"
    with open_trace_writer(path) as writer, pytest.raises(PcscError):
        writer.wrap(ScriptedBackend({}, failure=PcscError(PcscProblem.NO_SERVICE))).list_readers()

    with pytest.raises(PcscError) as caught:
        ReplayBackend.from_file(path).list_readers()

    assert caught.value.problem is PcscProblem.NO_SERVICE


def test_unconnected_reader_has_no_card(tmp_path):
    path = tmp_path / "scan.trace"
    record(path, [])
    backend = ReplayBackend.from_file(path)

    with pytest.raises(PcscError) as caught:
        backend.open("Other Reader 00 00").connect()

    assert caught.value.problem is PcscProblem.NO_CARD


def test_two_readers_replay_independently(tmp_path):
    other = "Yubico YubiKey OTP+FIDO+CCID 00 00"
    path = tmp_path / "scan.trace"
    backend = ScriptedBackend({
        READER: ScriptedTransport(READER, hid_script()),
        other: ScriptedTransport(other, {VERIFY_STATUS.to_bytes(): [bytes.fromhex("63C2")]}),
    })
    with open_trace_writer(path) as writer:
        traced = writer.wrap(backend)
        for reader in traced.list_readers():
            transport = traced.open(reader)
            transport.connect()
            Channel(transport, observers=[writer]).send(VERIFY_STATUS)

    replay = ReplayBackend.from_file(path)
    second = replay.open(other)
    second.connect()
    first = replay.open(READER)
    first.connect()

    assert Channel(second).send(VERIFY_STATUS)[1].tries == 2
    assert Channel(first).send(VERIFY_STATUS)[1].tries == 5


# --- file format ---------------------------------------------------------------


def test_not_a_trace_rejected(tmp_path):
    path = tmp_path / "other.jsonl"
    path.write_text('{"type": "something"}\n')

    with pytest.raises(TraceError, match="not a keytriage APDU trace"):
        Trace.load(path)


def test_future_version_rejected(tmp_path):
    path = tmp_path / "scan.trace"
    path.write_text('{"type": "header", "format": "keytriage-apdu-trace", "version": 99}\n')

    with pytest.raises(TraceError, match="version 99"):
        Trace.load(path)


def test_invalid_json_line_named(tmp_path):
    path = tmp_path / "scan.trace"
    record(path, [])
    with path.open("a") as handle:
        handle.write("{not json\n")

    with pytest.raises(TraceError, match="line 4"):
        Trace.load(path)


def test_missing_file_typed_error(tmp_path):
    with pytest.raises(TraceError, match="cannot read"):
        Trace.load(tmp_path / "nope.trace")


@pytest.mark.parametrize(("raw", "expected"), [
    ("00200080", ("00 20 00 80", b"", None)),
    ("80CA9F7F00", ("80 CA 9F 7F", b"", 0)),
    ("00A4040007A0000000791000", ("00 A4 04 00", bytes.fromhex("A0000000791000"), None)),
    ("00A4040007A000000079100000", ("00 A4 04 00", bytes.fromhex("A0000000791000"), 0)),
])
def test_parse_command_cases(raw, expected):
    assert parse_command(bytes.fromhex(raw)) == expected


# --- golden trace from HID's published vectors ------------------------------------------

# tests/traces/hid-crescendo-published.trace holds what the read-only scan
# sends to an HID Crescendo key, answered with published replies: HID's ACA
# SELECT reply (family 10, applet version 3.0.3 build 1), GET PIN PROPERTIES
# in HID's `31 05 min max RFU RFU numeric` form, a 16-byte GET CHALLENGE (an
# AES-128 admin key), the SP 800-73-4 PIV SELECT reply as Yubico documents it,
# a PIV status query answered 63C5, and a CHUID in Yubico's template with its
# own GUID. GET DATA CPLC answers 6A88 and the card-manager SELECTs 6A82,
# because no public source shows a Crescendo CPLC reply.
GOLDEN = Path(__file__).parent / "traces" / "hid-crescendo-published.trace"


def scan_golden(settings=None, writer=None):
    from tui.scan import scan_all
    from tui.settings import SiteSettings

    backend = ReplayBackend.from_file(GOLDEN)
    scanned = writer.wrap(backend) if writer is not None else backend
    return backend, scan_all(scanned, settings or SiteSettings(), observer=writer)


def test_golden_select_vector():
    select = next(exchange for exchange in Trace.load(GOLDEN).exchanges if exchange.name == "SELECT ACA")

    assert select.response == SELECT_ACA_REPLY


def test_golden_replays_through_scan():
    from tui.model import PinState, Profile

    backend, result = scan_golden()

    backend.assert_complete()
    token = result.tokens[0]
    assert result.problem is None
    assert token.problem is None
    assert token.profile is Profile.HID_CRESCENDO
    assert token.smartcard.aca_version == "3.0.3 build 1"
    assert token.smartcard.pin.state is PinState.OK
    assert token.smartcard.pin.remaining == 5
    assert token.smartcard.pin_policy.min_length == 4
    assert token.smartcard.pin_policy.max_length == 8
    assert token.smartcard.pin_policy.numeric_only is True
    assert token.smartcard.admin_key.text() == "AES-128"
    assert str(token.token_id) == "guid:4B54524943455343454E444F00000001"
    assert result.apdu_count == 17


def test_golden_rerecorded_identically(tmp_path):
    path = tmp_path / "again.trace"

    with open_trace_writer(path) as writer:
        scan_golden(writer=writer)

    def exchanges(file):
        return [line for line in read_lines(file) if line["type"] == "exchange"]

    assert exchanges(path) == exchanges(GOLDEN)


def test_golden_catches_new_command():
    from tui.settings import SiteSettings

    # With unconfirmed commands allowed, the scan adds the ACA VERIFY status
    # query after GET CHALLENGE; the replay must name that spot.
    with pytest.raises(ReplayMismatchError) as caught:
        scan_golden(SiteSettings(allow_unverified_commands=True))

    assert caught.value.index == 6
    assert caught.value.expected.startswith("SELECT PIV 00 A4 04 00")
    assert caught.value.got == "00 20 00 00"
