"""The General MIDI palette of each instrument family, with playable pitch ranges."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Instrument:
    """One GM melodic program.

    Attributes
    ----------
    program : int
        GM program number, 0-based.
    low, high : int
        Playable MIDI pitch range, inclusive.
    sustained : bool
        True for bowed, blown, voice and pad sounds (legato, swells and vibrato suit them).
    """

    program: int
    low: int
    high: int
    sustained: bool = False


DRUM_CHANNEL = 9
# GS kit numbers on bank 128: standard, room, power, electronic, TR-808, jazz, brush
DRUM_KITS = (0, 8, 16, 24, 25, 32, 40)

# GM percussion keys by role.
KICK = (35, 36)
SNARE = (38, 40, 37)  # 37 side stick
CLOSED_HAT = (42, 44)  # 44 pedal hat
OPEN_HAT = (46,)
TOMS = (41, 43, 45, 47, 48, 50)
CRASH = (49, 57)
RIDE = (51, 59, 53)  # 53 ride bell
EXTRA_PERC = (39, 54, 56, 75, 76, 77)  # clap, tambourine, cowbell, claves, woodblocks
DRUM_KEYS = tuple(sorted(set(KICK + SNARE + CLOSED_HAT + OPEN_HAT + TOMS + CRASH + RIDE + EXTRA_PERC)))

PLUCKED = (
    Instrument(24, 40, 84),  # nylon guitar
    Instrument(25, 40, 84),  # steel guitar
    Instrument(26, 40, 84),  # jazz guitar
    Instrument(27, 40, 84),  # clean electric guitar
    Instrument(28, 40, 80),  # muted electric guitar
    Instrument(29, 40, 84),  # overdriven guitar
    Instrument(30, 40, 84),  # distortion guitar
    Instrument(32, 28, 55),  # acoustic bass
    Instrument(33, 28, 60),  # finger bass
    Instrument(34, 28, 60),  # pick bass
    Instrument(35, 28, 60),  # fretless bass
    Instrument(36, 28, 60),  # slap bass
    Instrument(45, 40, 88),  # pizzicato strings
    Instrument(46, 36, 96),  # harp
    Instrument(105, 48, 84),  # banjo
    Instrument(107, 48, 84),  # koto
)
BOWED_BLOWN = (
    Instrument(40, 55, 96, True),  # violin
    Instrument(41, 48, 84, True),  # viola
    Instrument(42, 36, 72, True),  # cello
    Instrument(43, 28, 60, True),  # contrabass
    Instrument(48, 36, 96, True),  # string ensemble
    Instrument(56, 55, 82, True),  # trumpet
    Instrument(57, 40, 72, True),  # trombone
    Instrument(58, 28, 58, True),  # tuba
    Instrument(60, 41, 77, True),  # french horn
    Instrument(61, 40, 82, True),  # brass section
    Instrument(64, 56, 87, True),  # soprano sax
    Instrument(65, 49, 80, True),  # alto sax
    Instrument(66, 44, 75, True),  # tenor sax
    Instrument(68, 58, 91, True),  # oboe
    Instrument(70, 34, 72, True),  # bassoon
    Instrument(71, 50, 91, True),  # clarinet
    Instrument(73, 60, 96, True),  # flute
    Instrument(74, 60, 96, True),  # recorder
)
PIANO = (
    Instrument(0, 21, 108),  # acoustic grand
    Instrument(1, 21, 108),  # bright piano
    Instrument(2, 28, 100),  # electric grand
    Instrument(4, 28, 100),  # rhodes
    Instrument(5, 28, 100),  # FM electric piano
    Instrument(6, 36, 96),  # harpsichord
    Instrument(7, 36, 96),  # clavinet
    Instrument(8, 60, 108),  # celesta
    Instrument(9, 72, 108),  # glockenspiel
    Instrument(11, 53, 89),  # vibraphone
    Instrument(12, 45, 96),  # marimba
    Instrument(13, 65, 108),  # xylophone
    Instrument(16, 36, 96, True),  # drawbar organ
    Instrument(19, 36, 96, True),  # church organ
)
VOICE = (
    Instrument(52, 48, 79, True),  # choir aahs
    Instrument(53, 48, 79, True),  # voice oohs
    Instrument(54, 48, 84, True),  # synth voice
    Instrument(85, 48, 84, True),  # lead 6 (voice)
    Instrument(91, 48, 84, True),  # pad 4 (choir)
)
PADS = (
    Instrument(49, 36, 96, True),  # slow strings
    Instrument(50, 36, 96, True),  # synth strings 1
    Instrument(51, 36, 96, True),  # synth strings 2
    Instrument(88, 36, 96, True),  # new age pad
    Instrument(89, 36, 96, True),  # warm pad
    Instrument(90, 36, 96, True),  # polysynth pad
    Instrument(92, 36, 96, True),  # bowed pad
    Instrument(94, 36, 96, True),  # halo pad
    Instrument(95, 36, 96, True),  # sweep pad
)
