"""Vault connection settings, the hvac client built from them, and the login helpers.

Settings come from three sources in rising precedence: the `[vault]` table of
the config file, the environment (the variables the `vault` CLI reads), and a
dict of command-line style overrides. hvac 2.4 reads `VAULT_ADDR`,
`VAULT_TOKEN`, the CA and client-certificate variables itself but not
`VAULT_NAMESPACE` or `VAULT_SKIP_VERIFY`, and it reads some of them at import
time, so every value is resolved here and passed to `hvac.Client` explicitly.

The Vault token is a `Secret` kept in memory only. It is never read from the
config file, never written anywhere, and never put in a message.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tui.errors import PolicyError
from tui.escrow.errors import (
    VaultNotConfiguredError,
    VaultPathError,
    VaultPermissionError,
    VaultRequestError,
    VaultTokenError,
    decode_vault_error,
)
from tui.secret import Secret
from tui.settings import load_config_file

DEFAULT_MOUNT = "secret"
DEFAULT_BASE_PATH = "keytriage/tokens"
DEFAULT_LAB_BASE_PATH = "lab/keytriage/tokens"
DEFAULT_TIMEOUT = 10.0
# A secret whose versions Vault prunes below this count can lose the record of
# the applied value after a few failed attempts, so pre-flight warns.
DEFAULT_MIN_VERSIONS = 5

# [vault] table keys, also accepted as overrides. "token" is override-only.
FILE_KEYS = frozenset({
    "address", "namespace", "mount", "base_path", "ca_cert", "ca_path", "skip_verify",
    "client_cert", "client_key", "timeout", "auth_method", "auth_mount", "username", "min_versions",
    "show_new_values",
})
AUTH_METHODS = ("token", "userpass", "ldap")

# Environment variable -> setting, as the vault CLI names them.
ENV_KEYS = {
    "VAULT_ADDR": "address",
    "VAULT_NAMESPACE": "namespace",
    "VAULT_CACERT": "ca_cert",
    "VAULT_CAPATH": "ca_path",
    "VAULT_SKIP_VERIFY": "skip_verify",
    "VAULT_CLIENT_CERT": "client_cert",
    "VAULT_CLIENT_KEY": "client_key",
    "VAULT_CLIENT_TIMEOUT": "timeout",
}


@dataclass
class VaultConfig:
    """Where the escrow records live and how to reach and authenticate to Vault.

    `mount` is the KV v2 mount (no slashes) and `base_path` the folder under it;
    a record's data path is `<mount>/data/<base_path>/<token ID>/<kind>`.
    `token_source` names where the token came from ("VAULT_TOKEN", "~/.vault-token",
    "override", "login"), for status lines. `show_new_values` makes the UI show
    a newly set PUK once after it is escrowed; by default it stays in Vault only.
    """

    address: str | None = None
    token: Secret | None = field(default=None, repr=False)
    token_source: str | None = None
    namespace: str | None = None
    mount: str = DEFAULT_MOUNT
    base_path: str = DEFAULT_BASE_PATH
    ca_cert: str | None = None
    ca_path: str | None = None
    skip_verify: bool = False
    client_cert: str | None = None
    client_key: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    auth_method: str = "token"
    auth_mount: str | None = None
    username: str | None = None
    min_versions: int = DEFAULT_MIN_VERSIONS
    show_new_values: bool = False

    @property
    def configured(self) -> bool:
        """True when a Vault address is set."""
        return bool(self.address)

    def verify(self) -> bool | str:
        """Return the `verify` argument for requests: False, a CA file or directory, or True."""
        if self.skip_verify:
            return False
        return self.ca_cert or self.ca_path or True

    def cert(self) -> tuple[str, str] | None:
        """Return the client certificate and key pair for mutual TLS, or None."""
        if self.client_cert and self.client_key:
            return (self.client_cert, self.client_key)
        return None

    def with_token(self, token: Secret, source: str) -> VaultConfig:
        """Return a copy that authenticates with `token`."""
        return replace(self, token=token, token_source=source)


def _parse_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("", "0", "false", "no", "off"):
        return False
    raise PolicyError(f"{name} must be true or false, got {value!r}")


def _apply(values: dict[str, Any], source: str, settings: Mapping[str, Any]) -> None:
    for key, value in settings.items():
        if key == "token":
            continue
        if key not in FILE_KEYS:
            raise PolicyError(f"{source}: unknown Vault setting {key!r}; use one of {', '.join(sorted(FILE_KEYS))}")
        values[key] = value


def _normalise(values: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    if "mount" in out:
        out["mount"] = str(out["mount"]).strip("/")
        if not out["mount"] or "/" in out["mount"]:
            raise PolicyError(f"Vault mount {values['mount']!r} is invalid: give the KV v2 mount name alone, for example 'secret' (not 'secret/data')")
    if "base_path" in out:
        out["base_path"] = str(out["base_path"]).strip("/")
        if out["base_path"].split("/")[0] in ("data", "metadata"):
            raise PolicyError(f"Vault base_path {values['base_path']!r} starts with data/ or metadata/; give the folder under the mount, for example 'keytriage/tokens'")
    if "skip_verify" in out:
        out["skip_verify"] = _parse_bool("skip_verify (VAULT_SKIP_VERIFY)", out["skip_verify"])
    if "show_new_values" in out:
        out["show_new_values"] = _parse_bool("[vault] show_new_values", out["show_new_values"])
    if "timeout" in out:
        try:
            out["timeout"] = float(out["timeout"])
        except (TypeError, ValueError):
            raise PolicyError(f"Vault timeout must be a number of seconds, got {values['timeout']!r}") from None
    if "min_versions" in out:
        out["min_versions"] = int(out["min_versions"])
    if out.get("auth_method", "token") not in AUTH_METHODS:
        raise PolicyError(f"Vault auth_method {out['auth_method']!r} is not supported; use one of {', '.join(AUTH_METHODS)}")
    if bool(out.get("client_cert")) != bool(out.get("client_key")):
        raise PolicyError("Vault client_cert and client_key (VAULT_CLIENT_CERT, VAULT_CLIENT_KEY) must be set together")
    for key in ("address", "namespace", "ca_cert", "ca_path", "client_cert", "client_key", "username", "auth_mount"):
        if key in out and out[key] is not None:
            out[key] = str(out[key]) or None
    return out


def _token_file(home: Path) -> Path:
    return home / ".vault-token"


def load_vault_config(overrides: Mapping[str, Any] | None = None, *, env: Mapping[str, str] | None = None,
                      file_config: Mapping[str, Any] | None = None, home: Path | None = None) -> VaultConfig:
    """Build the Vault settings from the config file, the environment and `overrides`.

    `file_config` is the whole parsed config file (read with
    `tui.settings.load_config_file()` when None); `env` defaults to
    `os.environ` and `home` to the user's home directory (for `~/.vault-token`).
    `overrides` uses the `[vault]` key names plus "token" (a `Secret` or text).
    Raises `PolicyError` for an unknown key, a bad value, or a token in the file.
    """
    env = os.environ if env is None else env
    file_config = load_config_file() if file_config is None else file_config
    overrides = overrides or {}
    home = home or Path.home()

    table = file_config.get("vault", {})
    if not isinstance(table, Mapping):
        raise PolicyError("[vault] in the config file must be a table")
    if "token" in table:
        raise PolicyError("[vault] token is not allowed in the config file: a Vault token must not be stored on disk in clear. Use VAULT_TOKEN, ~/.vault-token or log in.")

    values: dict[str, Any] = {}
    _apply(values, "[vault] in the config file", table)
    _apply(values, "environment", {key: env[name] for name, key in ENV_KEYS.items() if env.get(name)})
    _apply(values, "overrides", {k: v for k, v in overrides.items() if v is not None})
    config = VaultConfig(**_normalise(values))

    token, source = _resolve_token(overrides.get("token"), env, home)
    if token is not None:
        config = config.with_token(token, source)
    return config


def _resolve_token(override: Any, env: Mapping[str, str], home: Path) -> tuple[Secret | None, str | None]:
    if override is not None:
        token = override if isinstance(override, Secret) else Secret(str(override), "Vault token")
        return token, "override"
    if env.get("VAULT_TOKEN"):
        return Secret(env["VAULT_TOKEN"], "Vault token"), "VAULT_TOKEN"
    path = _token_file(home)
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        raise PolicyError(f"cannot read {path}: {exc.strerror}. Fix its permissions or set VAULT_TOKEN.") from None
    return (Secret(text, "Vault token"), "~/.vault-token") if text else (None, None)


def build_client(config: VaultConfig, *, session: Any = None) -> Any:
    """Return an `hvac.Client` for `config`, every TLS and namespace setting passed explicitly.

    Raises `VaultNotConfiguredError` when no address is set. The client gets an
    empty token when none is configured, so hvac does not fall back to its own
    environment lookup.
    """
    import hvac

    if not config.configured:
        raise VaultNotConfiguredError("No Vault address is configured. Set VAULT_ADDR or [vault] address in the config file, or use lab mode.")
    token = config.token.reveal_text() if config.token is not None else ""
    return hvac.Client(
        url=config.address,
        token=token,
        cert=config.cert(),
        verify=config.verify(),
        timeout=config.timeout,
        namespace=config.namespace,
        session=session,
    )


@dataclass(frozen=True)
class TokenInfo:
    """What `auth/token/lookup-self` reports about the Vault token (no token value)."""

    display_name: str
    ttl_seconds: int | None
    policies: tuple[str, ...] = ()
    renewable: bool = False

    def ttl_words(self) -> str:
        """E.g. "52m", "3h05m", "no expiry"."""
        if not self.ttl_seconds:
            return "no expiry"
        minutes = self.ttl_seconds // 60
        if minutes < 60:
            return f"{minutes}m" if minutes else f"{self.ttl_seconds}s"
        return f"{minutes // 60}h{minutes % 60:02d}m"


def lookup_token(client: Any) -> TokenInfo:
    """Return the display name, remaining TTL and policies of the client's token.

    Raises `VaultTokenError` for an invalid or expired token, and the other
    `EscrowError` types when Vault cannot be used.
    """
    api_path = "/v1/auth/token/lookup-self"
    try:
        response = client.auth.token.lookup_self()
    except Exception as exc:  # decoded below into one typed error
        error = decode_vault_error(exc, method="GET", api_path=api_path, capability="read")
        if isinstance(error, (VaultPermissionError, VaultPathError)):
            # lookup-self is allowed by Vault's default policy, so a 403 here
            # means the token itself is not accepted.
            raise VaultTokenError(f"The Vault token was rejected by GET {api_path}; it is invalid, expired or revoked. Log in to Vault again.",
                                  api_path=api_path, method="GET") from None
        raise error from None
    data = response.get("data") or {}
    return TokenInfo(
        display_name=str(data.get("display_name") or "unknown"),
        ttl_seconds=int(data["ttl"]) if data.get("ttl") is not None else None,
        policies=tuple(data.get("policies") or ()),
        renewable=bool(data.get("renewable")),
    )


def login_token(config: VaultConfig, token: Secret) -> tuple[VaultConfig, TokenInfo]:
    """Check `token` with lookup-self and return the config that uses it, with the token's info."""
    candidate = config.with_token(token, "login")
    info = lookup_token(build_client(candidate))
    return candidate, info


def login_userpass(config: VaultConfig, username: str, password: Secret, *, mount: str | None = None) -> tuple[VaultConfig, TokenInfo]:
    """Log in with the userpass auth method and return the config holding the new token."""
    return _login(config, "userpass", username, password, mount or config.auth_mount or "userpass")


def login_ldap(config: VaultConfig, username: str, password: Secret, *, mount: str | None = None) -> tuple[VaultConfig, TokenInfo]:
    """Log in with the LDAP auth method and return the config holding the new token."""
    return _login(config, "ldap", username, password, mount or config.auth_mount or "ldap")


def _login(config: VaultConfig, method: str, username: str, password: Secret, mount: str) -> tuple[VaultConfig, TokenInfo]:
    client = build_client(replace(config, token=None))
    api_path = f"/v1/auth/{mount}/login/{username}"
    backend = client.auth.userpass if method == "userpass" else client.auth.ldap
    try:
        response = backend.login(username=username, password=password.reveal_text(), use_token=False, mount_point=mount)
    except Exception as exc:  # decoded below into one typed error
        error = decode_vault_error(exc, method="POST", api_path=api_path)
        if isinstance(error, (VaultRequestError, VaultPermissionError)):
            raise VaultTokenError(f"Vault {method} login failed for user {username!r} at POST {api_path}: wrong user name or password, or the user is not allowed. Check them and retry.",
                                  api_path=api_path, method="POST") from None
        raise error from None
    token = Secret(response["auth"]["client_token"], "Vault token")
    return login_token(config, token)


def os_user() -> str:
    """Return the OS user name for `set_by` fields."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid-{os.getuid()}"
