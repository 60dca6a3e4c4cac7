"""Ticket drafts on disk: mode 0600, atomic replace, recent drafts of this user only."""

from __future__ import annotations

import datetime as dt
import json
import stat

from tui.draft import STATE_CLOSED, STATE_INTERRUPTED, DraftStore, default_draft_dir

NOW = dt.datetime(2025, 3, 14, 20, 0, tzinfo=dt.timezone.utc)


def test_draft_written_0600_in_0700_dir(tmp_path):
    store = DraftStore(tmp_path / "drafts", user="alice")

    store.save("abc123", "ticket text\n", token_id="cplc:AAAA", lab=False)
    path = store.path_for("abc123")

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    data = json.loads(path.read_text())
    assert data["text"] == "ticket text\n"
    assert data["token_id"] == "cplc:AAAA"
    assert data["state"] == "open"
    assert data["user"] == "alice"


def test_default_dir_under_xdg_state(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))

    assert default_draft_dir() == tmp_path / "keytriage" / "drafts"


def test_save_replaces_and_leaves_no_temp(tmp_path):
    store = DraftStore(tmp_path, user="alice")

    store.save("s1", "first", token_id=None, lab=False)
    store.save("s1", "second", token_id=None, lab=False)

    assert store.load(store.path_for("s1")).text == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s1.json"]


def test_recent_skips_closed_old_other_user_and_self(tmp_path):
    alice = DraftStore(tmp_path, user="alice")
    bob = DraftStore(tmp_path, user="bob")
    alice.save("interrupted", "a", token_id="cplc:A", lab=False, state=STATE_INTERRUPTED,
               now=NOW - dt.timedelta(minutes=10))
    alice.save("crashed", "b", token_id="cplc:B", lab=False, now=NOW - dt.timedelta(minutes=5))
    alice.save("closed", "c", token_id=None, lab=False, state=STATE_CLOSED, now=NOW)
    alice.save("old", "d", token_id=None, lab=False, now=NOW - dt.timedelta(days=2))
    alice.save("current", "e", token_id=None, lab=False, now=NOW)
    bob.save("bobs", "f", token_id=None, lab=False, now=NOW)

    found = alice.recent(exclude_session="current", now=NOW)

    assert [d.session for d in found] == ["crashed", "interrupted"]


def test_mark_keeps_text(tmp_path):
    store = DraftStore(tmp_path, user="alice")
    store.save("s1", "the text", token_id="cplc:A", lab=True)

    store.mark("s1", STATE_CLOSED)
    draft = store.load(store.path_for("s1"))

    assert draft.state == STATE_CLOSED
    assert draft.text == "the text"
    assert draft.lab is True


def test_mark_without_draft_returns_none(tmp_path):
    assert DraftStore(tmp_path, user="alice").mark("none", STATE_CLOSED) is None


def test_damaged_draft_skipped(tmp_path):
    store = DraftStore(tmp_path, user="alice")
    (tmp_path / "bad.json").write_text("{not json")
    store.save("good", "t", token_id=None, lab=False)

    assert [d.session for d in store.recent()] == ["good"]


def test_session_name_cannot_leave_directory(tmp_path):
    store = DraftStore(tmp_path / "drafts", user="alice")

    path = store.path_for("../../etc/passwd")

    assert path.parent == tmp_path / "drafts"
    assert path.name == "etcpasswd.json"
