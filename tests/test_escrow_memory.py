"""MemoryStore: the lab store keeps Vault's KV v2 semantics."""

from __future__ import annotations

import pytest

from tui.apdu import decode_sw
from tui.escrow.errors import CasConflictError, VaultPermissionError, VaultRequestError, VaultSealedError
from tui.escrow.flow import ApplyOutcome, EscrowFlow, Outcome, SetRequest
from tui.escrow.memory import MemoryStore
from tui.escrow.records import EscrowRecord, RecordState, SecretKind
from tui.model import TokenId
from tui.secret import Secret

TOKEN_ID = TokenId("cplc", "4790516856781A2B3C4D")


def record(state=RecordState.PENDING):
    return EscrowRecord(encoding="utf-8", state=state, set_at="2025-01-01T00:00:00Z", set_by="t")


def test_lab_base_path():
    store = MemoryStore()
    assert store.data_path(TOKEN_ID, SecretKind.FIDO_PIN) == f"secret/data/lab/keytriage/tokens/{TOKEN_ID}/fido-pin"
    assert store.kv_path(TOKEN_ID, SecretKind.FIDO_PIN) == f"secret/lab/keytriage/tokens/{TOKEN_ID}/fido-pin"


def test_cas_semantics():
    store = MemoryStore()
    assert store.write(TOKEN_ID, SecretKind.FIDO_PIN, record(), Secret("1234"), cas=0) == 1
    with pytest.raises(CasConflictError):
        store.write(TOKEN_ID, SecretKind.FIDO_PIN, record(), Secret("1234"), cas=0)
    assert store.write(TOKEN_ID, SecretKind.FIDO_PIN, record(), Secret("1234"), cas=1) == 2


def test_cas_required():
    store = MemoryStore(cas_required=True)
    with pytest.raises(VaultRequestError):
        store.write(TOKEN_ID, SecretKind.FIDO_PIN, record(), Secret("1234"), cas=None)


def test_versions_pruned_at_default():
    store = MemoryStore()
    for number in range(12):
        store.write(TOKEN_ID, SecretKind.FIDO_PIN, record(), Secret(str(number) * 4), cas=number)
    metadata = store.read_metadata(TOKEN_ID, SecretKind.FIDO_PIN)
    assert metadata.current_version == 12
    assert sorted(metadata.versions) == list(range(3, 13))


def test_seed_on_file_value():
    store = MemoryStore()
    store.seed(TOKEN_ID, SecretKind.PIV_PUK, Secret("12345678"), encoding="ascii-ff-padded")
    value, version = EscrowFlow(store).read_value_on_file(TOKEN_ID, SecretKind.PIV_PUK)
    assert value == Secret("12345678")
    assert version == 1
    assert EscrowFlow(store).on_file(TOKEN_ID, SecretKind.PIV_PUK).words() == "on file (v1)"


def test_write_only_store():
    store = MemoryStore(readable=False)
    flow = EscrowFlow(store, user="t")
    request = SetRequest(TOKEN_ID, SecretKind.FIDO_PIN, Secret("246810"), "utf-8")
    result = flow.set_secret(request, lambda: ApplyOutcome.applied(decode_sw(0x9000)))
    assert result.confirmed
    with pytest.raises(VaultPermissionError):
        flow.read_value_on_file(TOKEN_ID, SecretKind.FIDO_PIN)


def test_fault_between_steps():
    store = MemoryStore()
    calls = []
    store.fail_next("write", VaultSealedError("Vault is sealed"))
    request = SetRequest(TOKEN_ID, SecretKind.ADMIN_KEY, Secret(bytes(24)), "hex")
    result = EscrowFlow(store, user="t").set_secret(request, lambda: calls.append(1) or ApplyOutcome.applied())
    assert result.outcome is Outcome.NOT_ESCROWED
    assert calls == []


def test_binary_value_round_trip():
    store = MemoryStore()
    key = bytes(range(24))
    store.seed(TOKEN_ID, SecretKind.ADMIN_KEY, Secret(key, "admin key"), encoding="hex")
    value, _ = EscrowFlow(store).read_value_on_file(TOKEN_ID, SecretKind.ADMIN_KEY)
    assert value.reveal() == key
