"""Transient: a real-time audio onset analysis server."""

__version__ = "0.1.0"
