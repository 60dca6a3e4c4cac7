"""Clipboard copies: OSC 52 always, pyperclip only with a local display, honest messages, no secrets."""

from __future__ import annotations

import pyperclip
import pytest

from tui.clipboard import ClipboardPath, copy_text
from tui.secret import Secret

TOKEN_ID = "cplc:4790516856781A2B3C4D"
TMUX = "/tmp/tmux-1000/default,1234,0"


class FakeApp:
    """The part of `textual.app.App` that `copy_text` uses."""

    def __init__(self) -> None:
        self.clipboard = None
        self.calls = 0

    def copy_to_clipboard(self, text: str) -> None:
        self.calls += 1
        self.clipboard = text


@pytest.fixture
def local_copies(monkeypatch):
    copied: list[str] = []
    monkeypatch.setattr(pyperclip, "copy", copied.append)
    return copied


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("SSH_CONNECTION", "SSH_CLIENT", "SSH_TTY", "DISPLAY", "WAYLAND_DISPLAY", "TMUX", "STY", "TERM_PROGRAM"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_ssh_without_display_uses_osc52_only(clean_env, local_copies):
    clean_env.setenv("SSH_CONNECTION", "10.0.0.5 51000 10.0.0.9 22")
    app = FakeApp()

    result = copy_text(app, TOKEN_ID, "Token ID")

    assert app.clipboard == TOKEN_ID
    assert app.calls == 1
    assert local_copies == []
    assert result.osc52_sent
    assert not result.local_copied
    assert result.message == "Token ID sent to the terminal clipboard (OSC 52); check by pasting."


def test_ssh_with_forwarded_display_skips_pyperclip(clean_env, local_copies):
    clean_env.setenv("SSH_CONNECTION", "10.0.0.5 51000 10.0.0.9 22")
    clean_env.setenv("DISPLAY", "localhost:10.0")

    copy_text(FakeApp(), TOKEN_ID, "Token ID")

    assert local_copies == []


def test_local_display_also_uses_pyperclip(clean_env, local_copies):
    clean_env.setenv("DISPLAY", ":0")
    app = FakeApp()

    result = copy_text(app, TOKEN_ID, "Token ID")

    assert local_copies == [TOKEN_ID]
    assert app.clipboard == TOKEN_ID
    assert result.local_copied
    assert "copied to the local clipboard" in result.message


def test_wayland_counts_as_local_display(clean_env, local_copies):
    clean_env.setenv("WAYLAND_DISPLAY", "wayland-0")

    copy_text(FakeApp(), TOKEN_ID, "Token ID")

    assert local_copies == [TOKEN_ID]


def test_local_clipboard_failure_reported(clean_env, monkeypatch):
    clean_env.setenv("DISPLAY", ":0")

    def broken(text):
        raise pyperclip.PyperclipException("Pyperclip could not find a copy/paste mechanism")

    monkeypatch.setattr(pyperclip, "copy", broken)
    app = FakeApp()
    result = copy_text(app, TOKEN_ID, "Token ID")

    assert app.clipboard == TOKEN_ID
    assert not result.local_copied
    assert result.warning
    assert "local clipboard failed: Pyperclip could not find" in result.message
    assert "check by pasting" in result.message


def test_tmux_default_explains_set_clipboard(clean_env, local_copies):
    clean_env.setenv("TMUX", TMUX)
    app = FakeApp()

    result = copy_text(app, TOKEN_ID, "Token ID", tmux_option=lambda: "external")

    assert app.clipboard == TOKEN_ID
    assert app.calls == 1
    assert local_copies == []
    assert result.warning
    assert "tmux set-clipboard is 'external'" in result.message
    assert "set -g set-clipboard on" in result.message
    assert "allow-passthrough" in result.message
    assert "Copied" not in result.message


def test_tmux_with_clipboard_on_no_warning(clean_env, local_copies):
    clean_env.setenv("TMUX", TMUX)

    result = copy_text(FakeApp(), TOKEN_ID, "Token ID", tmux_option=lambda: "on")

    assert not result.warning
    assert "set-clipboard" not in result.message


def test_tmux_option_unreadable_still_hints(clean_env, local_copies):
    clean_env.setenv("TMUX", TMUX)

    result = copy_text(FakeApp(), TOKEN_ID, "Token ID", tmux_option=lambda: None)

    assert "could not be read" in result.message
    assert "set -g set-clipboard on" in result.message


def test_screen_may_not_pass(clean_env, local_copies):
    clean_env.setenv("STY", "1234.pts-0.jump01")

    result = copy_text(FakeApp(), TOKEN_ID, "Token ID")

    assert "GNU screen may not pass OSC 52" in result.message


def test_apple_terminal_warned(clean_env, local_copies):
    clean_env.setenv("TERM_PROGRAM", "Apple_Terminal")

    result = copy_text(FakeApp(), TOKEN_ID, "Token ID")

    assert "Apple Terminal ignores OSC 52" in result.message


def test_secret_rejected(clean_env, local_copies):
    clean_env.setenv("DISPLAY", ":0")
    app = FakeApp()

    with pytest.raises(TypeError, match="refusing to copy a PIV PUK"):
        copy_text(app, Secret("12345678", "PIV PUK"), "PUK")

    assert app.calls == 0
    assert app.clipboard is None
    assert local_copies == []


def test_bytes_rejected(clean_env):
    with pytest.raises(TypeError, match="text only"):
        copy_text(FakeApp(), b"\x01\x02", "key")


def test_path_detect_reads_environment():
    path = ClipboardPath.detect({"SSH_TTY": "/dev/pts/3", "DISPLAY": ":0", "TMUX": TMUX})

    assert path.over_ssh
    assert path.local_display
    assert path.in_tmux
    assert not path.in_screen
    assert not path.local_clipboard
