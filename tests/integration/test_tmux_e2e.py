"""End to end: the TUI in a real terminal (tmux, 80x24), and `lab serve` read by plain `keytriage scan`.

The TUI test checks what a technician would see on screen after the scan of
the pin-locked-puk lab key, then rescans with r and quits with q. The serve
test runs `keytriage lab serve` as its own process against the session's
pcscd and compares plain `keytriage scan --json` with the in-process lab run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from .conftest import SLOTS, wait_reader

SCREEN_WAIT_S = 20.0


def isolated_env(tmp_path) -> dict[str, str]:
    """Return an environment whose XDG directories are private to the test, with an empty config file."""
    (tmp_path / "config").mkdir(parents=True, exist_ok=True)
    (tmp_path / "config" / "none.toml").write_text("")
    return {
        **os.environ,
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
        "KEYTRIAGE_CONFIG": str(tmp_path / "config" / "none.toml"),
    }


def keytriage_command() -> list[str]:
    """Return the installed console script when it runs this checkout, else `python -m tui`."""
    script = shutil.which("keytriage", path=os.path.dirname(sys.executable))
    return [script] if script else [sys.executable, "-m", "tui"]


class Tmux:
    """One tmux server on a private socket, running one 80x24 session."""

    def __init__(self, name: str) -> None:
        self.socket = name
        self.session = "keytriage"

    def run(self, *args: str) -> str:
        result = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=20)
        return result.stdout

    def start(self, command: str) -> None:
        subprocess.run(["tmux", "-L", self.socket, "new-session", "-d", "-s", self.session, "-x", "80", "-y", "24", command],
                       check=True, timeout=20)

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.session)

    def wait_for(self, text: str, timeout_s: float = SCREEN_WAIT_S) -> str:
        deadline = time.monotonic() + timeout_s
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.2)
        pytest.fail(f"{text!r} did not appear on the 80x24 screen within {timeout_s:g} s; last screen:\n{screen}")

    def alive(self) -> bool:
        return subprocess.run(["tmux", "-L", self.socket, "has-session", "-t", self.session],
                              capture_output=True, timeout=20).returncode == 0

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=20)


@pytest.fixture
def tmux():
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    session = Tmux(f"keytriage-test-{os.getpid()}")
    yield session
    session.kill()


def scanned_at(screen: str) -> str:
    match = re.search(r"Scanned (\d\d:\d\d:\d\d)", screen)
    assert match, f"no 'Scanned HH:MM:SS' in the header:\n{screen}"
    return match.group(1)


def test_tui_shows_blocked_pin(tmux, tmp_path):
    env = isolated_env(tmp_path)
    exports = " ".join(f"{name}={env[name]}" for name in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_RUNTIME_DIR", "KEYTRIAGE_CONFIG"))
    command = " ".join(keytriage_command())
    tmux.start(f"cd {os.getcwd()} && env {exports} {command} --lab pin-locked-puk; sleep 30")

    # The header's "Scanned HH:MM:SS" appears once the first scan is painted;
    # the activity line "Scan finished" may already have scrolled out of view.
    screen = tmux.wait_for("Scanned ")

    assert "LAB pin-locked-puk" in screen
    assert re.search(r"Smart-card PIN\s+0/[0-9?]+ BLOCKED", screen), screen
    assert "BLOCKED" in screen
    assert "Reset the PIN with the PUK" in screen
    assert "Step 6" in screen
    assert "r Rescan" in screen
    assert "cplc:" in screen
    for line in screen.splitlines():
        assert len(line) <= 80

    # Let the header clock move on, so a rescan shows a new time.
    first = scanned_at(screen)
    time.sleep(1.1)
    tmux.run("send-keys", "-t", tmux.session, "r")
    deadline = time.monotonic() + SCREEN_WAIT_S
    while scanned_at(tmux.screen()) == first and time.monotonic() < deadline:
        time.sleep(0.2)
    rescanned = tmux.screen()

    assert scanned_at(rescanned) != first
    assert "BLOCKED" in rescanned

    tmux.run("send-keys", "-t", tmux.session, "q")
    deadline = time.monotonic() + SCREEN_WAIT_S
    while "Scanned " in tmux.screen() and time.monotonic() < deadline:
        time.sleep(0.2)

    assert "Scanned " not in tmux.screen(), "q did not quit the TUI"


def summary(scan_json: dict) -> list[dict]:
    """Return what must match between the two paths: per token its ID and counters."""
    rows = []
    for token in scan_json["tokens"]:
        smartcard = token["smartcard"]
        rows.append({
            "id": token["id"],
            "profile": token["profile"],
            "pin": smartcard["pin"],
            "puk": smartcard["puk"],
            "admin_key": smartcard["admin_key"],
            "next_step": token["next_step"],
        })
    return rows


def test_lab_serve_seen_by_plain_scan(pcscd, tmp_path):
    env = isolated_env(tmp_path)
    env["KEYTRIAGE_LAB_SERVE"] = "1"
    wait_reader(SLOTS[0].reader, present=False)
    server = subprocess.Popen([*keytriage_command(), "lab", "serve", "pin-locked-puk", "--port", str(SLOTS[0].port)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        banner = [server.stdout.readline() for _ in range(3)]
        assert any("Inserted key 1" in line for line in banner), banner
        wait_reader(SLOTS[0].reader, present=True)

        plain = subprocess.run([*keytriage_command(), "scan", "--json"], capture_output=True, text=True, timeout=60, env=env)
        lab = subprocess.run([*keytriage_command(), "scan", "--lab", "pin-locked-puk", "--json"],
                             capture_output=True, text=True, timeout=60, env=env)

        assert plain.returncode == 0, plain.stderr
        assert lab.returncode == 0, lab.stderr
        through_pcscd = json.loads(plain.stdout)
        in_process = json.loads(lab.stdout)
        assert through_pcscd["lab"] is None
        assert in_process["lab"] == "pin-locked-puk"
        assert summary(through_pcscd) == summary(in_process)
        assert summary(through_pcscd)[0]["pin"]["state"] == "blocked"

        removed = subprocess.run([*keytriage_command(), "lab", "remove", "--port", str(SLOTS[0].port)],
                                 capture_output=True, text=True, timeout=60, env=env)
        assert removed.returncode == 0, removed.stderr
        wait_reader(SLOTS[0].reader, present=False)
    finally:
        if server.poll() is None:
            server.stdin.write("q\n")
            server.stdin.flush()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.terminate()
            server.wait(10)

    assert server.returncode == 0
    assert "Lab key server stopped" in server.stdout.read()
