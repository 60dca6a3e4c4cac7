"""Building the escrow context: where records go, the Vault header words, login, lab seeding, value on file.

Vault cases run the real hvac client against tests/vault_server.py on 127.0.0.1.
"""

from __future__ import annotations

import argparse

import pytest

from tui.cli import build_parser
from tui.errors import PolicyError
from tui.escrow.context import (
    EscrowUnavailableError,
    build_escrow_context,
    lab_base_path,
    vault_overrides_from_args,
)
from tui.escrow.errors import VaultTokenError
from tui.escrow.records import RecordState, SecretKind
from tui.escrow.status import VaultState
from tui.secret import Secret
from tui.settings import SiteSettings
from vault_server import VaultTestServer, writer_rules

TOKEN_ID = "cplc:4790516856781A2B3C4D"


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def home(tmp_path):
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def server():
    with VaultTestServer() as vault:
        yield vault


def build(server: VaultTestServer | None, home, *, token: str | None = None, lab: str | None = None,
          overrides: dict | None = None, settings: SiteSettings | None = None, clock=None):
    env = {"VAULT_TOKEN": token} if token else {}
    values = dict(overrides or {})
    if server is not None:
        values.setdefault("address", server.url)
    values.setdefault("timeout", 2)
    kwargs = {"clock": clock} if clock is not None else {}
    return build_escrow_context(settings or SiteSettings(), lab, values, env=env, home=home, user="alice", **kwargs)


# --- where records go ---------------------------------------------------------------------


def test_lab_uses_memory_store(home):
    context = build(None, home, lab="yubikey-healthy")
    assert context.memory
    assert context.store.base_path == "lab/keytriage/tokens"
    assert context.header_words() == "Vault: lab store"
    assert context.status.usable


def test_lab_ignores_broken_vault_config(home):
    settings = SiteSettings(raw={"vault": {"mount": "secret/data"}})
    context = build(None, home, lab="healthy", settings=settings)
    assert context.memory
    assert context.flow is not None


def test_lab_vault_goes_under_lab(server, home):
    token = server.add_token(writer_rules(base="lab/helpdesk/tokens"), display_name="writer")
    context = build(server, home, token=token, lab="healthy", overrides={"lab_vault": True, "base_path": "helpdesk/tokens"})
    assert not context.memory
    assert context.store.base_path == "lab/helpdesk/tokens"
    assert context.header_words().startswith("Vault (lab): ok (writer, ")


def test_lab_base_path_prefix():
    assert lab_base_path("keytriage/tokens") == "lab/keytriage/tokens"
    assert lab_base_path("/lab/keytriage/tokens/") == "lab/keytriage/tokens"


def test_production_uses_vault_mount_and_base(server, home):
    server.enable_kv("kv")
    token = server.add_token(writer_rules("kv", "helpdesk/tokens"), display_name="writer")
    context = build(server, home, token=token, overrides={"mount": "kv", "base_path": "helpdesk/tokens"})
    assert context.store.data_path(TOKEN_ID, SecretKind.PIV_PUK) == f"kv/data/helpdesk/tokens/{TOKEN_ID}/piv-puk"
    assert context.status.usable
    assert context.require_flow() is context.flow


# --- header words for each Vault state ---------------------------------------------------------


def test_header_not_configured(home):
    context = build(None, home)
    assert context.header_words() == "Vault: not configured"
    with pytest.raises(EscrowUnavailableError, match="No Vault address is configured"):
        context.require_flow()


def test_header_invalid_config(home):
    settings = SiteSettings(raw={"vault": {"address": "http://127.0.0.1:1", "token": "x"}})
    context = build(None, home, settings=settings)
    assert context.header_words() == "Vault: not configured"
    assert "token is not allowed in the config file" in context.status.detail


def test_header_unreachable(home):
    stopped = VaultTestServer().start()
    url = stopped.url
    stopped.stop()
    context = build(None, home, token="hvs.x", overrides={"address": url})
    assert context.header_words() == "Vault: unreachable"
    with pytest.raises(EscrowUnavailableError, match="Cannot connect to Vault"):
        context.require_flow()


def test_header_sealed(server, home):
    token = server.add_token(writer_rules(), display_name="writer")
    server.sealed = True
    context = build(server, home, token=token)
    assert context.header_words() == "Vault: sealed"
    with pytest.raises(EscrowUnavailableError, match="sealed"):
        context.require_flow()


def test_header_not_logged_in(server, home):
    context = build(server, home)
    assert context.header_words() == "Vault: not logged in"
    assert "press l to log in" in context.status.detail


def test_header_token_revoked(server, home):
    token = server.add_token(writer_rules(), display_name="writer")
    server.revoke(token)
    context = build(server, home, token=token)
    assert context.status.state is VaultState.TOKEN_INVALID
    assert context.header_words() == "Vault: token invalid or expired"


def test_header_no_permission(server, home):
    token = server.add_token({"secret/data/other/*": ["create", "update"]}, display_name="other")
    context = build(server, home, token=token)
    assert context.header_words() == "Vault: no permission on the path"
    assert "secret/data/keytriage/tokens/<token ID>/<kind>" in context.status.detail


def test_header_ok_counts_ttl_locally(server, home):
    token = server.add_token(writer_rules(), display_name="writer", ttl=3600)
    clock = FakeClock()
    context = build(server, home, token=token, clock=clock)
    requests_before = len(server.requests)
    assert context.header_words() in ("Vault: ok (writer, 59m)", "Vault: ok (writer, 1h00m)")

    clock.now += 3600 - 8 * 60
    assert context.header_words() in ("Vault: ok (writer, 7m)", "Vault: ok (writer, 8m)")

    clock.now += 8 * 60
    assert context.header_words() == "Vault: token expired"
    with pytest.raises(EscrowUnavailableError, match="expired"):
        context.require_flow()
    assert len(server.requests) == requests_before


def test_header_root_token_no_expiry(server, home):
    context = build(server, home, token=server.root_token)
    assert context.header_words() == "Vault: ok (root, no expiry)"


def test_header_reader_is_read_only(server, home):
    rules = {"secret/data/keytriage/tokens/*": ["read"], "secret/metadata/keytriage/tokens/*": ["read"]}
    context = build(server, home, token=server.add_token(rules, display_name="auditor"))
    assert context.header_words().startswith("Vault: read only (auditor, ")
    with pytest.raises(EscrowUnavailableError):
        context.require_flow()


# --- login ----------------------------------------------------------------------------------


def test_login_userpass_keeps_token_in_memory(server, home):
    server.add_userpass_user("alice", "correct horse", writer_rules())
    context = build(server, home)
    info = context.login("userpass", username="alice", secret=Secret("correct horse"))
    assert info.display_name == "userpass-alice"
    assert context.config.token_source == "login"
    assert context.status.usable
    assert context.header_words().startswith("Vault: ok (userpass-alice, ")
    assert list(home.iterdir()) == []


def test_login_wrong_password(server, home):
    server.add_userpass_user("alice", "correct horse", writer_rules())
    context = build(server, home)
    with pytest.raises(VaultTokenError, match="wrong user name or password"):
        context.login("userpass", username="alice", secret=Secret("battery staple"))
    assert context.header_words() == "Vault: not logged in"


def test_login_ldap_and_token(server, home):
    server.add_ldap_user("bob", "s3cret-pass", writer_rules())
    context = build(server, home)
    assert context.login("ldap", username="bob", secret=Secret("s3cret-pass")).display_name == "ldap-bob"

    token = server.add_token(writer_rules(), display_name="pasted")
    assert context.login("token", secret=Secret(token)).display_name == "pasted"
    assert context.header_words().startswith("Vault: ok (pasted, ")


def test_login_refused_in_lab_store(home):
    context = build(None, home, lab="healthy")
    with pytest.raises(EscrowUnavailableError, match="needs no Vault login"):
        context.login("token", secret=Secret("hvs.x"))


def test_login_unknown_method(server, home):
    with pytest.raises(PolicyError, match="not supported"):
        build(server, home).login("oidc", secret=Secret("x"))


# --- lab seeding and value on file ------------------------------------------------------------


def test_seed_lab_writes_applied_once(home):
    context = build(None, home, lab="pin-locked-puk")
    escrow = {"piv-puk": Secret("73910264", "PIV PUK"), "admin-key": Secret("1AB01AB0000000000000000000005354", "admin key"),
              "unknown-kind": Secret("x")}
    assert context.seed_lab(TOKEN_ID, escrow) == [SecretKind.PIV_PUK, SecretKind.ADMIN_KEY]
    assert context.seed_lab(TOKEN_ID, escrow) == []

    record, value, version = context.store.read_version(TOKEN_ID, SecretKind.PIV_PUK)
    assert record.state is RecordState.APPLIED
    assert version == 1
    assert value == Secret("73910264")
    assert context.value_on_file(TOKEN_ID, SecretKind.ADMIN_KEY) == Secret(bytes.fromhex("1AB01AB0000000000000000000005354"))
    assert context.on_file(TOKEN_ID, SecretKind.PIV_PUK).words() == "on file (v1)"


def test_seed_lab_refused_outside_lab(server, home):
    context = build(server, home, token=server.root_token)
    with pytest.raises(PolicyError, match="only into a lab store"):
        context.seed_lab(TOKEN_ID, {"piv-puk": Secret("73910264")})
    assert server.requests_to("POST", "secret/data/") == []


def test_value_on_file_needs_read_policy(server, home):
    server.add_token(writer_rules(), display_name="writer", token="hvs.writer-token")
    server.add_token(writer_rules(read_values=True), display_name="reader", token="hvs.reader-token")
    root = build(server, home, token=server.root_token)
    from tui.escrow.flow import ApplyOutcome, SetRequest

    root.flow.set_secret(SetRequest(TOKEN_ID, SecretKind.PIV_PUK, Secret("73914826"), "ascii-ff-padded"), ApplyOutcome.applied)

    writer = build(server, home, token="hvs.writer-token")
    assert writer.value_on_file(TOKEN_ID, SecretKind.PIV_PUK) is None
    reader = build(server, home, token="hvs.reader-token")
    assert reader.value_on_file(TOKEN_ID, SecretKind.PIV_PUK) == Secret("73914826")
    assert reader.value_on_file("cplc:0000", SecretKind.PIV_PUK) is None


# --- command line ------------------------------------------------------------------------------


def test_cli_vault_options():
    args = build_parser().parse_args(["--lab", "healthy", "--vault-addr", "https://vault.example:8200", "--vault-mount", "kv",
                                      "--vault-base", "helpdesk/tokens", "--vault-namespace", "it", "--lab-vault"])
    assert vault_overrides_from_args(args) == {
        "address": "https://vault.example:8200", "mount": "kv", "base_path": "helpdesk/tokens", "namespace": "it", "lab_vault": True,
    }


def test_cli_has_no_token_option():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--vault-token", "hvs.x"])
    assert vault_overrides_from_args(argparse.Namespace()) == {}
