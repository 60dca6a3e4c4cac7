"""A Vault-compatible HTTP server on 127.0.0.1 for tests that run the real hvac client.

It implements the part of Vault's HTTP API that keytriage and hvac use, with
Vault's status codes and `{"errors": [...]}` bodies:

- KV version 2: `<mount>/data/<path>` (GET, POST with check-and-set, DELETE),
  `<mount>/metadata/<path>` (GET, POST, DELETE, LIST), `<mount>/delete|undelete|destroy/<path>`,
  `<mount>/config`; versions are pruned at max_versions (0 on key and mount means 10).
- Tokens in `X-Vault-Token`, each with policies written simply as ACL path glob -> capabilities
  (`*` at the end is a prefix glob, `+` one segment; the most specific rule wins, as in Vault);
  `auth/token/lookup-self`, `sys/capabilities-self`.
- `sys/health` with Vault's codes (200 active, 429 standby, 501 not initialised, 503 sealed)
  and its query overrides, `sys/seal-status`, `sys/mounts`, `sys/internal/ui/mounts/<path>`.
- userpass and ldap login (`auth/<mount>/login/<user>`).
- Fault injection: any status and errors on a method and path glob, latency, a delay longer
  than the client's timeout, a dropped connection, a fault after the request took effect,
  and "another writer wrote first" before the next data write.

Request bodies are kept in `requests` for assertions; nothing is logged.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

PERMISSION_DENIED = "1 error occurred:\n\t* permission denied\n\n"
INVALID_TOKEN = "2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n"
CAS_MISMATCH = "check-and-set parameter did not match the current version"
CAS_REQUIRED = "check-and-set parameter required for this call"
SEALED = "Vault is sealed"
NO_ACTIVE_NODE = "local node not active but active cluster node not found"
DEFAULT_MAX_VERSIONS = 10

# Paths Vault's built-in "default" policy opens to every valid token.
DEFAULT_POLICY = {
    "auth/token/lookup-self": ["read"],
    "auth/token/renew-self": ["update"],
    "auth/token/revoke-self": ["update"],
    "sys/capabilities-self": ["update"],
    "sys/internal/ui/mounts/*": ["read"],
}


def now_rfc3339() -> str:
    """Return the current UTC time as Vault writes it (RFC 3339 with nanosecond-style fraction)."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Token:
    """One token: its ACL rules (glob -> capabilities), display name and TTL in seconds (0: none)."""

    token: str
    rules: dict[str, list[str]]
    display_name: str = "token"
    ttl: int = 3600
    policies: list[str] = field(default_factory=lambda: ["default"])
    issued: float = field(default_factory=time.monotonic)
    revoked: bool = False
    root: bool = False

    def remaining(self) -> int:
        """Return the TTL left in seconds (0 for a token without expiry)."""
        if not self.ttl:
            return 0
        return max(0, int(self.ttl - (time.monotonic() - self.issued)))

    @property
    def valid(self) -> bool:
        """True unless revoked or expired."""
        return not self.revoked and (not self.ttl or time.monotonic() - self.issued < self.ttl)


@dataclass
class Fault:
    """An injected failure for requests matching `method` (None: any) and `path` (a glob on the path after /v1/)."""

    path: str = "*"
    method: str | None = None
    status: int | None = None
    errors: list[str] | None = None
    body: Any = None
    delay: float = 0.0
    drop: bool = False
    after: bool = False
    times: int = 1
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        """True when the fault applies to this request and has uses left."""
        if self.times and self.hits >= self.times:
            return False
        if self.method and self.method.upper() != method:
            return False
        return fnmatch.fnmatchcase(path, self.path)


@dataclass
class KvSecret:
    """One KV v2 key: its versions and metadata."""

    versions: dict[int, dict[str, Any]] = field(default_factory=dict)
    current_version: int = 0
    oldest_version: int = 0
    max_versions: int = 0
    cas_required: bool = False
    custom_metadata: dict[str, str] | None = None
    delete_version_after: str = "0s"
    created_time: str = field(default_factory=now_rfc3339)
    updated_time: str = field(default_factory=now_rfc3339)


@dataclass
class KvMount:
    """A KV version 2 mount."""

    max_versions: int = 0
    cas_required: bool = False
    secrets: dict[str, KvSecret] = field(default_factory=dict)
    accessor: str = field(default_factory=lambda: f"kv_{uuid.uuid4().hex[:8]}")


class HttpError(Exception):
    """A Vault error response to send: status and errors list."""

    def __init__(self, status: int, errors: list[str] | None = None, body: dict | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body if body is not None else {"errors": errors or []}


def rule_regex(pattern: str) -> re.Pattern:
    """Compile a Vault ACL path pattern: trailing `*` is a prefix glob, `+` one segment."""
    prefix = pattern.endswith("*")
    core = pattern[:-1] if prefix else pattern
    parts = [re.escape(p) for p in core.split("+")]
    regex = "[^/]+".join(parts)
    return re.compile("^" + regex + (".*" if prefix else "") + "$")


def rule_specificity(pattern: str) -> tuple:
    """Order matching rules roughly as Vault does: exact over glob, fewer `+`, longer prefix."""
    return (not pattern.endswith("*"), -pattern.count("+"), len(pattern))


class VaultTestServer:
    """The server and its state; use as a context manager or call `start()` and `stop()`."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.mounts: dict[str, KvMount] = {"secret": KvMount()}
        self.tokens: dict[str, Token] = {}
        self.userpass: dict[str, dict[str, tuple[str, dict[str, list[str]]]]] = {"userpass": {}}
        self.ldap: dict[str, dict[str, tuple[str, dict[str, list[str]]]]] = {"ldap": {}}
        self.faults: list[Fault] = []
        self.pending_conflicts: list[tuple[str, str]] = []
        self.requests: list[dict[str, Any]] = []
        self.initialized = True
        self.sealed = False
        self.standby = False
        self.standby_without_active = False
        self.version = "1.15.0"
        self.root_token = "hvs.root-" + secrets.token_hex(8)
        self.tokens[self.root_token] = Token(self.root_token, {}, display_name="root", ttl=0, policies=["root"], root=True)
        self._stop = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # Lifecycle

    def start(self) -> VaultTestServer:
        """Start serving on a free port of 127.0.0.1 in a daemon thread."""
        handler = type("Handler", (_Handler,), {"vault": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="vault-test-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and wake any request held by an injected delay."""
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> VaultTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL, e.g. http://127.0.0.1:41234."""
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    # Setup helpers

    def add_token(self, rules: dict[str, list[str]], *, display_name: str = "token", ttl: int = 3600, token: str | None = None) -> str:
        """Create a token with ACL `rules` (path glob -> capabilities) and return it."""
        token = token or "hvs." + secrets.token_hex(12)
        with self.lock:
            self.tokens[token] = Token(token, dict(rules), display_name=display_name, ttl=ttl, policies=["default", display_name])
        return token

    def revoke(self, token: str) -> None:
        """Revoke `token`; later requests with it get "invalid token"."""
        with self.lock:
            self.tokens[token].revoked = True

    def add_userpass_user(self, username: str, password: str, rules: dict[str, list[str]], *, mount: str = "userpass") -> None:
        """Add a userpass user whose login tokens get `rules`."""
        with self.lock:
            self.userpass.setdefault(mount, {})[username] = (password, dict(rules))

    def add_ldap_user(self, username: str, password: str, rules: dict[str, list[str]], *, mount: str = "ldap") -> None:
        """Add an LDAP user whose login tokens get `rules`."""
        with self.lock:
            self.ldap.setdefault(mount, {})[username] = (password, dict(rules))

    def enable_kv(self, mount: str, *, max_versions: int = 0, cas_required: bool = False) -> None:
        """Mount a KV version 2 engine at `mount`."""
        with self.lock:
            self.mounts[mount] = KvMount(max_versions=max_versions, cas_required=cas_required)

    def inject(self, path: str = "*", *, method: str | None = None, status: int | None = None, errors: list[str] | None = None,
               body: Any = None, delay: float = 0.0, drop: bool = False, after: bool = False, times: int = 1) -> Fault:
        """Add a fault for requests matching `method` and the path glob (after /v1/, unquoted).

        `status` responds with that status and `errors` (or `body`); `delay`
        waits first (latency, or a timeout when longer than the client's);
        `drop` closes the connection without a response; `after` lets the
        request take effect and then fails its response. `times` 0 means always.
        """
        fault = Fault(path=path, method=method, status=status, errors=errors, body=body, delay=delay, drop=drop, after=after, times=times)
        with self.lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        with self.lock:
            self.faults.clear()

    def conflict_next_write(self, path: str, *, by: str = "other-technician") -> None:
        """Before the next data write matching the glob `path`, let another writer add a version."""
        with self.lock:
            self.pending_conflicts.append((path, by))

    def kv(self, mount: str, path: str) -> KvSecret | None:
        """Return the stored key at `path` under `mount`, for assertions."""
        with self.lock:
            return self.mounts[mount].secrets.get(path.strip("/"))

    def versions(self, mount: str, path: str) -> list[dict[str, Any]]:
        """Return the data of every kept version of a key, oldest first."""
        secret = self.kv(mount, path)
        if secret is None:
            return []
        return [secret.versions[n]["data"] for n in sorted(secret.versions)]

    def requests_to(self, method: str, path_prefix: str) -> list[dict[str, Any]]:
        """Return the recorded requests with `method` whose path starts with `path_prefix`."""
        with self.lock:
            return [r for r in self.requests if r["method"] == method and r["path"].startswith(path_prefix)]

    # Request handling

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        """Process one request and return (status, JSON body or None for 204)."""
        split = urlsplit(raw_path)
        if not split.path.startswith("/v1/"):
            raise HttpError(404, [])
        path = unquote(split.path[len("/v1/"):]).strip("/")
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        try:
            payload = json.loads(body) if body else {}
        except ValueError:
            raise HttpError(400, ["failed to parse JSON input"]) from None
        if method == "GET" and query.get("list") == "true":
            method = "LIST"
        with self.lock:
            self.requests.append({"method": method, "path": path, "raw_path": split.path, "query": query, "json": payload,
                                  "namespace": headers.get("x-vault-namespace")})

        fault = self._take_fault(method, path)
        if fault is not None and fault.delay:
            self._stop.wait(fault.delay)
        if fault is not None and not fault.after:
            self._raise_fault(fault)

        result = self._route(method, path, query, payload, headers)
        if fault is not None and fault.after:
            self._raise_fault(fault)
        return result

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.hits += 1
                    return fault
        return None

    @staticmethod
    def _raise_fault(fault: Fault) -> None:
        if fault.drop:
            raise ConnectionAbortedError("fault: drop the connection")
        if fault.status is not None:
            raise HttpError(fault.status, fault.errors, fault.body)

    def _route(self, method: str, path: str, query: dict[str, str], payload: dict, headers: dict[str, str]) -> tuple[int, Any]:
        if path == "sys/health":
            return self._health(query)
        if path == "sys/seal-status":
            return 200, {"type": "shamir", "initialized": self.initialized, "sealed": self.sealed, "t": 1, "n": 1, "progress": 0, "version": self.version}
        if self.sealed or not self.initialized:
            raise HttpError(503, [SEALED])
        if self.standby_without_active:
            raise HttpError(503, [NO_ACTIVE_NODE])

        login = re.fullmatch(r"auth/([^/]+)/login/([^/]+)", path)
        if login and method in ("POST", "PUT"):
            return self._login(login.group(1), login.group(2), payload)

        token = self._token(headers.get("x-vault-token"))
        if path == "auth/token/lookup-self":
            return 200, self._wrap(self._lookup(token))
        if path == "sys/capabilities-self" and method in ("POST", "PUT"):
            paths = payload.get("paths") or ([payload["path"]] if payload.get("path") else [])
            caps = {p: self.capabilities(token, p) for p in paths}
            body = dict(caps)
            if len(paths) == 1:
                body["capabilities"] = caps[paths[0]]
            body_wrapped = self._wrap(dict(caps))
            body_wrapped.update(body)
            return 200, body_wrapped

        if path == "sys/mounts" and method == "GET":
            self._authorize(token, path, "read")
            mounts = {f"{name}/": self._mount_info(name) for name in self.mounts}
            return 200, {**mounts, **self._wrap(dict(mounts))}
        if path.startswith("sys/internal/ui/mounts/"):
            target = path[len("sys/internal/ui/mounts/"):]
            name = target.split("/")[0]
            if name not in self.mounts:
                raise HttpError(400, [f'preflight capability check returned 403, please ensure client\'s policies grant access to path "{target}/"'])
            return 200, self._wrap({**self._mount_info(name), "path": f"{name}/"})

        return self._kv(method, path, query, payload, token)

    def _health(self, query: dict[str, str]) -> tuple[int, Any]:
        def code(name: str, default: int) -> int:
            return int(query[name]) if name in query else default

        if not self.initialized:
            status = code("uninitcode", 501)
        elif self.sealed:
            status = code("sealedcode", 503)
        elif self.standby:
            status = 200 if query.get("standbyok") == "true" else code("standbycode", 429)
        else:
            status = code("activecode", 200)
        body = {
            "initialized": self.initialized, "sealed": self.sealed, "standby": self.standby,
            "performance_standby": False, "replication_performance_mode": "disabled",
            "replication_dr_mode": "disabled", "server_time_utc": int(time.time()),
            "version": self.version, "cluster_name": "vault-test", "cluster_id": "test",
        }
        return status, body

    def _mount_info(self, name: str) -> dict[str, Any]:
        return {"type": "kv", "options": {"version": "2"}, "accessor": self.mounts[name].accessor, "description": "", "config": {}}

    @staticmethod
    def _wrap(data: Any) -> dict[str, Any]:
        return {"request_id": str(uuid.uuid4()), "lease_id": "", "renewable": False, "lease_duration": 0,
                "data": data, "wrap_info": None, "warnings": None, "auth": None}

    def _login(self, mount: str, username: str, payload: dict) -> tuple[int, Any]:
        with self.lock:
            if mount in self.userpass:
                users, method = self.userpass[mount], "userpass"
            elif mount in self.ldap:
                users, method = self.ldap[mount], "ldap"
            else:
                raise HttpError(403, [PERMISSION_DENIED])
            entry = users.get(username)
        if entry is None or not secrets.compare_digest(entry[0], str(payload.get("password", ""))):
            message = "invalid username or password" if method == "userpass" else "ldap operation failed: failed to bind as user"
            raise HttpError(400, [message])
        token = self.add_token(entry[1], display_name=f"{method}-{username}", ttl=3600)
        return 200, {**self._wrap(None), "auth": {
            "client_token": token, "accessor": uuid.uuid4().hex, "policies": ["default", username],
            "token_policies": ["default", username], "metadata": {"username": username},
            "lease_duration": 3600, "renewable": True, "entity_id": "", "token_type": "service", "orphan": True,
        }}

    def _token(self, value: str | None) -> Token:
        if not value:
            raise HttpError(403, [PERMISSION_DENIED])
        with self.lock:
            token = self.tokens.get(value)
        if token is None or not token.valid:
            raise HttpError(403, [INVALID_TOKEN])
        return token

    def _lookup(self, token: Token) -> dict[str, Any]:
        return {
            "accessor": "acc-" + token.token[-6:], "creation_time": int(time.time()), "creation_ttl": token.ttl,
            "display_name": token.display_name, "entity_id": "", "expire_time": None, "explicit_max_ttl": 0,
            "id": token.token, "meta": None, "num_uses": 0, "orphan": True, "path": "auth/token/create",
            "policies": token.policies, "renewable": bool(token.ttl), "ttl": token.remaining(), "type": "service",
        }

    def capabilities(self, token: Token, path: str) -> list[str]:
        """Return `token`'s capabilities on the ACL path `path`, as sys/capabilities-self does."""
        if token.root:
            return ["root"]
        rules = {**DEFAULT_POLICY, **token.rules}
        matching = [p for p in rules if rule_regex(p).match(path)]
        if not matching:
            return ["deny"]
        best = max(matching, key=rule_specificity)
        caps = sorted(set(rules[best]))
        if "deny" in caps or not caps:
            return ["deny"]
        return caps

    def _authorize(self, token: Token, path: str, capability: str) -> None:
        caps = self.capabilities(token, path)
        if "root" in caps:
            return
        if capability not in caps:
            raise HttpError(403, [PERMISSION_DENIED])

    # KV version 2

    def _kv(self, method: str, path: str, query: dict[str, str], payload: dict, token: Token) -> tuple[int, Any]:
        mount_name, _, rest = path.partition("/")
        op, _, key = rest.partition("/")
        exists = False
        with self.lock:
            mount = self.mounts.get(mount_name)
            if mount is not None and key:
                secret = mount.secrets.get(key)
                exists = secret is not None and (secret.current_version > 0 or op == "metadata")

        capability = {"GET": "read", "LIST": "list", "DELETE": "delete"}.get(method, "update" if exists else "create")
        if op in ("delete", "undelete", "destroy") or (op == "config" and method in ("POST", "PUT")):
            capability = "update"
        self._authorize(token, path, capability)

        if mount is None:
            raise HttpError(404, [f'no handler for route "{path}". route entry not found.'])
        with self.lock:
            if op == "config":
                return self._kv_config(mount, method, payload)
            if op == "data" and key:
                return self._kv_data(mount, mount_name, key, method, query, payload)
            if op == "metadata":
                return self._kv_metadata(mount, key, method, payload)
            if op in ("delete", "undelete", "destroy") and key and method in ("POST", "PUT"):
                return self._kv_versions(mount, key, op, payload)
        raise HttpError(404, body={"errors": [], "warnings": [
            "Invalid path for a versioned K/V secrets engine. See the API docs for the appropriate API endpoints to use."]})

    def _kv_config(self, mount: KvMount, method: str, payload: dict) -> tuple[int, Any]:
        if method == "GET":
            return 200, self._wrap({"max_versions": mount.max_versions, "cas_required": mount.cas_required, "delete_version_after": "0s"})
        if "max_versions" in payload:
            mount.max_versions = int(payload["max_versions"])
        if "cas_required" in payload:
            mount.cas_required = bool(payload["cas_required"])
        return 204, None

    def _kv_data(self, mount: KvMount, mount_name: str, key: str, method: str, query: dict[str, str], payload: dict) -> tuple[int, Any]:
        secret = mount.secrets.get(key)
        if method == "GET":
            if secret is None or not secret.current_version:
                raise HttpError(404, [])
            number = int(query.get("version") or 0) or secret.current_version
            version = secret.versions.get(number)
            if version is None:
                raise HttpError(404, [])
            metadata = self._version_metadata(secret, number)
            if version["deletion_time"] or version["destroyed"]:
                raise HttpError(404, body=self._wrap({"data": None, "metadata": metadata}))
            return 200, self._wrap({"data": version["data"], "metadata": metadata})

        if method in ("POST", "PUT"):
            for glob, by in list(self.pending_conflicts):
                if fnmatch.fnmatchcase(key, glob) or fnmatch.fnmatchcase(f"{mount_name}/data/{key}", glob):
                    self.pending_conflicts.remove((glob, by))
                    secret = self._store_version(mount, key, {"value": "written-by-" + by, "state": "pending", "set_by": by})
                    break
            options = payload.get("options") or {}
            data = payload.get("data")
            if not isinstance(data, dict):
                raise HttpError(400, ["no data provided"])
            cas_required = mount.cas_required or (secret is not None and secret.cas_required)
            current = secret.current_version if secret else 0
            if "cas" not in options and cas_required:
                raise HttpError(400, [CAS_REQUIRED])
            if "cas" in options and int(options["cas"]) != current:
                raise HttpError(400, [CAS_MISMATCH])
            secret = self._store_version(mount, key, data)
            return 200, self._wrap(self._version_metadata(secret, secret.current_version))

        if method == "DELETE":
            if secret is not None and secret.current_version in secret.versions:
                secret.versions[secret.current_version]["deletion_time"] = now_rfc3339()
            return 204, None
        raise HttpError(405, ["unsupported operation"])

    def _store_version(self, mount: KvMount, key: str, data: dict) -> KvSecret:
        secret = mount.secrets.setdefault(key, KvSecret())
        secret.current_version += 1
        now = now_rfc3339()
        secret.versions[secret.current_version] = {"data": dict(data), "created_time": now, "deletion_time": "", "destroyed": False}
        secret.updated_time = now
        keep = secret.max_versions or mount.max_versions or DEFAULT_MAX_VERSIONS
        for number in sorted(secret.versions)[:-keep]:
            del secret.versions[number]
        secret.oldest_version = min(secret.versions)
        return secret

    @staticmethod
    def _version_metadata(secret: KvSecret, number: int) -> dict[str, Any]:
        version = secret.versions[number]
        return {"created_time": version["created_time"], "custom_metadata": secret.custom_metadata,
                "deletion_time": version["deletion_time"], "destroyed": version["destroyed"], "version": number}

    def _kv_metadata(self, mount: KvMount, key: str, method: str, payload: dict) -> tuple[int, Any]:
        if method == "LIST":
            prefix = key.rstrip("/") + "/" if key else ""
            children = sorted({k[len(prefix):].split("/")[0] + ("/" if "/" in k[len(prefix):] else "")
                               for k in mount.secrets if k.startswith(prefix)})
            if not children:
                raise HttpError(404, [])
            return 200, self._wrap({"keys": children})
        secret = mount.secrets.get(key)
        if method == "GET":
            if secret is None:
                raise HttpError(404, [])
            return 200, self._wrap({
                "cas_required": secret.cas_required, "created_time": secret.created_time,
                "current_version": secret.current_version, "custom_metadata": secret.custom_metadata,
                "delete_version_after": secret.delete_version_after, "max_versions": secret.max_versions,
                "oldest_version": secret.oldest_version, "updated_time": secret.updated_time,
                "versions": {str(n): {"created_time": v["created_time"], "deletion_time": v["deletion_time"], "destroyed": v["destroyed"]}
                             for n, v in secret.versions.items()},
            })
        if method in ("POST", "PUT"):
            secret = mount.secrets.setdefault(key, KvSecret())
            if "max_versions" in payload:
                secret.max_versions = int(payload["max_versions"])
            if "cas_required" in payload:
                secret.cas_required = bool(payload["cas_required"])
            if "custom_metadata" in payload:
                custom = payload["custom_metadata"] or {}
                if len(custom) > 64 or any(len(k) > 128 or len(str(v)) > 512 for k, v in custom.items()):
                    raise HttpError(400, ["custom_metadata exceeds the limits of 64 keys, 128-byte keys and 512-byte values"])
                secret.custom_metadata = {str(k): str(v) for k, v in custom.items()}
            if "delete_version_after" in payload:
                secret.delete_version_after = str(payload["delete_version_after"])
            secret.updated_time = now_rfc3339()
            return 204, None
        if method == "DELETE":
            mount.secrets.pop(key, None)
            return 204, None
        raise HttpError(405, ["unsupported operation"])

    @staticmethod
    def _kv_versions(mount: KvMount, key: str, op: str, payload: dict) -> tuple[int, Any]:
        secret = mount.secrets.get(key)
        if secret is None:
            return 204, None
        for number in payload.get("versions") or []:
            version = secret.versions.get(int(number))
            if version is None:
                continue
            if op == "delete":
                version["deletion_time"] = now_rfc3339()
            elif op == "undelete":
                version["deletion_time"] = ""
            else:
                version["destroyed"] = True
                version["data"] = None
        return 204, None


class _Handler(BaseHTTPRequestHandler):
    vault: VaultTestServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        # Quiet: request lines would clutter test output, and bodies carry test secrets.
        pass

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            status, payload = self.vault.handle(self.command, self.path, headers, body)
        except HttpError as error:
            status, payload = error.status, error.body
        except ConnectionAbortedError:
            self.close_connection = True
            return
        except Exception as error:  # a bug in the test server: respond 500 like Vault would
            status, payload = 500, {"errors": [f"test server error: {type(error).__name__}: {error}"]}

        data = b"" if payload is None or self.command == "HEAD" else json.dumps(payload).encode()
        self.send_response(status)
        if payload is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_LIST = do_HEAD = _dispatch


def writer_rules(mount: str = "secret", base: str = "keytriage/tokens", *, read_values: bool = False, update_metadata: bool = True) -> dict[str, list[str]]:
    """Return the usual technician policy: write records, read metadata, no read of values unless asked."""
    data = ["create", "update"] + (["read"] if read_values else [])
    metadata = ["read"] + (["update"] if update_metadata else [])
    return {f"{mount}/data/{base}/*": data, f"{mount}/metadata/{base}/*": metadata}
