"""The scan result as JSON-ready data and as plain text, for `keytriage scan`.

Numbers that were not read are null, never 0, and each counter names the
command that produced it (`source`). `tokens[].fido` is the form of
`tui.fido.export.to_json`, `tokens[].otp` lists every OTP slot field (null
when unknown) and `tokens[].certificates` each PIV slot certificate read.
"""

from __future__ import annotations

import textwrap
from typing import Any

from tui.model import AdminKey, Counter, PinPolicy, ScanResult, TokenScan
from tui.scan import next_step_for


def counter_to_dict(counter: Counter) -> dict[str, Any]:
    """Convert a PIN or PUK counter to JSON data."""
    return {
        "tries_remaining": counter.remaining,
        "tries_total": counter.total,
        "state": counter.state.value,
        "source": counter.source.value,
        "is_default": counter.is_default,
        "detail": counter.detail,
    }


def admin_key_to_dict(admin_key: AdminKey) -> dict[str, Any]:
    """Convert the admin key state to JSON data; `present` is None when unknown."""
    return {"present": admin_key.present, "type": admin_key.key_type, "source": admin_key.source.value}


def pin_policy_to_dict(policy: PinPolicy | None) -> dict[str, Any] | None:
    """Convert the key's PIN policy to JSON data, or None when the key has none to read."""
    if policy is None:
        return None
    return {"min_length": policy.min_length, "max_length": policy.max_length,
            "numeric_only": policy.numeric_only, "source": policy.source.value}


def token_to_dict(token: TokenScan) -> dict[str, Any]:
    """Convert one token to JSON data."""
    sc = token.smartcard
    return {
        "index": token.index,
        "reader": token.reader,
        "profile": token.profile.value,
        "id": str(token.token_id) if token.token_id else None,
        "cuid": token.cuid,
        "cuid_source": token.cuid_source,
        "id_candidates": [{"source": c.source, "value": c.value, "description": c.description} for c in token.id_candidates],
        "atr": token.atr,
        "is_lab": token.is_lab,
        "problem": _problem(token.problem),
        "error": token.error,
        "smartcard": {
            "pin": counter_to_dict(sc.pin),
            "puk": counter_to_dict(sc.puk),
            "admin_key": admin_key_to_dict(sc.admin_key),
            "pin_policy": pin_policy_to_dict(sc.pin_policy),
            "aca_present": sc.aca_present,
            "aca_version": sc.aca_version,
            "piv_present": sc.piv_present,
            "serial": sc.serial,
            "firmware": sc.firmware,
            "notes": list(sc.notes),
        },
        "fido": fido_to_dict(token.fido),
        "otp": otp_to_dict(token.otp),
        "certificates": [certificate.to_dict() for certificate in token.certificates],
        "next_step": next_step_for(token),
    }


def fido_to_dict(state: Any) -> dict[str, Any] | None:
    """Convert the FIDO state to JSON data, or None when it was not read (the smart-card read failed)."""
    if state is None:
        return None
    from tui.fido.export import to_json

    return to_json(state)


def otp_to_dict(slots: Any) -> dict[str, Any] | None:
    """Convert the OTP listing to JSON data, or None when it was not read."""
    if slots is None:
        return None
    return slots.to_dict()


def _problem(problem) -> dict[str, Any] | None:
    if problem is None:
        return None
    return {"name": problem.name.lower(), "code": f"0x{problem.code:08X}", "check": problem.check, "message": problem.message}


def result_to_dict(result: ScanResult) -> dict[str, Any]:
    """Convert the whole scan to JSON data; the top-level `next_step` is set only when no token was found."""
    return {
        "lab": result.lab_scenario,
        "readers": list(result.readers),
        "problem": _problem(result.problem),
        "problem_detail": result.problem_detail or None,
        "apdu_count": result.apdu_count,
        "tokens": [token_to_dict(token) for token in result.tokens],
        "next_step": None if result.tokens else next_step_for(None, result.problem),
    }


TEXT_WIDTH = 80
FIELD_INDENT = "  "
LABEL_WIDTH = 12  # "Admin key:" plus two spaces, so the values line up


def result_to_text(result: ScanResult) -> str:
    """Format the scan as one block per token, one field per line, at most 80 columns.

    Each value gets the line after its label rather than a table column, so a
    short value such as "8/? ok" never wraps. A value longer than the line
    wraps at spaces under its label. With more than one token attached, a
    warning line comes first.
    """
    lines = []
    if result.lab_scenario:
        lines.append(f"Lab key, scenario {result.lab_scenario}")
    if not result.tokens:
        if result.readers:
            lines.append(f"Readers: {', '.join(result.readers)}")
        lines.extend(textwrap.wrap(f"No token. {next_step_for(None, result.problem)}", TEXT_WIDTH,
                                   break_on_hyphens=False))
        return "\n".join(lines) + "\n"
    if len(result.tokens) > 1:
        lines.append(f"{len(result.tokens)} tokens attached: confirm which one is the user's")

    for token in result.tokens:
        lines.append("")
        lines.extend(token_block(token))
    return "\n".join(lines) + "\n"


def token_block(token: TokenScan) -> list[str]:
    """Word one token: a heading, then one labelled field per line, the next step last."""
    sc = token.smartcard
    readable = token.problem is None
    fields = [
        ("Reader", token.reader),
        ("Profile", token.profile.label),
        ("Token ID", str(token.token_id) if token.token_id else "none"),
        ("PIN", sc.pin.text() if readable else "not read"),
        ("PUK", sc.puk.text() if readable else "not read"),
        ("Admin key", sc.admin_key.text() if readable else "not read"),
    ]
    if token.problem is not None:
        fields.append(("Problem", token.error or token.problem.message))
    for line in applet_lines(token):
        label, separator, value = line.partition(": ")
        fields.append((label[:1].upper() + label[1:], value) if separator else ("Note", line))
    fields.append(("Next", next_step_for(token)))

    lines = [f"Token {token.index}"]
    for label, value in fields:
        lines.extend(_field_lines(label, value))
    return lines


def _field_lines(label: str, value: str) -> list[str]:
    head = f"{FIELD_INDENT}{label + ':':<{LABEL_WIDTH}}"
    if len(label) + 1 >= LABEL_WIDTH:
        head += " "  # a label as wide as the column ("Certificate 9A:") still gets a space
    return textwrap.wrap(value, TEXT_WIDTH, initial_indent=head, subsequent_indent=" " * len(head),
                         break_on_hyphens=False) or [head.rstrip()]


def applet_lines(token: TokenScan) -> list[str]:
    """Word the FIDO PIN, each present OTP slot and each certificate of `token`, one line each."""
    lines = []
    if token.fido is not None:
        lines.append(f"FIDO PIN: {token.fido.pin.text()}")
    if token.otp is not None:
        present = token.otp.present()
        lines.extend(slot.summary() for slot in present)
        if not present:
            lines.append("OTP: no OTP slot")
    for certificate in token.certificates:
        if certificate.present is not False:
            lines.append(f"certificate {certificate.slot}: {certificate.text()}")
    return lines
