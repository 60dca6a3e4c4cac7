"""The SIGHUP watchdog ends the process only after the work in flight is done."""

import types

import tui.ui.feature_ticket as feature_ticket


def test_watchdog_waits_for_write_then_exits(monkeypatch):
    exits = []
    busy_polls = iter([True, True, False])
    fake = types.SimpleNamespace(
        device=types.SimpleNamespace(busy=False),
        write_in_flight=lambda: next(busy_polls),
    )
    sleeps = []
    monkeypatch.setattr(feature_ticket.time, "sleep", sleeps.append)
    monkeypatch.setattr(feature_ticket.os, "_exit", exits.append)

    feature_ticket.TicketFeature._hangup_watchdog(fake)

    assert exits == [feature_ticket.HANGUP_EXIT_CODE]
    assert sleeps[:2] == [0.2, 0.2]
    assert sleeps[-1] == feature_ticket.HANGUP_GRACE_S
