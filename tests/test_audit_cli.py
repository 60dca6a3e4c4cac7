"""`keytriage audit`: aligned columns, --since, --json, no secrets."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from tui.audit import AuditTrail
from tui.audit_cli import COLUMNS, format_table, parse_since
from tui.cli import main

NOW = dt.datetime(2025, 3, 14, 20, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def audit_file(tmp_path):
    path = tmp_path / "audit.jsonl"
    trail = AuditTrail(path, session="s1")
    trail.record("scan", "ok", token_id="cplc:AAAA", profile="piv")
    trail.record("verify-pin", "wrong-pin", token_id="cplc:AAAA", status=0x63C2, tries_before=3, tries_after=2,
                 reason="user claims PIN")
    trail.record("scan", "ok", token_id="cplc:BBBBBBBB")
    return path


def test_table_columns_aligned(audit_file, capsys):
    assert main(["audit", "--file", str(audit_file)]) == 0
    lines = capsys.readouterr().out.splitlines()

    assert lines[0].startswith("TIME (UTC)")
    for column in COLUMNS:
        assert column in lines[0]
    starts = [line.index("cplc:") for line in lines[1:]]
    assert len(set(starts)) == 1
    assert lines[0].index("TOKEN") == starts[0]
    assert "63C2" in lines[2]
    assert "3->2" in lines[2]
    assert "reason=user claims PIN" in lines[2]
    assert len(lines) == 4


def test_filter_by_id(audit_file, capsys):
    assert main(["audit", "--file", str(audit_file), "--id", "cplc:BBBBBBBB"]) == 0
    lines = capsys.readouterr().out.splitlines()

    assert len(lines) == 2
    assert "cplc:BBBBBBBB" in lines[1]


def test_json_output(audit_file, capsys):
    assert main(["audit", "--file", str(audit_file), "--json", "--id", "cplc:AAAA"]) == 0
    records = json.loads(capsys.readouterr().out)

    assert [r["operation"] for r in records] == ["scan", "verify-pin"]
    assert records[1]["status"] == "63C2"
    assert records[1]["tries_after"] == 2
    assert records[1]["details"] == {"reason": "user claims PIN"}


def test_json_empty_is_empty_array(tmp_path, capsys):
    assert main(["audit", "--file", str(tmp_path / "none.jsonl"), "--json"]) == 0

    assert json.loads(capsys.readouterr().out) == []


def test_since_filters_old_records(tmp_path, capsys):
    path = tmp_path / "audit.jsonl"
    old = {"time": "2020-01-01T00:00:00+00:00", "user": "alice", "host": "h", "session": "s0",
           "operation": "scan", "outcome": "ok", "token_id": "cplc:OLD", "details": {}}
    path.write_text(json.dumps(old) + "\n")
    AuditTrail(path).record("scan", "ok", token_id="cplc:NEW")

    assert main(["audit", "--file", str(path), "--since", "2d"]) == 0
    out = capsys.readouterr().out

    assert "cplc:NEW" in out
    assert "cplc:OLD" not in out


def test_since_with_no_match_says_so(audit_file, capsys):
    assert main(["audit", "--file", str(audit_file), "--since", "2999-01-01"]) == 0

    assert "No audit records since 2999-01-01T00:00+00:00" in capsys.readouterr().out


def test_since_invalid_exits_2(audit_file, capsys):
    assert main(["audit", "--file", str(audit_file), "--since", "yesterday"]) == 2

    err = capsys.readouterr().err
    assert "--since 'yesterday' is not a duration" in err


@pytest.mark.parametrize("text, expected", [
    ("30m", NOW - dt.timedelta(minutes=30)),
    ("12h", NOW - dt.timedelta(hours=12)),
    ("7d", NOW - dt.timedelta(days=7)),
    ("2w", NOW - dt.timedelta(weeks=2)),
    ("2025-03-01", dt.datetime(2025, 3, 1, tzinfo=dt.timezone.utc)),
    ("2025-03-01T09:30", dt.datetime(2025, 3, 1, 9, 30, tzinfo=dt.timezone.utc)),
    ("2025-03-01T09:30+01:00", dt.datetime(2025, 3, 1, 8, 30, tzinfo=dt.timezone.utc)),
])
def test_parse_since_forms(text, expected):
    assert parse_since(text, now=NOW) == expected


def test_lab_records_marked(tmp_path):
    trail = AuditTrail(tmp_path / "a.jsonl", lab=True)
    entry = trail.record("scan", "ok", token_id="cplc:LAB")

    table = format_table([entry])

    assert table.splitlines()[1].split()[-1] == "LAB"
