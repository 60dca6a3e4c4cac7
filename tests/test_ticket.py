"""The ticket summary per scenario: exact fields, ASCII at 72 columns, LAB marking, no secrets."""

from __future__ import annotations

import datetime as dt
import os
import re
import stat
from types import SimpleNamespace

import pytest

from conftest import make_scan, make_token
from tui.audit import AuditTrail
from tui.model import Counter, PcscProblem, PinState, Profile, Source
from tui.session import Session
from tui.settings import SiteSettings
from tui.ticket import (
    FIDO_REREGISTER,
    IDP_REENROL,
    OATH_REENROL,
    PIN_CHANGE,
    TicketFileError,
    build_ticket,
    render_ticket,
    ticket_text,
    write_ticket_file,
)

TOKEN_ID = "cplc:4790516856781A2B3C4D"
NOW = dt.datetime(2025, 3, 14, 20, 5, tzinfo=dt.timezone.utc)
PIN_REF = f"secret/data/keytriage/tokens/{TOKEN_ID}/piv-pin v3"
PUK_REF = f"secret/data/keytriage/tokens/{TOKEN_ID}/piv-puk v2"
# The same records as a technician types them in `vault kv get`.
PIN_KV = f"secret/keytriage/tokens/{TOKEN_ID}/piv-pin v3"
PUK_KV = f"secret/keytriage/tokens/{TOKEN_ID}/piv-puk v2"


def new_session(tmp_path, lab: str | None = None) -> Session:
    return Session(SiteSettings(), AuditTrail(tmp_path / "audit.jsonl", lab=lab is not None), lab_scenario=lab)


def locked_token():
    token = make_token(profile=Profile.HID_CRESCENDO, pin=Counter(PinState.BLOCKED, 0, 8, Source.ACA_STATUS_QUERY))
    token.cuid = "4790516856781A2B3C4D"
    return token


def field_lines(text: str, label: str) -> list[str]:
    """Return the lines of the block that starts with `label:` up to the next unindented label."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{label}:"))
    block = [lines[start]]
    for line in lines[start + 1:]:
        if not line.startswith(" "):
            break
        block.append(line)
    return block


def assert_pasteable(text: str) -> None:
    for line in text.splitlines():
        assert len(line) <= 72, line
        assert line.isascii(), line
        assert "\x1b" not in line, line


# --- scenarios -------------------------------------------------------------------------------

def test_puk_reset_ticket_fields(tmp_path):
    session = new_session(tmp_path)
    session.triage.trying = "smart-card"
    session.triage.ticket = "INC0012345"
    token = locked_token()
    session.add_event("puk-reset", "Step 6: PIN reset with the PUK on file (9000)", token_id=token.token_id,
                      applet="smart card", resolved_by="PUK reset", escrow_refs=[PIN_REF])

    text = ticket_text(session, make_scan(token), token, now=NOW)

    assert text.splitlines()[0] == "keytriage ticket summary INC0012345"
    assert "Ticket:       INC0012345" in text
    assert "Date:         2025-03-14 20:05 UTC" in text
    assert f"Token ID:     {TOKEN_ID}" in text
    assert "CUID:         4790516856781A2B3C4D" in text
    assert "Profile:      HID Crescendo in Lab Reader 0" in text
    assert field_lines(text, "Locked") == ["Locked:", "  - smart card: PIN 0/8 BLOCKED (ACA status query)"]
    assert "Resolved by:  PUK reset" in text
    assert field_lines(text, "Escrow") == ["Escrow:", f"  - {PIN_KV}"]
    assert field_lines(text, "User to do") == [
        "User to do:", "  - Change the smart-card PIN at the next login (the help desk set it)."]
    assert "  Trying:     Smart card / Windows login" in text
    assert "never in this ticket" in " ".join(text.split())
    assert_pasteable(text)


def test_not_lockout_verify_ok(tmp_path):
    session = new_session(tmp_path)
    session.triage.trying = "passkey"
    token = make_token()
    session.add_event("verify", "Step 4: the PIN the user claims works (9000)", token_id=token.token_id,
                      resolved_by="PIN verify: the user's PIN works")
    session.add_event("not-lockout", "user error: the smart-card PIN works; the user typed it into a FIDO prompt",
                      token_id=token.token_id)

    text = ticket_text(session, make_scan(token), token, now=NOW)

    assert field_lines(text, "Locked") == [
        "Locked:       not a lockout: user error: the smart-card PIN works; the",
        "              user typed it into a FIDO prompt"]
    assert "Resolved by:  PIN verify: the user's PIN works" in text
    assert "Escrow:       nothing set, nothing escrowed" in text
    assert "User to do:   nothing" in text
    assert "never in this ticket" not in " ".join(text.split())
    assert_pasteable(text)


def test_told_pin_resolution(tmp_path):
    session = new_session(tmp_path)
    token = make_token()
    session.add_event("told-pin", "Told the user the documented default PIN", token_id=token.token_id,
                      resolved_by="no action: told the user the PIN")

    text = ticket_text(session, make_scan(token), token, now=NOW)

    assert "Resolved by:  no action: told the user the PIN" in text
    assert re.search(r"^  - \d\d:\d\d Told the user the documented default PIN$", text, re.MULTILINE)


def test_fido_reset_asks_reregistration(tmp_path):
    session = new_session(tmp_path)
    token = make_token()
    blocked = SimpleNamespace(state=SimpleNamespace(value="permanently_blocked"),
                              text=lambda: "0 tries left, BLOCKED (reset only)")
    token.fido = SimpleNamespace(pin=blocked)
    session.add_event("fido-reset", "Step 9: FIDO reset and new FIDO PIN set", token_id=token.token_id,
                      applet="FIDO", resolved_by="FIDO reset",
                      escrow_refs=[f"secret/data/keytriage/tokens/{TOKEN_ID}/fido-pin v1"])

    ticket = build_ticket(session, make_scan(token), token, now=NOW)

    assert ticket.tokens[0].locked == ["FIDO: PIN 0 tries left, BLOCKED (reset only)"]
    assert ticket.tokens[0].resolution == "FIDO reset"
    assert ticket.tokens[0].user_actions == [FIDO_REREGISTER]


def test_reprovision_lists_every_reenrolment(tmp_path):
    session = new_session(tmp_path)
    token = locked_token()
    session.add_event("reprovision", "Step 10: token wiped, new PIN and PUK set", token_id=token.token_id,
                      resolved_by="full reprovision", escrow_refs=[PIN_REF, PUK_REF, PIN_REF])

    ticket = build_ticket(session, make_scan(token), token, now=NOW)
    section = ticket.tokens[0]

    assert section.resolution == "full reprovision"
    assert section.escrow_refs == [PIN_KV, PUK_KV]
    assert section.user_actions == [IDP_REENROL, OATH_REENROL, FIDO_REREGISTER, PIN_CHANGE]


def test_failed_attempt_does_not_resolve(tmp_path):
    session = new_session(tmp_path)
    token = locked_token()
    session.add_event("puk-reset", "Step 6: wrong PUK (63C2), stopped", token_id=token.token_id)

    section = build_ticket(session, make_scan(token), token, now=NOW).tokens[0]

    assert section.resolution == "not resolved in this session"
    assert section.user_actions == []
    assert len(section.steps) == 1
    assert re.fullmatch(r"\d\d:\d\d Step 6: wrong PUK \(63C2\), stopped", section.steps[0])


def test_finding_events_survive_rescan(tmp_path):
    # After a PUK reset the rescan shows the PIN healthy; the finding event keeps the lockout on the ticket.
    session = new_session(tmp_path)
    healthy = make_token()
    session.add_event("finding", "PIN 0/8 BLOCKED (PIV status query)", token_id=healthy.token_id, applet="smart card")
    session.add_event("puk-reset", "Step 6: PIN reset", token_id=healthy.token_id, resolved_by="PUK reset")

    section = build_ticket(session, make_scan(healthy), healthy, now=NOW).tokens[0]

    assert section.locked == ["smart card: PIN 0/8 BLOCKED (PIV status query)"]
    assert section.steps[0].endswith("Step 6: PIN reset")
    assert len(section.steps) == 1


def test_runbook_not_lockout_reason(tmp_path):
    session = new_session(tmp_path)
    token = make_token()
    runbook = SimpleNamespace(verdict="FIDO is not in use on this token.", applet=None,
                              not_lockout="relying-party side", stopped=True)

    section = build_ticket(session, make_scan(token), token, runbook=runbook, now=NOW).tokens[0]

    assert section.not_lockout == "relying-party side. FIDO is not in use on this token."
    assert section.resolution == "no token change needed (not a lockout)"


def test_runbook_still_open(tmp_path):
    session = new_session(tmp_path)
    token = make_token()
    runbook = SimpleNamespace(verdict="Next: Step 4, one deliberate verify.", stopped=False)

    text = ticket_text(session, make_scan(token), token, runbook=runbook, now=NOW)

    assert "Locked:       none found so far\n" in text
    assert "Still open:   Next: Step 4, one deliberate verify." in text
    assert "Resolved by:  not resolved in this session" in text
    assert "User to do:   nothing yet: the case is still open (see Still open)" in text


def test_wrong_pin_open_case_exact(tmp_path):
    session = new_session(tmp_path)
    token = make_token()
    runbook = SimpleNamespace(verdict="Smart-card PIN not locked (3/? ok, source: PIV status query); the user may be "
                                      "typing a wrong PIN. Next: Step 4, one deliberate verify.", stopped=False)

    text = ticket_text(session, make_scan(token), token, runbook=runbook, now=NOW)

    assert field_lines(text, "Locked") == ["Locked:       none found so far"]
    assert field_lines(text, "Still open") == [
        "Still open:   Smart-card PIN not locked (3/? ok, source: PIV status",
        "              query); the user may be typing a wrong PIN. Next: Step 4,",
        "              one deliberate verify.",
    ]
    assert field_lines(text, "User to do") == ["User to do:   nothing yet: the case is still open (see Still open)"]
    assert "User to do:   nothing\n" not in text
    assert_pasteable(text)


def test_cert_expired_reason_said_once(tmp_path):
    session = new_session(tmp_path)
    token = make_token()
    runbook = SimpleNamespace(verdict="Not a lockout: expired certificate. The PIV authentication certificate "
                                      "(slot 9A) expired on 2026-11-04.", applet=None,
                              not_lockout="expired certificate", stopped=True)

    text = ticket_text(session, make_scan(token), token, runbook=runbook, now=NOW)

    assert field_lines(text, "Locked") == [
        "Locked:       not a lockout: expired certificate. The PIV authentication",
        "              certificate (slot 9A) expired on 2026-11-04.",
    ]
    assert text.lower().count("expired certificate") == 1
    assert "Still open" not in text


def test_user_actions_deduplicated_by_meaning(tmp_path):
    session = new_session(tmp_path)
    token = locked_token()
    session.add_event("puk-reset", "Step 6: PIN reset with the PUK on file (9000)", token_id=token.token_id,
                      applet="smart card", resolved_by="PUK reset",
                      user_actions=["Change the PIN issued by the help desk to one only you know."])
    session.add_event("fido-reset", "Step 9: FIDO reset", token_id=token.token_id, applet="FIDO",
                      resolved_by="FIDO reset", user_actions=["re-register the key with every relying party"])
    session.add_event("note", "Asked the user to call back", token_id=token.token_id,
                      user_actions=["call the help desk once the key works"])

    text = ticket_text(session, make_scan(token), token, now=NOW)

    assert field_lines(text, "User to do") == [
        "User to do:",
        "  - Change the smart-card PIN at the next login (the help desk set it).",
        "  - Register the key again with every FIDO relying party (the reset",
        "    deleted all passkeys).",
        "  - Call the help desk once the key works.",
    ]


def test_verify_override_in_steps(tmp_path):
    session = new_session(tmp_path)
    token = make_token()
    session.audit.record("verify-pin", "sending", token_id=token.token_id, tries_before=1, override=True)
    session.add_event("verify", "Step 4 verify: wrong PIN (63C0)", token_id=token.token_id, applet="smart card")

    steps = build_ticket(session, make_scan(token), token, now=NOW).tokens[0].steps

    assert len(steps) == 2
    assert re.fullmatch(r"\d\d:\d\d Step 4 verify sent with the technician's typed override, 1 tries left "
                        r"before it", steps[0])
    assert re.fullmatch(r"\d\d:\d\d Step 4 verify: wrong PIN \(63C0\)", steps[1])


def test_verify_override_other_session_ignored(tmp_path):
    from tui.audit import AuditTrail

    earlier = AuditTrail(tmp_path / "audit.jsonl", session="earlier")
    token = make_token()
    earlier.record("verify-pin", "sending", token_id=token.token_id, tries_before=2, override=True)
    session = new_session(tmp_path)

    steps = build_ticket(session, make_scan(token), token, now=NOW).tokens[0].steps

    assert steps == []


def test_escrow_path_kv_form_unsplit(tmp_path):
    session = new_session(tmp_path)
    token = make_token(token_id="cplc:1AB07E575A17C0DE001B1AB07E575A17C0DE001B")
    long_ref = "/v1/escrow-kv/data/help-desk/keytriage/tokens/cplc:1AB07E575A17C0DE001B1AB07E575A17C0DE001B/piv-puk v4"
    session.add_event("escrow", "set PUK: applied", token_id=token.token_id,
                      escrow_refs=[f"/v1/{PUK_REF}", long_ref])

    text = ticket_text(session, make_scan(token), token, now=NOW)

    assert field_lines(text, "Escrow") == [
        "Escrow:",
        f"  - {PUK_KV}",
        "  - escrow-kv/help-desk/keytriage/tokens/cplc:1AB07E575A17C0DE001B1AB07E575A17C0DE001B/piv-puk",
        "    v4",
    ]
    assert "/v1/" not in text
    assert "/data/" not in text


def test_no_token_is_not_lockout(tmp_path):
    session = new_session(tmp_path)
    scan = make_scan(problem=PcscProblem.NO_READERS)

    text = ticket_text(session, scan, None, now=NOW)

    assert "Token ID:     none captured" in text
    assert "Locked:       not a lockout: No smart-card reader is connected." in text


def test_second_token_with_events_gets_section(tmp_path):
    session = new_session(tmp_path)
    first = make_token(0, reader="Reader A", token_id="cplc:AAAA")
    second = make_token(1, reader="Reader B", token_id="cplc:BBBB")
    session.add_event("puk-reset", "Step 6: PIN reset", token_id="cplc:BBBB", resolved_by="PUK reset")

    ticket = build_ticket(session, make_scan(first, second), first, now=NOW)

    assert [s.token_id for s in ticket.tokens] == ["cplc:AAAA", "cplc:BBBB"]
    assert ticket.tokens[0].resolution == "not resolved in this session"
    assert ticket.tokens[1].resolution == "PUK reset"
    assert ticket.tokens[1].reader == "Reader B"


def test_lab_says_lab_in_first_line(tmp_path):
    session = new_session(tmp_path, lab="pin-locked-puk")
    token = locked_token()

    text = ticket_text(session, make_scan(token), token, now=NOW)

    assert text.splitlines()[0].startswith("LAB TEST - keytriage ticket summary")
    assert "scenario pin-locked-puk" in text


def served_lab_scan():
    """Scan a lab key the way pcscd serves it: through a backend that does not report `is_lab`."""
    from tui.lab.backend import LabBackend
    from tui.scan import scan_all

    backend = LabBackend("pin-locked-puk")
    backend.is_lab = False
    return scan_all(backend, SiteSettings())


def test_served_lab_key_says_lab(tmp_path):
    session = new_session(tmp_path)
    scan = served_lab_scan()
    token = scan.tokens[0]
    assert scan.lab_scenario is None
    assert token.is_lab

    text = ticket_text(session, scan, token, now=NOW)

    assert text.splitlines()[0].startswith("LAB TEST - keytriage ticket summary")
    lab_field = " ".join(line.strip() for line in field_lines(text, "Lab"))
    assert f"{token.token_id}: emulated lab key served through pcscd" in lab_field
    assert "no real token was changed" in lab_field
    assert "scenario" not in lab_field
    assert_pasteable(text)


def test_served_lab_key_beside_hardware(tmp_path):
    session = new_session(tmp_path)
    lab_token = served_lab_scan().tokens[0]
    hardware = make_token(1, reader="Reader B", token_id="cplc:BBBB")
    session.add_event("finding", "PIN blocked", token_id=str(lab_token.token_id), applet="smart card")

    ticket = build_ticket(session, make_scan(hardware, lab_token), hardware, now=NOW)
    text = render_ticket(ticket)

    assert [section.lab for section in ticket.tokens] == [False, True]
    assert ticket.served_lab_keys == [str(lab_token.token_id)]
    assert text.startswith("LAB TEST - ")
    assert "cplc:BBBB: emulated" not in text


def test_in_process_lab_names_scenario_only(tmp_path):
    session = new_session(tmp_path, lab="pin-locked-puk")
    token = locked_token()
    token.is_lab = True

    ticket = build_ticket(session, make_scan(token), token, now=NOW)
    text = render_ticket(ticket)

    assert ticket.served_lab_keys == []
    assert field_lines(text, "Lab") == ["Lab:          scenario pin-locked-puk: simulated key, no real token was",
                                        "              changed"]
    assert "pcscd" not in text


def test_real_run_has_no_lab_marking(tmp_path):
    session = new_session(tmp_path)
    token = make_token()

    text = ticket_text(session, make_scan(token), token, now=NOW)

    assert "LAB" not in text


def test_step0_answers_in_runbook_words(tmp_path):
    session = new_session(tmp_path)
    session.triage.trying = "tap"
    session.triage.saw = "touch-nothing"
    session.triage.tap = "nothing"
    session.triage.free_text = "Since the laptop swap"

    text = ticket_text(session, make_scan(make_token()), make_token(), now=NOW)

    assert "Step 0 (what the user was doing):" in text
    assert "  Trying:" in text
    assert "  User saw:" in text
    assert "  Tap:" in text
    assert "  Note:       Since the laptop swap" in text


def test_step0_skipped_said(tmp_path):
    text = ticket_text(new_session(tmp_path), make_scan(make_token()), make_token(), now=NOW)

    assert "  Trying:     not asked (Step 0 skipped)" in text


def test_unicode_and_escapes_made_ascii(tmp_path):
    session = new_session(tmp_path)
    session.triage.free_text = "User said “it’s locked” — café \x1b[31mred\x1b[0m"
    token = make_token()
    session.add_event("verify", "Step 4 → 63C2 … two tries left " + "x" * 100, token_id=token.token_id)

    text = ticket_text(session, make_scan(token), token, now=NOW)

    assert_pasteable(text)
    assert "User said \"it's locked\" - cafe red" in text
    assert "Step 4 -> 63C2 ... two tries left" in text


def test_canary_secrets_absent(tmp_path):
    from tui.secret import Secret

    canaries = {"PIN": "CANARY-PIN-918273", "PUK": "CANARY-PUK-55501234"}
    session = new_session(tmp_path)
    session.triage.ticket = "INC1"
    token = locked_token()
    # Secrets reach only repr/str paths here, which mask them.
    pin = Secret(canaries["PIN"], "PIV PIN")
    puk = Secret(canaries["PUK"], "PIV PUK")
    session.add_event("puk-reset", f"Step 6: PIN {pin} reset with PUK {puk!r}", token_id=token.token_id,
                      resolved_by="PUK reset", escrow_refs=[PIN_REF])
    session.escrow = SimpleNamespace(values=[pin, puk])

    text = ticket_text(session, make_scan(token), token, now=NOW)

    for value in canaries.values():
        assert value not in text
    assert "PIN **** reset" in text


# --- the ticket file -------------------------------------------------------------------------

def test_ticket_file_written_0600(tmp_path):
    target = tmp_path / "ticket.txt"

    write_ticket_file(target, "summary\n")

    assert target.read_text() == "summary\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_ticket_file_existing_made_0600(tmp_path):
    target = tmp_path / "ticket.txt"
    target.write_text("old")
    os.chmod(target, 0o644)

    write_ticket_file(target, "new\n")

    assert target.read_text() == "new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_ticket_file_unwritable_names_path(tmp_path):
    target = tmp_path / "missing-dir" / "ticket.txt"

    with pytest.raises(TicketFileError) as error:
        write_ticket_file(target, "x\n")

    assert str(target) in str(error.value)
    assert "No such file or directory" in str(error.value)
    assert "printed to standard output" in str(error.value)


def test_render_ends_with_newline(tmp_path):
    ticket = build_ticket(new_session(tmp_path), make_scan(make_token()), make_token(), now=NOW)

    assert render_ticket(ticket).endswith("\n")
