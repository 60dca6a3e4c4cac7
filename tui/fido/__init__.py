"""Read-only FIDO2 state (runbook Steps 7 and 8): discovery, state, CTAP error decoding, JSON.

Entry points: `tui.fido.discovery.find_fido_devices`, `tui.fido.state.read_fido_state`
and `read_discovered_state`, `tui.fido.errors.decode_ctap_error`, `tui.fido.export.to_json`.
The modules import python-fido2 only inside their functions, so importing this
package stays cheap for the CLI.
"""
