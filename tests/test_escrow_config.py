"""Vault settings, the hvac client built from them, login helpers and the Vault status."""

from __future__ import annotations

import pytest

from tui.errors import PolicyError
from tui.escrow.config import VaultConfig, build_client, load_vault_config, login_ldap, login_token, login_userpass
from tui.escrow.errors import VaultNotConfiguredError, VaultTokenError
from tui.escrow.memory import MemoryStore
from tui.escrow.status import VaultState, VaultStatus, check_status
from tui.escrow.store import VaultStore
from tui.secret import Secret
from vault_server import VaultTestServer, writer_rules


@pytest.fixture
def server():
    with VaultTestServer() as running:
        yield running


def load(overrides=None, env=None, file_config=None, home=None, tmp_path=None):
    return load_vault_config(overrides, env=env or {}, file_config=file_config or {}, home=home or tmp_path)


def test_defaults_not_configured(tmp_path):
    config = load(home=tmp_path)
    assert not config.configured
    assert config.mount == "secret"
    assert config.base_path == "keytriage/tokens"
    assert config.token is None


def test_precedence_file_env_override(tmp_path):
    file_config = {"vault": {"address": "https://file:8200", "mount": "kv", "namespace": "file-ns", "base_path": "a/b"}}
    env = {"VAULT_ADDR": "https://env:8200", "VAULT_NAMESPACE": "env-ns"}
    config = load({"address": "https://cli:8200"}, env, file_config, tmp_path)
    assert config.address == "https://cli:8200"
    assert config.namespace == "env-ns"
    assert config.mount == "kv"
    assert config.base_path == "a/b"


def test_token_sources(tmp_path):
    (tmp_path / ".vault-token").write_text("hvs.from-file\n")
    from_file = load(home=tmp_path)
    assert from_file.token == Secret("hvs.from-file")
    assert from_file.token_source == "~/.vault-token"
    from_env = load(env={"VAULT_TOKEN": "hvs.from-env"}, home=tmp_path)
    assert from_env.token == Secret("hvs.from-env")
    from_override = load({"token": Secret("hvs.override")}, {"VAULT_TOKEN": "hvs.from-env"}, home=tmp_path)
    assert from_override.token_source == "override"


def test_token_masked_in_repr(tmp_path):
    config = load(env={"VAULT_TOKEN": "hvs.canary-token-123"}, home=tmp_path)
    assert "canary" not in repr(config)
    assert "canary" not in str(config)


def test_token_in_file_rejected(tmp_path):
    with pytest.raises(PolicyError) as caught:
        load(file_config={"vault": {"token": "hvs.x"}}, home=tmp_path)
    assert "hvs.x" not in str(caught.value)


@pytest.mark.parametrize("bad", [{"mount": "secret/data"}, {"base_path": "data/keytriage"}, {"auth_method": "kerberos"},
                                 {"client_cert": "/c.pem"}, {"unknown": 1}, {"skip_verify": "maybe"}])
def test_invalid_settings(tmp_path, bad):
    with pytest.raises(PolicyError):
        load(file_config={"vault": bad}, home=tmp_path)


def test_tls_settings_explicit(tmp_path):
    env = {"VAULT_ADDR": "https://v:8200", "VAULT_CACERT": "/ca.pem", "VAULT_CAPATH": "/cas",
           "VAULT_CLIENT_CERT": "/c.pem", "VAULT_CLIENT_KEY": "/k.pem"}
    config = load(env=env, home=tmp_path)
    assert config.verify() == "/ca.pem"
    assert config.cert() == ("/c.pem", "/k.pem")
    skip = load(env={**env, "VAULT_SKIP_VERIFY": "true"}, home=tmp_path)
    assert skip.verify() is False
    client = build_client(config)
    assert client.adapter._kwargs["verify"] == "/ca.pem"
    assert client.adapter._kwargs["cert"] == ("/c.pem", "/k.pem")


def test_build_client_needs_address():
    with pytest.raises(VaultNotConfiguredError):
        build_client(VaultConfig())


def test_build_client_ignores_env_token(monkeypatch):
    monkeypatch.setenv("VAULT_TOKEN", "hvs.ambient")
    client = build_client(VaultConfig(address="http://127.0.0.1:1"))
    assert client.token == ""


def test_login_token(server):
    token = server.add_token(writer_rules(), display_name="ldap-alice", ttl=3120)
    config, info = login_token(VaultConfig(address=server.url), Secret(token))
    assert info.display_name == "ldap-alice"
    assert info.ttl_words() in ("51m", "52m")
    assert config.token == Secret(token)


def test_login_token_invalid(server):
    with pytest.raises(VaultTokenError) as caught:
        login_token(VaultConfig(address=server.url), Secret("hvs.not-a-token"))
    assert "lookup-self" in str(caught.value)
    assert "hvs.not-a-token" not in str(caught.value)


def test_login_userpass(server):
    server.add_userpass_user("alice", "pw-alice", writer_rules())
    config, info = login_userpass(VaultConfig(address=server.url), "alice", Secret("pw-alice"))
    assert info.display_name == "userpass-alice"
    assert config.token_source == "login"


def test_login_userpass_wrong_password(server):
    server.add_userpass_user("alice", "pw-alice", writer_rules())
    with pytest.raises(VaultTokenError) as caught:
        login_userpass(VaultConfig(address=server.url), "alice", Secret("wrong-pw"))
    assert "wrong-pw" not in str(caught.value)
    assert "/v1/auth/userpass/login/alice" in str(caught.value)


def test_login_ldap(server):
    server.add_ldap_user("bob", "pw-bob", writer_rules(), mount="corp-ldap")
    _, info = login_ldap(VaultConfig(address=server.url, auth_mount="corp-ldap"), "bob", Secret("pw-bob"))
    assert info.display_name == "ldap-bob"


def store_for(server, token, **kwargs):
    return VaultStore.from_config(VaultConfig(address=server.url, token=Secret(token), timeout=2, **kwargs))


def test_status_ok_writer(server):
    token = server.add_token(writer_rules(), display_name="ldap-alice", ttl=3150)
    status = check_status(store_for(server, token))
    assert status.state is VaultState.OK
    assert status.role == "writer"
    assert status.usable
    assert not status.can_read_values
    assert status.words() == "Vault: ok (writer, 52m)"


def test_status_read_write(server):
    status = check_status(store_for(server, server.add_token(writer_rules(read_values=True))))
    assert status.role == "read-write"
    assert status.can_read_values


def test_status_root_no_expiry(server):
    assert check_status(store_for(server, server.root_token)).words() == "Vault: ok (read-write, no expiry)"


def test_status_not_configured():
    status = check_status(None)
    assert status.state is VaultState.NOT_CONFIGURED
    assert status.words() == "Vault: not configured"
    assert "VAULT_ADDR" in status.detail


@pytest.mark.parametrize(("flag", "value", "state"), [("sealed", True, VaultState.SEALED), ("initialized", False, VaultState.UNINITIALIZED)])
def test_status_sealed_and_uninitialised(server, flag, value, state):
    setattr(server, flag, value)
    status = check_status(store_for(server, server.root_token))
    assert status.state is state
    assert not status.usable


def test_status_standby_with_active(server):
    server.standby = True
    status = check_status(store_for(server, server.root_token))
    assert status.state is VaultState.OK
    assert "standby node" in status.words()


def test_status_standby_without_active(server):
    server.standby = True
    server.standby_without_active = True
    status = check_status(store_for(server, server.root_token))
    assert status.state is VaultState.STANDBY


def test_status_unreachable(server):
    store = store_for(server, server.root_token)
    server.stop()
    status = check_status(store)
    assert status.state is VaultState.UNREACHABLE
    assert status.words() == "Vault: unreachable"


def test_status_token_expired(server):
    token = server.add_token(writer_rules())
    server.revoke(token)
    status = check_status(store_for(server, token))
    assert status.state is VaultState.TOKEN_INVALID
    assert "Log in" in status.detail


def test_status_no_permission(server):
    token = server.add_token({"secret/data/other/*": ["create"]}, display_name="ldap-eve")
    status = check_status(store_for(server, token))
    assert status.state is VaultState.NO_PERMISSION
    assert "/v1/secret/data/keytriage/tokens/<token ID>/<kind>" in status.detail


def test_status_lab_store():
    status = check_status(MemoryStore())
    assert status.words() == "Vault (lab): ok (read-write)"


def test_status_words_for_error_states():
    assert VaultStatus(VaultState.SEALED).words() == "Vault: sealed"
    assert VaultStatus(VaultState.TOKEN_INVALID).words() == "Vault: token invalid or expired"
