"""End to end: the FIDO reset wizard in a real terminal (tmux, 80x24) against a lab key served through pcscd.

Each test runs `keytriage lab serve fido-blocked` (FIDO PIN blocked, 0 of 8
tries) as its own process on the session's pcscd, starts plain `keytriage`
in tmux, and drives the wizard with keys: f (FIDO screen), w (reset wizard),
RESET, Enter, y. The key is removed, re-inserted and touched with
`keytriage lab remove|insert|touch`, separate processes that reach the
server through its control socket.

The wizard sends authenticatorReset as soon as it has confirmed that the
re-inserted key is the same token, and that check reads the whole card
(about 20 APDUs). The reset therefore comes too late only when that check
outlasts the reset window, so the too-late test serves the key with
`--latency-ms` and the wizard withholds the reset. The window on this reader
is 10 s, because its name contains "YubiKey" and the lab authenticator
reports firmware 5.7.4.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tui.fido.reset import TOO_LATE_TEXT

from .conftest import SLOTS, wait_reader
from .test_tmux_e2e import Tmux, isolated_env, keytriage_command

REPO_ROOT = Path(__file__).resolve().parents[2]
SCENARIO = "fido-blocked"
SLOT = SLOTS[0]

# The served key delays each APDU response by this much, so the identity
# check after the re-insertion (about 20 APDUs) takes at least 12 s, longer
# than the 10 s reset window. The scan at start-up is just as slow.
SLOW_KEY_LATENCY_MS = 600
# Generous waits for one screen change: at 600 ms per APDU a full scan takes about 12 s.
SLOW_SCREEN_WAIT_S = 60.0
SCREEN_WAIT_S = 20.0
CONTROL_TIMEOUT_S = 60.0

# Box-drawing characters of the panel borders, removed before wrapped phrases are searched.
BORDER_CHARACTERS = "│╭╮╰╯─▊▎▏▔▁▄▆"
# The refusal's first words, which fit on one screen line.
TOO_LATE_WORDS = TOO_LATE_TEXT.split(":")[0]


class LabKeyServer:
    """`keytriage lab serve SCENARIO` on one vpcd slot, and the lab controls sent to it from separate processes."""

    def __init__(self, env: dict[str, str], latency_ms: float = 0.0) -> None:
        self.env = env
        self.latency_ms = latency_ms
        self.process: subprocess.Popen | None = None
        self.output = ""

    def start(self) -> None:
        """Start the server and wait until pcscd reports the key in the slot's reader."""
        # A card left on the slot would make vpcd queue this one silently.
        wait_reader(SLOT.reader, present=False)
        command = [*keytriage_command(), "lab", "serve", SCENARIO, "--port", str(SLOT.port),
                   "--latency-ms", f"{self.latency_ms:g}"]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, env=self.env, cwd=REPO_ROOT)
        banner = [self.process.stdout.readline() for _ in range(3)]
        assert any("Inserted key 1" in line for line in banner), banner
        wait_reader(SLOT.reader, present=True)

    def control(self, command: str) -> str:
        """Run `keytriage lab COMMAND --port N` and return its output. A failed command fails the test."""
        result = subprocess.run([*keytriage_command(), "lab", command, "--port", str(SLOT.port)],
                                capture_output=True, text=True, timeout=CONTROL_TIMEOUT_S, env=self.env, cwd=REPO_ROOT)
        assert result.returncode == 0, f"keytriage lab {command} exited with {result.returncode}: {result.stderr}"
        return result.stdout

    def stop(self) -> None:
        """Quit the server (it removes the key) and keep everything it printed in `output`."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.stdin.write("q\n")
            process.stdin.flush()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.terminate()
            process.wait(10)
        self.output += process.stdout.read()
        self.process = None


@pytest.fixture
def terminal():
    """Yield a tmux server on its own socket and kill it after the test."""
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    session = Tmux(f"keytriage-fido-reset-{os.getpid()}")
    yield session
    session.kill()


@pytest.fixture
def lab_env(pcscd, tmp_path) -> dict[str, str]:
    """Return the test's private environment, with lab serving enabled, once the session's pcscd runs."""
    env = isolated_env(tmp_path)
    env["KEYTRIAGE_LAB_SERVE"] = "1"
    return env


def let_user_set_pin(env: dict[str, str]) -> None:
    """Write `[site] fido_pin_set_by_user = true` to the test's config file.

    No Vault runs in these tests, so a new FIDO PIN cannot be escrowed and the
    wizard stays unarmed unless the site lets the user set the PIN.
    """
    Path(env["KEYTRIAGE_CONFIG"]).write_text("[site]\nfido_pin_set_by_user = true\n")


def start_tui(terminal: Tmux, env: dict[str, str]) -> None:
    """Start plain `keytriage` (the pcscd backend, no --lab) in the 80x24 session with the test's environment."""
    exports = " ".join(f"{name}={shlex.quote(env[name])}"
                       for name in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_RUNTIME_DIR", "KEYTRIAGE_CONFIG"))
    # The shell stays a while after the TUI ends, so a failure still shows its last screen.
    terminal.start(f"cd {shlex.quote(str(REPO_ROOT))} && env {exports} {shlex.join(keytriage_command())}; sleep 60")


def press(terminal: Tmux, *keys: str) -> None:
    """Send tmux key names (a letter, Enter) one by one."""
    for key in keys:
        terminal.run("send-keys", "-t", terminal.session, key)


def type_text(terminal: Tmux, text: str) -> None:
    """Type `text` literally into the focused field."""
    terminal.run("send-keys", "-t", terminal.session, "-l", text)


def flowing_text(screen: str) -> str:
    """Return the screen as one line: borders removed and whitespace collapsed, so wrapped phrases match."""
    without_borders = screen.translate({ord(character): " " for character in BORDER_CHARACTERS})
    return " ".join(without_borders.split())


def wizard_title(screen: str) -> str:
    """Return the wizard's title line, e.g. "FIDO reset of cplc:...: 2/4 Remove the key"."""
    titles = [line.strip() for line in screen.splitlines() if line.strip().startswith("FIDO reset of ")]
    assert titles, f"no wizard title on the screen:\n{screen}"
    return titles[0]


def open_armed_wizard(terminal: Tmux, wait_s: float) -> None:
    """From the main screen after the first scan: open FIDO, open the wizard, type RESET and arm it."""
    terminal.wait_for("Scanned ", wait_s)
    press(terminal, "f")
    fido = terminal.wait_for("FIDO2 of token", wait_s)
    assert "FIDO PIN: 0 tries left, BLOCKED (reset only)" in fido

    press(terminal, "w")
    terminal.wait_for("1/4 Confirm the reset", wait_s)
    type_text(terminal, "RESET")
    press(terminal, "Enter")
    # Enter moves the focus off the confirmation field, but a y sent at once
    # can still land in the field. The footer lists the letter keys only once
    # the field has lost the focus.
    terminal.wait_for("y Start reset", wait_s)
    press(terminal, "y")
    armed = terminal.wait_for("2/4 Remove the key", wait_s)
    assert "Remove the key cplc:" in flowing_text(armed)


def reread_fido_state(terminal: Tmux, wait_s: float) -> str:
    """Leave the wizard (b), read the FIDO state again (r) and return the screen once the read finished."""
    press(terminal, "b")
    terminal.wait_for("FIDO2 of token", wait_s)
    press(terminal, "r")
    return terminal.wait_for("FIDO state read (no PIN sent).", wait_s)


def audit_records(env: dict[str, str], operation: str) -> list[dict]:
    """Return the TUI's audit records of `operation`, oldest first."""
    path = Path(env["XDG_STATE_HOME"]) / "keytriage" / "audit.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [record for record in map(json.loads, lines) if record["operation"] == operation]


def test_reset_waits_for_escrow(terminal, lab_env):
    server = LabKeyServer(lab_env)
    try:
        server.start()
        start_tui(terminal, lab_env)
        terminal.wait_for("Scanned ", SCREEN_WAIT_S)
        press(terminal, "f")
        terminal.wait_for("FIDO2 of token", SCREEN_WAIT_S)
        press(terminal, "w")
        terminal.wait_for("1/4 Confirm the reset", SCREEN_WAIT_S)
        type_text(terminal, "RESET")
        press(terminal, "Enter")
        terminal.wait_for("y Start reset", SCREEN_WAIT_S)
        press(terminal, "y")
        refused = terminal.wait_for("was not started", SCREEN_WAIT_S)
        text = flowing_text(refused)

        assert wizard_title(refused).endswith("1/4 Confirm the reset"), refused
        assert "Escrow unavailable:" in text
        assert "Log in to Vault with l on the main screen (or configure Vault)" in text
    finally:
        terminal.kill()
        server.stop()

    assert "is blinking" not in server.output
    assert audit_records(lab_env, "fido-reset") == []


def test_reset_too_late_after_insertion(terminal, lab_env):
    let_user_set_pin(lab_env)
    server = LabKeyServer(lab_env, latency_ms=SLOW_KEY_LATENCY_MS)
    try:
        server.start()
        start_tui(terminal, lab_env)
        open_armed_wizard(terminal, SLOW_SCREEN_WAIT_S)

        server.control("remove")
        waiting = terminal.wait_for("3/4 Re-insert the key", SLOW_SCREEN_WAIT_S)
        assert "only within 10 s of insertion" in flowing_text(waiting)

        server.control("insert")
        refused = terminal.wait_for(TOO_LATE_WORDS, SLOW_SCREEN_WAIT_S)
        text = flowing_text(refused)

        # A reset sent late would come back rejected by the key, titled "Reset not done". Here the
        # wizard withheld it and waits for the next removal.
        assert wizard_title(refused).endswith("2/4 Remove the key"), refused
        assert TOO_LATE_TEXT in text
        late = re.search(r"Nothing was sent \((\d+\.\d) s after insertion, the key allows (\d+) s\)", text)
        assert late, f"no 'Nothing was sent (N s after insertion, ...)' on the screen:\n{refused}"
        assert float(late.group(1)) >= float(late.group(2))
        assert late.group(2) == "10"

        press(terminal, "c")
        terminal.wait_for("Cancelled", SCREEN_WAIT_S)
        state = reread_fido_state(terminal, SLOW_SCREEN_WAIT_S)
        assert "FIDO PIN: 0 tries left, BLOCKED (reset only)" in state
        assert "getInfo clientPin: true" in state
    finally:
        terminal.kill()
        server.stop()

    # The key never waited for a touch, and the audit trail records the reset as not sent.
    assert "is blinking" not in server.output
    outcomes = [record["outcome"] for record in audit_records(lab_env, "fido-reset")]
    assert outcomes == ["not-sent", "cancelled"]
    assert TOO_LATE_TEXT in audit_records(lab_env, "fido-reset")[0]["details"]["message"]


def test_reset_done_after_lab_touch(terminal, lab_env):
    let_user_set_pin(lab_env)
    server = LabKeyServer(lab_env)
    try:
        server.start()
        start_tui(terminal, lab_env)
        open_armed_wizard(terminal, SCREEN_WAIT_S)

        server.control("remove")
        terminal.wait_for("3/4 Re-insert the key", SCREEN_WAIT_S)
        server.control("insert")
        terminal.wait_for("4/4 TOUCH THE KEY", SCREEN_WAIT_S)

        touched = server.control("touch")
        assert "the waiting FIDO request gets its user presence" in touched
        done = terminal.wait_for("Done: FIDO reset", SCREEN_WAIT_S)
        assert "FIDO reset done: every FIDO credential and the FIDO PIN are erased." in flowing_text(done)

        state = reread_fido_state(terminal, SCREEN_WAIT_S)
        assert "FIDO PIN: no PIN set" in state
        assert "getInfo clientPin: false" in state
    finally:
        terminal.kill()
        server.stop()

    assert "is blinking" in server.output
    outcomes = [record["outcome"] for record in audit_records(lab_env, "fido-reset")]
    assert outcomes == ["done"]
