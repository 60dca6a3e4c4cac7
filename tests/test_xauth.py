"""Step 11: the admin-key test against the lab ACA, key checks, cryptograms and verdicts."""

import pytest

from tui.errors import PolicyError
from tui.lab.aca import AcaApplet, aca_admin_key
from tui.lab.backend import LabBackend
from tui.lab.card import AdminKeyType, CredentialStore, VirtualCard
from tui.lab.scenarios import LAB_ADMIN_KEY, LAB_STALE_ADMIN_KEY
from tui.secret import Secret
from tui.transport import Channel
from tui.xauth import (
    AES_128,
    LAST_RESORT,
    TDES,
    AdminKeyNotOnFileError,
    XauthOutcome,
    admin_key_on_file,
    compute_cryptogram,
    parse_admin_key,
    read_admin_key_on_file,
    test_admin_key,
)

THREE_KEY_TDES = bytes.fromhex("0123456789ABCDEF23456789ABCDEF01456789ABCDEF0123")
TWO_KEY_TDES = bytes.fromhex("0123456789ABCDEF23456789ABCDEF01")


class CardTransport:
    """A transport straight onto a lab `VirtualCard`, for cards no scenario builds."""

    reader = "Lab test reader 00 00"

    def __init__(self, card):
        self.card = card

    def connect(self):
        return self.card.atr

    def transmit_raw(self, apdu):
        return self.card.transmit(apdu)

    def begin_transaction(self):
        pass

    def end_transaction(self):
        pass

    def disconnect(self):
        pass


def scenario_channel(name):
    backend = LabBackend(name)
    key = backend.keys[0]
    transport = backend.open(key.reader)
    transport.connect()
    return Channel(transport), key


def aca_channel(admin_key):
    store = CredentialStore(admin_key=admin_key)
    card = VirtualCard([AcaApplet(store)], b"\x3b\x00")
    return Channel(CardTransport(card)), store


def external_authenticates(channel):
    return [e for e in channel.exchanges if e.command.ins == 0x82]


# --- the xauth-stale scenario --------------------------------------------------------------


def test_right_key_is_functional():
    channel, key = scenario_channel("xauth-stale")
    result = test_admin_key(channel, Secret(LAB_ADMIN_KEY.hex(), "admin key"))
    assert result.outcome is XauthOutcome.FUNCTIONAL
    assert result.verdict == ("External auth is functional: the token accepted the admin key. If a system "
                              "that uses it still fails, investigate that system.")
    assert result.admin_key.key_type == AES_128
    assert result.status.sw == 0x9000
    assert key.store.xauth1 is True


def test_stale_escrow_key_fails_once():
    channel, key = scenario_channel("xauth-stale")
    tries_before = key.store.admin_key.unlock_tries_left
    result = test_admin_key(channel, key.escrow["admin-key"])
    assert result.outcome is XauthOutcome.FAILED
    assert result.status.sw == 0x6300
    assert result.verdict == "Wrong key on file or corrupted key on the token."
    assert LAST_RESORT in result.next_steps
    assert "delete the admin key and reinstall a known-good one" in LAST_RESORT
    assert len(external_authenticates(channel)) == 1
    assert key.store.xauth1 is False
    # The lab ACA spends one unlock try per bad cryptogram: exactly one was spent.
    assert key.store.admin_key.unlock_tries_left == tries_before - 1


def test_exchange_order_and_redaction():
    channel, _ = scenario_channel("xauth-stale")
    test_admin_key(channel, Secret(LAB_ADMIN_KEY.hex(), "admin key"))
    headers = [e.command.header for e in channel.exchanges]
    assert headers == ["00 A4 04 00", "00 84 00 00", "00 82 00 01"]
    external = channel.exchanges[2].command
    assert external.sensitive
    assert external.redacted_data() == "[16 bytes redacted]"


def test_stale_key_never_in_logs(caplog):
    channel, key = scenario_channel("xauth-stale")
    caplog.set_level(1)
    result = test_admin_key(channel, key.escrow["admin-key"])
    stale_hex = LAB_STALE_ADMIN_KEY.hex()
    assert stale_hex not in caplog.text.lower()
    assert stale_hex not in repr(result).lower()
    assert all(stale_hex not in e.describe().lower() for e in channel.exchanges)


# --- local checks before any APDU ----------------------------------------------------------


@pytest.mark.parametrize("text", ["00" * 20, "abc", "zz" * 16, "", "0" * 33])
def test_bad_key_rejected_before_any_apdu(text):
    channel, _ = scenario_channel("xauth-stale")
    with pytest.raises(PolicyError) as error:
        test_admin_key(channel, Secret(text, "admin key"))
    assert channel.exchanges == []
    assert "32 hex digits" in str(error.value)


def test_known_type_mismatch_rejected_before_any_apdu():
    channel, _ = scenario_channel("xauth-stale")
    with pytest.raises(PolicyError) as error:
        test_admin_key(channel, Secret(THREE_KEY_TDES.hex(), "admin key"), key_type=AES_128)
    assert channel.exchanges == []
    assert "32 hex digits for an AES-128 key" in str(error.value)


def test_error_never_contains_key():
    secret_text = "0123456789abcdef0123456789abcdef01"
    with pytest.raises(PolicyError) as error:
        parse_admin_key(Secret(secret_text, "admin key"))
    assert secret_text not in str(error.value)
    assert "34 hex digits" in str(error.value)


def test_challenge_length_mismatch_stops_before_external_auth():
    channel, _ = scenario_channel("xauth-stale")
    with pytest.raises(PolicyError) as error:
        test_admin_key(channel, Secret(THREE_KEY_TDES.hex(), "admin key"))
    assert [e.command.ins for e in channel.exchanges] == [0xA4, 0x84]
    assert "AES-128 (16-byte challenge)" in str(error.value)
    assert "EXTERNAL AUTHENTICATE was not sent" in str(error.value)


def test_hex_with_spaces_and_colons_accepted():
    spaced = " ".join(LAB_ADMIN_KEY.hex()[i:i + 2] for i in range(0, 32, 2))
    assert parse_admin_key(Secret(spaced)).reveal_bytes() == LAB_ADMIN_KEY
    colons = ":".join(LAB_ADMIN_KEY.hex()[i:i + 2] for i in range(0, 32, 2))
    assert parse_admin_key(Secret(colons)).reveal_bytes() == LAB_ADMIN_KEY


def test_raw_key_bytes_accepted():
    assert parse_admin_key(Secret(THREE_KEY_TDES), TDES).reveal_bytes() == THREE_KEY_TDES
    with pytest.raises(PolicyError):
        parse_admin_key(Secret(bytes(20)))


# --- 3DES ---------------------------------------------------------------------------------


def test_three_key_tdes_is_functional():
    channel, store = aca_channel(aca_admin_key(THREE_KEY_TDES, AdminKeyType.TDES))
    result = test_admin_key(channel, Secret(THREE_KEY_TDES.hex()))
    assert result.admin_key.key_type == TDES
    assert result.outcome is XauthOutcome.FUNCTIONAL
    assert store.xauth1 is True


def test_two_key_tdes_expands_to_k1_k2_k1():
    expanded = TWO_KEY_TDES + TWO_KEY_TDES[:8]
    channel, store = aca_channel(aca_admin_key(expanded, AdminKeyType.TDES))
    result = test_admin_key(channel, Secret(TWO_KEY_TDES.hex()))
    assert result.outcome is XauthOutcome.FUNCTIONAL


def test_cryptogram_known_answer():
    # FIPS-197 appendix C.1: AES-128 of 00112233...FF under key 00010203...0F.
    key = Secret(bytes(range(16)))
    challenge = bytes.fromhex("00112233445566778899aabbccddeeff")
    assert compute_cryptogram(AES_128, key, challenge).hex() == "69c4e0d86a7b0430d8cdb78070b4c55a"


def test_cryptogram_rejects_wrong_challenge_length():
    with pytest.raises(ValueError):
        compute_cryptogram(AES_128, Secret(bytes(16)), bytes(8))


# --- the other branches of Step 11 ---------------------------------------------------------


def test_no_admin_key_is_not_initialised():
    channel, _ = aca_channel(None)
    result = test_admin_key(channel, Secret(LAB_ADMIN_KEY.hex()))
    assert result.outcome is XauthOutcome.NOT_INITIALISED
    assert result.admin_key.present is False
    assert result.external_authenticate_sent is False
    assert "not initialised" in result.verdict


def test_no_aca_on_token():
    channel, _ = scenario_channel("yubikey-healthy")
    result = test_admin_key(channel, Secret(LAB_ADMIN_KEY.hex()))
    assert result.outcome is XauthOutcome.NO_ACA
    assert len(channel.exchanges) == 1


def test_blocked_admin_key():
    channel, _ = aca_channel(aca_admin_key(LAB_ADMIN_KEY, unlock_tries=0))
    result = test_admin_key(channel, Secret(LAB_ADMIN_KEY.hex()))
    assert result.outcome is XauthOutcome.BLOCKED
    assert LAST_RESORT in result.next_steps


@pytest.mark.parametrize("sw, outcome", [
    (0x9000, XauthOutcome.FUNCTIONAL),
    (0x6300, XauthOutcome.FAILED),
    (0x6A88, XauthOutcome.NOT_INITIALISED),
    (0x6985, XauthOutcome.NO_CHALLENGE),
    (0x6983, XauthOutcome.BLOCKED),
    (0x6F00, XauthOutcome.UNEXPECTED),
])
def test_external_authenticate_status_words(sw, outcome):
    class ScriptedAca:
        reader = "Scripted 00 00"

        def __init__(self):
            self.answers = [bytes.fromhex("9000"), bytes(16) + bytes.fromhex("9000"), sw.to_bytes(2, "big")]

        def transmit_raw(self, apdu):
            return self.answers.pop(0)

        def begin_transaction(self):
            pass

        def end_transaction(self):
            pass

    channel = Channel(ScriptedAca())
    result = test_admin_key(channel, Secret(LAB_ADMIN_KEY.hex()))
    assert result.outcome is outcome
    assert result.external_authenticate_sent is True
    assert result.next_steps
    # 6300 from EXTERNAL AUTHENTICATE is a bad cryptogram, never "0 tries left".
    assert result.status.tries is None


# --- the admin key on file in escrow ------------------------------------------------------

ESCROW_TOKEN_ID = "cplc:1AB07E575A17C0DE0019"


def memory_escrow(*records):
    """Return an escrow context over a memory store holding `records`: (value, state) admin-key records."""
    from tui.escrow.context import EscrowContext
    from tui.escrow.flow import EscrowFlow
    from tui.escrow.memory import MemoryStore
    from tui.escrow.records import SecretKind

    store = MemoryStore()
    for value, state in records:
        store.seed(ESCROW_TOKEN_ID, SecretKind.ADMIN_KEY, Secret(value, "admin key"), encoding="hex", state=state)
    return EscrowContext(EscrowFlow(store, user="technician"), label="test store", store=store)


def test_key_on_file_read_and_parsed():
    from tui.escrow.records import RecordState

    escrow = memory_escrow((LAB_STALE_ADMIN_KEY, RecordState.APPLIED), (LAB_ADMIN_KEY, RecordState.APPLIED))

    on_file = admin_key_on_file(escrow, ESCROW_TOKEN_ID)
    key, version = read_admin_key_on_file(escrow, ESCROW_TOKEN_ID)

    assert on_file.applied_version == 2
    assert on_file.words() == "on file (v2)"
    assert version == 2
    assert parse_admin_key(key, AES_128).reveal_bytes() == LAB_ADMIN_KEY
    assert LAB_ADMIN_KEY.hex() not in repr(key).lower()


def test_nothing_on_file():
    escrow = memory_escrow()

    assert admin_key_on_file(escrow, ESCROW_TOKEN_ID) is None
    with pytest.raises(AdminKeyNotOnFileError, match=ESCROW_TOKEN_ID):
        read_admin_key_on_file(escrow, ESCROW_TOKEN_ID)


def test_pending_key_not_read():
    from tui.escrow.records import RecordState

    escrow = memory_escrow((LAB_ADMIN_KEY, RecordState.PENDING))

    on_file = admin_key_on_file(escrow, ESCROW_TOKEN_ID)
    assert on_file is not None
    assert on_file.applied_version is None
    with pytest.raises(AdminKeyNotOnFileError, match="no applied admin key"):
        read_admin_key_on_file(escrow, ESCROW_TOKEN_ID)


def test_key_on_file_without_escrow():
    from tui.escrow.context import EscrowContext, EscrowUnavailableError

    escrow = EscrowContext(None, unavailable_reason="no Vault address is configured")

    with pytest.raises(EscrowUnavailableError, match="no Vault address"):
        admin_key_on_file(escrow, ESCROW_TOKEN_ID)
    with pytest.raises(EscrowUnavailableError, match="no Vault address"):
        read_admin_key_on_file(escrow, ESCROW_TOKEN_ID)
