"""The Channel: GET RESPONSE chaining, Le retry, redacted traffic log, exchange records."""

import pytest

from tui.apdu import CommandApdu, StatusKind
from tui.errors import MalformedResponseError, PcscError
from tui.model import PcscProblem
from tui.transport import TRAFFIC, Channel


class ScriptedTransport:
    """Answers each transmit with the next scripted response and records the commands."""

    reader = "Scripted 00 00"

    def __init__(self, responses):
        self.responses = list(responses)
        self.sent = []

    def connect(self):
        return b"\x3b\x00"

    def transmit_raw(self, apdu):
        self.sent.append(apdu)
        answer = self.responses.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def begin_transaction(self):
        self.sent.append("begin")

    def end_transaction(self):
        self.sent.append("end")

    def disconnect(self):
        pass


def test_get_response_chain_is_joined():
    transport = ScriptedTransport([b"\x01\x02\x61\x02", b"\x03\x04\x90\x00"])
    channel = Channel(transport)
    response, status = channel.send(CommandApdu(0, 0xCB, 0x3F, 0xFF, b"\x5c\x03\x5f\xc1\x02", le=0, name="GET DATA"))
    assert response.data == b"\x01\x02\x03\x04"
    assert status.kind is StatusKind.OK
    assert transport.sent[1] == bytes.fromhex("00C0000002")
    assert len(channel.exchanges) == 1


def test_wrong_le_is_retried_with_card_length():
    transport = ScriptedTransport([b"\x6c\x05", b"12345\x90\x00"])
    response, _ = Channel(transport).send(CommandApdu(0, 0xF8, 0, 0, le=0, name="GET SERIAL"))
    assert response.data == b"12345"
    assert transport.sent[1] == bytes.fromhex("00F8000005")


def test_endless_61xx_is_a_typed_error():
    transport = ScriptedTransport([b"\x61\x01"] * 300)
    with pytest.raises(MalformedResponseError):
        Channel(transport).send(CommandApdu(0, 0xCB, 0, 0, le=0))


def test_status_query_9000_means_count_unknown():
    _, status = Channel(ScriptedTransport([b"\x90\x00"])).send(CommandApdu(0, 0x20, 0, 0x80, name="VERIFY (status)"), status_query=True)
    assert status.kind is StatusKind.VERIFIED_COUNT_UNKNOWN
    assert status.tries is None


def test_traffic_log_redacts_verify_data(caplog):
    caplog.set_level(TRAFFIC, logger="keytriage.apdu")
    Channel(ScriptedTransport([b"\x63\xc2"])).send(CommandApdu(0, 0x20, 0, 0x80, b"918273\xff\xff", name="VERIFY"))
    assert "[8 bytes redacted]" in caplog.text
    assert "918273" not in caplog.text
    assert "393138323733" not in caplog.text.upper().replace(" ", "")


def test_failed_transmit_is_recorded_then_raised():
    seen = []
    channel = Channel(ScriptedTransport([PcscError(PcscProblem.CARD_REMOVED)]), observers=[seen.append])
    with pytest.raises(PcscError):
        channel.send(CommandApdu(0, 0xA4, 4, 0, b"\xa0\x00", name="SELECT"))
    assert seen[0].response is None
    assert "removed" in seen[0].error


def test_transaction_ends_even_on_error():
    transport = ScriptedTransport([])
    with pytest.raises(RuntimeError):
        with Channel(transport).transaction():
            raise RuntimeError("x")
    assert transport.sent == ["begin", "end"]


def test_continuation_instruction_is_configurable():
    transport = ScriptedTransport([b"\x01\x61\x01", b"\x02\x90\x00"])
    response, _ = Channel(transport).send(CommandApdu(0, 0xA1, 0, 0, name="LIST"), continuation_ins=0xA5)
    assert response.data == b"\x01\x02"
    assert transport.sent[1] == bytes.fromhex("00A5000001")
