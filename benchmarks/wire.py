"""Bytes the app writes to the terminal at 80x24 per navigation key, per scan and while idle.

The real `keytriage --lab two-tokens` runs under a pty with
TERM=xterm-256color. Each figure counts the bytes on the master side from
the key press until the output has been quiet for `QUIET_S`, once with
Textual's default animation level and once with TEXTUAL_ANIMATIONS=none.
Over SSH these bytes are what the session carries, before SSH's own
framing and compression.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass, field

from benchmarks.terminal import PtyProgram

QUIET_S = 0.3
IDLE_WINDOW_S = 2.0
# Key, what it does on the two-tokens screen.
NAVIGATION_KEYS = (
    ("j", "next token"),
    ("k", "previous token"),
    ("down", "list cursor down"),
    ("tab", "focus next widget"),
    ("question_mark", "open help"),
    ("n", "close help"),
)


@dataclass
class WireCost:
    """Bytes per action for one animation setting."""

    animations: str
    startup_bytes: int = 0
    per_key: dict[str, list[int]] = field(default_factory=dict)
    per_scan: list[int] = field(default_factory=list)
    idle_bytes_per_s: float = 0.0

    def key_median(self, key: str) -> float:
        """Median bytes for one press of `key`."""
        return statistics.median(self.per_key[key])


def _bytes_until_quiet(program: PtyProgram, key: str, settle_markers: list[str] | None = None) -> int:
    before = program.bytes_written()
    since = program.frame_count()
    program.press(key)
    if settle_markers:
        program.wait_for_text(settle_markers, since_frame=since, timeout_s=20)
    else:
        time.sleep(0.05)
    program.wait_quiet(QUIET_S)
    return program.bytes_written() - before


def measure(source, env: dict[str, str], *, repeats: int, animations: str | None) -> WireCost:
    """Run the app once with the given TEXTUAL_ANIMATIONS value (None: Textual's default) and count bytes."""
    run_env = dict(env)
    run_env.pop("TEXTUAL_ANIMATIONS", None)
    if animations is not None:
        run_env["TEXTUAL_ANIMATIONS"] = animations
    cost = WireCost(animations or "default")
    argv = [sys.executable, "-m", "tui", "--lab", "two-tokens"]
    with PtyProgram(argv, env=run_env, cwd=str(source)) as program:
        if program.wait_for_text(["Scanned", "Verdict:"], timeout_s=30) is None:
            raise RuntimeError("keytriage did not paint its first scan within 30 s")
        program.wait_quiet(0.5)
        cost.startup_bytes = program.bytes_written()

        before = program.bytes_written()
        time.sleep(IDLE_WINDOW_S)
        cost.idle_bytes_per_s = (program.bytes_written() - before) / IDLE_WINDOW_S

        for _ in range(repeats):
            for key, _meaning in NAVIGATION_KEYS:
                cost.per_key.setdefault(key, []).append(_bytes_until_quiet(program, key))
            cost.per_scan.append(_bytes_until_quiet(program, "r", ["Scanned"]))
    return cost
