"""`keytriage lab`: list, the serve guard, the lab key server and its control socket.

The server runs against fake vpcd listeners on 127.0.0.1, so no pcscd is
needed here; tests/integration serves through the real one.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
import subprocess
import sys
import threading
import time

import pytest

from tui.cli import main
from tui.lab.serve import (
    SERVE_ENV,
    LabServer,
    LabServeError,
    TouchButton,
    control_socket_path,
    run_server,
    send_control,
    terminal_lines,
)
from tui.lab.vpcd import VpcdLinkError, frame, recv_exact


class FakeVpcdPort:
    """A listener on one port that polls each connecting card for its ATR, as vpcd does on insertion."""

    def __init__(self, port: int = 0, listener: socket.socket | None = None) -> None:
        self.listener = listener or socket.create_server(("127.0.0.1", port))
        self.port = self.listener.getsockname()[1]
        self.atrs: list[bytes] = []
        self.connections: list[socket.socket] = []
        self.listener.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            self.connections.append(connection)
            connection.settimeout(5)
            connection.sendall(frame(b"\x04"))
            header = recv_exact(connection, 2)
            if header is not None:
                self.atrs.append(recv_exact(connection, struct.unpack("!H", header)[0]))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for connection in self.connections:
            connection.close()
        self.listener.close()


def wait_for(predicate, timeout_s: float = 5.0) -> bool:
    """Poll `predicate` until it is true or `timeout_s` passed; return its last value."""
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)
    return bool(predicate())


def consecutive_listeners(count: int) -> list[FakeVpcdPort]:
    """Bind `count` fake vpcd ports with consecutive numbers, as a vpcd entry's slots are."""
    for _attempt in range(50):
        first = socket.create_server(("127.0.0.1", 0))
        base = first.getsockname()[1]
        if 35900 <= base <= 36000:
            # Stay clear of the real vpcd ports, which a leftover socket would block.
            first.close()
            continue
        sockets = [first]
        try:
            for offset in range(1, count):
                sockets.append(socket.create_server(("127.0.0.1", base + offset)))
        except OSError:
            for sock in sockets:
                sock.close()
            continue
        return [FakeVpcdPort(listener=sock) for sock in sockets]
    pytest.skip("no consecutive free ports on 127.0.0.1")


@pytest.fixture(autouse=True)
def runtime_dir(tmp_path, monkeypatch):
    directory = tmp_path / "run"
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(directory))
    return directory


@pytest.fixture
def vpcd_one():
    ports = consecutive_listeners(1)
    yield ports[0]
    ports[0].close()


@pytest.fixture
def served(vpcd_one):
    lines: list[str] = []
    server = LabServer("pin-locked-puk", vpcd_one.port, out=lines.append)
    server.start()
    yield server, lines, vpcd_one
    server.stop()


# --- keytriage lab list and the serve guard ---------------------------------------


def test_list_prints_every_scenario(capsys):
    from tui.lab.scenarios import SCENARIOS

    assert main(["lab", "list"]) == 0

    output = capsys.readouterr().out
    for name, scenario in SCENARIOS.items():
        assert f"{name} " in output
        assert scenario.description in output


def test_cli_start_skips_lab_import():
    code = "import sys\nfrom tui.cli import build_parser\nbuild_parser()\nprint('tui.lab.scenarios' in sys.modules, 'tui.lab.serve' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)

    assert result.stdout.split() == ["False", "False"], result.stderr


def test_serve_refused_without_env(monkeypatch, capsys):
    monkeypatch.delenv(SERVE_ENV, raising=False)

    assert main(["lab", "serve", "pin-locked-puk"]) == 2

    # The message is wrapped for the terminal; join its lines to find the phrases.
    error = " ".join(capsys.readouterr().err.split())
    assert "KEYTRIAGE_LAB_SERVE=1" in error
    assert "0.0.0.0:35963" in error
    assert "every network address" in error


def test_serve_env_must_be_one(monkeypatch, capsys):
    monkeypatch.setenv(SERVE_ENV, "yes")

    assert main(["lab", "serve", "pin-locked-puk"]) == 2
    assert "KEYTRIAGE_LAB_SERVE=1" in capsys.readouterr().err


def test_serve_unknown_scenario(monkeypatch, capsys):
    monkeypatch.setenv(SERVE_ENV, "1")

    assert main(["lab", "serve", "no-such-scenario", "--port", "1"]) == 2
    assert "no-such-scenario" in capsys.readouterr().err


def test_serve_without_vpcd(monkeypatch, capsys):
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    monkeypatch.setenv(SERVE_ENV, "1")
    monkeypatch.setattr("tui.lab.vpcd.VpcdLink.insert",
                        lambda self, connect_timeout_s=5.0: (_ for _ in ()).throw(VpcdLinkError(f"nothing accepts connections on 127.0.0.1:{port}")))

    assert run_server("pin-locked-puk", port) == 3

    assert f"127.0.0.1:{port}" in capsys.readouterr().err
    assert not control_socket_path(port).exists()


def test_terminal_lines_wrap_at_spaces():
    text = "Serving lab scenario 'pin-locked-puk': Generic PIV key with the PIN blocked (0 of 8) and a PUK on file"

    assert terminal_lines(text, 80) == [
        "Serving lab scenario 'pin-locked-puk': Generic PIV key with the PIN blocked (0",
        "  of 8) and a PUK on file",
    ]


def test_terminal_lines_keep_paths_and_newlines():
    path = "/run/user/1000/keytriage/" + "x" * 80
    assert terminal_lines(f"first\nsocket {path} busy", 40) == ["first", "socket", f"  {path}", "  busy"]


def test_serve_output_fits_80_columns(monkeypatch, capsys):
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    monkeypatch.setenv(SERVE_ENV, "1")
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr("tui.lab.vpcd.VpcdLink.insert",
                        lambda self, connect_timeout_s=5.0: (_ for _ in ()).throw(VpcdLinkError(
                            f"nothing accepts connections on 127.0.0.1:{port} after 5 s (Connection refused). "
                            "Start pcscd with a vpcd reader entry for this port, then retry.")))

    assert run_server("pin-locked-puk", port) == 3

    captured = capsys.readouterr()
    for line in captured.out.splitlines() + captured.err.splitlines():
        assert len(line) <= 80, line
    assert captured.out.splitlines()[0].endswith("with the PIN blocked (0")
    assert captured.out.splitlines()[1] == "  of 8) and a PUK on file"


def test_negative_latency_rejected(monkeypatch, capsys):
    monkeypatch.setenv(SERVE_ENV, "1")

    assert main(["lab", "serve", "healthy", "--latency-ms", "-5"]) == 2
    assert "--latency-ms" in capsys.readouterr().err


def test_port_out_of_range_rejected(capsys):
    with pytest.raises(SystemExit):
        main(["lab", "remove", "--port", "70000"])

    assert "outside 1..65535" in capsys.readouterr().err


# --- the lab key server ---------------------------------------------------------------


def test_serve_inserts_key(served):
    server, lines, vpcd_port = served

    assert server.keys[0].link.inserted
    assert wait_for(lambda: vpcd_port.atrs)
    assert vpcd_port.atrs == [server.keys[0].lab_key.card.atr]
    assert any("Serving lab scenario 'pin-locked-puk'" in line for line in lines)
    assert any("Inserted key 1" in line for line in lines)


def test_control_socket_private(served, runtime_dir):
    server, _, vpcd_port = served
    path = control_socket_path(vpcd_port.port)

    assert path.parent == runtime_dir / "keytriage"
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700


def test_control_socket_in_state_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))

    assert control_socket_path(35963) == tmp_path / "state" / "keytriage" / "lab-serve-35963.sock"


def test_remove_then_insert_by_control(served):
    server, _, vpcd_port = served
    link = server.keys[0].link

    removed_ok, removed_message = send_control("remove", vpcd_port.port)
    after_remove = link.inserted
    inserted_ok, inserted_message = send_control("insert", vpcd_port.port)

    assert removed_ok
    assert "Removed key 1" in removed_message
    assert after_remove is False
    assert inserted_ok
    assert "Inserted key 1" in inserted_message
    assert link.inserted
    assert len(vpcd_port.connections) == 2


def test_remove_twice_reports_state(served):
    server, _, vpcd_port = served

    send_control("remove", vpcd_port.port)
    ok, message = send_control("remove", vpcd_port.port)

    assert ok
    assert "already removed" in message


def test_touch_without_fido_fails(served):
    _, _, vpcd_port = served

    ok, message = send_control("touch", vpcd_port.port)

    assert not ok
    assert "no FIDO applet" in message


def test_unknown_key_number(served):
    _, _, vpcd_port = served

    ok, message = send_control("remove", vpcd_port.port, key_number=3)

    assert not ok
    assert "has no key 3" in message


def test_cli_control_round_trip(served, capsys):
    server, _, vpcd_port = served

    code = main(["lab", "remove", "--port", str(vpcd_port.port)])

    assert code == 0
    assert "Removed key 1" in capsys.readouterr().out
    assert not server.keys[0].link.inserted


def test_cli_control_without_server(capsys):
    code = main(["lab", "insert", "--port", "35999"])

    error = capsys.readouterr().err
    assert code == 2
    assert "no lab key server runs on port 35999" in error
    assert "keytriage lab serve SCENARIO --port 35999" in error


def test_second_server_same_port_rejected(served):
    _, _, vpcd_port = served
    second = LabServer("healthy", vpcd_port.port, out=lambda line: None)

    with pytest.raises(LabServeError, match="already runs on port"):
        second.start()


def test_stale_control_socket_replaced(vpcd_one):
    path = control_socket_path(vpcd_one.port)
    path.parent.mkdir(parents=True)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays with no listener, as after a kill -9
    server = LabServer("pin-locked-puk", vpcd_one.port, out=lambda line: None)

    server.start()
    try:
        assert send_control("remove", vpcd_one.port)[0]
    finally:
        server.stop()


def test_stop_removes_keys_and_socket(vpcd_one):
    server = LabServer("pin-locked-puk", vpcd_one.port, out=lambda line: None)
    server.start()

    server.stop()

    assert not server.keys[0].link.inserted
    assert not control_socket_path(vpcd_one.port).exists()


def test_two_keys_consecutive_ports():
    ports = consecutive_listeners(2)
    server = LabServer("two-tokens", ports[0].port, out=lambda line: None)
    try:
        server.start()

        assert [key.port for key in server.keys] == [ports[0].port, ports[0].port + 1]
        assert all(key.link.wait_polled(5) for key in server.keys)
        assert len(ports[1].connections) == 1

        ok, message = send_control("remove", ports[0].port, key_number=2)
        assert ok
        assert server.keys[0].link.inserted
        assert not server.keys[1].link.inserted
    finally:
        server.stop()
        for port in ports:
            port.close()


def test_empty_reader_keeps_port_unused(vpcd_one):
    lines: list[str] = []
    server = LabServer("no-token", vpcd_one.port, out=lines.append)
    server.start()
    try:
        ok, message = send_control("insert", vpcd_one.port)

        assert server.keys[0].link is None
        assert vpcd_one.connections == []
        assert not ok
        assert "empty in the scenario" in message
    finally:
        server.stop()


def test_terminal_lines_drive_server(vpcd_one):
    lines: list[str] = []
    server = LabServer("pin-locked-puk", vpcd_one.port, out=lines.append)
    server.start()
    read_end, write_end = os.pipe()
    os.write(write_end, b"r\nx\nq\n")
    os.close(write_end)
    try:
        with os.fdopen(read_end) as stdin:
            server.serve_forever(stdin)

        assert not server.keys[0].link.inserted
        assert any("Removed key 1" in line for line in lines)
        assert any("Key 'x' does nothing here" in line for line in lines)
        assert server.stopped
    finally:
        server.stop()


def test_touch_reaches_fido_request():
    from tui.lab.scenarios import SCENARIOS

    fido = next((name for name in SCENARIOS if name.startswith("fido-")), None)
    if fido is None:
        pytest.skip("no FIDO lab scenario yet")
    ports = consecutive_listeners(1)
    server = LabServer(fido, ports[0].port, out=lambda line: None)
    try:
        server.start()
        buttons = server.keys[0].buttons
        assert buttons, "the FIDO applet's authenticator should take its user presence from the lab button"

        outcome: list[bool | None] = []
        request = threading.Thread(target=lambda: outcome.append(buttons[0](threading.Event(), 5.0)))
        request.start()
        assert wait_for(lambda: buttons[0].waiting)
        ok, message = send_control("touch", ports[0].port)
        request.join(5)

        assert ok
        assert "waiting FIDO request" in message
        assert outcome == [True]
    finally:
        server.stop()
        ports[0].close()


# --- the touch button -------------------------------------------------------------------


def test_button_press_while_waiting():
    button = TouchButton()
    outcome: list[bool | None] = []
    waiter = threading.Thread(target=lambda: outcome.append(button(threading.Event(), 5.0)))
    waiter.start()
    assert wait_for(lambda: button.waiting)

    button.press()
    waiter.join(5)

    assert outcome == [True]
    assert not button.waiting


def test_button_press_before_wait_ignored():
    button = TouchButton()

    button.press()

    assert button(threading.Event(), 0.1) is None


def test_button_cancel_returns_none():
    button = TouchButton()
    cancel = threading.Event()
    cancel.set()

    assert button(cancel, 5.0) is None


def test_button_reports_wait():
    waits: list[str] = []
    button = TouchButton(on_wait=lambda: waits.append("waiting"))

    button(threading.Event(), 0.05)

    assert waits == ["waiting"]
