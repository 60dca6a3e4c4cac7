"""The escrow flow against a real Vault server; runs only when KEYTRIAGE_TEST_VAULT_ADDR names one.

Start one with `vault server -dev` and set KEYTRIAGE_TEST_VAULT_ADDR and
KEYTRIAGE_TEST_VAULT_TOKEN (the root token). The test writes under a random
base path in the `secret` KV v2 mount and deletes it afterwards.
"""

from __future__ import annotations

import os
import uuid

import pytest

from tui.apdu import decode_sw
from tui.escrow.config import VaultConfig
from tui.escrow.flow import ApplyOutcome, EscrowFlow, Outcome, SetRequest
from tui.escrow.records import SecretKind
from tui.escrow.status import VaultState, check_status
from tui.escrow.store import VaultStore
from tui.model import TokenId
from tui.secret import Secret

ADDRESS = os.environ.get("KEYTRIAGE_TEST_VAULT_ADDR")
TOKEN = os.environ.get("KEYTRIAGE_TEST_VAULT_TOKEN")

pytestmark = pytest.mark.skipif(not (ADDRESS and TOKEN), reason="set KEYTRIAGE_TEST_VAULT_ADDR and KEYTRIAGE_TEST_VAULT_TOKEN to run against a real Vault")


def test_flow_against_real_vault():
    base = f"keytriage-test/{uuid.uuid4().hex[:8]}"
    store = VaultStore.from_config(VaultConfig(address=ADDRESS, token=Secret(TOKEN), base_path=base, timeout=5))
    token_id = TokenId("cplc", "4790516856781A2B3C4D")
    try:
        assert check_status(store).state is VaultState.OK
        flow = EscrowFlow(store, user="test")
        request = SetRequest(token_id, SecretKind.PIV_PUK, Secret("73914826"), "ascii-ff-padded")
        result = flow.set_secret(request, lambda: ApplyOutcome.applied(decode_sw(0x9000)))
        assert result.outcome is Outcome.APPLIED
        assert result.confirmed
        value, version = flow.read_value_on_file(token_id, SecretKind.PIV_PUK)
        assert value == Secret("73914826")
        assert version == 2

        stale = flow.set_secret(request, lambda: ApplyOutcome.applied(), confirmed_version=1)
        assert stale.outcome is Outcome.CONFLICT
        assert stale.conflict.current_version == 2
    finally:
        path = f"{base}/{token_id}/{SecretKind.PIV_PUK.value}"
        store.client.secrets.kv.v2.delete_metadata_and_all_versions(path, mount_point="secret")
