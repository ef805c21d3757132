"""``run.py stream`` and ``run.py listen`` as subprocesses against a real server with access tokens."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import soundfile as sf
from aiohttp.test_utils import TestServer

from server.client import TransientClient
from server.dsp import detect_onsets
from testkit import signals
from tests.conftest import StartServer
from tests.test_cli_analyze import run_cli
from tests.test_cli_stream import assert_same_times, json_lines, listen_while_publishing

TOKENS = "rig:rig-secret-0001:publish;wall:wall-secret-0002:subscribe;ops:ops-secret-0003:publish,subscribe"
RIG, WALL, OPS = "rig-secret-0001", "wall-secret-0002", "ops-secret-0003"
UNKNOWN = "nobody-knows-this-0004"


@pytest.fixture
async def guarded(start_server: StartServer) -> TestServer:
    return await start_server(tokens=TOKENS)


def server_env(server: TestServer, **extra: str) -> dict[str, str]:
    """The CLI's environment: the server's address, ``extra``, and no token unless ``extra`` sets one."""
    env = {"TRANSIENT_SERVER": str(server.make_url("")), **extra}
    return {**{k: v for k, v in os.environ.items() if k != "TRANSIENT_TOKEN"}, **env}


def token_args(how: str, token: str) -> tuple[list[str], dict[str, str]]:
    """``--token TOKEN`` on the command line, ``TRANSIENT_TOKEN`` in the environment, neither (``none``), or
    ``--token ''`` with ``TRANSIENT_TOKEN`` set (``blank``)."""
    return {"flag": (["--token", token], {}), "env": ([], {"TRANSIENT_TOKEN": token}), "none": ([], {}),
            "blank": (["--token", ""], {"TRANSIENT_TOKEN": token})}[how]


@pytest.mark.parametrize("how", ["flag", "env"])
async def test_stream_publishes_with_a_token(guarded: TestServer, tmp_path: Path, how: str) -> None:
    samples = signals.drums(sr=16000, duration_s=2.0, seed=41).samples
    path = tmp_path / "drums.wav"
    sf.write(path, samples, 16000, subtype="FLOAT")
    args, extra = token_args(how, RIG)
    code, out, err = await run_cli("stream", str(path), "--speed", "0", "--format", "json", *args,
                                   env=server_env(guarded, **extra))
    assert code == 0, err
    events = json_lines(out)
    assert events[-1]["type"] == "stopped"
    assert_same_times([e["time"] for e in events if e["type"] == "onset"],
                      [o.time for o in detect_onsets(samples, 16000)])
    assert RIG not in out + err


@pytest.mark.parametrize("how", ["flag", "env"])
async def test_listen_follows_a_stream_with_a_token(guarded: TestServer, how: str) -> None:
    sample_rate = 16000
    samples = signals.clicks(sr=sample_rate, duration_s=1.5, seed=12).samples
    args, extra = token_args(how, WALL)
    async with TransientClient(str(guarded.make_url("")), token=RIG) as client:
        listened = await listen_while_publishing(client, samples, sample_rate, args,
                                                 server_env(guarded, **extra))
    assert listened.returncode == 0, listened.err
    heard, events = listened.heard, listened.events
    assert heard[-1]["type"] == "ended" and heard[-1]["onsets"] == listened.stopped["onsets"] >= 4
    assert [e for e in heard if e["type"] == "onset"] == [e for e in events if e["type"] == "onset"]


REFUSALS = [
    # command, how the token is given, the token, the code and words the one error line must hold
    ("stream", "none", "", "unauthorized", "needs a token"),
    ("stream", "flag", UNKNOWN, "unauthorized", "unknown token"),
    ("stream", "env", WALL, "forbidden", "lacks the right 'publish'"),
    ("listen", "blank", WALL, "unauthorized", "needs a token"),  # --token '' wins over TRANSIENT_TOKEN
    ("listen", "env", UNKNOWN, "unauthorized", "unknown token"),
    ("listen", "flag", RIG, "forbidden", "lacks the right 'subscribe'"),
]


@pytest.mark.parametrize(("command", "how", "token", "code", "words"), REFUSALS)
async def test_a_refused_token_gives_one_clear_line_and_exit_1(
    guarded: TestServer, tmp_path: Path, command: str, how: str, token: str, code: str, words: str
) -> None:
    async with TransientClient(str(guarded.make_url("")), token=OPS) as owner:
        publisher = await owner.publish(16000)  # a live stream: only the token can be the problem
        path = tmp_path / "clicks.wav"
        sf.write(path, signals.clicks(sr=16000, duration_s=0.5, seed=5).samples, 16000)
        target = [str(path), "--speed", "0"] if command == "stream" else [publisher.stream_id]
        args, extra = token_args(how, token)
        exit_code, out, err = await run_cli(command, *target, *args, env=server_env(guarded, **extra))
        await publisher.stop()
    assert exit_code == 1, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # no traceback
    status = "HTTP 401" if code == "unauthorized" else "HTTP 403"
    assert f": {code}: " in lines[0] and words in lines[0] and status in lines[0], lines[0]
    if code == "unauthorized":
        assert "--token" in lines[0] and "TRANSIENT_TOKEN" in lines[0]
    if token:
        assert token not in err  # the secret is never echoed


@pytest.mark.parametrize("how", ["flag", "env"])
async def test_a_token_unfit_for_a_header_is_a_usage_error(guarded: TestServer, how: str) -> None:
    args, extra = token_args(how, "two words")
    code, out, err = await run_cli("listen", "some-stream", *args, env=server_env(guarded, **extra))
    assert code == 2 and out == ""
    source = "--token" if how == "flag" else "TRANSIENT_TOKEN"
    assert err.strip().splitlines()[-1] == \
        f"run.py listen: error: {source}: the token may hold only printable ASCII characters without spaces"
