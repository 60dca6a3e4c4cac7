"""Start and stop the real pcscd with the vpcd readers of tests/pcsc-readers, as the integration tests do.

Only one pcscd runs per machine, so the benchmark takes the same exclusive
flock as the test session (/tmp/keytriage-pcscd.lock, or
KEYTRIAGE_PCSCD_LOCK) for as long as it uses the daemon. A pcscd that
already runs is reused when it lists every vpcd reader, and left running.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PCSCD_SOCKET = Path("/run/pcscd/pcscd.comm")
PCSCD_PID_FILE = Path("/run/pcscd/pcscd.pid")
VPCD_DRIVER = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")
LOCK_PATH = Path(os.environ.get("KEYTRIAGE_PCSCD_LOCK", "/tmp/keytriage-pcscd.lock"))

LOCK_WAIT_S = 300.0
START_WAIT_S = 10.0
# vpcd binds its ports without SO_REUSEADDR, so a connection in TIME_WAIT
# (60 s on Linux) on one of them makes pcscd start without that reader.
PORT_FREE_WAIT_S = 75.0


class PcscdUnavailable(RuntimeError):
    """pcscd or the vpcd driver is missing, or the daemon did not start with the vpcd readers."""


def read_slots(reader_dir: Path) -> list[tuple[int, str]]:
    """Return (port, reader name) for both slots of every vpcd entry in `reader_dir`."""
    slots = []
    for path in sorted(reader_dir.iterdir()):
        name = None
        for line in path.read_text().splitlines():
            match = re.match(r'\s*FRIENDLYNAME\s+"([^"]+)"', line)
            if match:
                name = match.group(1)
            match = re.match(r"\s*CHANNELID\s+(0x[0-9A-Fa-f]+|\d+)", line)
            if match and name is not None:
                port = int(match.group(1), 0)
                slots += [(port, f"{name} 00 00"), (port + 1, f"{name} 00 01")]
                name = None
    return slots


def used_ports(state: str | None = None) -> set[int]:
    """Return local TCP ports in `state` (hex, "0A" is LISTEN; None for any) from /proc/net/tcp*."""
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and (state is None or fields[3] == state):
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def list_readers() -> list[str] | None:
    """Return pcscd's reader names, or None when no pcscd accepts a context."""
    from smartcard import scard

    try:
        hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    except Exception:  # noqa: BLE001 - pyscard raises its own classes when pcscd is absent
        return None
    if hresult != scard.SCARD_S_SUCCESS:
        return None
    try:
        hresult, readers = scard.SCardListReaders(context, [])
        return list(readers) if hresult == scard.SCARD_S_SUCCESS else []
    finally:
        scard.SCardReleaseContext(context)


def wait_reader(reader: str, *, present: bool, timeout_s: float = 5.0) -> None:
    """Block until `reader` reports a card (present) or none; raise PcscdUnavailable on timeout."""
    from smartcard import scard

    hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hresult != scard.SCARD_S_SUCCESS:
        raise PcscdUnavailable(f"SCardEstablishContext failed with 0x{hresult & 0xFFFFFFFF:08X}")
    target = scard.SCARD_STATE_PRESENT if present else scard.SCARD_STATE_EMPTY
    states = [(reader, scard.SCARD_STATE_UNAWARE)]
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            hresult, new_states = scard.SCardGetStatusChange(context, 250, states)
            if hresult == scard.SCARD_S_SUCCESS:
                states = [(name, state & ~scard.SCARD_STATE_CHANGED) for name, state, _atr in new_states]
                if new_states[0][1] & target:
                    return
            if time.monotonic() > deadline:
                raise PcscdUnavailable(f"reader {reader!r} did not report a card {'present' if present else 'empty'} "
                                       f"within {timeout_s:g} s")
    finally:
        scard.SCardReleaseContext(context)


def _running_pid() -> int | None:
    try:
        pid = int(PCSCD_PID_FILE.read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    return pid


@contextmanager
def pcscd_session(reader_dir: Path) -> Iterator[list[tuple[int, str]]]:
    """Hold the pcscd lock and run pcscd with `reader_dir`; yield the vpcd slots. Stop a pcscd started here."""
    executable = shutil.which("pcscd") or ("/usr/sbin/pcscd" if Path("/usr/sbin/pcscd").exists() else None)
    if executable is None:
        raise PcscdUnavailable("pcscd is not installed (apt-get install pcscd vsmartcard-vpcd)")
    if not VPCD_DRIVER.exists():
        raise PcscdUnavailable(f"the vpcd driver {VPCD_DRIVER} is not installed (apt-get install vsmartcard-vpcd)")

    slots = read_slots(reader_dir)
    lock = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o666)
    process: subprocess.Popen | None = None
    try:
        _acquire(lock)
        pid = _running_pid()
        if pid is not None:
            missing = {name for _, name in slots} - set(list_readers() or [])
            if missing:
                raise PcscdUnavailable(f"a pcscd (pid {pid}) runs without the readers {sorted(missing)}; "
                                       f"stop it or start it with -c {reader_dir}")
        else:
            _wait_ports_free({port for port, _ in slots})
            log = tempfile.NamedTemporaryFile("w+", prefix="keytriage-bench-pcscd-", suffix=".log", delete=False)
            process = subprocess.Popen([executable, "--foreground", "--info", "-c", str(reader_dir)],
                                       stdout=log, stderr=subprocess.STDOUT)
            _wait_started(process, slots, Path(log.name))
        yield slots
    finally:
        if process is not None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        fcntl.flock(lock, fcntl.LOCK_UN)
        os.close(lock)


def _acquire(lock: int) -> None:
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise PcscdUnavailable(f"another session held {LOCK_PATH} for {LOCK_WAIT_S:g} s") from None
            time.sleep(0.2)


def _wait_ports_free(ports: set[int]) -> None:
    deadline = time.monotonic() + PORT_FREE_WAIT_S
    while busy := ports & used_ports():
        if time.monotonic() > deadline:
            raise PcscdUnavailable(f"TCP ports {sorted(busy)} stayed in use for {PORT_FREE_WAIT_S:g} s (see 'ss -tan')")
        time.sleep(0.5)


def _wait_started(process: subprocess.Popen, slots: list[tuple[int, str]], log_path: Path) -> None:
    deadline = time.monotonic() + START_WAIT_S
    while True:
        if process.poll() is not None:
            raise PcscdUnavailable(f"pcscd exited with status {process.returncode}; log: {log_path.read_text()[-1000:]}")
        if PCSCD_SOCKET.exists() and {port for port, _ in slots} <= used_ports("0A"):
            if {name for _, name in slots} <= set(list_readers() or []):
                return
        if time.monotonic() > deadline:
            process.kill()
            process.wait(10)
            raise PcscdUnavailable(f"pcscd did not list the vpcd readers within {START_WAIT_S:g} s; "
                                   f"log: {log_path.read_text()[-1000:]}")
        time.sleep(0.05)
