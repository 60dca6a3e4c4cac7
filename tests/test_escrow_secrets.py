"""Canary values (a PUK, an old PUK, a Vault token, a password) never reach logs, errors or reprs."""

from __future__ import annotations

import logging
import traceback

import pytest

from tui.apdu import decode_sw
from tui.escrow.actions import set_piv_puk
from tui.escrow.config import VaultConfig, load_vault_config, login_token, login_userpass
from tui.escrow.errors import EscrowError
from tui.escrow.flow import ApplyOutcome, EscrowFlow, SetRequest, TransmitLostError
from tui.escrow.records import SecretKind
from tui.escrow.status import check_status
from tui.escrow.store import VaultStore
from tui.lab.backend import LabBackend
from tui.model import TokenId
from tui.secret import Secret
from tui.transport import Channel
from vault_server import VaultTestServer, writer_rules

NEW_PUK = "86420975"
OLD_PUK = "12345678"  # the lab key's default PUK, so the first action succeeds
WRONG_OLD_PUK = "31415926"
VAULT_TOKEN = "hvs.CANARYvaulttoken0001"
PASSWORD = "canary-password-77"
CANARIES = (NEW_PUK, WRONG_OLD_PUK, VAULT_TOKEN, PASSWORD)
TOKEN_ID = TokenId("cplc", "4790516856781A2B3C4D")


def assert_clean(text: str, where: str) -> None:
    for canary in CANARIES:
        assert canary not in text, f"{canary!r} leaked into {where}"


def test_no_canary_anywhere(caplog):
    caplog.set_level(1)
    texts: list[tuple[str, str]] = []

    def keep(obj: object, where: str) -> None:
        texts.append((str(obj), f"str of {where}"))
        texts.append((repr(obj), f"repr of {where}"))
        if isinstance(obj, BaseException):
            texts.append(("".join(traceback.format_exception(obj)), f"traceback of {where}"))

    with VaultTestServer() as server:
        server.add_token(writer_rules(), display_name="ldap-alice", token=VAULT_TOKEN)
        server.add_userpass_user("alice", PASSWORD, writer_rules())
        config = VaultConfig(address=server.url, token=Secret(VAULT_TOKEN, "Vault token"), timeout=2)
        keep(config, "config")
        store = VaultStore.from_config(config)
        keep(store, "store")
        flow = EscrowFlow(store, user="alice")
        keep(check_status(store), "status")

        backend = LabBackend("yubikey-healthy")
        transport = backend.open(backend.list_readers()[0])
        transport.connect()
        channel = Channel(transport)

        # Applied, then failed with a wrong old PUK (63Cx), through the real action.
        applied = set_piv_puk(channel, flow, TOKEN_ID, Secret(OLD_PUK, "PIV PUK"), new_puk=Secret(NEW_PUK, "PIV PUK"))
        keep(applied, "applied result")
        failed = set_piv_puk(channel, flow, TOKEN_ID, Secret(WRONG_OLD_PUK, "PIV PUK"), new_puk=Secret(NEW_PUK, "PIV PUK"), allow_on_file=True)
        keep(failed, "failed result")
        for exchange in channel.exchanges:
            keep(exchange.describe(), "exchange")
            keep(exchange.command, "command")

        request = SetRequest(TOKEN_ID, SecretKind.PIV_PIN, Secret(NEW_PUK, "PIV PIN"), "ascii-ff-padded")
        keep(request, "request")

        def lost():
            raise TransmitLostError("answer lost")

        def crash():
            raise RuntimeError("driver crashed")

        keep(flow.set_secret(request, lost), "unknown result")
        keep(flow.set_secret(request, crash), "crash result")

        # Conflict, NOT CONFIRMED with retry, NOT ESCROWED, REFUSED.
        server.conflict_next_write(f"*{TOKEN_ID}/piv-pin")
        conflict = flow.set_secret(request, lambda: ApplyOutcome.applied())
        keep(conflict, "conflict result")
        keep(conflict.error, "conflict error")

        def apply_then_seal():
            server.sealed = True
            return ApplyOutcome.applied(decode_sw(0x9000))

        unconfirmed = flow.set_secret(request, apply_then_seal, confirmed_version=conflict.conflict.current_version)
        keep(unconfirmed, "unconfirmed result")
        keep(unconfirmed.error, "unconfirmed error")
        keep(unconfirmed.retry_record(), "retry while sealed")
        keep(flow.set_secret(request, lambda: ApplyOutcome.applied()), "refused result")
        server.sealed = False

        server.inject("secret/data/*", method="POST", status=500, errors=["internal error"])
        keep(flow.set_secret(request, lambda: ApplyOutcome.applied()), "not escrowed result")

        with pytest.raises(EscrowError) as denied:
            flow.read_value_on_file(TOKEN_ID, SecretKind.PIV_PUK)
        keep(denied.value, "read denied")

        with pytest.raises(EscrowError) as bad_login:
            login_userpass(VaultConfig(address=server.url), "alice", Secret(PASSWORD[::-1]))
        keep(bad_login.value, "failed login")
        logged_in, info = login_userpass(VaultConfig(address=server.url), "alice", Secret(PASSWORD))
        keep(logged_in, "logged-in config")
        keep(info, "token info")

        server.revoke(VAULT_TOKEN)
        with pytest.raises(EscrowError) as revoked:
            login_token(VaultConfig(address=server.url), Secret(VAULT_TOKEN))
        keep(revoked.value, "revoked token")
        keep(check_status(store), "status after revoke")

    keep(load_vault_config({"address": "http://x"}, env={"VAULT_TOKEN": VAULT_TOKEN}, file_config={}), "loaded config")

    assert applied.confirmed
    assert failed.status.sw == 0x63C2
    for text, where in texts:
        assert_clean(text, where)
    assert caplog.records, "the flow logged nothing; the check would be empty"
    for record in caplog.records:
        assert_clean(record.getMessage(), f"log record {record.name}")
        if record.exc_info:
            assert_clean("".join(traceback.format_exception(*record.exc_info)), f"logged traceback {record.name}")
