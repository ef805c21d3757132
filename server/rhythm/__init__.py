"""Rhythm: causal beat and tempo tracking on onset strength, and per-onset drum bands.

>>> from server.rhythm import BeatTracker, RhythmSession, analyze_rhythm, Beat, Tempo
"""

from __future__ import annotations

from server.rhythm.beat import Beat, Tempo
from server.rhythm.session import (
    BandedOnset,
    RhythmResult,
    RhythmSession,
    analyze_rhythm,
    process_sessions,
)
from server.rhythm.settings import TrackerSettings
from server.rhythm.tracker import BeatTracker

__all__ = [
    "BandedOnset",
    "Beat",
    "BeatTracker",
    "RhythmResult",
    "RhythmSession",
    "Tempo",
    "TrackerSettings",
    "analyze_rhythm",
    "process_sessions",
]
