"""A function for pool workers to run that imports nothing itself (so it cannot load what it asks about)."""

from __future__ import annotations

import sys


def loaded(names: list[str]) -> list[str]:
    """Those of ``names`` that the calling process has already imported."""
    return [name for name in names if name in sys.modules]
