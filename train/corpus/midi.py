"""Writing a ``Score`` as a standard MIDI file in which one tick is exactly one millisecond."""

from __future__ import annotations

from pathlib import Path

from train.corpus.score import Score

TICKS_PER_BEAT = 1000
TEMPO_US_PER_BEAT = 1_000_000  # with 1000 ticks per beat: 1 tick = 1 ms


def write_midi(score: Score, path: Path, end_ms: int | None = None) -> None:
    """Write ``score`` to ``path``: program changes at 0, then notes and controls in time order.

    A note-off sorts before a note-on at the same tick; a note overlapping the next note of the same key on
    its channel is cut 1 ms before it. The file ends at ``end_ms`` (default: the score's duration).
    """
    import mido

    events: list[tuple[int, int, mido.Message]] = []  # (tick, order, message)
    for part in score.parts:
        events.append((0, 0, mido.Message("program_change", channel=part.channel, program=part.program)))
    by_key: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
    for n in score.notes:
        by_key.setdefault((n.channel, n.pitch), []).append((n.onset_ms, n.duration_ms, n.velocity))
    for (ch, pitch), notes in by_key.items():
        notes.sort()
        for i, (on, dur, vel) in enumerate(notes):
            off = on + dur
            if i + 1 < len(notes):
                off = min(off, notes[i + 1][0] - 1)
            off = max(off, on + 1)
            events.append((on, 3, mido.Message("note_on", channel=ch, note=pitch, velocity=vel)))
            events.append((off, 1, mido.Message("note_off", channel=ch, note=pitch, velocity=0)))
    for c in score.controls:
        if c.kind == "bend":
            msg = mido.Message("pitchwheel", channel=c.channel, pitch=max(-8192, min(8191, c.value)))
        else:
            msg = mido.Message("control_change", channel=c.channel, control=c.number, value=c.value)
        events.append((c.time_ms, 2, msg))
    events.sort(key=lambda e: (e[0], e[1]))
    mid = mido.MidiFile(ticks_per_beat=TICKS_PER_BEAT)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=TEMPO_US_PER_BEAT))
    last = 0
    for tick, _, msg in events:
        track.append(msg.copy(time=tick - last))
        last = tick
    end = score.duration_ms if end_ms is None else end_ms
    track.append(mido.MetaMessage("end_of_track", time=max(0, end - last)))
    mid.save(str(path))
