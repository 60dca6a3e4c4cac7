"""Key-press-to-repaint latency of the real app under a pty, idle and with a 2 s scan and a 2 s Vault call in flight.

Latency is measured from the write of the key to the pty master until the
end of the first completed frame (synchronized update) that shows the key's
effect, identified by a text marker, so frames painted for other reasons
(activity log lines of the running scan, the Vault state) are not taken
for the answer.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.terminal import PtyProgram

# Key, the text its repaint shows, and whether it needs a scan in flight.
HELP_OPEN = ("question_mark", "Help: keys")
# "n" rather than Escape: Textual holds a lone ESC byte for up to 100 ms to
# tell it from the start of an escape sequence, which is the terminal
# protocol's cost, not the app's. Escape is timed separately.
HELP_CLOSE = ("n", "Runbook")
HELP_CLOSE_ESCAPE = ("escape", "Runbook")
RESCAN_IGNORED = ("r", "Rescan ignored")
PRESS_GAP_S = 0.1
ANSWER_TIMEOUT_S = 2.0
TARGET_P95_MS = 50.0


@dataclass
class LatencySamples:
    """Latencies in milliseconds of one condition, and the presses that got no visible answer."""

    condition: str
    latencies_ms: list[float] = field(default_factory=list)
    unanswered: int = 0
    by_key: dict[str, list[float]] = field(default_factory=dict)
    escape_ms: list[float] = field(default_factory=list)

    def percentile(self, fraction: float) -> float | None:
        """Return the nearest-rank percentile, None without samples."""
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        rank = max(1, round(fraction * len(ordered) + 0.5)) if fraction < 1 else len(ordered)
        return ordered[min(rank, len(ordered)) - 1]

    @property
    def p50(self) -> float | None:
        """Median latency in milliseconds."""
        return statistics.median(self.latencies_ms) if self.latencies_ms else None

    @property
    def p95(self) -> float | None:
        """95th percentile (nearest rank) in milliseconds."""
        return self.percentile(0.95)


def _press_and_time(program: PtyProgram, key: str, marker: str, samples: LatencySamples, *,
                    escape: bool = False) -> None:
    since = program.frame_count()
    pressed = program.press(key)
    frame = program.wait_for_text([marker], since_frame=since, timeout_s=ANSWER_TIMEOUT_S)
    if frame is None:
        samples.unanswered += 1
    else:
        latency = (frame.end - pressed) * 1000
        if escape:
            samples.escape_ms.append(latency)
        else:
            samples.latencies_ms.append(latency)
            samples.by_key.setdefault(key, []).append(latency)
    time.sleep(PRESS_GAP_S)


def measure(source: Path, env: dict[str, str], *, rounds: int, slow_seconds: float = 2.0,
            vault_url: str | None = None, condition: str = "") -> LatencySamples:
    """Run the slow app, start `rounds` scans with r, and time help open/close and r while each scan runs.

    With `slow_seconds` 0 and no Vault, the same presses run on an idle app:
    the reference.
    """
    samples = LatencySamples(condition)
    argv = [sys.executable, str(Path(__file__).with_name("slow_app.py")), "--scan-seconds", str(slow_seconds)]
    if vault_url:
        argv += ["--vault-url", vault_url]
    with PtyProgram(argv, env=env, cwd=str(source)) as program:
        if program.wait_for_text(["Scanned", "Verdict:"], timeout_s=30) is None:
            raise RuntimeError("the benchmark app did not finish its first scan within 30 s")
        program.wait_quiet(0.3)

        for _ in range(rounds):
            round_started = time.perf_counter()
            _press_and_time(program, "r", "Scanning...", samples)
            # Presses until the scan is over; in the idle reference a fixed count.
            presses = 0
            while presses < 4 or (slow_seconds > 0 and time.perf_counter() - round_started < slow_seconds * 0.8):
                _press_and_time(program, *HELP_OPEN, samples)
                _press_and_time(program, *HELP_CLOSE, samples)
                if presses == 0:
                    _press_and_time(program, *HELP_OPEN, samples)
                    _press_and_time(program, *HELP_CLOSE_ESCAPE, samples, escape=True)
                if slow_seconds > 0:
                    _press_and_time(program, *RESCAN_IGNORED, samples)
                presses += 1
            program.wait_for_text(["Scanned"], since_frame=max(0, program.frame_count() - 1), timeout_s=10)
            program.wait_quiet(0.2)
    return samples
