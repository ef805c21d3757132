"""Rhythm: causal beat and tempo tracking on onset strength, and per-onset drum bands.

>>> from server.rhythm import BeatTracker, TrackerSettings, Beat, Tempo
"""

from __future__ import annotations

from server.rhythm.beat import Beat, Tempo
from server.rhythm.settings import TrackerSettings
from server.rhythm.tracker import BeatTracker

__all__ = ["Beat", "BeatTracker", "Tempo", "TrackerSettings"]
