"""Step 8 and the new FIDO PIN against the software authenticator: one attempt, blocks, escrow order."""

from __future__ import annotations

import json

import pytest

from tui.audit import AuditTrail
from tui.errors import PolicyError
from tui.escrow.flow import EscrowFlow, Outcome
from tui.escrow.memory import MemoryStore
from tui.escrow.records import RecordState, SecretKind
from tui.fido.actions import (
    OUTCOME_ACCEPTED,
    OUTCOME_NOT_SET,
    OUTCOME_WRONG,
    FidoPinRefused,
    Refusal,
    generate_fido_pin,
    list_credentials,
    pin_attempts,
    set_new_fido_pin,
    site_lets_user_set_pin,
    validate_fido_pin,
)
from tui.fido.errors import FidoErrorKind
from tui.fido.state import FidoPinState, read_fido_state
from tui.lab.ctap_device import SoftCtapDevice
from tui.lab.scenarios import lab_fido_credentials
from tui.lab.soft_fido import (
    PIN_GET_KEY_AGREEMENT,
    PIN_GET_RETRIES,
    PIN_GET_TOKEN_LEGACY,
    PIN_GET_TOKEN_WITH_PERMISSIONS,
    PIN_SET,
    PERMISSION_CM,
    PERMISSION_GA,
    PERMISSION_MC,
    SoftAuthenticator,
)
from tui.secret import Secret
from tui.settings import SiteSettings

TOKEN = "cplc:LABFIDO0001"
RIGHT = Secret("975310", "FIDO PIN")
WRONG = Secret("111111", "FIDO PIN")
PIN_SENDING = (PIN_GET_TOKEN_LEGACY, PIN_GET_TOKEN_WITH_PERMISSIONS)


@pytest.fixture
def audit(tmp_path):
    return AuditTrail(tmp_path / "audit.jsonl", lab=True)


def authenticator(**options) -> SoftAuthenticator:
    credentials = lab_fido_credentials(("example.com", "alice"), ("example.com", "bob"), ("example.org", "carol"))
    options.setdefault("pin", "975310")
    return SoftAuthenticator(credentials=credentials, **options)


def attempt(device, pin, audit, *, override=False):
    state = read_fido_state(device)
    return list_credentials(device, pin, token_key=TOKEN, audit=audit, state=state, override=override)


def pins_sent(auth: SoftAuthenticator) -> int:
    return sum(1 for sub in auth.client_pin_subcommands() if sub in PIN_SENDING)


def test_right_pin_lists_credentials(audit):
    auth = authenticator()
    result = attempt(SoftCtapDevice(auth), RIGHT, audit)

    assert result.outcome == OUTCOME_ACCEPTED
    parties = {rp.rp_id: sorted(rp.user_names) for rp in result.listing.relying_parties}
    assert parties == {"example.com": ["alice", "bob"], "example.org": ["carol"]}
    assert result.listing.credential_count == 3
    assert PIN_GET_TOKEN_WITH_PERMISSIONS in auth.client_pin_subcommands()


def test_listing_kept_out_of_audit(audit, caplog):
    caplog.set_level("DEBUG")
    result = attempt(SoftCtapDevice(authenticator()), RIGHT, audit)
    text = audit.path.read_text()
    records = [json.loads(line) for line in text.splitlines()]

    assert [r["operation"] for r in records] == ["fido-pin", "fido-cred-list"]
    assert records[1]["details"]["count"] == 3
    for secret_text in ("example.com", "example.org", "alice", "bob", "carol", "975310"):
        assert secret_text not in text
        assert secret_text not in caplog.text
    assert "alice" not in repr(result.listing)


def test_legacy_token_on_pre_key(audit):
    auth = authenticator(legacy_token_permissions=PERMISSION_MC | PERMISSION_GA | PERMISSION_CM)
    auth.ctap21 = True
    # A FIDO_2_1_PRE-era key: no pinUvAuthToken option, so fido2 sends the legacy getPinToken.
    original = auth.get_info

    def pre_info():
        info = original()
        info[0x04].pop("pinUvAuthToken")
        info[0x01] = ["U2F_V2", "FIDO_2_0", "FIDO_2_1_PRE"]
        return info

    auth.get_info = pre_info
    result = attempt(SoftCtapDevice(auth), RIGHT, audit)

    assert result.outcome == OUTCOME_ACCEPTED
    assert PIN_GET_TOKEN_LEGACY in auth.client_pin_subcommands()
    assert PIN_GET_TOKEN_WITH_PERMISSIONS not in auth.client_pin_subcommands()


def test_wrong_pin_reports_fresh_retries(audit):
    auth = authenticator()
    result = attempt(SoftCtapDevice(auth), WRONG, audit)

    assert result.outcome == OUTCOME_WRONG
    assert result.error.kind is FidoErrorKind.PIN_INVALID
    assert result.retries_before == 8
    assert result.retries_after == 7
    assert "7 tries left" in result.message
    assert auth.pin_retries == 7


def test_second_attempt_needs_override(audit):
    auth = authenticator()
    device = SoftCtapDevice(auth)
    attempt(device, WRONG, audit)
    before = len(auth.client_pin_subcommands())

    with pytest.raises(FidoPinRefused) as refused:
        attempt(device, RIGHT, audit)

    assert refused.value.refusal is Refusal.ATTEMPT_USED
    assert refused.value.retries == 7
    assert auth.client_pin_subcommands()[before:] == [PIN_GET_RETRIES]  # the state read only
    assert pins_sent(auth) == 1


def test_wrong_pin_sequence_to_blocks(audit):
    auth = authenticator()
    device = SoftCtapDevice(auth)

    first = attempt(device, WRONG, audit)
    second = attempt(device, WRONG, audit, override=True)
    third = attempt(device, WRONG, audit, override=True)

    assert [first.retries_after, second.retries_after] == [7, 6]
    assert third.error.kind is FidoErrorKind.PIN_AUTH_BLOCKED
    assert third.state.pin.state is FidoPinState.TEMPORARILY_BLOCKED
    assert auth.pin_retries == 5
    assert pins_sent(auth) == 3

    sent_before = len(auth.client_pin_subcommands())
    with pytest.raises(FidoPinRefused) as refused:
        attempt(device, RIGHT, audit, override=True)
    assert refused.value.refusal is Refusal.TEMPORARILY_BLOCKED
    assert pins_sent(auth) == 3
    assert PIN_GET_KEY_AGREEMENT not in auth.client_pin_subcommands()[sent_before:]

    # Re-insertion clears the temporary block; five more wrong PINs block the PIN for good.
    for _ in range(2):
        auth.power_cycle()
        for _ in range(3):
            if auth.pin_retries == 0:
                break
            attempt(device, WRONG, audit, override=True)
    assert auth.pin_retries == 0
    blocked = read_fido_state(device)
    assert blocked.pin.state is FidoPinState.PERMANENTLY_BLOCKED
    sent = pins_sent(auth)

    auth.power_cycle()
    with pytest.raises(FidoPinRefused) as refused:
        attempt(device, RIGHT, audit, override=True)
    assert refused.value.refusal is Refusal.PERMANENTLY_BLOCKED
    assert pins_sent(auth) == sent
    assert len(pin_attempts(audit, TOKEN)) == sent


def test_blocked_state_refused_without_traffic(audit):
    auth = authenticator(pin_retries=0)
    device = SoftCtapDevice(auth)
    state = read_fido_state(device)
    auth.requests.clear()

    with pytest.raises(FidoPinRefused):
        list_credentials(device, RIGHT, token_key=TOKEN, audit=audit, state=state)

    assert auth.requests == []


def test_not_set_is_a_finding(audit):
    auth = SoftAuthenticator()
    result = attempt(SoftCtapDevice(auth), RIGHT, audit)

    assert result.outcome == OUTCOME_NOT_SET
    assert pins_sent(auth) == 0
    assert pin_attempts(audit, TOKEN) == []


def test_pin_not_set_answer_burns_nothing(audit):
    auth = authenticator()
    device = SoftCtapDevice(auth)
    state = read_fido_state(device)
    auth.pin_hash = None  # the PIN vanished after the state was read
    original = auth.get_info

    def stale_info():
        info = original()
        info[0x04]["clientPin"] = True
        return info

    auth.get_info = stale_info
    result = list_credentials(device, RIGHT, token_key=TOKEN, audit=audit, state=state)

    assert result.error.kind is FidoErrorKind.PIN_NOT_SET
    assert result.outcome == OUTCOME_NOT_SET
    assert pin_attempts(audit, TOKEN) == []
    assert auth.pin_retries == 8


@pytest.mark.parametrize(("value", "minimum", "problem"), [
    ("123", None, "at least 4 characters"),
    ("1234", None, None),
    ("12345", 6, "at least 6 characters"),
    ("ä" * 32, None, "at most 63 bytes"),
    ("ä" * 31 + "a", None, None),
    ("€€€€", None, None),
])
def test_pin_rules(value, minimum, problem):
    error = validate_fido_pin(Secret(value), minimum)
    if problem is None:
        assert error is None
    else:
        assert problem in error
        assert value not in error


def test_invalid_pin_sends_nothing(audit):
    auth = authenticator()
    with pytest.raises(PolicyError):
        attempt(SoftCtapDevice(auth), Secret("12"), audit)
    assert pins_sent(auth) == 0
    assert pin_attempts(audit, TOKEN) == []


def test_generated_pin():
    pin = generate_fido_pin()
    assert len(pin.reveal_text()) == 8
    assert pin.reveal_text().isdigit()
    assert len(generate_fido_pin(12).reveal_text()) == 12


def test_site_option_read_from_raw():
    assert not site_lets_user_set_pin(SiteSettings())
    assert site_lets_user_set_pin(SiteSettings.from_dict({"fido_pin_set_by_user": True},
                                                         raw={"site": {"fido_pin_set_by_user": True}}))


def test_new_pin_escrowed_before_set_pin():
    auth = SoftAuthenticator()
    store = MemoryStore()
    flow = EscrowFlow(store, user="tech")
    seen = []
    original = auth._set_pin

    def spy(protocol, params):
        metadata = store.read_metadata(TOKEN, SecretKind.FIDO_PIN)
        record, _, _ = store.read_version(TOKEN, SecretKind.FIDO_PIN)
        seen.append((metadata.current_version, record.state))
        return original(protocol, params)

    auth._set_pin = spy
    new_pin = Secret("24681357", "FIDO PIN")
    result = set_new_fido_pin(SoftCtapDevice(auth), flow, TOKEN, new_pin)

    assert seen == [(1, RecordState.PENDING)]
    assert result.outcome is Outcome.APPLIED
    record, value, version = store.read_version(TOKEN, SecretKind.FIDO_PIN)
    assert (record.state, version, record.encoding) == (RecordState.APPLIED, 2, "utf-8")
    assert value == new_pin
    assert auth.pin_is_set
    assert PIN_SET in auth.client_pin_subcommands()


def test_new_pin_refused_when_set():
    auth = authenticator()
    store = MemoryStore()
    with pytest.raises(PolicyError, match="already has a FIDO PIN"):
        set_new_fido_pin(SoftCtapDevice(auth), EscrowFlow(store, user="tech"), TOKEN, Secret("24681357"))
    assert store.read_metadata(TOKEN, SecretKind.FIDO_PIN) is None


def test_new_pin_below_key_minimum():
    auth = SoftAuthenticator(min_pin_length=10)
    store = MemoryStore()
    with pytest.raises(PolicyError, match="at least 10"):
        set_new_fido_pin(SoftCtapDevice(auth), EscrowFlow(store, user="tech"), TOKEN, Secret("24681357"))
    assert store.read_metadata(TOKEN, SecretKind.FIDO_PIN) is None
    assert PIN_SET not in auth.client_pin_subcommands()
