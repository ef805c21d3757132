"""An RF64 file whose ``ds64`` chunk declares more audio than the file holds fails ``truncated``, as the
same claim in a plain WAV header does; an honest RF64 file is analysed. The claimed size is fuzzed."""

from __future__ import annotations

import struct
from pathlib import Path

import aiohttp
import soundfile as sf
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.dsp import DetectorSettings
from server.jobs.work import FileAnalysis, analyse_step
from tests.analysis_files import drum_signal, matches, post_file, wait_finished

SAMPLE_RATE = 44100
CHANNELS = 2
DS64_AT = 12  # the ds64 chunk follows "RF64" <size> "WAVE"


def rf64_bytes(folder: Path, duration_s: float = 3.0, claimed_frames: int | None = None,
               seed: int = 0) -> tuple[bytes, object]:
    """An RF64 file of drum hits (PCM 16); ``claimed_frames`` rewrites what its ds64 chunk declares."""
    samples, onsets = drum_signal(SAMPLE_RATE, duration_s, seed, CHANNELS)
    path = folder / f"rf64-{seed}.wav"
    sf.write(str(path), samples, SAMPLE_RATE, format="RF64", subtype="PCM_16")
    data = bytearray(path.read_bytes())
    assert data[DS64_AT:DS64_AT + 4] == b"ds64"
    if claimed_frames is not None:
        riff_bytes, data_bytes, _ = struct.unpack_from("<QQQ", data, DS64_AT + 8)
        claimed_bytes = claimed_frames * CHANNELS * 2
        struct.pack_into("<QQQ", data, DS64_AT + 8, riff_bytes - data_bytes + claimed_bytes, claimed_bytes,
                         claimed_frames)
    return bytes(data), onsets


def outcome(path: Path, tmp_path: Path) -> tuple[str | None, int]:
    """Run every analysis step of ``path`` as the pool would: (error code or None, frames analysed)."""
    state = FileAnalysis(str(path), str(tmp_path / "x.spool"), DetectorSettings())
    while not state.finished:
        step = analyse_step(state)
        if step.error is not None:
            return step.error.code, state.frames_done
        state = step.state
    return None, state.frames_done


async def test_rf64_claiming_two_to_the_31_frames_but_holding_3_s_is_truncated(
    server: TestServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    base = str(server.make_url("")).rstrip("/")
    lying, _ = rf64_bytes(tmp_path, claimed_frames=2**31)
    honest, onsets = rf64_bytes(tmp_path, seed=1)
    status, body = await post_file(http, base, lying, filename="lying.wav")
    assert status == 202, body
    failed = await wait_finished(http, base, body["task_id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "truncated", failed
    assert "RF64" in failed["error"]["message"], failed
    status, body = await post_file(http, base, honest, filename="honest.wav")
    done = await wait_finished(http, base, body["task_id"])
    assert done["status"] == "success", done
    assert done["result"]["duration"] == 3.0
    assert matches([o["time"] for o in done["result"]["onsets"]], onsets) >= 0.9


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(claimed=st.one_of(st.integers(min_value=0, max_value=2**61 - 1),
                         st.integers(min_value=SAMPLE_RATE * 3 - 2, max_value=SAMPLE_RATE * 3 + 2)))
def test_any_claimed_rf64_length_beyond_the_file_is_truncated(tmp_path: Path, claimed: int) -> None:
    data, _ = rf64_bytes(tmp_path, duration_s=0.5, claimed_frames=claimed)
    held = SAMPLE_RATE // 2
    path = tmp_path / "fuzzed.wav"
    path.write_bytes(data)
    code, frames = outcome(path, tmp_path)
    if claimed > held:
        assert code == "truncated", (claimed, code, frames)
    elif claimed == 0:
        assert code == "empty", (claimed, code)
    else:  # a claim within the file: what it declares is analysed (the rest is trailing bytes)
        assert code is None, (claimed, code)
        assert frames == claimed, (claimed, frames)
