"""The composed music of one clip, in whole milliseconds, before rendering."""

from __future__ import annotations

import dataclasses

NOTE_GRID_MS = 4  # note-ons fall on a 4 ms grid: at 48 kHz that is 3 of FluidSynth's 64-sample blocks


@dataclasses.dataclass(frozen=True)
class Note:
    """One note.

    Attributes
    ----------
    onset_ms : int
        Note-on time, milliseconds from the clip start, a multiple of ``NOTE_GRID_MS``.
    duration_ms : int
    pitch : int
        MIDI key (on the drum channel: the GM percussion key).
    velocity : int
        1..127.
    channel : int
        MIDI channel, 0..15 (9 is the drum kit).
    """

    onset_ms: int
    duration_ms: int
    pitch: int
    velocity: int
    channel: int


@dataclasses.dataclass(frozen=True)
class Control:
    """A channel message other than notes: ``kind`` is ``cc`` (``number``, ``value``) or ``bend`` (``value``
    in -8192..8191)."""

    time_ms: int
    channel: int
    kind: str
    number: int
    value: int


@dataclasses.dataclass(frozen=True)
class Part:
    """One instrument: a channel and its program (on channel 9 the program selects the drum kit)."""

    channel: int
    program: int
    role: str  # e.g. "kit", "line", "chords", "poly", "arp", "pad"


@dataclasses.dataclass
class Score:
    """Everything one clip plays."""

    duration_ms: int
    tempo_bpm: float
    parts: list[Part] = dataclasses.field(default_factory=list)
    notes: list[Note] = dataclasses.field(default_factory=list)
    controls: list[Control] = dataclasses.field(default_factory=list)
    style: list[str] = dataclasses.field(default_factory=list)  # short tags for the manifest

    def add_note(self, onset_ms: float, duration_ms: float, pitch: int, velocity: int, channel: int) -> None:
        """Add a note, snapping its onset to the grid; notes past the clip end are dropped."""
        onset = round(onset_ms / NOTE_GRID_MS) * NOTE_GRID_MS
        if onset < 0 or onset >= self.duration_ms - 200:
            return
        duration = max(30, round(duration_ms))
        self.notes.append(Note(onset, duration, int(pitch), int(min(127, max(1, velocity))), channel))
