"""`scan --json` form of a `FidoState`: `tokens[].fido`.

The form carries no relying-party IDs or user names, because the read-only
check never reads them.
"""

from __future__ import annotations

from typing import Any

from tui.fido.state import AAGUID_NOTE, FidoState


def to_json(state: FidoState) -> dict[str, Any]:
    """Return the JSON-ready dict for `tokens[].fido`.

    `pin.state` is one of not_supported, not_accessible, not_set, healthy,
    temporarily_blocked, permanently_blocked, unknown; `pin.retries` is null
    when unknown. `client_pin` is "true", "false" or "missing" (the getInfo
    option is absent), and null when getInfo could not be read.
    """
    pin = state.pin
    client_pin = "missing" if state.client_pin_option is None else str(state.client_pin_option).lower()
    not_accessible = None
    if state.not_accessible is not None:
        not_accessible = {
            "path": state.not_accessible.path,
            "transport": state.not_accessible.transport,
            "message": state.not_accessible.message,
            "fix": state.not_accessible.fix,
        }
    error = None
    if state.error is not None:
        error = {
            "kind": state.error.kind.value,
            "code": state.error.code,
            "name": state.error.name,
            "message": state.error.message,
        }
    elif state.error_text:
        error = {"kind": "read_failed", "code": None, "name": None, "message": state.error_text}

    return {
        "found": state.found,
        "transport": state.transport,
        "device": state.device,
        "pin": {
            "state": pin.state.value,
            "label": pin.state.label,
            "retries": pin.retries,
            "power_cycle_required": pin.power_cycle_required,
            "reason": pin.reason.value if pin.reason else None,
            "explanation": pin.explanation,
        },
        "client_pin": client_pin if state.versions else None,  # null when getInfo was not read
        "min_pin_length": state.min_pin_length,
        "force_pin_change": state.force_pin_change,
        "remaining_discoverable_credentials": state.remaining_discoverable_credentials,
        "versions": list(state.versions),
        "aaguid": state.aaguid,
        "aaguid_note": AAGUID_NOTE if state.aaguid else None,
        "firmware_version": state.firmware_version,
        "pin_uv_protocols": list(state.pin_uv_protocols),
        "credential_management": state.credential_management,
        "not_accessible": not_accessible,
        "error": error,
        "notes": list(state.notes),
    }
