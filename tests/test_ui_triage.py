"""Step 0 triage screen: keyboard answers, the tap question, ticket checks, and the runbook path."""

from __future__ import annotations

import threading

from textual import events
from textual.widgets import Input, RadioSet

from conftest import FakeScanner, make_scan, make_token
from tui.session import TriageAnswers
from tui.ui.triage import (
    TICKET_MAX_LENGTH,
    MarkedRadioButton,
    TriageScreen,
    tap_question_relevant,
    triage_summary,
    validate_notes,
    validate_ticket,
)


async def settle(app, pilot) -> None:
    """Wait for the workers and the messages they posted."""
    await app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


def runbook_text(app) -> str:
    return str(app.main_screen.query_one("#runbook-steps").render())


async def test_triage_saves_answers_and_ticket(make_app):
    app = make_app(FakeScanner([make_scan(make_token())]))

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("i")
        assert isinstance(app.screen, TriageScreen)

        await pilot.press("enter")  # smart card / Windows login
        await pilot.press("tab", "enter")  # "It asked for my PIN and rejected it"
        await pilot.press("tab")  # the tap question is hidden, so Tab reaches the notes
        await pilot.press(*"user says PIN changed last week", "enter")
        await pilot.press(*"INC-4711", "enter")
        await pilot.press("s")
        await pilot.pause()

        assert not isinstance(app.screen, TriageScreen)
        answers = app.session.triage
        assert answers.trying == "smart-card"
        assert answers.saw == "pin-rejected"
        assert answers.tap is None
        assert answers.free_text == "user says PIN changed last week"
        assert answers.ticket == "INC-4711"


async def test_triage_recorded_in_runbook_event_audit(make_app):
    app = make_app(FakeScanner([make_scan(make_token())]))

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("i", "enter", "tab", "tab", "tab", *"INC-9", "enter", "s")
        await pilot.pause()

        assert "✔ 0 Triage: smart card / Windows login" in runbook_text(app)
        events = [event for event in app.session.events if event.kind == "triage"]
        assert len(events) == 1
        assert events[0].token_id == "cplc:4790516856781A2B3C4D"
        audit = [record for record in app.session.audit.records() if record.operation == "triage"]
        assert audit[-1].details["ticket"] == "INC-9"
        assert audit[-1].details["result"] == "smart-card"
        assert any("ticket INC-9" in line for line in app.activity.entries)


async def test_tap_question_shown_only_when_relevant(make_app):
    app = make_app(FakeScanner([make_scan(make_token())]))

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("i")
        screen = app.screen
        tap_box = screen.query_one("#triage-tap-box")
        assert not tap_box.display

        # The fifth "trying" answer is the tap action.
        await pilot.press("down", "down", "down", "down", "enter")
        assert tap_box.display

        await pilot.press("tab", "tab")  # past "saw" to the tap question
        assert screen.focused is screen.query_one("#triage-tap", RadioSet)
        await pilot.press("down", "enter")  # "A box asks me to touch the key"
        await pilot.press("s")
        await pilot.pause()

        assert app.session.triage.trying == "tap"
        assert app.session.triage.tap == "touch-box"
        assert "✔ 0 Triage: tap asks for a touch (FIDO2)" in runbook_text(app)


async def test_cancel_keeps_earlier_answers(make_app):
    app = make_app(FakeScanner([make_scan(make_token())]))
    app.session.triage = TriageAnswers(trying="vpn-otp", ticket="INC-1")

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("i", "down", "enter", "n")
        await pilot.pause()

        assert not isinstance(app.screen, TriageScreen)
        assert app.session.triage == TriageAnswers(trying="vpn-otp", ticket="INC-1")
        assert not [event for event in app.session.events if event.kind == "triage"]


def test_trying_keys_match_runbook():
    from tui.runbook import TRYING_CHOICES as RUNBOOK_TRYING
    from tui.ui.triage import TRYING_CHOICES

    assert [choice.key for choice in TRYING_CHOICES] == list(RUNBOOK_TRYING)


async def test_triage_prefilled_with_saved_answers(make_app):
    app = make_app(FakeScanner([make_scan(make_token())]))
    app.session.triage = TriageAnswers(trying="passkey", saw="touch-nothing", tap="nothing", ticket="INC-2")

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("i")
        screen = app.screen

        assert screen.query_one("#triage-trying", RadioSet).pressed_index == 1
        assert screen.query_one("#triage-saw", RadioSet).pressed_index == 2
        assert screen.query_one("#triage-tap", RadioSet).pressed_index == 2
        assert screen.query_one("#triage-ticket", Input).value == "INC-2"


async def test_letters_in_fields_do_not_save(make_app):
    app = make_app(FakeScanner([make_scan(make_token())]))

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("i", "tab", "tab")
        await pilot.press(*"sn")

        assert isinstance(app.screen, TriageScreen)
        assert app.screen.query_one("#triage-notes", Input).value == "sn"


async def test_escape_sequence_paste_rejected_in_ticket(make_app):
    app = make_app(FakeScanner([make_scan(make_token())]))

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("i")
        ticket = app.screen.query_one("#triage-ticket", Input)
        ticket.focus()
        await pilot.pause()
        ticket.post_message(events.Paste("\x1b[<35;10;5MINC-1"))
        await pilot.pause()

        assert ticket.value == ""


async def test_scan_runs_while_triage_open(make_app):
    gate = threading.Event()
    scanner = FakeScanner([make_scan(make_token())], gate=gate)
    app = make_app(scanner)

    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("i")
        assert isinstance(app.screen, TriageScreen)
        gate.set()
        await settle(app, pilot)

        assert scanner.calls == 1
        assert app.scan_result is not None
        assert isinstance(app.screen, TriageScreen)


def marks(screen, selector: str) -> list[str]:
    """Return the first three characters each button of a list renders: its state mark."""
    return [button.render().plain[:3] for button in screen.query_one(selector, RadioSet).query(MarkedRadioButton)]


async def test_chosen_answer_marked_in_characters(make_app):
    app = make_app(FakeScanner([make_scan(make_token())]))
    app.session.triage = TriageAnswers(trying="passkey")

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("i")
        screen = app.screen

        assert marks(screen, "#triage-trying") == ["( )", "(*)", "( )", "( )", "( )", "( )", "( )"]
        assert marks(screen, "#triage-saw") == ["( )"] * 4

        # The cursor starts on the first answer; the third one takes the mark.
        await pilot.press("down", "down", "enter")
        assert screen.query_one("#triage-trying", RadioSet).pressed_index == 2
        assert marks(screen, "#triage-trying") == ["( )", "( )", "(*)", "( )", "( )", "( )", "( )"]

        await pilot.press("tab", "down", "enter")
        assert marks(screen, "#triage-saw") == ["( )", "(*)", "( )", "( )"]


async def test_marks_shown_under_no_color(make_app, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    app = make_app(FakeScanner([make_scan(make_token())]))
    app.session.triage = TriageAnswers(trying="vpn-otp", saw="pin-rejected")

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("i")
        screenshot = app.export_screenshot()

        assert app.no_color
        # One chosen answer in each of the two lists shown, nine that are not.
        assert screenshot.count("(*)") == 2
        assert screenshot.count("(&#160;)") == 9


def test_validate_ticket_rules():
    assert validate_ticket("") is None
    assert validate_ticket("INC-4711") is None
    assert validate_ticket("A" * TICKET_MAX_LENGTH) is None
    assert "maximum is 64" in validate_ticket("A" * (TICKET_MAX_LENGTH + 1))
    assert "non-printable" in validate_ticket("INC\x1b[A")
    assert "non-printable" in validate_ticket("INC-é")


def test_validate_notes_rejects_control_characters():
    assert validate_notes("called twice") is None
    assert "control characters" in validate_notes("a\x1b[<35;10;5M")


def test_tap_question_relevance():
    assert tap_question_relevant("tap", None)
    assert tap_question_relevant(None, "touch-nothing")
    assert not tap_question_relevant("smart_card", "pin-rejected")


def test_triage_summary_words():
    answers = TriageAnswers(trying="vpn-otp", saw="code-wrong")
    assert triage_summary(answers) == 'VPN with hardware OTP; saw "It didn\'t ask for anything, just said the code was wrong"'
    assert triage_summary(TriageAnswers()) == "not asked"


def type_ahead(app, keys) -> None:
    """Post `keys` to the app at once, as a terminal delivers keys typed faster than the app handles them."""
    names = {"-": "minus", " ": "space"}
    for key in keys:
        character = {"enter": "\r", "tab": "\t"}.get(key, key if len(key) == 1 else None)
        app.post_message(events.Key(names.get(key, key), character))


async def settle_keys(pilot) -> None:
    for _ in range(5):
        await pilot.pause()


async def test_quick_enter_then_s_saves(make_app):
    app = make_app(FakeScanner([make_scan(make_token())]))

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("i")
        ticket = app.screen.query_one("#triage-ticket", Input)
        ticket.focus()
        await pilot.pause()

        type_ahead(app, [*"INC-4711", "enter", "s"])
        await settle_keys(pilot)

        assert ticket.value == "INC-4711"
        assert not isinstance(app.screen, TriageScreen)
        assert app.session.triage.ticket == "INC-4711"


async def test_quick_typing_reaches_next_field(make_app):
    app = make_app(FakeScanner([make_scan(make_token())]))

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("i")
        screen = app.screen
        screen.query_one("#triage-notes", Input).focus()
        await pilot.pause()

        # "n" cancels outside a field: typed ahead into the ticket it must stay a letter.
        type_ahead(app, [*"no PIN", "enter", *"INC-n1", "enter"])
        await settle_keys(pilot)

        assert app.screen is screen
        assert screen.query_one("#triage-notes", Input).value == "no PIN"
        assert screen.query_one("#triage-ticket", Input).value == "INC-n1"
        assert screen.focused is None


async def test_ctrl_s_saves_from_field(make_app):
    app = make_app(FakeScanner([make_scan(make_token())]))

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("i")
        app.screen.query_one("#triage-ticket", Input).focus()
        await pilot.pause()
        await pilot.press(*"INC-4711s", "ctrl+s")
        await pilot.pause()

        assert not isinstance(app.screen, TriageScreen)
        assert app.session.triage.ticket == "INC-4711s"


async def test_s_in_field_stays_letter(make_app):
    app = make_app(FakeScanner([make_scan(make_token())]))

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("i")
        ticket = app.screen.query_one("#triage-ticket", Input)
        ticket.focus()
        await pilot.pause()
        await pilot.press(*"INC-4711", "s")
        await pilot.pause()

        assert isinstance(app.screen, TriageScreen)
        assert ticket.value == "INC-4711s"


async def test_key_line_says_how_to_save_from_field(make_app):
    app = make_app(FakeScanner([make_scan(make_token())]))

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("i")
        keys = str(app.screen.query_one(".modal-keys").render())
        screenshot = app.export_screenshot()

        assert "[s] Save" in keys
        assert "[n] Cancel" in keys
        assert "In a text field: Enter, then s to save, or ctrl+s" in keys
        assert "Esc cancels" in keys
        # Both lines of the key line fit the dialog at 80x24.
        assert "ctrl+s" in screenshot
        assert "[n]" in screenshot
