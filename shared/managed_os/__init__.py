"""Managed OS common library: the suite's vocabulary and infrastructure."""

__version__ = "0.1.0"
