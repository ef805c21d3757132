"""The skeleton: health endpoint, configuration from options and environment, the served process."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from server.config import Config, parse_config
from tests.conftest import REPO, ServerProcess


async def test_healthz_answers_json(server: TestServer, http: aiohttp.ClientSession) -> None:
    async with http.get(server.make_url("/healthz")) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        body = await resp.json()
    assert body["status"] == "ok"
    assert body["pool_workers"] == 2


def test_options_override_environment_which_overrides_defaults() -> None:
    env = {"TRANSIENT_PORT": "9001", "TRANSIENT_MAX_STREAMS": "7", "TRANSIENT_NO_WORKER": "true"}
    config = parse_config(["--port", "9002"], env)
    assert config.port == 9002
    assert config.max_streams == 7
    assert config.no_worker is True
    assert parse_config([], {}).port == Config().port == 8080


def test_bad_environment_value_is_named() -> None:
    with pytest.raises(ValueError, match="TRANSIENT_NO_WORKER"):
        parse_config([], {"TRANSIENT_NO_WORKER": "perhaps"})


def test_help_documents_every_option_and_its_variable() -> None:
    out = subprocess.run([sys.executable, str(REPO / "run.py"), "--help"], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout
    for name in Config.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in out
        assert "TRANSIENT_" + name.upper() in out


async def test_served_process_answers_and_stops_on_sigterm(
    server_process: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    proc = server_process(env={"TRANSIENT_WORKERS": "1"})
    async with aiohttp.ClientSession() as http, http.get(proc.url + "/healthz") as resp:
        assert resp.status == 200
        assert (await resp.json())["pool_workers"] == 1
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0
