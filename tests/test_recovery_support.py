"""Recovery support: lab session helpers for the recovery tests, and the tests of re-resolution,
the PUK manifest, PIN generation and the `[recovery]` settings."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest

from tui.audit import AuditTrail
from tui.errors import PolicyError
from tui.escrow.context import EscrowContext
from tui.escrow.flow import EscrowFlow
from tui.escrow.memory import MemoryStore
from tui.escrow.records import Encoding, SecretKind
from tui.lab.backend import LabBackend
from tui.model import PinPolicy, ScanResult, TokenScan
from tui.recovery.common import ReadOnlyModeError, RecoverySettings, require_writable
from tui.recovery.generate import check_pin_policy, generate_pin, generate_puk, weak_value_reason
from tui.recovery.manifest import ManifestError, load_manifest, lookup_puk
from tui.recovery.target import TokenAmbiguousError, TokenGoneError, open_token
from tui.scan import scan_all
from tui.secret import Secret
from tui.session import Session
from tui.settings import SiteSettings
from tui.transport import Channel

# Lab escrow names and the record kind and encoding each seeds.
ESCROW_KINDS = {
    "piv-puk": (SecretKind.PIV_PUK, Encoding.ASCII_FF_PADDED.value),
    "admin-key": (SecretKind.ADMIN_KEY, Encoding.HEX.value),
}
# Instructions that set or wipe something: the escrow record must be pending before each.
WRITE_INS = {0x24, 0x2C, 0xFB, 0x38}


@dataclass
class Lab:
    """One lab scenario wired to a session: scan, token, channel, escrow store and audit trail."""

    backend: LabBackend
    scan: ScanResult
    token: TokenScan
    channel: Channel
    session: Session
    store: MemoryStore
    flow: EscrowFlow
    escrow_at_write: list[tuple[str, int, str]] = field(default_factory=list)

    @property
    def key(self):
        return self.backend.key(self.token.reader)

    def sent(self, ins: int) -> list:
        """Return the exchanges whose command has instruction `ins`."""
        return [e for e in self.channel.exchanges if e.command.ins == ins]

    def data_sent(self, ins: int) -> list[bytes]:
        """Return the data fields sent with instruction `ins`."""
        return [e.command.data for e in self.sent(ins) if e.command.data]


def make_lab(scenario: str, tmp_path, *, settings: SiteSettings | None = None, readable: bool = True,
             index: int = 0) -> Lab:
    """Build `scenario`, scan it, seed the escrow from the scenario, and open the token by its ID."""
    settings = settings or SiteSettings()
    backend = LabBackend(scenario)
    scan = scan_all(backend, settings)
    token = scan.tokens[index]

    audit = AuditTrail(tmp_path / "audit.jsonl", lab=True)
    store = MemoryStore(readable=readable)
    for lab_token, key in zip(scan.tokens, [k for k in backend.keys if k.card is not None]):
        for name, value in key.escrow.items():
            kind, encoding = ESCROW_KINDS[name]
            store.seed(lab_token.token_id, kind, value, encoding=encoding)
    flow = EscrowFlow(store, user="tech", audit=audit)
    session = Session(settings, audit, lab_scenario=scenario, escrow=EscrowContext(flow, label="lab store"))
    session.triage.ticket = "INC-42"

    _, channel = open_token(backend, token.token_id, settings)
    lab = Lab(backend, scan, token, channel, session, store, flow)

    def record_escrow(exchange) -> None:
        if exchange.command.ins not in WRITE_INS:
            return
        for kind in (SecretKind.PIV_PIN, SecretKind.PIV_PUK):
            metadata = store.read_metadata(token.token_id, kind)
            if metadata is not None:
                record, _, version = store.read_version(token.token_id, kind) if store.readable else (None, None, metadata.current_version)
                state = record.state.value if record is not None else "?"
                lab.escrow_at_write.append((kind.value, version, state))

    channel.observers.append(record_escrow)
    return lab


def versions(lab: Lab, kind: SecretKind) -> list[str]:
    """Return the states of every version of `kind` for the lab token, oldest first."""
    metadata = lab.store.read_metadata(lab.token.token_id, kind)
    if metadata is None:
        return []
    return [lab.store.read_version(lab.token.token_id, kind, n)[0].state.value for n in sorted(metadata.versions)]


# --- re-resolution ------------------------------------------------------------------------


def test_open_token_finds_second_token():
    backend = LabBackend("two-tokens")
    scan = scan_all(backend, SiteSettings())
    wanted = scan.tokens[1]

    lite, channel = open_token(backend, wanted.token_id, SiteSettings())

    assert lite.reader == wanted.reader
    assert lite.token_id == wanted.token_id
    assert lite.attached == [t.reader for t in scan.tokens]
    assert channel.transport.reader == wanted.reader


def test_open_token_sends_no_verify():
    backend = LabBackend("yubikey-healthy")
    token = scan_all(backend, SiteSettings()).tokens[0]

    _, channel = open_token(backend, token.token_id, SiteSettings())

    assert all(e.command.ins not in (0x20, 0x24, 0x2C, 0x82) for e in channel.exchanges)


def test_open_token_gone_after_removal():
    backend = LabBackend("healthy")
    token = scan_all(backend, SiteSettings()).tokens[0]
    backend.remove(token.reader)

    with pytest.raises(TokenGoneError, match="no longer attached"):
        open_token(backend, token.token_id, SiteSettings())


def test_open_token_unknown_id_is_gone():
    backend = LabBackend("healthy")

    with pytest.raises(TokenGoneError, match="cplc:0000"):
        open_token(backend, "cplc:0000", SiteSettings())


def test_open_token_same_id_twice_is_ambiguous():
    backend = LabBackend("two-tokens")
    # Give the second key the first one's CPLC: two readers then return the same ID.
    first, second = backend.keys
    second.card_manager.cplc = first.card_manager.cplc
    token = scan_all(backend, SiteSettings()).tokens[0]

    with pytest.raises(TokenAmbiguousError, match="2 readers"):
        open_token(backend, token.token_id, SiteSettings())


# --- read-only mode and settings ----------------------------------------------------------


def test_require_writable_rejects_read_only():
    with pytest.raises(ReadOnlyModeError, match="read-only"):
        require_writable(SiteSettings(read_only=True), "The PUK reset")
    require_writable(SiteSettings(), "The PUK reset")


def test_recovery_settings_parse():
    settings = SiteSettings(raw={"recovery": {"pin_min_length": 8, "pin_numeric_only": True,
                                              "puk_encoding": {"piv": "hex-8-bytes"}}})

    parsed = RecoverySettings.from_settings(settings)

    assert parsed.pin_min_length == 8
    assert parsed.pin_numeric_only is True
    assert parsed.puk_encoding_for("piv") == "hex-8-bytes"
    assert parsed.puk_encoding_for("yubikey") == "padded"


@pytest.mark.parametrize("table", [{"pin_min_length": 3}, {"pin_numeric_only": "yes"}, {"puk_encoding": "base64"}])
def test_recovery_settings_reject_bad(table):
    with pytest.raises(PolicyError, match=r"\[recovery"):
        RecoverySettings.from_settings(SiteSettings(raw={"recovery": table}))


# --- PIN and PUK generation ---------------------------------------------------------------


@pytest.mark.parametrize("value", ["123456", "00000000", "12345678", "777777", "876543", "234567"])
def test_weak_values_rejected(value):
    assert weak_value_reason(value) is not None


@pytest.mark.parametrize("value", ["13572468", "240913", "80246913"])
def test_ordinary_values_accepted(value):
    assert weak_value_reason(value) is None


def test_generated_pins_meet_policy():
    policy = PinPolicy(6, 8, True)
    for _ in range(200):
        pin = generate_pin(policy)
        text = pin.reveal_text()
        assert len(text) == 8
        assert text.isdigit()
        assert weak_value_reason(text) is None


def test_generated_pin_length_outside_policy():
    with pytest.raises(PolicyError, match="does not fit"):
        generate_pin(PinPolicy(6, 8, True), length=9)


def test_generated_puk_encodings():
    assert len(generate_puk("padded").reveal_text()) == 8
    hex_puk = generate_puk("hex-8-bytes").reveal_text()
    assert len(hex_puk) == 16
    bytes.fromhex(hex_puk)


def test_pin_policy_messages_hide_value():
    with pytest.raises(PolicyError) as caught:
        check_pin_policy(Secret("12345678"), PinPolicy(6, 8, True))
    assert "12345678" not in str(caught.value)
    assert "well-known" in str(caught.value)
    with pytest.raises(PolicyError, match="digits 0-9"):
        check_pin_policy(Secret("ab3d5f7h"), PinPolicy(6, 8, True))
    with pytest.raises(PolicyError, match="5 bytes"):
        check_pin_policy(Secret("13579"), PinPolicy(6, 8, False))


# --- the PUK manifest ---------------------------------------------------------------------


def write_manifest(tmp_path, text: str, mode: int = 0o600):
    path = tmp_path / "puks.csv"
    path.write_text(text, encoding="utf-8")
    os.chmod(path, mode)
    return path


def test_manifest_parses_rows(tmp_path):
    path = write_manifest(tmp_path, "# provisioning batch 7\ntoken_id,puk,encoding\n"
                                    "cplc:1AB07E575A17C0DE0003,73910264,padded\n"
                                    "serial:99000003,00112233445566AA,hex-8-bytes\n")

    entries = load_manifest(path)

    assert set(entries) == {"cplc:1AB07E575A17C0DE0003", "serial:99000003"}
    assert entries["cplc:1AB07E575A17C0DE0003"].puk.reveal() == "73910264"
    assert entries["serial:99000003"].encoding == "hex-8-bytes"
    assert entries["serial:99000003"].line == 4
    assert "73910264" not in repr(entries["cplc:1AB07E575A17C0DE0003"])


@pytest.mark.parametrize(("text", "message"), [
    ("token,puk,encoding\n", "header"),
    ("token_id,puk,encoding\ncplc:AB,1234,padded\n", "line 2"),
    ("token_id,puk,encoding\nnot-an-id,73910264,padded\n", "source:value"),
    ("token_id,puk,encoding\ncplc:AB,73910264,base64\n", "encoding 'base64'"),
    ("token_id,puk,encoding\ncplc:AB,73910264\n", "2 fields"),
    ("token_id,puk,encoding\ncplc:AB,73910264,padded\ncplc:AB,64201357,padded\n", "first on line 2"),
    ("token_id,puk,encoding\ncplc:AB,0011223344556677XY,hex-8-bytes\n", "16 hex digits"),
    ("", "empty"),
])
def test_manifest_strict_errors(tmp_path, text, message):
    path = write_manifest(tmp_path, text)

    with pytest.raises(ManifestError, match=message) as caught:
        load_manifest(path)
    assert "73910264" not in str(caught.value)
    assert "64201357" not in str(caught.value)


def test_manifest_world_readable_rejected(tmp_path):
    path = write_manifest(tmp_path, "token_id,puk,encoding\n", mode=0o644)

    with pytest.raises(ManifestError, match="chmod o-rwx"):
        load_manifest(path)


def test_manifest_lookup_by_settings(tmp_path):
    path = write_manifest(tmp_path, "token_id,puk,encoding\ncplc:AB,73910264,padded\n")
    settings = SiteSettings(puk_manifest=str(path))

    assert lookup_puk(settings, "cplc:AB").puk.reveal() == "73910264"
    assert lookup_puk(settings, "cplc:CD") is None
    assert lookup_puk(SiteSettings(), "cplc:AB") is None


def test_manifest_missing_file(tmp_path):
    with pytest.raises(ManifestError, match="not found"):
        load_manifest(tmp_path / "absent.csv")
