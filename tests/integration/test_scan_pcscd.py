"""The read-only scan through the real pcscd and vpcd, compared with the same lab keys in process.

Both sides scan with `allow_unverified_commands` on, because the in-process
lab backend always allows the unconfirmed commands and a PC/SC reader only
does when the site says so; otherwise the two would send different APDUs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading

import pytest

from .conftest import SLOTS, wait_reader
from tui.errors import CardRemovedError
from tui.model import PcscProblem, PinState
from tui.settings import SiteSettings

SETTINGS = SiteSettings(allow_unverified_commands=True)

# Keys that differ by design between the two paths: reader names come from
# the pcscd configuration, and only the lab backend flags its tokens as lab.
# Keys that differ between the two paths by construction: reader names and
# lab flags, the FIDO device name (the reader), and certificate dates, because each run builds its lab card (and
# its certificates, dated relative to now) afresh.
PATH_SPECIFIC_KEYS = {"lab", "readers", "reader", "is_lab", "problem_detail", "not_before", "not_after", "device"}


def normalized(result) -> dict:
    """Return the scan JSON without reader names and lab flags."""
    from tui.scan_json import result_to_dict

    def strip(value):
        if isinstance(value, dict):
            return {key: strip(item) for key, item in value.items() if key not in PATH_SPECIFIC_KEYS}
        if isinstance(value, list):
            # A lab key served through pcscd is recognised by its reserved ID and
            # carries a LAB KEY note that the in-process run has no reason to add.
            return [strip(item) for item in value if not (isinstance(item, str) and item.startswith("LAB KEY"))]
        return value

    return strip(result_to_dict(result))


def lab_scan(name: str):
    from tui.lab.backend import LabBackend
    from tui.scan import scan_all

    # Through pcscd FIDO is read over PC/SC (no hidraw device exists), so the
    # in-process run must not take the lab's USB HID route either.
    return scan_all(LabBackend(name), SETTINGS, usb_hid=False)


def pcsc_scan(backend=None, observer=None):
    from tui.pcsc import PcscBackend
    from tui.scan import scan_all

    own = backend is None
    backend = backend or PcscBackend()
    try:
        return scan_all(backend, SETTINGS, observer=observer)
    finally:
        if own:
            backend.release()


def attach_scenario(attach, name: str) -> list:
    """Attach every card of scenario `name`, key N on slot N - 1; return the attached keys."""
    from tui.lab.scenarios import get_scenario

    keys = get_scenario(name).build()
    if len(keys) > len(SLOTS):
        pytest.skip(f"scenario {name} has {len(keys)} keys, more than the {len(SLOTS)} vpcd slots")
    return [attach(key.card, index) for index, key in enumerate(keys) if key.card is not None]


def scenario_names() -> list[str]:
    from tui.lab.scenarios import SCENARIOS

    return sorted(SCENARIOS)


@pytest.mark.parametrize("name", scenario_names())
def test_scan_matches_lab(attach, name):
    attach_scenario(attach, name)

    through_pcscd = normalized(pcsc_scan())
    in_process = normalized(lab_scan(name))

    assert through_pcscd == in_process


def test_two_keys_two_readers(attach):
    attach_scenario(attach, "two-tokens")

    result = pcsc_scan()

    assert [token.reader for token in result.tokens] == [SLOTS[0].reader, SLOTS[1].reader]
    ids = [str(token.token_id) for token in result.tokens]
    assert len(set(ids)) == 2, ids
    assert [token.smartcard.pin.remaining for token in result.tokens] == [8, 5]
    # Served lab keys are recognised by their reserved lab IDs, so they never pass for hardware.
    assert all(token.is_lab for token in result.tokens)


def test_removed_during_scan(attach):
    from tui.pcsc import PcscBackend

    keys = attach_scenario(attach, "pin-locked-puk")
    backend = PcscBackend()
    exchanges = []

    def pull_after_first(exchange) -> None:
        exchanges.append(exchange)
        if len(exchanges) == 1:
            keys[0].remove_now()

    try:
        interrupted = pcsc_scan(backend, observer=pull_after_first)
        token = interrupted.tokens[0]

        # A typed removal, and no counter reported from a half-read card.
        assert token.problem in (PcscProblem.NOT_TRANSACTED, PcscProblem.CARD_REMOVED)
        assert token.error
        assert token.smartcard.pin.state is not PinState.BLOCKED
        assert token.smartcard.pin.remaining is None
        assert token.token_id is None

        # The same backend recovers once the key is back: no restart needed.
        # Reinsert only after pcscd saw the removal, as a person re-plugging
        # does: with vpcd 0.8, a card back before the next presence poll gets
        # 0x80100016 for its first APDUs.
        wait_reader(keys[0].reader, present=False)
        keys[0].insert()
        assert normalized(pcsc_scan(backend)) == normalized(lab_scan("pin-locked-puk"))
    finally:
        backend.release()


def test_reset_by_other_connection(attach):
    """Another program resets the card mid-scan (0x80100068); the scan reads it again and reports it whole."""
    from smartcard import scard

    from tui.pcsc import PcscBackend

    attach_scenario(attach, "wrong-pin")
    backend = PcscBackend()
    resets: list[PcscProblem] = []

    def reset_by_other_program() -> None:
        hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        hresult, card, _protocol = scard.SCardConnect(context, SLOTS[0].reader, scard.SCARD_SHARE_SHARED,
                                                      scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1)
        scard.SCardDisconnect(card, scard.SCARD_RESET_CARD)
        scard.SCardReleaseContext(context)

    class ResetOnce:
        """A transport that lets another program reset the card before its second APDU."""

        def __init__(self, inner) -> None:
            self.inner = inner
            self.reader = inner.reader
            self.sent = 0

        def transmit_raw(self, apdu: bytes) -> bytes:
            self.sent += 1
            if self.sent == 2 and not resets:
                # pcscd makes a resetting disconnect wait for our transaction, so release it first.
                self.inner.end_transaction()
                other = threading.Thread(target=reset_by_other_program)
                other.start()
                other.join(10)
                try:
                    return self.inner.transmit_raw(apdu)
                except CardRemovedError as exc:
                    resets.append(exc.problem)
                    raise
            return self.inner.transmit_raw(apdu)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    class ResettingBackend:
        is_lab = False

        def list_readers(self):
            return backend.list_readers()

        def open(self, reader):
            return ResetOnce(backend.open(reader))

    try:
        result = pcsc_scan(ResettingBackend())
    finally:
        backend.release()

    assert resets == [PcscProblem.CARD_RESET]
    assert result.tokens[0].problem is None
    assert normalized(result)["tokens"] == normalized(lab_scan("wrong-pin"))["tokens"]


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tui", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


def test_pcscd_not_running_state(pcscd):
    completed = run_cli("scan", "--json", PCSCLITE_CSOCK_NAME="/nonexistent/x")

    assert completed.returncode == 3, completed.stderr
    result = json.loads(completed.stdout)
    assert result["problem"]["name"] == "no_service"
    assert result["problem"]["code"] == "0x8010001D"
    assert result["tokens"] == []
    assert "pcscd" in completed.stderr


def test_exclusive_holder_not_killed(attach):
    keys = attach_scenario(attach, "wrong-pin")
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from smartcard import scard
            hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
            hresult, card, protocol = scard.SCardConnect(context, {keys[0].reader!r}, scard.SCARD_SHARE_EXCLUSIVE,
                                                         scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1)
            print(hex(hresult & 0xFFFFFFFF), flush=True)
            sys.stdin.readline()
            scard.SCardDisconnect(card, scard.SCARD_LEAVE_CARD)
            scard.SCardReleaseContext(context)
            """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "0x0"

        blocked = pcsc_scan()

        assert blocked.tokens[0].problem is PcscProblem.SHARING_VIOLATION
        assert blocked.tokens[0].smartcard.pin.remaining is None
        assert holder.poll() is None, "keytriage must leave the exclusive holder running"
    finally:
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(10)

    assert normalized(pcsc_scan()) == normalized(lab_scan("wrong-pin"))
