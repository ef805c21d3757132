"""The client library and `run.py listen` load none of the detector (numpy, aiohttp and av are enough)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["server.client", "server.cli.listen"])
def test_client_imports_without_the_detector(module: str) -> None:
    probe = (
        f"import sys, {module}\n"
        "print(sorted(m for m in sys.modules if m.startswith(('server.dsp', 'server.rhythm', 'scipy'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_stream_messages_still_offer_the_encoding() -> None:
    from server.protocol import encoding, stream_messages

    assert stream_messages.Encoding is encoding.Encoding
    assert encoding.Encoding("pcm_s16le").bytes_per_sample == 2
