"""A real pcscd with vpcd virtual readers for the integration tests, and per-test key slots.

The session fixture `pcscd` starts `pcscd --foreground --info -c
tests/pcsc-readers` (an absolute path) and stops it with SIGTERM and a wait
at the end, so no zombie or stale `/run/pcscd/pcscd.pid` blocks the next
start. Only one pcscd can run per machine, so the whole session holds an
exclusive `flock` on /tmp/keytriage-pcscd.lock (KEYTRIAGE_PCSCD_LOCK
overrides the path): a second pytest session that needs pcscd waits for the
first to finish instead of fighting over the daemon.

A pcscd that already runs is reused when it lists every reader of
tests/pcsc-readers (for example one started by hand for `keytriage lab
serve`). When it lacks one of them, it runs with another configuration, so
the session fails and leaves it running, because stopping it is its owner's
decision.

Every test here is marked `pcscd` and must run serially: vpcd queues a
second card on a busy port silently, so tests share no slot at a time.
"""

from __future__ import annotations

import fcntl
import gc
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
READER_DIR = HERE.parent / "pcsc-readers"
PCSCD_SOCKET = Path("/run/pcscd/pcscd.comm")
PCSCD_PID_FILE = Path("/run/pcscd/pcscd.pid")
VPCD_DRIVER = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")
LOCK_PATH = Path(os.environ.get("KEYTRIAGE_PCSCD_LOCK", "/tmp/keytriage-pcscd.lock"))

# Waits below end a test with a clear failure; they are generous because a
# loaded CI machine can be slow. pcscd itself notices an insert or a removal
# within one 400 ms presence poll.
LOCK_WAIT_S = 300.0
START_WAIT_S = 10.0
PRESENCE_WAIT_S = 5.0
PORT_FREE_WAIT_S = 75.0


@dataclass(frozen=True)
class Slot:
    """One vpcd reader slot: the TCP port the card connects to and the reader name pcscd shows."""

    port: int
    reader: str


def read_slots(directory: Path = READER_DIR) -> list[Slot]:
    """Parse the reader config: each vpcd entry gives slots CHANNELID ("NAME 00 00") and CHANNELID + 1 ("NAME 00 01")."""
    slots: list[Slot] = []
    for path in sorted(directory.iterdir()):
        name = None
        for line in path.read_text().splitlines():
            match = re.match(r'\s*FRIENDLYNAME\s+"([^"]+)"', line)
            if match:
                name = match.group(1)
            match = re.match(r"\s*CHANNELID\s+(0x[0-9A-Fa-f]+|\d+)", line)
            if match and name is not None:
                port = int(match.group(1), 0)
                slots.append(Slot(port, f"{name} 00 00"))
                slots.append(Slot(port + 1, f"{name} 00 01"))
                name = None
    return slots


SLOTS = read_slots()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "pcscd: needs the real pcscd with the vpcd readers of tests/pcsc-readers; run serially")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.pcscd)


# --- helpers ------------------------------------------------------------------------


def local_ports(state: str | None = "0A") -> set[int]:
    """Return the local TCP ports with sockets in `state` (hex, "0A" is LISTEN; None for any), from /proc/net/tcp.

    Reading the kernel table, not connecting, matters here: a connection to a
    vpcd port is a card insertion.
    """
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
    except Exception:
        return None
    if hresult != scard.SCARD_S_SUCCESS:
        return None
    try:
        hresult, readers = scard.SCardListReaders(context, [])
        return list(readers) if hresult == scard.SCARD_S_SUCCESS else []
    finally:
        scard.SCardReleaseContext(context)


def running_pcscd_pid() -> int | None:
    """Return the pid of a live pcscd from its pid file, else None."""
    try:
        pid = int(PCSCD_PID_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def wait_reader(reader: str, *, present: bool, timeout_s: float = PRESENCE_WAIT_S) -> None:
    """Block until `reader` reports a card (present) or none, using SCardGetStatusChange."""
    from smartcard import scard

    hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    assert hresult == scard.SCARD_S_SUCCESS, f"SCardEstablishContext failed: 0x{hresult & 0xFFFFFFFF:08X}"
    target_state = scard.SCARD_STATE_PRESENT if present else scard.SCARD_STATE_EMPTY
    states = [(reader, scard.SCARD_STATE_UNAWARE)]
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            hresult, new_states = scard.SCardGetStatusChange(context, 250, states)
            if hresult == scard.SCARD_S_SUCCESS:
                states = [(name, state & ~scard.SCARD_STATE_CHANGED) for name, state, _atr in new_states]
                if new_states[0][1] & target_state:
                    return
            if time.monotonic() > deadline:
                word = "present" if present else "empty"
                pytest.fail(f"reader {reader!r} did not report a card {word} within {timeout_s:g} s "
                            f"(last SCardGetStatusChange 0x{hresult & 0xFFFFFFFF:08X})")
    finally:
        scard.SCardReleaseContext(context)


# --- the pcscd session fixture ---------------------------------------------------------


# The sweep's conftest imports this session fixture too, so one pytest process
# can enter it twice; flock locks per open file, so the second entry would wait
# on the first. The lock is therefore counted per process.
_session_lock = {"descriptor": None, "depth": 0}


def _acquire_session_lock() -> int:
    if _session_lock["depth"]:
        _session_lock["depth"] += 1
        return _session_lock["descriptor"]
    descriptor = _acquire_file_lock()
    _session_lock.update(descriptor=descriptor, depth=1)
    return descriptor


def _release_session_lock() -> None:
    _session_lock["depth"] -= 1
    if _session_lock["depth"] == 0:
        descriptor = _session_lock["descriptor"]
        _session_lock["descriptor"] = None
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        os.close(descriptor)


def _acquire_file_lock() -> int:
    descriptor = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o666)
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return descriptor
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(descriptor)
                pytest.fail(f"another test session held {LOCK_PATH} for {LOCK_WAIT_S:g} s; "
                            "it runs the shared pcscd. Wait for it to finish, then rerun.")
            time.sleep(0.2)


def _check_foreign_pcscd(pid: int | None) -> None:
    readers = list_readers() or []
    missing = sorted({slot.reader for slot in SLOTS} - set(readers))
    if missing:
        pytest.fail(
            f"a pcscd (pid {pid}) already runs with another reader configuration: it lists {readers}, "
            f"not {missing}. Stop it (kill -TERM {pid}) so the tests can start "
            f"'pcscd --foreground -c {READER_DIR}', or start it with that -c yourself."
        )


@pytest.fixture(scope="session")
def pcscd(tmp_path_factory: pytest.TempPathFactory):
    """Start (or reuse) pcscd with the vpcd readers of tests/pcsc-readers for the whole session."""
    executable = shutil.which("pcscd") or ("/usr/sbin/pcscd" if Path("/usr/sbin/pcscd").exists() else None)
    if executable is None:
        pytest.skip("pcscd is not installed (apt-get install pcscd vsmartcard-vpcd)")
    if not VPCD_DRIVER.exists():
        pytest.skip(f"the vpcd driver {VPCD_DRIVER} is not installed (apt-get install vsmartcard-vpcd)")
    pytest.importorskip("smartcard", reason="pyscard is not installed")

    _acquire_session_lock()
    process: subprocess.Popen | None = None
    log_path = tmp_path_factory.mktemp("pcscd") / "pcscd.log"
    try:
        pid = running_pcscd_pid()
        if pid is not None:
            _check_foreign_pcscd(pid)
        else:
            _wait_ports_free()
            with log_path.open("w") as log_file:
                process = subprocess.Popen([executable, "--foreground", "--info", "-c", str(READER_DIR)],
                                           stdout=log_file, stderr=subprocess.STDOUT)
            _wait_started(process, log_path)
        yield log_path
    finally:
        # Connections still open when pcscd stops would warn with 0x8010001D
        # from their finalizers; collect them while the daemon still runs.
        gc.collect()
        if process is not None:
            _stop(process)
        _release_session_lock()


def _wait_ports_free() -> None:
    # vpcd 0.8 binds its ports without SO_REUSEADDR, so a socket of an earlier
    # connection in TIME_WAIT (60 s on Linux) on one of them makes pcscd start
    # without that reader. Any program's connection can leave one, because the
    # ports lie in Linux's default ephemeral range (32768-60999).
    ports = {slot.port for slot in SLOTS}
    deadline = time.monotonic() + PORT_FREE_WAIT_S
    while busy := ports & local_ports(state=None):
        if time.monotonic() > deadline:
            pytest.fail(f"TCP ports {sorted(busy)} stayed in use for {PORT_FREE_WAIT_S:g} s (see 'ss -tan'), so vpcd "
                        "cannot listen on them. Stop the program that uses them, then rerun.")
        time.sleep(0.5)


def _wait_started(process: subprocess.Popen, log_path: Path) -> None:
    ports = {slot.port for slot in SLOTS}
    expected = {slot.reader for slot in SLOTS}
    deadline = time.monotonic() + START_WAIT_S
    while True:
        if process.poll() is not None:
            pytest.fail(f"pcscd exited with status {process.returncode} during start-up; its log: "
                        f"{log_path.read_text()[-2000:]}")
        if PCSCD_SOCKET.exists() and ports <= local_ports():
            readers = list_readers() or []
            if expected <= set(readers):
                return
        if time.monotonic() > deadline:
            _stop(process)
            pytest.fail(f"pcscd did not list the readers of {READER_DIR} within {START_WAIT_S:g} s; "
                        f"its log: {log_path.read_text()[-2000:]}")
        time.sleep(0.05)


def _stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


# --- keys on vpcd slots -----------------------------------------------------------------


class AttachedKey:
    """A virtual card on one vpcd slot; `remove()` and `insert()` wait until pcscd saw the change."""

    def __init__(self, card, slot: Slot, latency_s: float = 0.0) -> None:
        from tui.lab.vpcd import VpcdLink

        self.card = card
        self.slot = slot
        self.link = VpcdLink(card, slot.port, latency_s=latency_s)

    @property
    def reader(self) -> str:
        """The reader name pcscd shows for this slot."""
        return self.slot.reader

    def insert(self) -> None:
        """Connect the card and wait until the reader reports it present."""
        self.link.insert()
        wait_reader(self.reader, present=True)

    def remove(self) -> None:
        """Disconnect the card and wait until the reader reports it empty."""
        self.link.remove()
        wait_reader(self.reader, present=False)

    def remove_now(self) -> None:
        """Disconnect the card without waiting for pcscd's next presence poll."""
        self.link.remove()


@pytest.fixture
def attach(pcscd):
    """Return `attach(card, slot_index)`, which inserts `card` on that slot; every card is removed after the test."""
    attached: list[AttachedKey] = []

    def attach_card(card, slot_index: int = 0, *, latency_s: float = 0.0) -> AttachedKey:
        slot = SLOTS[slot_index]
        # A card left on the slot would make vpcd queue this one silently.
        wait_reader(slot.reader, present=False)
        key = AttachedKey(card, slot, latency_s)
        key.insert()
        attached.append(key)
        return key

    yield attach_card
    gc.collect()
    for key in attached:
        if key.link.inserted:
            key.remove()
