"""A small sample of the sweep through the real pcscd and vpcd, where pyscard itself carries the APDUs.

The pcscd fixture of tests/integration starts the daemon (or reuses one
with the same readers) and holds its lock for the session. The sample: a
canary scan and the set-PUK action, whose redacted APDU must pass through
pyscard unchanged, and a card pulled between two scans.
"""

from __future__ import annotations

import pytest

from sweep.helpers import CANARY_NEW_PUK, CANARY_PUK, STATS, Canaries, canarify
from tui.settings import SiteSettings

pytestmark = pytest.mark.pcscd

SETTINGS = SiteSettings(allow_unverified_commands=True)


def lab_card(name: str):
    from tui.lab.scenarios import get_scenario

    keys = get_scenario(name).build()
    canarify(keys)
    return keys[0]


def test_canary_scan_through_pcscd(attach, traffic_log, tmp_path):
    from tui.pcsc import PcscBackend
    from tui.scan import scan_all
    from tui.trace import open_trace_writer

    key = lab_card("healthy")
    attached = attach(key.card, 0)
    backend = PcscBackend()
    try:
        with open_trace_writer(tmp_path / "scan.trace") as writer:
            result = scan_all(writer.wrap(backend), SETTINGS, observer=writer, usb_hid=False)
    finally:
        backend.release()

    [token] = [t for t in result.tokens if t.reader == attached.reader]
    assert token.problem is None
    assert token.smartcard.pin.remaining == 8
    hits = Canaries().hits(traffic_log.read_text(encoding="utf-8"), "TRAFFIC log")
    hits += Canaries().hits((tmp_path / "scan.trace").read_text(encoding="utf-8"), "trace")
    assert not hits, "\n".join(hits)
    STATS.add("pcscd")


def test_set_puk_through_pcscd(attach, traffic_log):
    from tui.escrow.actions import set_piv_puk
    from tui.escrow.flow import EscrowFlow, Outcome
    from tui.escrow.memory import MemoryStore
    from tui.pcsc import PcscBackend
    from tui.scan import scan_reader
    from tui.secret import Secret
    from tui.transport import Channel

    key = lab_card("wrong-pin")
    attached = attach(key.card, 0)
    backend = PcscBackend()
    try:
        token = scan_reader(backend, attached.reader, 0, SETTINGS, usb_hid=False)
        transport = backend.open(attached.reader)
        transport.connect()
        try:
            result = set_piv_puk(Channel(transport), EscrowFlow(MemoryStore(), user="sweep"), token.token_id,
                                 Secret(CANARY_PUK, "PIV PUK"), new_puk=Secret(CANARY_NEW_PUK, "PIV PUK"), allow_on_file=True)
        finally:
            transport.disconnect()
    finally:
        backend.release()

    assert result.outcome is Outcome.APPLIED, result.message
    assert key.store.puk.matches(CANARY_NEW_PUK.encode())
    hits = Canaries().hits(traffic_log.read_text(encoding="utf-8"), "TRAFFIC log")
    assert not hits, "\n".join(hits)
    STATS.add("pcscd")


def test_pulled_card_shows_no_counter(attach):
    from tui.model import PcscProblem
    from tui.pcsc import PcscBackend
    from tui.scan import scan_all
    from tui.ui.widgets import render_counters

    key = lab_card("healthy")
    attached = attach(key.card, 0)
    backend = PcscBackend()
    try:
        before = scan_all(backend, SETTINGS, usb_hid=False)
        attached.remove()
        after = scan_all(backend, SETTINGS, usb_hid=False)
    finally:
        backend.release()

    assert any(t.reader == attached.reader and t.problem is None for t in before.tokens)
    assert not any(t.reader == attached.reader for t in after.tokens), "an empty reader must not be a token"
    assert after.problem in (None, PcscProblem.NO_CARD)
    for token in after.tokens:
        if token.reader == attached.reader:
            assert "Not readable" in render_counters(token)
    STATS.add("pcscd")
