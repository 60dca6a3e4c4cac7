"""The escrow-before-apply flow over VaultStore, the real hvac client and the test server."""

from __future__ import annotations

import pytest

from tui.apdu import StatusKind, decode_sw
from tui.errors import PcscError
from tui.escrow.config import VaultConfig, build_client
from tui.escrow.errors import (
    CasConflictError,
    VaultPermissionError,
    VaultSealedError,
    VaultTokenError,
    VaultUnreachableError,
)
from tui.escrow.flow import ApplyOutcome, EscrowFlow, Outcome, SetRequest, TransmitLostError
from tui.escrow.records import Encoding, SecretKind
from tui.escrow.store import VaultStore
from tui.model import PcscProblem, TokenId
from tui.secret import Secret
from vault_server import VaultTestServer, writer_rules

TOKEN_ID = TokenId("cplc", "4790516856781A2B3C4D")
PATH = f"keytriage/tokens/{TOKEN_ID}/piv-puk"
DATA_API_PATH = f"/v1/secret/data/{PATH}"


@pytest.fixture
def server():
    with VaultTestServer() as running:
        yield running


def make_store(server: VaultTestServer, token: str, *, mount: str = "secret", base: str = "keytriage/tokens", timeout: float = 5) -> VaultStore:
    config = VaultConfig(address=server.url, token=Secret(token, "Vault token"), mount=mount, base_path=base, timeout=timeout)
    return VaultStore.from_config(config)


@pytest.fixture
def writer(server):
    return server.add_token(writer_rules(), display_name="ldap-alice")


@pytest.fixture
def flow(server, writer):
    return EscrowFlow(make_store(server, writer), user="alice")


def puk_request(value: str = "73914826") -> SetRequest:
    return SetRequest(TOKEN_ID, SecretKind.PIV_PUK, Secret(value, "PIV PUK"), Encoding.ASCII_FF_PADDED.value,
                      reason="PUK set where none was on file", ticket="INC-1", profile="yubikey")


class Recorder:
    """An apply callback that records its calls and what the store held at that moment."""

    def __init__(self, server: VaultTestServer, outcome=None, error: Exception | None = None) -> None:
        self.server = server
        self.outcome = outcome or ApplyOutcome.applied(decode_sw(0x9000))
        self.error = error
        self.calls = 0
        self.states_seen: list[str] = []

    def __call__(self) -> ApplyOutcome:
        self.calls += 1
        self.states_seen = [v["state"] for v in self.server.versions("secret", PATH)]
        if self.error:
            raise self.error
        return self.outcome


def states(server: VaultTestServer) -> list[str]:
    return [v["state"] for v in server.versions("secret", PATH)]


def test_applied_after_pending(server, flow):
    apply = Recorder(server)
    result = flow.set_secret(puk_request(), apply)
    assert result.outcome is Outcome.APPLIED
    assert result.confirmed
    assert apply.states_seen == ["pending"]
    assert states(server) == ["pending", "applied"]
    assert result.pending_version == 1
    assert result.outcome_version == 2


def test_record_fields(server, flow):
    flow.set_secret(puk_request(), Recorder(server))
    applied = server.versions("secret", PATH)[-1]
    assert applied["value"] == "73914826"
    assert applied["encoding"] == "ascii-ff-padded"
    assert applied["set_by"] == "alice (Vault: ldap-alice)"
    assert applied["reason"] == "PUK set where none was on file"
    assert applied["ticket"] == "INC-1"
    assert applied["profile"] == "yubikey"
    assert applied["set_at"].endswith("Z")
    assert "status_word" not in applied


def test_cas_values_sent(server, flow):
    flow.set_secret(puk_request(), Recorder(server))
    posts = server.requests_to("POST", f"secret/data/{PATH}")
    assert [p["json"]["options"]["cas"] for p in posts] == [0, 1]


def test_existing_record_uses_current_version(server, flow):
    flow.set_secret(puk_request("11111111"), Recorder(server))
    flow.set_secret(puk_request("22222222"), Recorder(server))
    posts = server.requests_to("POST", f"secret/data/{PATH}")
    assert [p["json"]["options"]["cas"] for p in posts] == [0, 1, 2, 3]


def test_failed_keeps_status_word(server, flow):
    apply = Recorder(server, ApplyOutcome.failed(decode_sw(0x63C2)))
    result = flow.set_secret(puk_request(), apply)
    assert result.outcome is Outcome.FAILED
    assert result.status.kind is StatusKind.VERIFY_FAILED
    assert server.versions("secret", PATH)[-1]["state"] == "failed"
    assert server.versions("secret", PATH)[-1]["status_word"] == "63C2"


def test_failed_leaves_applied_value_current(server, writer):
    server.tokens[writer].rules = writer_rules(read_values=True)
    flow = EscrowFlow(make_store(server, writer), user="alice")
    flow.set_secret(puk_request("11111111"), Recorder(server))
    flow.set_secret(puk_request("22222222"), Recorder(server, ApplyOutcome.failed(decode_sw(0x6983))))
    value, version = flow.read_value_on_file(TOKEN_ID, SecretKind.PIV_PUK)
    assert value == Secret("11111111")
    assert version == 2


def test_transmit_lost_records_unknown(server, flow):
    apply = Recorder(server, error=TransmitLostError("answer lost"))
    result = flow.set_secret(puk_request(), apply)
    assert result.outcome is Outcome.UNKNOWN
    assert result.confirmed
    assert states(server) == ["pending", "unknown"]
    assert "candidate" in result.message


def test_pcsc_error_during_apply_is_unknown(server, flow):
    apply = Recorder(server, error=PcscError(PcscProblem.CARD_REMOVED))
    result = flow.set_secret(puk_request(), apply)
    assert result.outcome is Outcome.UNKNOWN
    assert states(server) == ["pending", "unknown"]


def test_vault_down_before(server, flow):
    server.sealed = True
    apply = Recorder(server)
    result = flow.set_secret(puk_request(), apply)
    assert result.outcome is Outcome.REFUSED
    assert isinstance(result.error, VaultSealedError)
    assert "sealed" in result.message
    assert apply.calls == 0
    assert server.requests_to("POST", "secret/data/") == []


def test_vault_unreachable_before(server, writer):
    store = make_store(server, writer)
    server.stop()
    apply = Recorder(server)
    result = EscrowFlow(store, user="alice").set_secret(puk_request(), apply)
    assert result.outcome is Outcome.REFUSED
    assert isinstance(result.error, VaultUnreachableError)
    assert apply.calls == 0


def test_timeout_before(server, writer):
    server.inject("sys/health", delay=3)
    apply = Recorder(server)
    result = EscrowFlow(make_store(server, writer, timeout=0.3), user="alice").set_secret(puk_request(), apply)
    assert result.outcome is Outcome.REFUSED
    assert isinstance(result.error, VaultUnreachableError)
    assert "timed out" in str(result.error)
    assert apply.calls == 0


def test_vault_down_between(server, flow):
    server.inject(f"secret/data/{PATH}", method="POST", status=503, errors=["Vault is sealed"])
    apply = Recorder(server)
    result = flow.set_secret(puk_request(), apply)
    assert result.outcome is Outcome.NOT_ESCROWED
    assert isinstance(result.error, VaultSealedError)
    assert apply.calls == 0
    assert result.value == Secret("73914826")
    assert not result.sent


def test_vault_down_after(server, flow):
    apply = Recorder(server)

    def apply_then_seal():
        outcome = apply()
        server.sealed = True
        return outcome

    result = flow.set_secret(puk_request(), apply_then_seal)
    assert result.outcome is Outcome.APPLIED
    assert result.not_confirmed
    assert isinstance(result.error, VaultSealedError)
    assert "NOT CONFIRMED" in result.message
    assert result.value == Secret("73914826")
    assert states(server) == ["pending"]

    server.sealed = False
    retried = result.retry_record()
    assert retried.confirmed
    assert not retried.not_confirmed
    assert states(server) == ["pending", "applied"]


def test_token_revoked_after_pending(server, flow, writer):
    def apply():
        server.revoke(writer)
        return ApplyOutcome.applied(decode_sw(0x9000))

    result = flow.set_secret(puk_request(), apply)
    assert result.outcome is Outcome.APPLIED
    assert result.not_confirmed
    assert isinstance(result.error, VaultTokenError)
    assert states(server) == ["pending"]


def test_response_lost_after_outcome_write(server, flow):
    apply = Recorder(server)

    def apply_and_arm():
        # Armed here so the pending write passes and only the outcome write loses its response.
        server.inject(f"secret/data/{PATH}", method="POST", drop=True, after=True)
        return apply()

    result = flow.set_secret(puk_request(), apply_and_arm)
    assert result.not_confirmed
    assert states(server) == ["pending", "applied"]
    retried = result.retry_record()
    # The outcome did land; a retry finds a newer version and reports it, never overwriting blindly.
    assert isinstance(retried.error, CasConflictError)
    assert retried.error.conflict.current_version == 2
    assert states(server) == ["pending", "applied"]


def test_conflict_on_pending_write(server, flow):
    server.conflict_next_write(PATH, by="bob")
    apply = Recorder(server)
    result = flow.set_secret(puk_request(), apply)
    assert result.outcome is Outcome.CONFLICT
    assert apply.calls == 0
    assert result.conflict.current_version == 1
    assert result.conflict.written_at
    assert "Nothing was sent" in result.message
    assert len(server.requests_to("POST", f"secret/data/{PATH}")) == 1


def test_conflict_then_confirmed_write(server, flow):
    server.conflict_next_write(PATH, by="bob")
    first = flow.set_secret(puk_request(), Recorder(server))
    second = flow.set_secret(puk_request(), Recorder(server), confirmed_version=first.conflict.current_version)
    assert second.outcome is Outcome.APPLIED
    posts = server.requests_to("POST", f"secret/data/{PATH}")
    assert [p["json"]["options"]["cas"] for p in posts] == [0, 1, 2]


def test_conflict_names_other_writer(server, flow):
    flow.set_secret(puk_request("11111111"), Recorder(server))
    other = EscrowFlow(make_store(server, server.add_token(writer_rules(), display_name="ldap-bob")), user="bob")

    def apply_while_bob_writes():
        other.set_secret(puk_request("22222222"), Recorder(server))
        return ApplyOutcome.applied(decode_sw(0x9000))

    result = flow.set_secret(puk_request("33333333"), apply_while_bob_writes)
    assert result.not_confirmed
    assert isinstance(result.error, CasConflictError)
    assert result.error.conflict.written_by == "bob (Vault: ldap-bob)"
    assert result.error.conflict.state == "applied"


def test_write_only_policy_works(server, flow):
    result = flow.set_secret(puk_request(), Recorder(server))
    assert result.confirmed
    reads = server.requests_to("GET", "secret/data/")
    assert reads == []
    with pytest.raises(VaultPermissionError) as caught:
        flow.read_value_on_file(TOKEN_ID, SecretKind.PIV_PUK)
    assert DATA_API_PATH in str(caught.value)
    assert "read" in str(caught.value)


def test_on_file_from_metadata(server, flow):
    flow.set_secret(puk_request(), Recorder(server))
    on_file = flow.on_file(TOKEN_ID, SecretKind.PIV_PUK)
    assert on_file.applied_version == 2
    assert on_file.words() == "on file (v2)"


def test_missing_metadata_update_capability(server):
    token = server.add_token(writer_rules(update_metadata=False))
    flow = EscrowFlow(make_store(server, token), user="alice")
    result = flow.set_secret(puk_request(), Recorder(server))
    assert result.confirmed
    assert server.requests_to("POST", "secret/metadata/") == []
    assert flow.on_file(TOKEN_ID, SecretKind.PIV_PUK).words() == "on file (v2, state not readable)"


def test_preflight_names_missing_capability(server):
    token = server.add_token({f"secret/data/keytriage/tokens/*": ["create"], "secret/metadata/keytriage/tokens/*": ["read"]})
    apply = Recorder(server)
    result = EscrowFlow(make_store(server, token), user="alice").set_secret(puk_request(), apply)
    assert result.outcome is Outcome.REFUSED
    assert isinstance(result.error, VaultPermissionError)
    assert result.error.capability == "update"
    assert DATA_API_PATH in str(result.error)
    assert apply.calls == 0


def test_preflight_needs_metadata_read(server):
    token = server.add_token({"secret/data/keytriage/tokens/*": ["create", "update"]})
    result = EscrowFlow(make_store(server, token), user="alice").set_secret(puk_request(), Recorder(server))
    assert result.outcome is Outcome.REFUSED
    assert result.error.capability == "read"
    assert f"/v1/secret/metadata/{PATH}" in str(result.error)


def test_wrong_mount_exact_api_path(server):
    token = server.add_token(writer_rules(mount="kv", base="helpdesk/tokens"))
    server.enable_kv("kv")
    store = make_store(server, token, mount="kv", base="helpdesk/tokens")
    result = EscrowFlow(store, user="alice").set_secret(puk_request(), Recorder(server))
    assert result.confirmed
    posts = server.requests_to("POST", "kv/data/")
    assert posts[0]["raw_path"].replace("%3A", ":") == f"/v1/kv/data/helpdesk/tokens/{TOKEN_ID}/piv-puk"


def test_forbidden_write_names_path_and_capability(server):
    token = server.add_token(writer_rules(mount="kv", base="helpdesk/tokens"))
    server.enable_kv("kv")
    server.inject("kv/data/*", method="POST", status=403, errors=["1 error occurred:\n\t* permission denied\n\n"])
    store = make_store(server, token, mount="kv", base="helpdesk/tokens")
    result = EscrowFlow(store, user="alice").set_secret(puk_request(), Recorder(server))
    assert result.outcome is Outcome.NOT_ESCROWED
    assert isinstance(result.error, VaultPermissionError)
    message = str(result.error)
    assert f"/v1/kv/data/helpdesk/tokens/{TOKEN_ID}/piv-puk" in message
    assert "create capability" in message
    assert result.value == Secret("73914826")


def test_unmounted_mount_refused_with_path(server):
    store = make_store(server, server.root_token, mount="nomount")
    result = EscrowFlow(store, user="alice").set_secret(puk_request(), Recorder(server))
    assert result.outcome is Outcome.REFUSED
    assert f"/v1/nomount/metadata/{PATH}" in str(result.error)
    assert "mount" in str(result.error)


def test_cas_required_mount(server):
    server.enable_kv("strict", cas_required=True)
    store = make_store(server, server.root_token, mount="strict")
    result = EscrowFlow(store, user="alice").set_secret(puk_request(), Recorder(server))
    assert result.outcome is Outcome.APPLIED
    assert result.confirmed
    assert [v["state"] for v in server.versions("strict", PATH)] == ["pending", "applied"]


def test_cas_required_key_with_existing_versions(server, flow, writer):
    flow.set_secret(puk_request("11111111"), Recorder(server))
    root = make_store(server, server.root_token)
    root.client.secrets.kv.v2.update_metadata(PATH, cas_required=True)
    result = flow.set_secret(puk_request("22222222"), Recorder(server))
    assert result.confirmed
    assert states(server) == ["pending", "applied", "pending", "applied"]


def test_max_versions_warning(server, flow):
    root = make_store(server, server.root_token)
    root.client.secrets.kv.v2.update_metadata(PATH, max_versions=3)
    result = flow.set_secret(puk_request(), Recorder(server))
    assert any("keeps only 3 versions" in w for w in result.warnings)


def test_mount_max_versions_warning(server):
    server.enable_kv("small", max_versions=2)
    result = EscrowFlow(make_store(server, server.root_token, mount="small"), user="a").set_secret(puk_request(), Recorder(server))
    assert any("small mount keeps only 2" in w for w in result.warnings)


def test_default_max_versions_no_warning(server):
    result = EscrowFlow(make_store(server, server.root_token), user="a").set_secret(puk_request(), Recorder(server))
    assert result.warnings == []


def test_read_value_on_file(server):
    token = server.add_token(writer_rules(read_values=True))
    flow = EscrowFlow(make_store(server, token), user="alice")
    flow.set_secret(puk_request("11111111"), Recorder(server))
    flow.set_secret(puk_request("22222222"), Recorder(server, error=TransmitLostError("lost")))
    value, version = flow.read_value_on_file(TOKEN_ID, SecretKind.PIV_PUK)
    assert isinstance(value, Secret)
    assert value == Secret("11111111")
    assert version == 2


def test_read_value_nothing_on_file(flow):
    assert flow.read_value_on_file(TOKEN_ID, SecretKind.PIV_PUK) is None


def test_audit_callback_records(server, writer):
    records = []

    class Audit:
        def record(self, operation, outcome, **fields):
            records.append((operation, outcome, fields))

    flow = EscrowFlow(make_store(server, writer), user="alice", audit=Audit())
    flow.set_secret(puk_request(), Recorder(server))
    operation, outcome, fields = records[-1]
    assert operation == "escrow-set-piv-puk"
    assert outcome == "applied"
    assert fields["escrow_version"] == 2
    assert fields["token_id"] == str(TOKEN_ID)


def test_client_builder_sends_namespace(server, writer):
    config = VaultConfig(address=server.url, token=Secret(writer), namespace="team-a")
    build_client(config).auth.token.lookup_self()
    assert server.requests[-1]["namespace"] == "team-a"
