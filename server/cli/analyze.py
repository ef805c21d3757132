"""``python run.py analyze FILE...``: whole-file onset analysis on this machine, no server needed.

Each file goes through the server's own file-analysis steps (:func:`server.jobs.work.analyse_step`, the
same decoding and detector, in the same bounded steps) and its result is built by the same function
(:func:`server.jobs.result.result_json`), so the output equals what ``POST /api/v3/analysis`` returns for
the same file and settings. A progress bar goes to stderr; the onsets (and beats) go to stdout or
``--output``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from server.cli.settings_flags import add_settings_options, settings_from_args
from server.cli.time_format import add_time_format_option, time_column, time_csv, time_text
from server.dsp import DetectorSettings
from server.exceptions import SettingsError, TransientError
from server.jobs.result import Found, result_json
from server.jobs.service import parse_settings
from server.jobs.work import FileAnalysis, analyse_step

FORMATS = ("text", "json", "csv")
BAR_WIDTH = 30
BAR_INTERVAL_S = 0.1  # least time between redraws of the progress bar


class FileFailed(TransientError):
    """A file could not be analysed; ``code`` is the failed task's error code on the server."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ProgressBar:
    """``label [#####.....]  45%`` redrawn in place on a terminal stream (at most every 0.1 s)."""

    def __init__(self, stream: TextIO, label: str, enabled: bool = True) -> None:
        self.stream = stream
        self.label = label
        self.enabled = enabled
        self._drawn_at_s = 0.0
        self._last = -1

    def update(self, fraction: float, force: bool = False) -> None:
        if not self.enabled:
            return
        percent = max(0, min(100, int(fraction * 100)))
        now_s = time.monotonic()
        if percent == self._last or (not force and now_s - self._drawn_at_s < BAR_INTERVAL_S):
            return
        self._drawn_at_s, self._last = now_s, percent
        filled = BAR_WIDTH * percent // 100
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {percent:3d}%")
        self.stream.flush()

    def finish(self, note: str = "") -> None:
        if not self.enabled:
            return
        if note:
            self.stream.write(f"\r{self.label}: {note}")
        else:
            self.update(1.0, force=True)
        self.stream.write("\n")
        self.stream.flush()


def analyse_file(path: Path, settings: DetectorSettings,
                 on_progress: Callable[[float], None] | None = None) -> dict[str, Any]:
    """The result object the server would give for ``path``; raises :class:`FileFailed`."""
    if not path.is_file():
        raise FileFailed("not_found", f"{path} is not a readable file")
    with tempfile.TemporaryDirectory(prefix="transient-analyze-") as work_dir:
        state = FileAnalysis(str(path), str(Path(work_dir) / "packets.spool"), settings)
        found = Found()
        while not state.finished:
            outcome = analyse_step(state)
            if outcome.error is not None:
                raise FileFailed(outcome.error.code, outcome.error.message)
            state = outcome.state
            found.add(outcome)
            if on_progress is not None:
                on_progress(state.progress)
        result: dict[str, Any] = json.loads(result_json(state, found))
        return result


Outcome = tuple[Path, dict[str, Any] | FileFailed]


def render(outcomes: list[Outcome], fmt: str, time_format: str = "s") -> str:
    """The output text for the files analysed (failed ones are left out; they are reported on stderr)."""
    done = [(path, result) for path, result in outcomes if isinstance(result, dict)]
    several = len(outcomes) > 1
    if fmt == "json":
        if not several:
            return json.dumps(done[0][1]) + "\n" if done else ""
        files: list[dict[str, Any]] = []
        for path, result in outcomes:
            entry = {"file": str(path)}
            if isinstance(result, FileFailed):
                files.append({**entry, "error": {"code": result.code, "message": result.message}})
            else:
                files.append({**entry, "result": result})
        return json.dumps({"files": files}) + "\n"
    out = io.StringIO()
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(csv_header(time_format))
        for path, result in done:
            writer.writerows(csv_rows(str(path), result, time_format))
        return out.getvalue()
    for path, result in done:
        for onset in result["onsets"]:
            prefix = f"{path}\t" if several else ""
            time = time_text(onset["time"], time_format, result["sample_rate"])
            band = f"\t{onset['band']}" if "band" in onset else ""
            out.write(f"{prefix}{time}\t{onset['strength']:.6f}{band}\n")
    return out.getvalue()


def csv_header(time_format: str = "s") -> list[str]:
    """The CSV columns; the first four are the onsets' (``time_s`` named for ``time_format``)."""
    return ["file", time_column(time_format), "strength", "band", "kind", "bar_position", "bpm"]


def csv_rows(file: str, result: dict[str, Any], time_format: str = "s") -> list[list[str]]:
    """One file's CSV rows, in time order (an onset before a beat at the same time): onset rows ``kind``
    ``onset`` with strength and band (empty without ``beats``); beat rows ``kind`` ``beat`` with
    ``bar_position`` when known and ``bpm`` = the file's ``tempo_bpm`` (empty when null). Floats are written
    exactly (the shortest text that reads back as the same float), like the upload page's download
    (server/static/js/exporters.js, which must stay the same)."""
    rate = result["sample_rate"]
    tempo = result.get("tempo_bpm")
    bpm = "" if tempo is None else repr(tempo)
    keyed: list[tuple[float, int, list[str]]] = []
    for onset in result["onsets"]:
        keyed.append((onset["time"], 0, [file, time_csv(onset["time"], time_format, rate),
                                         repr(onset["strength"]), onset.get("band", ""), "onset", "", ""]))
    for beat in result.get("beats", []):
        bar = beat.get("bar_position")
        keyed.append((beat["time"], 1, [file, time_csv(beat["time"], time_format, rate), "", "", "beat",
                                        "" if bar is None else str(bar), bpm]))
    keyed.sort(key=lambda row: (row[0], row[1]))
    return [row for _, _, row in keyed]


def unwritable(path: Path) -> str | None:
    """Why ``path`` cannot be written, or ``None`` if it can: checked before any analysis, by opening it
    for appending (nothing of an existing file is lost; a file created by the check is removed again)."""
    if path.is_dir():
        return "it is a directory"
    existed = path.exists()
    try:
        with path.open("a"):
            pass
    except OSError as exc:
        return str(exc.strerror or exc)
    if not existed:
        path.unlink(missing_ok=True)
    return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="audio files (WAV, FLAC, OGG, "
                        "MP3, WebM/Opus, M4A/AAC, ...)")
    add_settings_options(parser)
    parser.add_argument("-o", "--output", type=Path, default=None, metavar="PATH",
                        help="write the output here instead of stdout")
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="text: 'time<TAB>strength<TAB>band' lines (the file first when there are "
                        "several; no band with --no-beats); json: the server's result object, with beats and "
                        "tempo_bpm (several files: {\"files\": [...]}); csv: file,time_s,strength,band,kind,"
                        "bar_position,bpm, one row per onset (kind onset) and per beat (kind beat: empty "
                        "strength and band, bar_position when known, bpm the file's tempo_bpm), in time "
                        "order; no beat rows with --no-beats (time_ms, time_samples with --time-format). "
                        "Default: from the --output suffix (.json, .csv), else text")
    add_time_format_option(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(parser=parser)


def main(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.parser
    try:
        settings = parse_settings(settings_from_args(parser, args))
    except SettingsError as exc:
        parser.error(f"settings: {exc}")
    fmt = args.format
    if fmt is None:
        suffix = args.output.suffix.lower().lstrip(".") if args.output is not None else ""
        fmt = suffix if suffix in ("json", "csv") else "text"
    if args.output is not None:
        problem = unwritable(args.output)
        if problem:
            print(f"{parser.prog}: cannot write {args.output}: {problem}", file=sys.stderr)
            return 1
    outcomes: list[Outcome] = []
    for path in args.files:
        bar = ProgressBar(sys.stderr, str(path), enabled=not args.quiet)
        bar.update(0.0, force=True)
        try:
            outcomes.append((path, analyse_file(path, settings, bar.update)))
            bar.finish()
        except FileFailed as exc:
            outcomes.append((path, exc))
            bar.finish(f"failed ({exc.code})")
            print(f"{path}: {exc.code}: {exc.message}", file=sys.stderr)
    text = render(outcomes, fmt, args.time_format)
    if args.output is not None:
        try:
            args.output.write_text(text)
        except OSError as exc:
            print(f"{parser.prog}: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    return 1 if any(isinstance(result, FileFailed) for _, result in outcomes) else 0
