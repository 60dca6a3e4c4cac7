"""Step 6 on the lab key: the new PIN escrowed first, one RESET RETRY COUNTER, no PUK retry."""

from __future__ import annotations

import pytest

from test_recovery_support import make_lab, versions, write_manifest
from tui.errors import PolicyError
from tui.escrow.errors import VaultPermissionError, VaultSealedError
from tui.escrow.records import SecretKind
from tui.recovery.common import ReadOnlyModeError, RecoveryRefusedError
from tui.recovery.puk_reset import (
    OPERATION,
    PukChoice,
    PukResetOutcome,
    PukSource,
    puk_availability,
    puk_from_escrow,
    puk_from_manifest,
    reset_pin_with_puk,
    typed_puk,
    unsupported_reason,
)
from tui.secret import Secret
from tui.settings import SiteSettings

RESET_RETRY_COUNTER = 0x2C


def block(text: str) -> bytes:
    return text.encode() + b"\xff" * (8 - len(text))


def test_reset_with_escrowed_puk(tmp_path):
    lab = make_lab("pin-locked-puk", tmp_path)
    choice = puk_from_escrow(lab.token, lab.session)

    result = reset_pin_with_puk(lab.channel, lab.token, lab.session, choice, new_pin=Secret("58302716"))

    assert result.outcome is PukResetOutcome.RESET
    assert result.next_step is None
    assert lab.key.store.pin.matches(b"58302716")
    assert lab.key.store.pin.tries_left == lab.key.store.pin.max_tries
    [data] = lab.data_sent(RESET_RETRY_COUNTER)
    assert data == block("73910264") + block("58302716")
    assert lab.sent(RESET_RETRY_COUNTER)[0].command.header == "00 2C 00 80"


def test_pending_escrow_before_apdu(tmp_path):
    lab = make_lab("pin-locked-puk", tmp_path)

    reset_pin_with_puk(lab.channel, lab.token, lab.session, puk_from_escrow(lab.token, lab.session),
                       new_pin=Secret("58302716"))

    # At the moment RESET RETRY COUNTER left, the PIN record's latest version was pending.
    assert ("piv-pin", 1, "pending") in lab.escrow_at_write
    assert versions(lab, SecretKind.PIV_PIN) == ["pending", "applied"]
    record, value, _ = lab.store.read_version(lab.token.token_id, SecretKind.PIV_PIN)
    assert value.reveal() == "58302716"
    assert record.reason == "initial PIN issued by the help desk"
    assert record.ticket == "INC-42"


def test_generated_pin_is_escrowed_and_set(tmp_path):
    lab = make_lab("pin-locked-puk", tmp_path)

    result = reset_pin_with_puk(lab.channel, lab.token, lab.session, puk_from_escrow(lab.token, lab.session))

    assert result.outcome is PukResetOutcome.RESET
    text = result.new_pin.reveal_text()
    assert text.isdigit()
    assert len(text) == 8
    assert lab.key.store.pin.matches(text.encode())
    _, value, _ = lab.store.read_version(lab.token.token_id, SecretKind.PIV_PIN)
    assert value == result.new_pin


def test_wrong_puk_stops_once(tmp_path):
    lab = make_lab("pin-locked-puk", tmp_path)
    choice = typed_puk(lab.token, lab.session, Secret("11112222"))

    result = reset_pin_with_puk(lab.channel, lab.token, lab.session, choice, new_pin=Secret("58302716"))

    assert result.outcome is PukResetOutcome.WRONG_PUK
    assert result.puk_tries_left == 9
    assert result.next_step == "10"
    assert "do not retry" in result.verdict
    assert versions(lab, SecretKind.PIV_PIN) == ["pending", "failed"]
    records = lab.session.audit.attempts(lab.token.token_id, OPERATION)
    assert records[-1].outcome == "wrong_puk"
    assert "no PUK retry" in records[-1].details["reason"]

    # No second PUK is sent in this session, not even the right one.
    with pytest.raises(RecoveryRefusedError, match="No PUK retry"):
        reset_pin_with_puk(lab.channel, lab.token, lab.session, puk_from_escrow(lab.token, lab.session))
    assert lab.data_sent(RESET_RETRY_COUNTER) == [block("11112222") + block("58302716")]


def test_blocked_puk_reported(tmp_path):
    lab = make_lab("pin-locked-no-puk", tmp_path)
    # The scan cannot read a generic PIV PUK counter, so the reset is tried and 6983 comes back.
    choice = typed_puk(lab.token, lab.session, Secret("16180339"))

    result = reset_pin_with_puk(lab.channel, lab.token, lab.session, choice, new_pin=Secret("58302716"))

    assert result.outcome is PukResetOutcome.PUK_BLOCKED
    assert result.next_step == "10"


def test_blocked_puk_from_metadata_refused(tmp_path):
    lab = make_lab("yubikey-all-blocked", tmp_path)

    with pytest.raises(RecoveryRefusedError, match="PUK is blocked"):
        reset_pin_with_puk(lab.channel, lab.token, lab.session, typed_puk(lab.token, lab.session, Secret("52840196")))
    assert lab.data_sent(RESET_RETRY_COUNTER) == []
    assert versions(lab, SecretKind.PIV_PIN) == []


def test_no_pin_defined(tmp_path):
    lab = make_lab("no-pin", tmp_path)

    result = reset_pin_with_puk(lab.channel, lab.token, lab.session, typed_puk(lab.token, lab.session, Secret("73910264")),
                                new_pin=Secret("58302716"))

    assert result.outcome is PukResetOutcome.NOT_DEFINED
    assert result.next_step == "10"


def test_yubikey_reset_with_escrowed_puk(tmp_path):
    lab = make_lab("yubikey-pin-locked", tmp_path)

    result = reset_pin_with_puk(lab.channel, lab.token, lab.session, puk_from_escrow(lab.token, lab.session),
                                new_pin=Secret("58302716"))

    assert result.outcome is PukResetOutcome.RESET
    assert lab.key.store.pin.matches(b"58302716")


def test_manifest_puk_used(tmp_path):
    lab = make_lab("pin-locked-puk", tmp_path)
    path = write_manifest(tmp_path, f"token_id,puk,encoding\n{lab.token.token_id},73910264,padded\n")
    lab.session.settings.puk_manifest = str(path)

    choice = puk_from_manifest(lab.token, lab.session)
    result = reset_pin_with_puk(lab.channel, lab.token, lab.session, choice, new_pin=Secret("58302716"))

    assert choice.source is PukSource.MANIFEST
    assert choice.detail == "manifest line 2"
    assert result.outcome is PukResetOutcome.RESET


def test_hex_puk_sent_as_eight_bytes(tmp_path):
    lab = make_lab("pin-locked-puk", tmp_path)
    raw = bytes.fromhex("00112233445566AA")
    lab.key.store.puk.set_value(raw)
    choice = PukChoice(PukSource.TYPED, Secret("00112233445566AA"), "hex-8-bytes")

    result = reset_pin_with_puk(lab.channel, lab.token, lab.session, choice, new_pin=Secret("58302716"))

    assert result.outcome is PukResetOutcome.RESET
    assert lab.data_sent(RESET_RETRY_COUNTER) == [raw + block("58302716")]


def test_site_encoding_for_typed_puk(tmp_path):
    settings = SiteSettings(raw={"recovery": {"puk_encoding": {"piv": "hex-8-bytes"}}})
    lab = make_lab("pin-locked-puk", tmp_path, settings=settings)

    choice = typed_puk(lab.token, lab.session, Secret("73910264"))

    assert choice.encoding == "hex-8-bytes"
    with pytest.raises(PolicyError, match="16 hex digits"):
        reset_pin_with_puk(lab.channel, lab.token, lab.session, choice, new_pin=Secret("58302716"))
    assert versions(lab, SecretKind.PIV_PIN) == []


def test_yubikey_rejects_binary_puk_before_escrow(tmp_path):
    lab = make_lab("yubikey-pin-locked", tmp_path)
    choice = PukChoice(PukSource.TYPED, Secret("00112233445566AA"), "hex-8-bytes")

    with pytest.raises(PolicyError, match="6 to 8 characters"):
        reset_pin_with_puk(lab.channel, lab.token, lab.session, choice, new_pin=Secret("58302716"))
    assert versions(lab, SecretKind.PIV_PIN) == []
    assert lab.data_sent(RESET_RETRY_COUNTER) == []


def test_weak_new_pin_rejected_before_escrow(tmp_path):
    lab = make_lab("pin-locked-puk", tmp_path)

    with pytest.raises(PolicyError, match="well-known"):
        reset_pin_with_puk(lab.channel, lab.token, lab.session, puk_from_escrow(lab.token, lab.session),
                           new_pin=Secret("12345678"))
    assert versions(lab, SecretKind.PIV_PIN) == []
    assert lab.data_sent(RESET_RETRY_COUNTER) == []


def test_sealed_vault_sends_nothing(tmp_path):
    lab = make_lab("pin-locked-puk", tmp_path)
    choice = puk_from_escrow(lab.token, lab.session)
    lab.store.sealed = True

    result = reset_pin_with_puk(lab.channel, lab.token, lab.session, choice, new_pin=Secret("58302716"))

    assert result.outcome is PukResetOutcome.REFUSED
    assert "Nothing was sent" in result.verdict
    assert lab.data_sent(RESET_RETRY_COUNTER) == []
    assert lab.key.store.pin.blocked


def test_not_escrowed_sends_nothing(tmp_path):
    lab = make_lab("pin-locked-puk", tmp_path)
    choice = puk_from_escrow(lab.token, lab.session)
    lab.store.fail_next("write", VaultSealedError("Vault is sealed"))

    result = reset_pin_with_puk(lab.channel, lab.token, lab.session, choice, new_pin=Secret("58302716"))

    assert result.outcome is PukResetOutcome.REFUSED
    assert lab.data_sent(RESET_RETRY_COUNTER) == []


def test_unreadable_escrow_policy(tmp_path):
    lab = make_lab("pin-locked-puk", tmp_path, readable=False)

    with pytest.raises(VaultPermissionError, match="read capability"):
        puk_from_escrow(lab.token, lab.session)
    availability = puk_availability(lab.token, lab.session)
    assert availability.escrow == "on file (v1)"
    assert availability.escrow_readable is False


def test_crescendo_points_to_admin_unlock(tmp_path):
    lab = make_lab("admin-key-on-file", tmp_path)

    assert "admin-key unlock" in unsupported_reason(lab.token)
    with pytest.raises(RecoveryRefusedError, match="no PUK command"):
        reset_pin_with_puk(lab.channel, lab.token, lab.session, typed_puk(lab.token, lab.session, Secret("73910264")))
    assert lab.data_sent(RESET_RETRY_COUNTER) == []


def test_read_only_mode_no_puk_reset(tmp_path):
    lab = make_lab("pin-locked-puk", tmp_path, settings=SiteSettings(read_only=True))

    with pytest.raises(ReadOnlyModeError):
        reset_pin_with_puk(lab.channel, lab.token, lab.session, typed_puk(lab.token, lab.session, Secret("73910264")))
    assert lab.data_sent(RESET_RETRY_COUNTER) == []
    assert versions(lab, SecretKind.PIV_PIN) == []


def test_event_and_audit_hold_no_secret(tmp_path):
    lab = make_lab("pin-locked-puk", tmp_path)

    reset_pin_with_puk(lab.channel, lab.token, lab.session, puk_from_escrow(lab.token, lab.session),
                       new_pin=Secret("58302716"))

    event = lab.session.events[-1]
    assert event.kind == "puk-reset"
    assert event.resolved_by == "PUK reset"
    assert event.escrow_refs and "piv-pin" in event.escrow_refs[0]
    text = (tmp_path / "audit.jsonl").read_text()
    assert "58302716" not in text
    assert "73910264" not in text
    assert "73910264" not in repr(lab.channel.exchanges)


def test_audit_and_ticket_name_kv_path(tmp_path):
    import json

    lab = make_lab("pin-locked-puk", tmp_path)

    result = reset_pin_with_puk(lab.channel, lab.token, lab.session, puk_from_escrow(lab.token, lab.session),
                                new_pin=Secret("58302716"))

    # One form for a person to read and type: the path `vault kv get` takes, never the API path.
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    [path] = [record["details"]["escrow_path"] for record in records
              if record["operation"] == OPERATION and "escrow_path" in record["details"]]
    assert path == result.escrow.kv_path
    assert "/data/" not in path
    assert lab.session.events[-1].escrow_refs == [result.escrow.reference()]
