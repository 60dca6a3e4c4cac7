"""The Vault-compatible test server, driven by the real hvac client."""

from __future__ import annotations

import hvac
import hvac.exceptions as hx
import pytest
import requests

from vault_server import CAS_MISMATCH, CAS_REQUIRED, VaultTestServer, writer_rules


@pytest.fixture
def server():
    with VaultTestServer() as running:
        yield running


def client(server: VaultTestServer, token: str | None = None, timeout: float = 5) -> hvac.Client:
    return hvac.Client(url=server.url, token=token or server.root_token, timeout=timeout)


def test_server_binds_loopback(server):
    assert server.url.startswith("http://127.0.0.1:")


def test_kv_write_read_versions(server):
    kv = client(server).secrets.kv.v2
    first = kv.create_or_update_secret("a/b", {"value": "one"}, cas=0)
    second = kv.create_or_update_secret("a/b", {"value": "two"}, cas=1)
    assert first["data"]["version"] == 1
    assert second["data"]["version"] == 2
    assert kv.read_secret_version("a/b", raise_on_deleted_version=True)["data"]["data"] == {"value": "two"}
    assert kv.read_secret_version("a/b", version=1, raise_on_deleted_version=True)["data"]["data"] == {"value": "one"}
    metadata = kv.read_secret_metadata("a/b")["data"]
    assert metadata["current_version"] == 2
    assert sorted(metadata["versions"]) == ["1", "2"]


def test_cas_zero_on_existing_key_fails(server):
    kv = client(server).secrets.kv.v2
    kv.create_or_update_secret("a/b", {"value": "one"}, cas=0)
    with pytest.raises(hx.InvalidRequest) as caught:
        kv.create_or_update_secret("a/b", {"value": "two"}, cas=0)
    assert CAS_MISMATCH in str(caught.value)


def test_stale_cas_fails(server):
    kv = client(server).secrets.kv.v2
    kv.create_or_update_secret("a/b", {"value": "one"}, cas=0)
    kv.create_or_update_secret("a/b", {"value": "two"}, cas=1)
    with pytest.raises(hx.InvalidRequest):
        kv.create_or_update_secret("a/b", {"value": "three"}, cas=1)


def test_cas_required_on_mount(server):
    server.enable_kv("strict", cas_required=True)
    kv = client(server).secrets.kv.v2
    with pytest.raises(hx.InvalidRequest) as caught:
        kv.create_or_update_secret("a/b", {"value": "one"}, mount_point="strict")
    assert CAS_REQUIRED in str(caught.value)
    assert kv.create_or_update_secret("a/b", {"value": "one"}, cas=0, mount_point="strict")["data"]["version"] == 1


def test_cas_required_on_key_metadata(server):
    kv = client(server).secrets.kv.v2
    kv.update_metadata("a/b", cas_required=True, max_versions=3, custom_metadata={"owner": "desk"})
    with pytest.raises(hx.InvalidRequest):
        kv.create_or_update_secret("a/b", {"value": "one"})
    metadata = kv.read_secret_metadata("a/b")["data"]
    assert metadata["cas_required"] is True
    assert metadata["max_versions"] == 3
    assert metadata["custom_metadata"] == {"owner": "desk"}


def test_max_versions_prunes_oldest(server):
    kv = client(server).secrets.kv.v2
    kv.update_metadata("a/b", max_versions=2)
    for number in range(3):
        kv.create_or_update_secret("a/b", {"value": str(number)}, cas=number)
    metadata = kv.read_secret_metadata("a/b")["data"]
    assert sorted(metadata["versions"]) == ["2", "3"]
    assert metadata["oldest_version"] == 2


def test_delete_and_undelete_version(server):
    kv = client(server).secrets.kv.v2
    kv.create_or_update_secret("a/b", {"value": "one"})
    kv.delete_latest_version_of_secret("a/b")
    with pytest.raises(hx.InvalidPath):
        kv.read_secret_version("a/b", raise_on_deleted_version=True)
    kv.undelete_secret_versions("a/b", versions=[1])
    assert kv.read_secret_version("a/b", raise_on_deleted_version=True)["data"]["data"]["value"] == "one"


def test_write_only_policy(server):
    token = server.add_token(writer_rules(), display_name="writer")
    kv = client(server, token).secrets.kv.v2
    path = "keytriage/tokens/cplc:1/piv-puk"
    assert kv.create_or_update_secret(path, {"value": "x"}, cas=0)["data"]["version"] == 1
    assert kv.read_secret_metadata(path)["data"]["current_version"] == 1
    with pytest.raises(hx.Forbidden):
        kv.read_secret_version(path, raise_on_deleted_version=True)
    with pytest.raises(hx.Forbidden):
        kv.create_or_update_secret("elsewhere/x", {"value": "x"})


def test_create_without_update_capability(server):
    token = server.add_token({"secret/data/x/*": ["create"]})
    kv = client(server, token).secrets.kv.v2
    kv.create_or_update_secret("x/y", {"value": "1"}, cas=0)
    with pytest.raises(hx.Forbidden):
        kv.create_or_update_secret("x/y", {"value": "2"}, cas=1)


def test_capabilities_self(server):
    token = server.add_token(writer_rules(), display_name="writer")
    response = client(server, token).sys.get_capabilities(paths=["secret/data/keytriage/tokens/a/piv-pin", "secret/metadata/keytriage/tokens/a/piv-pin", "secret/data/other"])
    assert sorted(response["data"]["secret/data/keytriage/tokens/a/piv-pin"]) == ["create", "update"]
    assert response["data"]["secret/metadata/keytriage/tokens/a/piv-pin"] == ["read", "update"]
    assert response["data"]["secret/data/other"] == ["deny"]


def test_plus_glob_and_most_specific_rule(server):
    token = server.add_token({"secret/data/t/+/piv-pin": ["read"], "secret/data/t/*": ["create"], "secret/data/t/x/deny": ["deny"]})
    caps = client(server, token).sys.get_capabilities(paths=["secret/data/t/a/piv-pin", "secret/data/t/a/other", "secret/data/t/x/deny"])["data"]
    assert caps["secret/data/t/a/piv-pin"] == ["read"]
    assert caps["secret/data/t/a/other"] == ["create"]
    assert caps["secret/data/t/x/deny"] == ["deny"]


def test_lookup_self_and_invalid_token(server):
    token = server.add_token({}, display_name="alice", ttl=3000)
    data = client(server, token).auth.token.lookup_self()["data"]
    assert data["display_name"] == "alice"
    assert 0 < data["ttl"] <= 3000
    server.revoke(token)
    with pytest.raises(hx.Forbidden) as caught:
        client(server, token).auth.token.lookup_self()
    assert "invalid token" in str(caught.value)


@pytest.mark.parametrize(("flags", "status"), [
    ({}, 200),
    ({"standby": True}, 429),
    ({"sealed": True}, 503),
    ({"initialized": False}, 501),
])
def test_health_codes(server, flags, status):
    for name, value in flags.items():
        setattr(server, name, value)
    response = client(server).sys.read_health_status(method="GET")
    code = 200 if isinstance(response, dict) else response.status_code
    assert code == status


def test_health_query_overrides(server):
    server.sealed = True
    response = client(server).sys.read_health_status(method="GET", sealed_code=200)
    assert isinstance(response, dict)
    assert response["sealed"] is True


def test_sealed_rejects_requests(server):
    server.sealed = True
    with pytest.raises(hx.VaultDown) as caught:
        client(server).secrets.kv.v2.read_secret_metadata("a")
    assert "sealed" in str(caught.value)


def test_unmounted_path_no_handler(server):
    with pytest.raises(hx.InvalidPath) as caught:
        client(server).secrets.kv.v2.read_secret_metadata("a", mount_point="kv")
    assert "no handler for route" in str(caught.value)


def test_unmounted_path_forbidden_for_writer(server):
    token = server.add_token(writer_rules())
    with pytest.raises(hx.Forbidden):
        client(server, token).secrets.kv.v2.create_or_update_secret("keytriage/tokens/a/piv-pin", {"value": "1"}, cas=0, mount_point="kv")


def test_mounts_listing(server):
    mounts = client(server).sys.list_mounted_secrets_engines()["data"]
    assert mounts["secret/"]["options"]["version"] == "2"


def test_userpass_and_ldap_login(server):
    server.add_userpass_user("alice", "pw-a", writer_rules())
    server.add_ldap_user("bob", "pw-b", writer_rules())
    anonymous = hvac.Client(url=server.url, token="")
    alice = anonymous.auth.userpass.login("alice", "pw-a", use_token=False)["auth"]["client_token"]
    bob = anonymous.auth.ldap.login("bob", "pw-b", use_token=False)["auth"]["client_token"]
    assert client(server, alice).auth.token.lookup_self()["data"]["display_name"] == "userpass-alice"
    assert client(server, bob).auth.token.lookup_self()["data"]["display_name"] == "ldap-bob"
    with pytest.raises(hx.InvalidRequest):
        anonymous.auth.userpass.login("alice", "wrong", use_token=False)


def test_fault_status_then_recovers(server):
    server.inject("secret/metadata/*", method="GET", status=500, errors=["boom"])
    kv = client(server).secrets.kv.v2
    kv.create_or_update_secret("a", {"value": "1"})
    with pytest.raises(hx.InternalServerError):
        kv.read_secret_metadata("a")
    assert kv.read_secret_metadata("a")["data"]["current_version"] == 1


def test_fault_timeout(server):
    server.inject("sys/health", delay=3)
    with pytest.raises(requests.exceptions.Timeout):
        client(server, timeout=0.3).sys.read_health_status(method="GET")


def test_fault_drop_connection(server):
    server.inject("auth/token/lookup-self", drop=True)
    with pytest.raises(requests.exceptions.ConnectionError):
        client(server).auth.token.lookup_self()


def test_fault_after_write_keeps_write(server):
    server.inject("secret/data/a", method="POST", status=502, after=True)
    kv = client(server).secrets.kv.v2
    with pytest.raises(hx.BadGateway):
        kv.create_or_update_secret("a", {"value": "1"}, cas=0)
    assert server.kv("secret", "a").current_version == 1


def test_conflict_next_write(server):
    server.conflict_next_write("a")
    kv = client(server).secrets.kv.v2
    with pytest.raises(hx.InvalidRequest):
        kv.create_or_update_secret("a", {"value": "mine"}, cas=0)
    assert server.versions("secret", "a")[0]["set_by"] == "other-technician"
    assert kv.create_or_update_secret("a", {"value": "mine"}, cas=1)["data"]["version"] == 2


def test_error_body_shape(server):
    response = requests.get(f"{server.url}/v1/secret/data/missing", headers={"X-Vault-Token": server.root_token}, timeout=5)
    assert response.status_code == 404
    assert response.json() == {"errors": []}
    response = requests.get(f"{server.url}/v1/secret/data/x", timeout=5)
    assert response.status_code == 403
    assert "permission denied" in response.json()["errors"][0]
