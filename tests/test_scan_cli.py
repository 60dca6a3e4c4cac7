"""`keytriage scan` and `keytriage id` through the real argument parser."""

import json
import logging

import pytest

import tui.backends
from tests.fakes import FakeBackend
from tui.cli import main
from tui.errors import PcscError
from tui.model import PcscProblem


@pytest.fixture(autouse=True)
def no_site_config(tmp_path, monkeypatch):
    monkeypatch.delenv("KEYTRIAGE_CONFIG", raising=False)


@pytest.fixture(autouse=True)
def restore_logging():
    # main() configures the "keytriage" logger (no propagation, a stderr handler);
    # undo it so later tests can still capture log records.
    logger = logging.getLogger("keytriage")
    saved = (logger.level, logger.propagate, list(logger.handlers))
    yield
    logger.level, logger.propagate, logger.handlers[:] = saved[0], saved[1], saved[2]


def scan_json(capsys, *argv):
    code = main(["scan", *argv, "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def test_pin_locked_puk_json(capsys):
    code, data, err = scan_json(capsys, "--lab", "pin-locked-puk")
    pin = data["tokens"][0]["smartcard"]["pin"]
    assert code == 0
    assert err == ""
    assert pin["tries_remaining"] == 0
    assert pin["state"] == "blocked"
    assert data["lab"] == "pin-locked-puk"
    assert data["tokens"][0]["next_step"].startswith("Step 6")


def test_wrong_pin_json(capsys):
    code, data, _ = scan_json(capsys, "--lab", "wrong-pin")
    token = data["tokens"][0]
    assert code == 0
    assert token["smartcard"]["pin"]["tries_remaining"] == 3
    assert token["smartcard"]["pin"]["source"] == "PIV status query"
    assert token["smartcard"]["puk"]["state"] == "not_readable"
    assert token["smartcard"]["puk"]["tries_remaining"] is None


def test_json_keys_present(capsys):
    _, data, _ = scan_json(capsys, "--lab", "healthy")
    token = data["tokens"][0]
    for key in ("index", "reader", "profile", "id", "cuid", "cuid_source", "atr", "smartcard", "next_step"):
        assert key in token
    for key in ("pin", "puk", "admin_key", "pin_policy"):
        assert key in token["smartcard"]
    assert token["profile"] == "hid-crescendo"
    assert len(token["cuid"]) == 20
    assert token["smartcard"]["admin_key"]["type"] == "AES-128"
    assert token["smartcard"]["pin_policy"] == {"min_length": 6, "max_length": 8, "numeric_only": True,
                                                "source": "GET PIN PROPERTIES"}
    assert set(data) >= {"lab", "problem", "readers", "tokens"}


def test_no_token_exit_zero(capsys):
    code, data, _ = scan_json(capsys, "--lab", "no-token")
    assert code == 0
    assert data["tokens"] == []
    assert data["problem"]["check"] == "card in reader"


def test_two_tokens_indexed(capsys):
    _, data, _ = scan_json(capsys, "--lab", "two-tokens")
    assert [t["index"] for t in data["tokens"]] == [0, 1]


def test_plain_text_one_field_per_line(capsys):
    assert main(["scan", "--lab", "wrong-pin"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [
        "Lab key, scenario wrong-pin",
        "",
        "Token 0",
        "  Reader:     Generic PIV reader 00 00",
        "  Profile:    Generic PIV",
        "  Token ID:   cplc:1AB07E575A17C0DE0002",
        "  PIN:        3/? ok, LOW",
        "  PUK:        unknown (not readable)",
        "  Admin key:  unknown",
        "  FIDO PIN:   not supported",
        "  OTP:        no OTP slot",
        "  Next:       Step 4: test the PIN the user claims, once.",
    ]


@pytest.mark.parametrize("scenario", ["wrong-pin", "two-tokens", "otp-drift", "cert-expired", "no-token"])
def test_plain_text_fits_80_columns(capsys, scenario):
    main(["scan", "--lab", scenario])
    for line in capsys.readouterr().out.splitlines():
        assert len(line) <= 80, line


def test_plain_text_two_tokens_warns(capsys):
    assert main(["scan", "--lab", "two-tokens"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "2 tokens attached: confirm which one is the user's"
    assert "Token 0" in lines
    assert "Token 1" in lines
    assert "  PIN:        5/? ok" in lines


def test_plain_text_one_token_no_warning(capsys):
    assert main(["scan", "--lab", "healthy"]) == 0
    assert "tokens attached" not in capsys.readouterr().out


def test_unknown_scenario_exit_two(capsys):
    assert main(["scan", "--lab", "no-such-scenario"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "no-such-scenario" in captured.err
    assert len(captured.err.strip().splitlines()) == 1


def test_service_missing_exit_three(capsys, monkeypatch):
    backend = FakeBackend([], list_error=PcscError(PcscProblem.NO_SERVICE))
    monkeypatch.setattr(tui.backends, "open_backend", lambda lab: backend)
    assert main(["scan"]) == 3
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "pcscd" in captured.err


def test_service_missing_json_still_printed(capsys, monkeypatch):
    backend = FakeBackend([], list_error=PcscError(PcscProblem.NO_SERVICE))
    monkeypatch.setattr(tui.backends, "open_backend", lambda lab: backend)
    code, data, err = scan_json(capsys)
    assert code == 3
    assert data["problem"]["name"] == "no_service"
    assert "pcscd" in err


def test_trace_option_accepted(capsys, tmp_path):
    assert main(["scan", "--lab", "healthy", "--trace", str(tmp_path / "t.trace"), "--json"]) == 0


def test_id_prints_chosen(capsys):
    assert main(["id", "--lab", "yubikey-healthy"]) == 0
    assert capsys.readouterr().out == "serial:99000001\n"


def test_id_explain_lists_both_orders(capsys):
    assert main(["id", "--lab", "healthy", "--explain"]) == 0
    out = capsys.readouterr().out
    assert "chosen: cplc:1AB07E575A17C0DE0001" in out
    assert "cplc-gp  1AB07E57C0DE00015A17" in out
    assert "guid" in out


def test_id_no_token_exit_one(capsys):
    assert main(["id", "--lab", "no-token"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "card in reader" in captured.err


FIDO_SCENARIOS = {
    "fido-not-set": ("not_set", 8),
    "fido-healthy": ("healthy", 8),
    "fido-auth-blocked": ("temporarily_blocked", 5),
    "fido-blocked": ("permanently_blocked", 0),
}


@pytest.mark.parametrize("name", sorted(FIDO_SCENARIOS))
def test_fido_pin_state_json(capsys, name):
    code, data, _ = scan_json(capsys, "--lab", name)
    fido = data["tokens"][0]["fido"]
    expected_state, expected_retries = FIDO_SCENARIOS[name]
    assert code == 0
    assert fido["pin"]["state"] == expected_state
    assert fido["pin"]["retries"] == expected_retries
    assert data["tokens"][0]["smartcard"]["pin"]["state"] == "ok"


def test_fido_states_all_differ(capsys):
    states = {scan_json(capsys, "--lab", name)[1]["tokens"][0]["fido"]["pin"]["state"] for name in FIDO_SCENARIOS}
    assert len(states) == 4


def test_fido_retries_zero_only_when_blocked(capsys):
    for name in FIDO_SCENARIOS:
        retries = scan_json(capsys, "--lab", name)[1]["tokens"][0]["fido"]["pin"]["retries"]
        assert (retries == 0) == (name == "fido-blocked"), name


def test_fido_absent_json(capsys):
    _, data, _ = scan_json(capsys, "--lab", "wrong-pin")
    fido = data["tokens"][0]["fido"]
    assert fido["found"] is False
    assert fido["pin"]["state"] == "not_supported"
    assert fido["pin"]["retries"] is None


def test_otp_slots_json(capsys):
    _, data, _ = scan_json(capsys, "--lab", "otp-drift")
    slots = data["tokens"][0]["otp"]["slots"]
    assert [slot["slot"] for slot in slots] == ["1", "2", "3"]
    first = slots[0]
    assert (first["mode"], first["algorithm"], first["digits"]) == ("HOTP", "SHA-1", 6)
    assert first["counter"] == 1042
    assert first["name"] == "VPN OTP"
    assert slots[1]["configured"] is False
    # Every field is present, unknown ones as null.
    assert slots[1]["mode"] is None
    assert set(first) == set(slots[1])


def test_certificates_json(capsys):
    _, data, _ = scan_json(capsys, "--lab", "healthy")
    certificates = data["tokens"][0]["certificates"]
    assert [c["slot"] for c in certificates] == ["9A", "9C", "9D", "9E"]
    assert certificates[0]["present"] is True
    assert certificates[0]["subject"] == "Lab Crescendo 1"
    assert certificates[0]["expired"] is False
    assert certificates[0]["not_after"].endswith("+00:00")
    assert [c["present"] for c in certificates[1:]] == [False, False, False]


def test_plain_text_applet_lines(capsys):
    # The lab certificate is valid for 545 days from the scan, so the date moves with the clock.
    import datetime as dt

    def expiry_line() -> str:
        until = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=545)
        return f"  Certificate 9A: valid to {until.date().isoformat()}"

    before = expiry_line()
    assert main(["scan", "--lab", "otp-drift"]) == 0
    after = expiry_line()
    lines = capsys.readouterr().out.splitlines()
    assert "  OTP slot 1: configured, HOTP, SHA-1, 6 digits, name 'VPN OTP'" in lines
    assert "  OTP slot 2: empty" in lines
    assert before in lines or after in lines
    assert "  FIDO PIN:   not supported" in lines


def read_trace_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_trace_written_redacted(capsys, tmp_path):
    path = tmp_path / "scan.trace"
    assert main(["scan", "--lab", "healthy", "--trace", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    lines = read_trace_lines(path)
    exchanges = [line for line in lines if line["type"] == "exchange"]
    assert lines[0]["type"] == "header"
    assert len(exchanges) == data["apdu_count"]
    assert [line["type"] for line in lines].count("result") == 1
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    for line in exchanges:
        if line["header"].startswith("00 20") and line["data"]:
            assert isinstance(line["data"], dict), "a VERIFY data field must be redacted"


def test_trace_replays_same_json(capsys, tmp_path):
    from tui.scan import scan_all
    from tui.scan_json import result_to_dict
    from tui.settings import SiteSettings
    from tui.trace import ReplayBackend

    path = tmp_path / "pin-locked-puk.trace"
    code, recorded, _ = scan_json(capsys, "--lab", "pin-locked-puk", "--trace", str(path))
    backend = ReplayBackend.from_file(path)
    replayed = result_to_dict(scan_all(backend, SiteSettings()))
    backend.assert_complete()
    assert code == 0
    # The replay backend carries no scenario name; everything else must match.
    assert replayed.pop("lab") is None
    assert recorded.pop("lab") == "pin-locked-puk"
    assert replayed == recorded


def test_trace_replays_fido_over_pcsc(tmp_path, monkeypatch):
    # A key without FIDO over USB HID is read over PC/SC, and that replays too.
    from tui.scan import scan_all
    from tui.scan_json import result_to_dict
    from tui.settings import SiteSettings
    from tui.trace import ReplayBackend, open_trace_writer

    path = tmp_path / "fido.trace"
    backend = tui.backends.open_backend("fido-auth-blocked")
    with open_trace_writer(path) as writer:
        recorded = result_to_dict(scan_all(writer.wrap(backend), SiteSettings(), observer=writer, usb_hid=False))
    replay = ReplayBackend.from_file(path)
    replayed = result_to_dict(scan_all(replay, SiteSettings()))
    replay.assert_complete()
    assert replayed["tokens"][0]["fido"]["pin"]["state"] == "temporarily_blocked"
    assert replayed["tokens"] == recorded["tokens"]


def test_trace_unwritable_exit_two(capsys, tmp_path):
    assert main(["scan", "--lab", "healthy", "--trace", str(tmp_path / "missing" / "t.trace")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "trace file" in captured.err


def test_id_trace_written(capsys, tmp_path):
    path = tmp_path / "id.trace"
    assert main(["id", "--lab", "yubikey-healthy", "--trace", str(path)]) == 0
    assert capsys.readouterr().out == "serial:99000001\n"
    lines = read_trace_lines(path)
    assert any(line.get("name") == "GET SERIAL" for line in lines)
    assert lines[-1] == {"type": "result", "reader": lines[1]["readers"][0], "profile": "yubikey",
                         "token_id": "serial:99000001"}
