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
    monkeypatch.setenv("KEYTRIAGE_CONFIG", str(tmp_path / "absent.toml"))


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


def test_plain_table(capsys):
    assert main(["scan", "--lab", "wrong-pin"]) == 0
    out = capsys.readouterr().out
    assert "Generic PIV" in out
    assert "3/? ok" in out
    assert "next: Step 4" in out


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
