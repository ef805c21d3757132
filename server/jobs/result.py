"""A finished job's result object as JSON text (docs/protocol.md, "Whole-file analysis"), built in pieces.

The server's runner gets each turn's onsets and beats already encoded, by the pool worker that found them
(:func:`encode_onsets`, :func:`encode_beats`, called by :func:`server.jobs.work.analyse_turn`), and only
joins the pieces at the end (:func:`result_text`): a long file's result costs the event loop a string join,
not the JSON encoding of every onset (about 2 µs each). :func:`result_json` builds the same text from
everything found at once (``run.py analyze``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from server.jobs.work import FileAnalysis, OnsetTuple, StepOutcome

BeatTuple = tuple[float, int | None]  # (beat time s, bar position or None while the meter is not known)
SEPARATORS = (",", ":")


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=SEPARATORS, allow_nan=False)


def encode_onsets(onsets: Sequence[OnsetTuple], bands: Sequence[str] | None) -> str:
    """The onset objects as JSON array items (no brackets; ``""`` for none), each with its band when
    ``bands`` is given (one per onset)."""
    if bands is None:
        items: list[dict[str, Any]] = [{"time": time_s, "strength": strength} for time_s, strength in onsets]
    else:
        items = [{"time": time_s, "strength": strength, "band": band}
                 for (time_s, strength), band in zip(onsets, bands, strict=True)]
    return _dumps(items)[1:-1]


BEAT_TIME_DECIMALS = 6  # a live beat event's time is rounded to 1 µs (server.protocol.stream_messages.beat)


def beat_time(time_s: float) -> float:
    """A beat's ``time`` as results show it: rounded to 1 µs, exactly as a live stream's ``beat`` event
    carries it (:func:`server.protocol.stream_messages.beat`), so a file's beats equal the stream's."""
    return round(time_s, BEAT_TIME_DECIMALS)


def encode_beats(beats: Sequence[BeatTuple]) -> str:
    """The beat objects as JSON array items (no brackets; ``""`` for none)."""
    return _dumps([{"time": beat_time(time_s)} if bar is None
                   else {"time": beat_time(time_s), "bar_position": bar} for time_s, bar in beats])[1:-1]


def tempo_bpm(beat_times_s: list[float]) -> float | None:
    """60 over the median interval between consecutive beats (their times as the result shows them), beats
    per minute; None with < 2 beats."""
    if len(beat_times_s) < 2:
        return None
    return float(60.0 / np.median(np.diff([beat_time(time_s) for time_s in beat_times_s])))


@dataclass(slots=True)
class Found:
    """What a job's steps found so far: onsets, and with ``beats`` the beat times and onset bands."""

    onsets: list[OnsetTuple] = field(default_factory=list)
    beats: list[BeatTuple] = field(default_factory=list)
    bands: list[str] = field(default_factory=list)

    def add(self, outcome: StepOutcome) -> None:
        self.onsets += outcome.onsets
        self.beats += outcome.beats
        self.bands += outcome.bands


@dataclass(slots=True)
class ResultPieces:
    """A job's encoded onsets and beats, turn after turn, and its beat times (for the tempo)."""

    onsets: list[str] = field(default_factory=list)  # non-empty runs of JSON array items, in order
    beats: list[str] = field(default_factory=list)
    beat_times_s: list[float] = field(default_factory=list)

    def add(self, onsets_json: str, beats_json: str, beat_times_s: list[float]) -> None:
        if onsets_json:
            self.onsets.append(onsets_json)
        if beats_json:
            self.beats.append(beats_json)
        self.beat_times_s += beat_times_s


def result_text(state: FileAnalysis, pieces: ResultPieces) -> str:
    """The finished job's result object as JSON text, from its encoded pieces."""
    source = state.source
    assert source is not None
    head = _dumps({"duration": state.frames_done / source.sample_rate, "sample_rate": source.sample_rate,
                   "channels": source.channels})
    text = [head[:-1], ',"onsets":[', ",".join(pieces.onsets), '],"settings":',
            _dumps(state.settings.to_dict()), ',"clipped_samples":', _dumps(state.clipped_samples)]
    if state.rhythm is not None or state.split_beats:
        text += [',"beats":[', ",".join(pieces.beats), '],"tempo_bpm":',
                 _dumps(tempo_bpm(pieces.beat_times_s))]
    text.append("}")
    return "".join(text)


def result_json(state: FileAnalysis, found: Found) -> str:
    """The finished job's result object as JSON text, from everything its steps found."""
    pieces = ResultPieces()
    banded = state.rhythm is not None
    pieces.add(encode_onsets(found.onsets, found.bands if banded else None),
               encode_beats(found.beats) if banded else "", [time_s for time_s, _ in found.beats])
    return result_text(state, pieces)
