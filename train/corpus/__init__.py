"""A rendered onset corpus: MIDI composed from a seed, rendered by FluidSynth, processed, labelled exactly.

Everything is rebuilt from Debian packages and PyPI alone (``fluidsynth``, three General MIDI soundfonts,
``mido``, ``av``)::

    python -m train.render_corpus --out /work/corpus --hours 3 --workers 2

Layout of the output directory::

    MANIFEST.tsv                     one row per finished clip (see ``manifest.COLUMNS``)
    {train,tune,valid}/<clip_id>.flac  16-bit FLAC at the clip's own rate, mono or stereo
    {train,tune,valid}/<clip_id>.onsets  onset times in seconds, one per line, merged within 30 ms
    .calib/ .rows/ .tmp/             renderer bookkeeping (onset offsets measured per soundfont and program,
                                     one manifest row per clip, files being written)

Splits come from a fixed hash of the clip id (``spec.split_of``): about 80 % ``train``, 10 % ``tune`` and
10 % ``valid``. The ``valid`` split is never trained on and never tuned on: it is the held-out synthetic
validation set, beside the real clips in ``../shared/data`` (which are never trained on either).
"""
