"""Start-up time and peak memory of `keytriage --lab healthy` against a minimal Textual app, both under a pty.

"Fully painted" is the last byte of the burst of frames that first shows
the scan result: the frame in which both markers ("Scanned" in the header
state, "Verdict:" in the runbook panel) have been printed, plus every frame
that follows it with less than `SETTLE_S` between them. The minimal app's
markers are its static text and its footer key. Time runs from just before
the fork to the arrival of that last byte; memory is VmHWM (peak resident
set size) of the process, read right then.
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.minimal_app import MARKER
from benchmarks.terminal import PtyProgram, peak_rss_kib

SETTLE_S = 0.15
TIME_TARGET_RATIO = 1.5
MEMORY_TARGET_RATIO = 1.3
KEYTRIAGE_MARKERS = ("Scanned", "Verdict:")
MINIMAL_MARKERS = (MARKER, "Quit")


@dataclass
class StartupRuns:
    """Per-run start-up figures of one program."""

    name: str
    first_result_s: list[float] = field(default_factory=list)
    painted_s: list[float] = field(default_factory=list)
    peak_rss_kib: list[int] = field(default_factory=list)
    bytes_written: list[int] = field(default_factory=list)

    @property
    def painted_median(self) -> float:
        """Median time to the fully painted screen, in seconds."""
        return statistics.median(self.painted_s)

    @property
    def rss_median(self) -> float:
        """Median peak RSS, in KiB."""
        return statistics.median(self.peak_rss_kib)


def measure_once(argv: list[str], markers: tuple[str, ...], env: dict[str, str], cwd: str, runs: StartupRuns) -> None:
    """Start `argv` once, wait for the fully painted screen, record the figures and stop it."""
    with PtyProgram(argv, env=env, cwd=cwd) as program:
        frame = program.wait_for_text(list(markers), timeout_s=30)
        if frame is None:
            raise RuntimeError(f"{runs.name}: the markers {markers} never appeared; output so far "
                               f"{program.bytes_written()} bytes")
        last = program.wait_quiet(SETTLE_S)
        rss = peak_rss_kib(program.process.pid)
        runs.first_result_s.append(frame.end - program.started_at)
        runs.painted_s.append(last - program.started_at)
        runs.peak_rss_kib.append(rss or 0)
        runs.bytes_written.append(program.bytes_written())


def measure(source: Path, env: dict[str, str], runs: int) -> tuple[StartupRuns, StartupRuns]:
    """Measure keytriage and the minimal app `runs` times each, alternating, after one unrecorded warm-up each."""
    keytriage = StartupRuns("keytriage --lab healthy")
    minimal = StartupRuns("minimal Textual app")
    keytriage_argv = [sys.executable, "-m", "tui", "--lab", "healthy"]
    minimal_argv = [sys.executable, str(Path(__file__).with_name("minimal_app.py"))]

    # The warm-up writes the bytecode caches and loads the files into the page cache.
    measure_once(keytriage_argv, KEYTRIAGE_MARKERS, env, str(source), StartupRuns("warm-up"))
    measure_once(minimal_argv, MINIMAL_MARKERS, env, str(source), StartupRuns("warm-up"))
    for _ in range(runs):
        measure_once(keytriage_argv, KEYTRIAGE_MARKERS, env, str(source), keytriage)
        measure_once(minimal_argv, MINIMAL_MARKERS, env, str(source), minimal)
    return keytriage, minimal
