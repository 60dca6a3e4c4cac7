"""`keytriage lab serve`: the keys of a lab scenario attached to a running pcscd through vpcd.

Each key of the scenario goes to its own vpcd slot: key 1 on `--port`
(default 35963, the first slot of the stock vsmartcard-vpcd entry), key 2 on
the next port, and so on. One vpcd entry has two consecutive slots, so a
two-key scenario fits the stock entry.
A scenario's empty reader ("no card") keeps its port unused. Reader names are
pcscd's, from its reader configuration, not the scenario's.

While it runs, the server takes lab controls from two places: single keys on
its own terminal (r remove, i insert, t touch, q quit) and one-line commands
from `keytriage lab remove|insert|touch` on a Unix socket that only the same
user can open (mode 0600, in $XDG_RUNTIME_DIR/keytriage, else keytriage's
state directory). The control channel is never TCP.

vpcd listens on every network address, not only on loopback, so serving
needs KEYTRIAGE_LAB_SERVE=1 in the environment as a confirmation that the
machine is a throw-away lab host.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import signal
import socket
import sys
import textwrap
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tui.errors import LabError
from tui.lab.vpcd import DEFAULT_PORT, VpcdLink, VpcdLinkError

log = logging.getLogger("keytriage.lab.serve")

SERVE_ENV = "KEYTRIAGE_LAB_SERVE"
COMMANDS = ("remove", "insert", "touch")
TERMINAL_KEYS = {"r": "remove", "i": "insert", "t": "touch", "q": "quit"}

# How long a freshly inserted key may wait for vpcd's first presence poll
# before the server warns; pcscd polls every 400 ms.
FIRST_POLL_WAIT_S = 3.0
CONTROL_TIMEOUT_S = 10.0

SERVE_DISABLED_MESSAGE = (
    "disabled, because pcscd's vpcd driver listens on every network address "
    "(0.0.0.0:{port}), so any host that reaches this machine could talk to the served key or "
    "pose as a card. Run it only on a throw-away lab machine, with {env}=1 in the environment."
)


class LabServeError(LabError):
    """`lab serve` or a lab control command cannot run (not enabled, no server, port taken)."""


def serve_enabled(environ: dict[str, str] | None = None) -> bool:
    """Return True when KEYTRIAGE_LAB_SERVE=1 confirms that serving is wanted."""
    return (environ if environ is not None else os.environ).get(SERVE_ENV) == "1"


def control_socket_path(port: int) -> Path:
    """Return the control socket of the server whose first key is on vpcd `port`."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        base = Path(runtime) / "keytriage"
    else:
        from tui.settings import state_dir

        base = state_dir()
    return base / f"lab-serve-{port}.sock"


class TouchButton:
    """The user-presence source of a served FIDO authenticator: it waits for a `press()`.

    Installed as the authenticator's `user_presence(cancel, timeout)`
    callback. It returns True when pressed in time, None when the timeout
    passes or the host cancels, and calls `on_wait` when a wait begins, so
    the server can tell the person at the terminal to press t.
    """

    def __init__(self, on_wait: Callable[[], None] | None = None) -> None:
        self.on_wait = on_wait
        self._pressed = threading.Event()
        self._waiting = threading.Event()

    @property
    def waiting(self) -> bool:
        """True while the authenticator waits for a touch."""
        return self._waiting.is_set()

    def press(self) -> None:
        """Touch the key. Only a waiting request takes the touch; at other times it has no effect."""
        if self._waiting.is_set():
            self._pressed.set()

    def __call__(self, cancel: threading.Event, timeout: float) -> bool | None:
        self._pressed.clear()
        self._waiting.set()
        if self.on_wait is not None:
            self.on_wait()
        try:
            waited = 0.0
            while waited < timeout:
                if self._pressed.wait(0.05):
                    return True
                if cancel.is_set():
                    return None
                waited += 0.05
            return None
        finally:
            self._waiting.clear()
            self._pressed.clear()


@dataclass
class ServedKey:
    """One key of the scenario and its vpcd slot; `link` is None for an empty reader."""

    number: int
    port: int
    lab_key: Any
    link: VpcdLink | None
    buttons: list[TouchButton] = field(default_factory=list)

    @property
    def label(self) -> str:
        """E.g. "key 1 (vpcd port 35963)"."""
        return f"key {self.number} (vpcd port {self.port})"


class LabServer:
    """Serves a scenario's keys to pcscd and applies lab controls to them.

    `out` receives every line the server prints for the person running it.
    """

    def __init__(self, scenario_name: str, port: int = DEFAULT_PORT, *, latency_s: float = 0.0,
                 out: Callable[[str], None] = print) -> None:
        from tui.lab.scenarios import get_scenario

        self.scenario = get_scenario(scenario_name)
        self.out = out
        self.keys: list[ServedKey] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._control: socket.socket | None = None
        self._control_path = control_socket_path(port)
        self._control_thread: threading.Thread | None = None

        lab_keys = self.scenario.build()
        if not 1 <= port or port + len(lab_keys) - 1 > 0xFFFF:
            raise LabServeError(f"port {port} is invalid for {len(lab_keys)} keys; use a port from 1 to {0x10000 - len(lab_keys)}")
        for offset, lab_key in enumerate(lab_keys):
            link = None
            if lab_key.card is not None:
                link = VpcdLink(lab_key.card, port + offset, latency_s=latency_s, on_closed=self._closed_by_pcscd)
            served = ServedKey(offset + 1, port + offset, lab_key, link)
            served.buttons = self._install_buttons(served)
            self.keys.append(served)

    @property
    def port(self) -> int:
        """The vpcd port of key 1."""
        return self.keys[0].port

    @property
    def stopped(self) -> bool:
        """True once `stop()` ran or a quit was requested."""
        return self._stop.is_set()

    # --- start and stop ---

    def start(self) -> None:
        """Open the control socket, then insert every key; print what happened.

        Raises `LabServeError` when another server owns the control socket
        and `VpcdLinkError` when no vpcd listens on a key's port.
        """
        self._open_control()
        self.out(f"Serving lab scenario '{self.scenario.name}': {self.scenario.description}")
        try:
            for served in self.keys:
                self._insert(served, announce=True)
        except VpcdLinkError:
            self.stop()
            raise
        self.out(f"Controls: r remove, i insert, t touch, q quit; from another terminal: "
                 f"keytriage lab remove|insert|touch --port {self.port}")

    def stop(self) -> None:
        """Remove every key and close the control socket. Stopping twice does nothing."""
        if self._stop.is_set() and self._control is None:
            return
        self._stop.set()
        for served in self.keys:
            if served.link is not None and served.link.inserted:
                served.link.remove()
        control, self._control = self._control, None
        if control is not None:
            control.close()
            with contextlib.suppress(FileNotFoundError):
                self._control_path.unlink()
        if self._control_thread is not None and self._control_thread is not threading.current_thread():
            self._control_thread.join(2.0)

    def request_quit(self) -> None:
        """Ask `serve_forever` to return."""
        self._stop.set()

    # --- lab controls ---

    def execute(self, command: str, key_number: int | None = None) -> tuple[bool, str]:
        """Run one lab control on one key (or every key when None); return (ok, message)."""
        if command == "quit":
            self.request_quit()
            return True, "Stopping the lab key server."
        if command not in COMMANDS:
            return False, f"unknown lab control {command!r}; use one of: {', '.join(COMMANDS)}"
        try:
            targets = self._targets(key_number)
        except LabServeError as exc:
            return False, str(exc)

        with self._lock:
            messages = []
            ok = True
            for served in targets:
                done, message = getattr(self, f"_{command}")(served)
                ok = ok and done
                messages.append(message)
        return ok, "\n".join(messages)

    def _targets(self, key_number: int | None) -> list[ServedKey]:
        if key_number is None:
            return [served for served in self.keys if served.link is not None] or self.keys
        for served in self.keys:
            if served.number == key_number:
                return [served]
        raise LabServeError(f"scenario '{self.scenario.name}' has no key {key_number}; it has keys 1 to {len(self.keys)}")

    def _remove(self, served: ServedKey) -> tuple[bool, str]:
        if served.link is None:
            return False, f"{served.label}: this reader is empty in the scenario; there is no card to remove."
        if not served.link.inserted:
            return True, f"{served.label} is already removed."
        served.link.remove()
        return True, f"Removed {served.label}: pcscd reports its reader empty within about 0.4 s."

    def _insert(self, served: ServedKey, announce: bool = False) -> tuple[bool, str]:
        if served.link is None:
            message = f"{served.label}: this reader is empty in the scenario; no card is inserted."
            if announce:
                self.out(message)
            return False, message
        if served.link.inserted:
            return True, f"{served.label} is already inserted."

        served.link.insert()
        message = (f"Inserted {served.label}, {served.lab_key.description or 'a lab key'}. It is powered up afresh "
                   f"(a new FIDO reset window), and pcscd shows it in the reader of that slot.")
        if announce:
            self.out(message)
        if not served.link.wait_polled(FIRST_POLL_WAIT_S):
            warning = (f"Warning: vpcd did not poll {served.label} within {FIRST_POLL_WAIT_S:g} s. Another card may "
                       f"already use that port (vpcd queues a second card silently), or pcscd has no vpcd entry "
                       f"for it. Stop the other lab server or choose --port.")
            if announce:
                self.out(warning)
            message += "\n" + warning
        return True, message

    def _touch(self, served: ServedKey) -> tuple[bool, str]:
        if not served.buttons:
            return False, f"{served.label} has no FIDO applet in this scenario; a touch does nothing."
        waiting = any(button.waiting for button in served.buttons)
        for button in served.buttons:
            button.press()
        if waiting:
            return True, f"Touched {served.label}: the waiting FIDO request gets its user presence."
        return True, f"Touched {served.label}: no FIDO request waited for a touch, so it had no effect."

    def _install_buttons(self, served: ServedKey) -> list[TouchButton]:
        # Any applet with a software authenticator takes its user presence
        # from a button the lab controls press.
        card = served.lab_key.card
        buttons = []
        for applet in getattr(card, "applets", []) if card is not None else []:
            authenticator = getattr(applet, "authenticator", None)
            if authenticator is not None and hasattr(authenticator, "user_presence"):
                button = TouchButton(on_wait=lambda served=served: self.out(
                    f"{served.label} is blinking: a FIDO request waits for a touch. Press t (or run keytriage lab touch)."))
                authenticator.user_presence = button
                buttons.append(button)
        return buttons

    def _closed_by_pcscd(self, link: VpcdLink) -> None:
        if self._stop.is_set():
            return
        served = next(served for served in self.keys if served.link is link)
        self.out(f"pcscd closed the connection of {served.label} (pcscd stopped?); the key counts as removed. "
                 f"Press i to insert it again once pcscd runs.")

    # --- the control channel ---

    def _open_control(self) -> None:
        path = self._control_path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if path.exists():
            if _control_alive(path):
                raise LabServeError(f"another lab key server already runs on port {self.port} (control socket {path}); "
                                    f"stop it first, or serve on another --port")
            path.unlink()  # left behind by a server that was killed

        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # The umask makes bind() create the socket file as 0600, with no
        # window in which another user could connect.
        previous = os.umask(0o177)
        try:
            server.bind(str(path))
        finally:
            os.umask(previous)
        os.chmod(path, 0o600)
        server.listen(4)
        server.settimeout(0.2)
        self._control = server
        self._control_thread = threading.Thread(target=self._accept_loop, args=(server,), name="lab-control", daemon=True)
        self._control_thread.start()

    def _accept_loop(self, server: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with connection:
                self._handle_control(connection)

    def _handle_control(self, connection: socket.socket) -> None:
        connection.settimeout(CONTROL_TIMEOUT_S)
        try:
            request = connection.makefile("r", encoding="utf-8").readline().split()
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("lab control request could not be read: %s", exc)
            return

        if not request:
            ok, message = False, "empty lab control request"
        else:
            key_number = None
            if len(request) > 1:
                key_number = int(request[1]) if request[1].isdigit() else -1
            ok, message = self.execute(request[0], key_number)
            self.out(f"[control] {message}")
        with contextlib.suppress(OSError):
            connection.sendall(f"{'ok' if ok else 'error'}\n{message}\n".encode())

    # --- the main loop ---

    def serve_forever(self, stdin: IO[str] | None = None) -> None:
        """Apply terminal keys from `stdin` until a quit or `stop()`.

        A terminal is read key by key without echo. Other input is read line
        by line, and its end does not stop the server: a SIGTERM or a quit
        control does.
        """
        stdin = stdin if stdin is not None else sys.stdin
        try:
            fileno = stdin.fileno()
        except (AttributeError, OSError, ValueError):
            fileno = None

        if fileno is not None and os.isatty(fileno):
            self._read_terminal(fileno)
        elif fileno is not None:
            self._read_lines(stdin, fileno)
        self._stop.wait()

    def _read_terminal(self, fileno: int) -> None:
        import termios
        import tty

        saved = termios.tcgetattr(fileno)
        try:
            # cbreak without echo: one key at a time, and the keys do not print.
            tty.setcbreak(fileno)
            attributes = termios.tcgetattr(fileno)
            attributes[3] &= ~termios.ECHO
            termios.tcsetattr(fileno, termios.TCSANOW, attributes)
            while not self._stop.is_set():
                ready, _, _ = select.select([fileno], [], [], 0.2)
                if not ready:
                    continue
                key = os.read(fileno, 1).decode(errors="replace").lower()
                if not key:
                    return
                self._terminal_key(key)
        finally:
            termios.tcsetattr(fileno, termios.TCSADRAIN, saved)

    def _read_lines(self, stdin: IO[str], fileno: int) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([fileno], [], [], 0.2)
            if not ready:
                continue
            line = stdin.readline()
            if not line:
                return  # end of input: keep serving until a signal or a quit
            key = line.strip().lower()[:1]
            if key:
                self._terminal_key(key)

    def _terminal_key(self, key: str) -> None:
        command = TERMINAL_KEYS.get(key)
        if command is None:
            self.out(f"Key {key!r} does nothing here: r remove, i insert, t touch, q quit.")
            return
        ok, message = self.execute(command)
        self.out(message)


def _control_alive(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def terminal_lines(text: str, width: int) -> list[str]:
    """Wrap `text` at spaces to `width` columns, continuation lines indented by two.

    A terminal wraps a long line at its last column, mid-word. Each line of a
    multi-line `text` is wrapped on its own, and a word longer than `width`
    (a path) is kept whole.
    """
    lines: list[str] = []
    for paragraph in text.split("\n"):
        lines.extend(textwrap.wrap(paragraph, width, subsequent_indent="  ", break_long_words=False,
                                   break_on_hyphens=False) or [""])
    return lines


def terminal_width() -> int:
    """Return the columns of the terminal on standard output, 80 when it has none."""
    return max(40, shutil.get_terminal_size((80, 24)).columns)


def send_control(command: str, port: int = DEFAULT_PORT, key_number: int | None = None) -> tuple[bool, str]:
    """Send one lab control to the server of `port` and return (ok, its message).

    Raises `LabServeError` when no server runs there.
    """
    path = control_socket_path(port)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(CONTROL_TIMEOUT_S)
    try:
        client.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        client.close()
        raise LabServeError(f"no lab key server runs on port {port} (no control socket at {path}). "
                            f"Start one with 'keytriage lab serve SCENARIO --port {port}'.") from exc

    with client:
        request = command if key_number is None else f"{command} {key_number}"
        client.sendall(f"{request}\n".encode())
        reply = client.makefile("r", encoding="utf-8").read()
    status, _, message = reply.partition("\n")
    return status == "ok", message.strip()


def run_server(scenario_name: str, port: int, *, latency_s: float = 0.0, stdin: IO[str] | None = None,
               out: Callable[[str], None] | None = None) -> int:
    """Serve `scenario_name` until quit or SIGTERM; return the exit code for `keytriage lab serve`."""
    def emit(line: str) -> None:
        # While serving, the terminal is in cbreak mode, which still maps "\n" to CR LF on output.
        print("\n".join(terminal_lines(line, terminal_width())), flush=True)

    def fail(line: str) -> None:
        print("\n".join(terminal_lines(f"keytriage lab serve: {line}", terminal_width())), file=sys.stderr, flush=True)

    out = out or emit
    if not serve_enabled():
        fail(SERVE_DISABLED_MESSAGE.format(port=port, env=SERVE_ENV))
        return 2

    try:
        server = LabServer(scenario_name, port, latency_s=latency_s, out=out)
        server.start()
    except VpcdLinkError as exc:
        fail(str(exc))
        return 3
    except LabError as exc:
        fail(str(exc))
        return 2

    previous = signal.signal(signal.SIGTERM, lambda _signum, _frame: server.request_quit()) \
        if threading.current_thread() is threading.main_thread() else None
    try:
        server.serve_forever(stdin)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    out("Lab key server stopped; every served key was removed.")
    return 0
