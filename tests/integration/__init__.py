"""Integration tests through the real pcscd and vpcd; see conftest.py for the shared daemon."""
