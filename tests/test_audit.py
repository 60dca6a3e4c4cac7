"""The audit trail: fields, file mode, attempt history, and no secrets."""

import datetime as dt
import json
import logging
import os
import stat

import pytest

from tui.audit import AuditError, AuditTrail
from tui.audit_cli import format_record
from tui.secret import Secret


@pytest.fixture
def restore_logger():
    """Undo what tui.cli.main does to the "keytriage" logger, so later caplog tests see records."""
    logger = logging.getLogger("keytriage")
    saved = (logger.level, logger.propagate, list(logger.handlers))
    yield
    logger.level, logger.propagate = saved[0], saved[1]
    logger.handlers[:] = saved[2]


@pytest.fixture
def trail(tmp_path):
    return AuditTrail(tmp_path / "state" / "audit.jsonl", session="s1")


def test_record_writes_json_line_with_fields(trail):
    trail.record("verify-pin", "wrong-pin", token_id="cplc:1AB0", profile="piv", status=0x63C2, tries_before=3, tries_after=2, reader="R 00 00")
    line = trail.path.read_text().strip()
    data = json.loads(line)
    assert data["operation"] == "verify-pin"
    assert data["status"] == "63C2"
    assert data["tries_before"] == 3
    assert data["tries_after"] == 2
    assert data["token_id"] == "cplc:1AB0"
    assert data["details"] == {"reader": "R 00 00"}
    assert data["user"]
    assert data["host"]


def test_file_mode_is_0600(trail):
    trail.record("scan", "ok")
    assert stat.S_IMODE(os.stat(trail.path).st_mode) == 0o600


def test_secret_detail_is_rejected(trail):
    with pytest.raises(AuditError):
        trail.record("verify-pin", "ok", message=Secret("123456"))
    assert not trail.path.exists()


def test_unknown_detail_is_rejected(trail):
    with pytest.raises(AuditError):
        trail.record("fido-list", "ok", rp_id="example.com")


def test_attempts_survive_a_new_process(trail):
    trail.record("verify-pin", "wrong-pin", token_id="cplc:A")
    trail.record("verify-pin", "ok", token_id="cplc:B")
    restarted = AuditTrail(trail.path, session="s2")
    assert len(restarted.attempts("cplc:A", "verify-pin")) == 1
    assert len(restarted.attempts("cplc:A", "fido-pin")) == 0


def test_attempts_outside_window_do_not_count(trail):
    trail.record("verify-pin", "wrong-pin", token_id="cplc:A")
    assert trail.attempts("cplc:A", "verify-pin", within=dt.timedelta(seconds=-1)) == []


def test_lab_and_real_attempts_are_separate(tmp_path):
    path = tmp_path / "audit.jsonl"
    AuditTrail(path, lab=True).record("verify-pin", "ok", token_id="cplc:A")
    assert AuditTrail(path, lab=False).attempts("cplc:A", "verify-pin") == []
    assert len(AuditTrail(path, lab=True).attempts("cplc:A", "verify-pin")) == 1


def test_damaged_line_is_skipped(trail):
    trail.record("scan", "ok", token_id="cplc:A")
    with trail.path.open("a") as handle:
        handle.write("{not json\n")
    trail.record("scan", "ok", token_id="cplc:A")
    assert len(list(trail.records("cplc:A"))) == 2


def test_format_record_is_one_line(trail):
    entry = trail.record("verify-pin", "wrong-pin", token_id="cplc:A", status=0x63C2, tries_before=3, tries_after=2)
    text = format_record(entry)
    assert "\n" not in text
    assert "tries 3->2" in text
    assert "status 63C2" in text


def test_audit_cli_prints_records(tmp_path, capsys, restore_logger):
    from tui.cli import main

    path = tmp_path / "audit.jsonl"
    AuditTrail(path).record("scan", "ok", token_id="cplc:1AB0")
    assert main(["audit", "--file", str(path), "--id", "cplc:1AB0"]) == 0
    assert "cplc:1AB0" in capsys.readouterr().out


def test_audit_cli_rejects_bad_id(tmp_path, capsys, restore_logger):
    from tui.cli import main

    assert main(["audit", "--file", str(tmp_path / "a.jsonl"), "--id", "nocolon"]) == 2
    assert "source:value" in capsys.readouterr().err


def test_marked_lab_token_records_lab(trail):
    trail.mark_lab_token("cplc:1AB07E575A17C0DE0001")

    lab_entry = trail.record("verify-pin", "ok", token_id="cplc:1AB07E575A17C0DE0001")
    real_entry = trail.record("verify-pin", "ok", token_id="cplc:4790516856781A2B3C4D")
    no_token_entry = trail.record("scan", "ok")

    assert trail.lab is False
    assert lab_entry.lab is True
    assert real_entry.lab is False
    assert no_token_entry.lab is False
    written = [json.loads(line)["lab"] for line in trail.path.read_text().splitlines()]
    assert written == [True, False, False]


def test_marked_lab_token_attempts_count(trail):
    trail.mark_lab_token("cplc:1AB07E575A17C0DE0001")
    trail.record("verify-pin", "sending", token_id="cplc:1AB07E575A17C0DE0001")

    # The same trail finds the lab attempt; a trail that has not marked the token does not.
    assert len(trail.attempts("cplc:1AB07E575A17C0DE0001", "verify-pin")) == 1
    assert AuditTrail(trail.path, session="s2").attempts("cplc:1AB07E575A17C0DE0001", "verify-pin") == []
    assert len(AuditTrail(trail.path, session="s2", lab=True).attempts("cplc:1AB07E575A17C0DE0001", "verify-pin")) == 1


def test_session_marks_served_lab_key(trail):
    from conftest import make_token
    from tui.session import Session
    from tui.settings import SiteSettings

    served = make_token(0, token_id="cplc:1AB07E575A17C0DE0001")
    served.is_lab = True
    hardware = make_token(1, token_id="cplc:4790516856781A2B3C4D")
    session = Session(SiteSettings(), trail)

    session.note_scan([served, hardware])
    served_entry = session.audit.record("verify-pin", "ok", token_id=served.token_id)
    hardware_entry = session.audit.record("verify-pin", "ok", token_id=hardware.token_id)

    assert session.is_lab is False
    assert served_entry.lab is True
    assert hardware_entry.lab is False
