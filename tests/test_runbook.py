"""The runbook step table and its evaluation of Steps 1 to 3 against a scan."""

from __future__ import annotations

import pytest

from conftest import make_scan, make_token
from tui.model import Counter, PcscProblem, PinState, ScanResult, Source
from tui.runbook import STEPS, Finding, Outcome, Step, StepKind, evaluate, select_token


def test_table_has_steps_zero_to_eleven():
    # Deviation from the runbook: "6a", the admin-key unlock, sits between Steps 6 and 10.
    assert list(STEPS) == ["0", "1", "2", "3", "4", "5", "6", "6a", "7", "8", "9", "10", "11"]


@pytest.mark.parametrize(("step", "kind"), [
    ("0", StepKind.ASK), ("1", StepKind.READ_ONLY), ("2", StepKind.READ_ONLY), ("3", StepKind.READ_ONLY),
    ("4", StepKind.SINGLE_ATTEMPT), ("5", StepKind.READ_ONLY), ("6", StepKind.SINGLE_ATTEMPT),
    ("6a", StepKind.SINGLE_ATTEMPT), ("7", StepKind.READ_ONLY), ("8", StepKind.SINGLE_ATTEMPT),
    ("9", StepKind.DESTRUCTIVE), ("10", StepKind.DESTRUCTIVE), ("11", StepKind.SINGLE_ATTEMPT),
])
def test_step_kinds_follow_runbook(step, kind):
    assert STEPS[step].kind is kind


def test_every_outcome_leads_to_known_step():
    for step in STEPS.values():
        assert step.outcomes, f"Step {step.id} has no outcome"
        for outcome in step.outcomes:
            assert outcome.leads_to is None or outcome.leads_to in STEPS, (step.id, outcome.id)


def test_every_step_has_evaluator_and_action():
    for step in STEPS.values():
        assert step.evaluate is not None, step.id
        assert step.action, step.id


def test_unknown_outcome_names_step():
    with pytest.raises(KeyError, match="Step 3 has no outcome 'bogus'"):
        STEPS["3"].outcome("bogus")


def test_healthy_token_goes_to_step_four():
    result = evaluate(make_scan(make_token()))

    assert result.pairs == [("1", "detected"), ("2", "captured"), ("3", "tries_left")]
    assert result.current_step == "3"
    assert result.next_step == "4"
    assert not result.stopped
    assert "8/8 ok" in result.verdict
    assert "Step 4" in result.verdict


def test_path_summaries_carry_values():
    result = evaluate(make_scan(make_token()))

    assert result.path[0].summary == "Token detected (1 reader)"
    assert result.path[1].summary == "ID cplc:4790516856781A2B3C4D"
    assert result.path[2].summary == "Smart-card PIN 8/8 ok"


def test_blocked_pin_jumps_to_step_six():
    token = make_token(pin=Counter(PinState.BLOCKED, 0, 8, Source.STATUS_QUERY))

    result = evaluate(make_scan(token))

    assert result.pairs[-1] == ("3", "locked")
    assert result.next_step == "6"
    assert "0/8 BLOCKED" in result.verdict
    assert "PIV status query" in result.verdict


def test_zero_tries_counts_as_locked():
    # A count of 0 decides even if the state was not mapped to BLOCKED.
    token = make_token(pin=Counter(PinState.OK, 0, 8, Source.METADATA))

    assert evaluate(make_scan(token)).next_step == "6"


def test_no_token_stops_naming_check():
    scan = make_scan(problem=PcscProblem.NO_CARD)

    result = evaluate(scan)

    assert result.pairs == [("1", "none")]
    assert result.stopped
    assert result.next_step is None
    assert "Failed check: card in reader" in result.verdict
    assert "hardware or driver issue" in result.verdict


def test_no_readers_without_problem_names_readers():
    result = evaluate(ScanResult())

    assert "Failed check: readers" in result.verdict


def test_problem_detail_not_repeated():
    result = evaluate(make_scan(problem=PcscProblem.NO_CARD))

    assert result.verdict.count(PcscProblem.NO_CARD.message) == 1


def test_problem_detail_added_when_new():
    scan = make_scan(problem=PcscProblem.UNKNOWN)
    scan.problem_detail = "SCardListReaders returned 0x80100099"

    result = evaluate(scan)

    assert "(SCardListReaders returned 0x80100099)" in result.verdict


def test_service_down_names_service_check():
    result = evaluate(make_scan(problem=PcscProblem.NO_SERVICE))

    assert "Failed check: smart-card service" in result.verdict
    assert "pcscd" in result.verdict


def test_unreadable_token_stops_at_step_one():
    token = make_token(problem=PcscProblem.SHARING_VIOLATION)

    result = evaluate(make_scan(token))

    assert result.pairs == [("1", "unreadable")]
    assert "Failed check: reader access" in result.verdict


def test_several_tokens_targets_selected():
    first = make_token(0, reader="Reader A", token_id="cplc:AAAA")
    second = make_token(1, reader="Reader B", token_id="cplc:BBBB",
                        pin=Counter(PinState.BLOCKED, 0, 8, Source.METADATA))
    scan = make_scan(first, second)

    result = evaluate(scan, second)

    assert result.pairs[0] == ("1", "several")
    assert result.path[0].summary == "2 tokens, token 1 selected"
    assert result.path[1].summary == "ID cplc:BBBB"
    assert result.next_step == "6"
    assert "2 tokens are connected: confirm token 1 is the user's" in result.verdict


def test_several_tokens_default_to_first():
    scan = make_scan(make_token(0, token_id="cplc:AAAA"), make_token(1, reader="B", token_id="cplc:BBBB"))

    result = evaluate(scan)

    assert result.path[0].summary == "2 tokens, token 0 selected"


def test_missing_id_warns_about_escrow():
    token = make_token(token_id=None)

    result = evaluate(make_scan(token), id_sources={"piv": ["cplc", "guid"]})

    assert ("2", "missing") in result.pairs
    assert result.next_step == "4"
    assert "escrow will be refused later" in result.verdict
    assert "cplc, guid" in result.verdict


def test_pin_not_set_stops_with_id_check():
    token = make_token(pin=Counter(PinState.NOT_SET, source=Source.STATUS_QUERY))

    result = evaluate(make_scan(token))

    assert result.pairs[-1] == ("3", "not_set")
    assert result.stopped
    assert "cplc:4790516856781A2B3C4D" in result.verdict
    assert "matches the user's record" in result.verdict


def test_verified_count_unknown_goes_to_step_four():
    token = make_token(pin=Counter(PinState.VERIFIED_COUNT_UNKNOWN, source=Source.STATUS_QUERY))

    result = evaluate(make_scan(token))

    assert result.pairs[-1] == ("3", "verified_count_unknown")
    assert result.next_step == "4"
    assert "not readable" in result.verdict


def test_unreadable_tries_warn_before_verify():
    token = make_token(pin=Counter(PinState.NOT_READABLE, detail="status query answered 6D00"))

    result = evaluate(make_scan(token))

    assert result.pairs[-1] == ("3", "not_readable")
    assert "status query answered 6D00" in result.verdict
    assert "last try" in result.verdict


def test_no_smart_card_pin_goes_to_fido():
    token = make_token(pin=Counter(PinState.NOT_SUPPORTED))

    result = evaluate(make_scan(token))

    assert result.next_step == "7"


def test_select_token_by_id_then_reader():
    first = make_token(0, reader="A", token_id="cplc:AAAA")
    second = make_token(1, reader="B", token_id=None)
    scan = make_scan(first, second)

    assert select_token(scan, token_id="cplc:AAAA") is first
    assert select_token(scan, reader="B") is second
    assert select_token(scan, token_id="cplc:GONE") is first
    assert select_token(ScanResult()) is None


def test_table_is_extensible_with_evaluator():
    # A later step gets an evaluator by adding it to a copy of the table.
    steps = dict(STEPS)
    step_four = STEPS["4"]
    steps["4"] = Step(step_four.id, step_four.title, step_four.kind, step_four.operation,
                      step_four.outcomes + (Outcome("skipped", "Verify skipped in test", None, "Stopped at 4."),),
                      evaluate=lambda context: Finding("skipped"))

    result = evaluate(make_scan(make_token()), steps=steps)

    assert result.pairs[-1] == ("4", "skipped")
    assert result.verdict == "Stopped at 4."
