"""The set-PUK action end to end: escrow, then CHANGE REFERENCE DATA on the lab key."""

from __future__ import annotations

import pytest

from tui.apdu import StatusKind
from tui.errors import CardRemovedError, PolicyError
from tui.escrow.actions import change_puk_command, generate_piv_puk, pad_piv_reference, set_piv_puk
from tui.escrow.config import VaultConfig
from tui.escrow.flow import EscrowFlow, Outcome
from tui.escrow.memory import MemoryStore
from tui.escrow.records import RecordState, SecretKind
from tui.escrow.store import VaultStore
from tui.lab.backend import LabBackend
from tui.model import PcscProblem, TokenId
from tui.piv import PIV_AID, select_command
from tui.secret import Secret
from tui.transport import Channel
from vault_server import VaultTestServer, writer_rules

TOKEN_ID = TokenId("serial", "10000001")
DEFAULT_PUK = Secret("12345678", "PIV PUK")


@pytest.fixture
def lab():
    backend = LabBackend("yubikey-healthy")
    reader = backend.list_readers()[0]
    transport = backend.open(reader)
    transport.connect()
    yield backend, reader, Channel(transport)
    transport.disconnect()


def puk_of(backend: LabBackend, reader: str):
    return backend.key(reader).piv.store.puk


def test_generated_puk_format():
    puk = generate_piv_puk()
    text = puk.reveal_text()
    assert len(text) == 8
    assert text.isdigit()
    assert puk.kind == "PIV PUK"


def test_pad_piv_reference():
    assert pad_piv_reference(Secret("123456")) == b"123456\xff\xff"
    assert pad_piv_reference(Secret("12345678")) == b"12345678"
    with pytest.raises(PolicyError):
        pad_piv_reference(Secret("12345"))
    with pytest.raises(PolicyError):
        pad_piv_reference(Secret("123456789"))


def test_change_puk_command_bytes():
    command = change_puk_command(Secret("12345678"), Secret("87654321"))
    assert command.to_bytes() == bytes.fromhex("0024008110") + b"12345678" + b"87654321"
    assert "12345678" not in command.describe()
    assert "redacted" in command.describe()


def test_set_puk_applied_on_lab_key(lab):
    backend, reader, channel = lab
    store = MemoryStore()
    flow = EscrowFlow(store, user="alice")
    seen_at_change = []

    def observe(exchange):
        if exchange.command.ins == 0x24:
            metadata = store.read_metadata(TOKEN_ID, SecretKind.PIV_PUK)
            record, _, _ = store.read_version(TOKEN_ID, SecretKind.PIV_PUK)
            seen_at_change.append((metadata.current_version, record.state))

    channel.observers.append(observe)
    result = set_piv_puk(channel, flow, TOKEN_ID, DEFAULT_PUK, profile="yubikey", ticket="INC-7")

    assert result.outcome is Outcome.APPLIED
    assert result.confirmed
    assert seen_at_change == [(1, RecordState.PENDING)]

    record, value, version = store.read_version(TOKEN_ID, SecretKind.PIV_PUK)
    assert record.state is RecordState.APPLIED
    assert record.encoding == "ascii-ff-padded"
    assert record.ticket == "INC-7"
    assert version == 2
    assert value == result.value

    # Only now, with the PUK applied in escrow, is the new PUK used on the key.
    assert puk_of(backend, reader).matches(result.value.reveal_bytes())
    _, status = channel.send(change_puk_command(result.value, result.value))
    assert status.ok


def test_set_puk_on_file_value_readable(lab):
    _, _, channel = lab
    flow = EscrowFlow(MemoryStore(), user="alice")
    result = set_piv_puk(channel, flow, TOKEN_ID, DEFAULT_PUK)
    value, version = flow.read_value_on_file(TOKEN_ID, SecretKind.PIV_PUK)
    assert value == result.value
    assert version == 2


def test_wrong_old_puk_fails_with_tries(lab):
    backend, reader, channel = lab
    store = MemoryStore()
    result = set_piv_puk(channel, EscrowFlow(store, user="alice"), TOKEN_ID, Secret("11112222", "PIV PUK"))
    assert result.outcome is Outcome.FAILED
    assert result.status.kind is StatusKind.VERIFY_FAILED
    assert result.status.tries == 2
    record, _, _ = store.read_version(TOKEN_ID, SecretKind.PIV_PUK)
    assert record.state is RecordState.FAILED
    assert record.status_word == "63C2"
    assert puk_of(backend, reader).matches(b"12345678")
    assert EscrowFlow(store).read_value_on_file(TOKEN_ID, SecretKind.PIV_PUK) is None


def test_blocked_puk_fails(lab):
    backend, reader, channel = lab
    puk_of(backend, reader).tries_left = 0
    result = set_piv_puk(channel, EscrowFlow(MemoryStore(), user="alice"), TOKEN_ID, DEFAULT_PUK)
    assert result.outcome is Outcome.FAILED
    assert result.status.kind is StatusKind.BLOCKED
    assert "blocked" in result.message


def test_refuses_when_puk_on_file(lab):
    _, _, channel = lab
    store = MemoryStore()
    store.seed(TOKEN_ID, SecretKind.PIV_PUK, Secret("55556666"), encoding="ascii-ff-padded")
    with pytest.raises(PolicyError) as caught:
        set_piv_puk(channel, EscrowFlow(store, user="alice"), TOKEN_ID, DEFAULT_PUK)
    assert "already on file (v1)" in str(caught.value)
    assert channel.exchanges == []


class LosingTransport:
    """Passes APDUs to the lab card but loses the response to CHANGE REFERENCE DATA."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.reader = inner.reader

    def connect(self):
        return self.inner.connect()

    def transmit_raw(self, apdu: bytes) -> bytes:
        answer = self.inner.transmit_raw(apdu)
        if apdu[1] == 0x24:
            raise CardRemovedError(PcscProblem.CARD_REMOVED)
        return answer

    def begin_transaction(self):
        self.inner.begin_transaction()

    def end_transaction(self):
        self.inner.end_transaction()

    def disconnect(self):
        self.inner.disconnect()


def test_transmit_lost_is_unknown(lab):
    backend, reader, channel = lab
    store = MemoryStore()
    lossy = Channel(LosingTransport(channel.transport))
    result = set_piv_puk(lossy, EscrowFlow(store, user="alice"), TOKEN_ID, DEFAULT_PUK)
    assert result.outcome is Outcome.UNKNOWN
    assert result.confirmed
    assert "GET METADATA" in result.message
    record, value, _ = store.read_version(TOKEN_ID, SecretKind.PIV_PUK)
    assert record.state is RecordState.UNKNOWN
    assert value == result.value
    # The key did take the new PUK: the unknown record keeps it as the candidate.
    assert puk_of(backend, reader).matches(result.value.reveal_bytes())


def test_vault_refusal_sends_nothing(lab):
    backend, reader, channel = lab
    store = MemoryStore()
    store.sealed = True
    result = set_piv_puk(channel, EscrowFlow(store, user="alice"), TOKEN_ID, DEFAULT_PUK)
    assert result.outcome is Outcome.REFUSED
    assert channel.exchanges == []
    assert puk_of(backend, reader).matches(b"12345678")


def test_crescendo_refused_before_escrow(lab):
    backend, reader, channel = lab
    flow = EscrowFlow(MemoryStore(), user="alice")

    with pytest.raises(PolicyError) as raised:
        set_piv_puk(channel, flow, TOKEN_ID, DEFAULT_PUK, profile="hid-crescendo", ticket="INC-7")

    assert "admin-key unlock" in str(raised.value)
    assert "6A88" in str(raised.value)
    assert flow.on_file(TOKEN_ID, SecretKind.PIV_PUK) is None
    assert channel.exchanges == []
    assert puk_of(backend, reader).matches(b"12345678")


def test_set_puk_through_vault_server(lab):
    backend, reader, channel = lab
    with VaultTestServer() as server:
        token = server.add_token(writer_rules(), display_name="ldap-alice")
        store = VaultStore.from_config(VaultConfig(address=server.url, token=Secret(token), timeout=5))
        result = set_piv_puk(channel, EscrowFlow(store, user="alice"), TOKEN_ID, DEFAULT_PUK, profile="yubikey")
        versions = server.versions("secret", f"keytriage/tokens/{TOKEN_ID}/piv-puk")
    assert result.outcome is Outcome.APPLIED
    assert [v["state"] for v in versions] == ["pending", "applied"]
    assert versions[-1]["value"] == result.value.reveal_text()
    assert puk_of(backend, reader).matches(result.value.reveal_bytes())


def test_select_failure_is_failed_not_unknown(lab):
    _, _, channel = lab

    class NoPiv:
        reader = "x"

        def connect(self):
            return b""

        def transmit_raw(self, apdu):
            return b"\x6a\x82"

        def begin_transaction(self):
            pass

        def end_transaction(self):
            pass

        def disconnect(self):
            pass

    store = MemoryStore()
    result = set_piv_puk(Channel(NoPiv()), EscrowFlow(store, user="a"), TOKEN_ID, DEFAULT_PUK)
    assert result.outcome is Outcome.FAILED
    assert result.status.sw == 0x6A82
    assert select_command(PIV_AID, "SELECT PIV").data == PIV_AID
