"""A pseudo-terminal harness: run a full-screen program at 80x24 and time what it writes.

The harness plays the terminal. It opens a pty, starts the program on its
slave side as the session leader with the pty as controlling terminal, and
reads the master side on a thread. It answers Textual's DECRQM query for
synchronized output (mode 2026) with "supported", so Textual wraps every
frame in `ESC [ ? 2026 h` ... `ESC [ ? 2026 l`. The end marker gives each
frame a precise completion time, taken when the read that contains it
returns. A frame is "complete" at that moment: the terminal has every byte
of it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

SYNC_START = b"\x1b[?2026h"
SYNC_END = b"\x1b[?2026l"
SYNC_QUERY = b"\x1b[?2026$p"
# DECRPM: mode 2026 is recognised and currently reset (2), which Textual reads as "supported".
SYNC_REPLY = b"\x1b[?2026;2$y"

# CSI, OSC and two-byte escape sequences, removed to leave the printed text.
_ESCAPES = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]|\x1b[()][0-9A-Za-z]")

KEYS = {
    "escape": b"\x1b",
    "tab": b"\t",
    "enter": b"\r",
    "down": b"\x1b[B",
    "up": b"\x1b[A",
    "question_mark": b"?",
}


def printed_text(data: bytes) -> str:
    """Return the text that `data` prints, without escape sequences and line breaks."""
    return _ESCAPES.sub(b"", data).decode("utf-8", errors="replace").replace("\r", "").replace("\n", "")


@dataclass
class Frame:
    """One synchronized update: when its last byte arrived, its size and its printed text."""

    end: float
    size: int
    text: str


@dataclass
class Capture:
    """Everything the program wrote, as raw chunks and as completed frames."""

    chunks: list[tuple[float, int]] = field(default_factory=list)
    frames: list[Frame] = field(default_factory=list)
    total_bytes: int = 0


class PtyProgram:
    """One program under a pty of `columns` x `rows`; use as a context manager."""

    def __init__(self, argv: Sequence[str], *, env: dict[str, str] | None = None, columns: int = 80, rows: int = 24,
                 cwd: str | None = None) -> None:
        self.argv = list(argv)
        self.env = env
        self.columns = columns
        self.rows = rows
        self.cwd = cwd
        self.capture = Capture()
        self.started_at = 0.0
        self.process: subprocess.Popen | None = None
        self._master = -1
        self._lock = threading.Condition()
        self._pending = b""
        self._reader: threading.Thread | None = None
        self._stopping = False

    # --- lifecycle ---

    def start(self) -> PtyProgram:
        """Start the program; `started_at` is the perf_counter time just before the fork."""
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", self.rows, self.columns, 0, 0))
        self._master = master

        def controlling_terminal() -> None:
            # Popen calls setsid() before this, so the pty can become the controlling terminal.
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.started_at = time.perf_counter()
        self.process = subprocess.Popen(self.argv, stdin=slave, stdout=slave, stderr=slave, env=self.env, cwd=self.cwd,
                                        start_new_session=True, preexec_fn=controlling_terminal, close_fds=True)
        os.close(slave)
        self._reader = threading.Thread(target=self._read_loop, name="pty-reader", daemon=True)
        self._reader.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> int | None:
        """End the program with SIGTERM (SIGKILL after `timeout_s`) and return its exit status."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout_s)
        self._stopping = True
        if self._reader is not None:
            self._reader.join(2.0)
        if self._master >= 0:
            os.close(self._master)
            self._master = -1
        return process.returncode

    def __enter__(self) -> PtyProgram:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- input ---

    def press(self, key: str) -> float:
        """Write one key (a name from KEYS or a single character) and return the perf_counter time of the write."""
        data = KEYS.get(key, key.encode())
        now = time.perf_counter()
        os.write(self._master, data)
        return now

    # --- waiting on output ---

    def frame_count(self) -> int:
        """Return how many frames have completed so far."""
        with self._lock:
            return len(self.capture.frames)

    def wait_for_text(self, markers: Sequence[str], *, since_frame: int = 0, timeout_s: float = 20.0) -> Frame | None:
        """Wait until every marker was printed in frames from `since_frame` on; return the frame that completed the set.

        Returns None on timeout. A marker counts once it appears in any
        frame's printed text, so markers may arrive in different frames.
        """
        deadline = time.perf_counter() + timeout_s
        seen: set[str] = set()
        index = since_frame
        with self._lock:
            while True:
                while index < len(self.capture.frames):
                    frame = self.capture.frames[index]
                    index += 1
                    seen.update(marker for marker in markers if marker in frame.text)
                    if len(seen) == len(markers):
                        return frame
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or self._reader_done():
                    return None
                self._lock.wait(min(remaining, 0.05))

    def wait_quiet(self, quiet_s: float, *, timeout_s: float = 20.0) -> float:
        """Wait until nothing was written for `quiet_s`; return the perf_counter time of the last chunk."""
        deadline = time.perf_counter() + timeout_s
        while True:
            with self._lock:
                last = self.capture.chunks[-1][0] if self.capture.chunks else self.started_at
            now = time.perf_counter()
            if now - last >= quiet_s or now > deadline:
                return last
            time.sleep(min(0.02, quiet_s / 4))

    def bytes_written(self) -> int:
        """Return the number of bytes the program wrote so far."""
        with self._lock:
            return self.capture.total_bytes

    # --- the reader thread ---

    def _reader_done(self) -> bool:
        return self._reader is None or not self._reader.is_alive()

    def _read_loop(self) -> None:
        while not self._stopping:
            try:
                ready, _, _ = select.select([self._master], [], [], 0.1)
            except (OSError, ValueError):
                return
            if not ready:
                continue
            try:
                data = os.read(self._master, 65536)
            except OSError:
                return  # EIO: the program closed the pty.
            if not data:
                return
            now = time.perf_counter()
            if SYNC_QUERY in data or SYNC_QUERY in self._pending[-16:] + data:
                os.write(self._master, SYNC_REPLY)
            with self._lock:
                self.capture.chunks.append((now, len(data)))
                self.capture.total_bytes += len(data)
                self._split_frames(data, now)
                self._lock.notify_all()

    def _split_frames(self, data: bytes, now: float) -> None:
        buffer = self._pending + data
        while True:
            end = buffer.find(SYNC_END)
            if end < 0:
                break
            # Output before the frame's SYNC_START (written before Textual
            # learned that the terminal supports synchronized output) is
            # counted with this frame.
            body = buffer[:end]
            self.capture.frames.append(Frame(now, len(body) + len(SYNC_END), printed_text(body)))
            buffer = buffer[end + len(SYNC_END):]
        self._pending = buffer


def peak_rss_kib(pid: int) -> int | None:
    """Return VmHWM (peak resident set size, KiB) of `pid` from /proc, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None
