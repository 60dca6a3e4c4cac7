"""Choose the reader backend: real PC/SC readers, or the lab key when a scenario is named."""

from __future__ import annotations

from tui.transport import ReaderBackend


def open_backend(lab_scenario: str | None) -> ReaderBackend:
    """Return the lab key backend for `lab_scenario`, or the PC/SC backend when it is None.

    The lab is never a fallback for a failing PC/SC stack: a missing pcscd
    shows up as a scan problem, not as a lab key. Both imports stay inside
    the function so `keytriage` starts without loading the lab or pyscard.
    Raises `LabError` for an unknown scenario.
    """
    if lab_scenario is None:
        from tui.pcsc import PcscBackend

        return PcscBackend()

    from tui.lab.backend import LabBackend

    return LabBackend(lab_scenario)
