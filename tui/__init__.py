"""keytriage: find which applet of a security key is locked, and fix it in the safest order."""

__all__ = ["__version__"]

__version__ = "0.1.0"
