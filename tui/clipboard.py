"""Copying text to the technician's clipboard from a jump host, and saying honestly what happened.

The technician's clipboard is on their own machine, at the other end of SSH.
OSC 52 (`ESC ] 52 ; c ; <base64> BEL`, sent by Textual's
`App.copy_to_clipboard`) asks that terminal to set it, and it travels through
SSH like any other output. No terminal answers an OSC 52, so the tool can
never confirm a copy: every message says the text was *sent* and asks the
technician to check by pasting.

What can stop it on the way:
- tmux discards OSC 52 from programs unless `set-clipboard` is `on`; its
  default since tmux 2.6 is `external`, which drops it.
- GNU screen may not pass it on.
- Apple Terminal ignores OSC 52.

pyperclip writes to a clipboard on the machine keytriage runs on. It is used
only where one exists (a local X11 or Wayland display, not over SSH): on a
headless jump host it has no clipboard to write to.

Secrets are never copied: `copy_text` raises `TypeError` for a `Secret`.
PINs, PUKs and keys are shown once on screen instead.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tui.secret import Secret

log = logging.getLogger("keytriage.clipboard")

TMUX_ENABLE_HINT = (
    "tmux drops OSC 52 unless `set -g set-clipboard on` is in ~/.tmux.conf "
    "(then run `tmux source-file ~/.tmux.conf`). keytriage sends plain OSC 52, "
    "so `allow-passthrough` matters only for an outer tmux around this one."
)
SCREEN_HINT = "GNU screen may not pass OSC 52 on to your terminal."
APPLE_TERMINAL_HINT = "Apple Terminal ignores OSC 52; use iTerm2 or another terminal that supports it."

SSH_VARIABLES = ("SSH_CONNECTION", "SSH_CLIENT", "SSH_TTY")


@dataclass(frozen=True)
class ClipboardPath:
    """The hops between keytriage and the technician's clipboard, detected from the environment."""

    over_ssh: bool
    local_display: bool
    in_tmux: bool
    in_screen: bool
    apple_terminal: bool

    @property
    def local_clipboard(self) -> bool:
        """True when pyperclip has a clipboard on this machine to write to."""
        return self.local_display and not self.over_ssh

    @classmethod
    def detect(cls, environ: Mapping[str, str] | None = None) -> ClipboardPath:
        """Read the path from `environ` (default: `os.environ`)."""
        env = os.environ if environ is None else environ
        return cls(
            over_ssh=any(env.get(name) for name in SSH_VARIABLES),
            local_display=bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY")),
            in_tmux=bool(env.get("TMUX")),
            in_screen=bool(env.get("STY")),
            apple_terminal=env.get("TERM_PROGRAM") == "Apple_Terminal",
        )


@dataclass(frozen=True)
class CopyResult:
    """The outcome of one copy: what was done and the message to show."""

    osc52_sent: bool
    local_copied: bool
    message: str
    warning: bool = False


def tmux_set_clipboard() -> str | None:
    """Return tmux's global `set-clipboard` value ("on", "external", "off"), or None when unreadable."""
    if shutil.which("tmux") is None:
        return None
    try:
        done = subprocess.run(["tmux", "show-options", "-gv", "set-clipboard"], capture_output=True,
                              text=True, timeout=2, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.info("cannot read tmux set-clipboard: %s", exc)
        return None
    value = done.stdout.strip()
    return value if done.returncode == 0 and value else None


def _local_copy(text: str) -> str | None:
    """Copy with pyperclip; return None on success, else the reason it failed."""
    import pyperclip

    try:
        pyperclip.copy(text)
    except pyperclip.PyperclipException as exc:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None


def copy_text(app, text: str, what: str, *, path: ClipboardPath | None = None,
              tmux_option: Callable[[], str | None] = tmux_set_clipboard) -> CopyResult:
    """Send `text` to the clipboard through OSC 52 (and pyperclip where a local clipboard exists).

    `app` is the Textual app whose `copy_to_clipboard` writes OSC 52. `what`
    names the text in the message ("Token ID"). Raises `TypeError` for a
    `Secret` or anything that is not `str`, so no secret reaches a clipboard.
    """
    if isinstance(text, Secret):
        raise TypeError(f"refusing to copy a {text.kind}: secrets are shown once on screen, never copied")
    if not isinstance(text, str):
        raise TypeError(f"copy_text copies text only, not {type(text).__name__}")
    path = path or ClipboardPath.detect()

    app.copy_to_clipboard(text)
    notes: list[str] = []
    warning = False

    local_copied = False
    if path.local_clipboard:
        failure = _local_copy(text)
        local_copied = failure is None
        if failure is not None:
            notes.append(f"The local clipboard failed: {failure}.")
            warning = True

    if path.in_tmux:
        option = tmux_option()
        if option != "on":
            shown = f"is {option!r}" if option else "could not be read"
            notes.append(f"tmux set-clipboard {shown}: {TMUX_ENABLE_HINT}")
            warning = True
    if path.in_screen:
        notes.append(SCREEN_HINT)
        warning = True
    if path.apple_terminal:
        notes.append(APPLE_TERMINAL_HINT)
        warning = True

    if local_copied:
        head = f"{what} copied to the local clipboard and sent to the terminal clipboard (OSC 52)."
    else:
        head = f"{what} sent to the terminal clipboard (OSC 52); check by pasting."
    return CopyResult(osc52_sent=True, local_copied=local_copied, message=" ".join([head, *notes]), warning=warning)
