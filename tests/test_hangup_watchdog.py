"""The SIGHUP watchdog ends the process only after the work in flight is done."""

import types

import tui.ui.feature_ticket as feature_ticket


def test_watchdog_waits_for_write_then_exits(monkeypatch):
    exits = []
    busy_polls = iter([True, True, False])
    never_returns = types.SimpleNamespace(wait=lambda timeout: False)
    fake = types.SimpleNamespace(
        device=types.SimpleNamespace(busy=False),
        write_in_flight=lambda: next(busy_polls),
        hangup_watchdog_enabled=True,
        app_run_returned=never_returns,
    )
    sleeps = []
    monkeypatch.setattr(feature_ticket.time, "sleep", sleeps.append)
    monkeypatch.setattr(feature_ticket.os, "_exit", exits.append)

    feature_ticket.TicketFeature._hangup_watchdog(fake)

    assert exits == [feature_ticket.HANGUP_EXIT_CODE]
    assert sleeps == [0.2, 0.2]


def test_watchdog_leaves_a_normal_exit_alone(monkeypatch):
    exits = []
    fake = types.SimpleNamespace(
        device=types.SimpleNamespace(busy=False),
        write_in_flight=lambda: False,
        hangup_watchdog_enabled=True,
        app_run_returned=types.SimpleNamespace(wait=lambda timeout: True),
    )
    monkeypatch.setattr(feature_ticket.os, "_exit", exits.append)
    feature_ticket.TicketFeature._hangup_watchdog(fake)
    assert exits == []


def test_watchdog_is_off_unless_enabled(monkeypatch):
    exits = []
    fake = types.SimpleNamespace(hangup_watchdog_enabled=False)
    monkeypatch.setattr(feature_ticket.os, "_exit", exits.append)
    feature_ticket.TicketFeature._hangup_watchdog(fake)
    assert exits == []
