"""The lab key: an emulated security key that returns the same responses to APDUs as real ones.

Used by the tests, for training and for demos (`keytriage --lab SCENARIO`).

- `tui.lab.card`: the card core (`VirtualCard`, `Applet`, `CredentialStore`).
- `tui.lab.piv`, `tui.lab.aca`, `tui.lab.gp`: the PIV applet, HID's ACA and
  the GlobalPlatform card manager with the reserved lab IDs.
- `tui.lab.scenarios`: named key setups (`get_scenario`).
- `tui.lab.backend`: `LabBackend`, the in-process `ReaderBackend`.

Importing this package loads nothing else; import the submodule you need.
"""
