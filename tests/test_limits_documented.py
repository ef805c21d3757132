"""Every limit is a configuration option, listed with its error in docs/protocol.md ("Every limit")."""

from __future__ import annotations

import dataclasses
import re

from server.config import Config, parse_config
from tests.conftest import REPO

LIMIT_OPTIONS = ("rate_limit_per_s", "rate_limit_burst", "max_message_bytes", "max_streams",
                 "max_streams_per_client", "max_subscribers_per_stream", "idle_timeout_s", "max_buffer_s",
                 "subscriber_queue", "max_upload_bytes", "max_queued_jobs", "body_timeout_s",
                 "min_body_bytes_per_s", "min_free_disk_bytes", "max_stream_buffer_bytes", "max_buffer_bytes")


def test_each_limit_is_an_option_and_documented_with_its_error() -> None:
    fields = {f.name for f in dataclasses.fields(Config)}
    text = (REPO / "docs" / "protocol.md").read_text()
    table = text.split("### Every limit", 1)[1].split("\n### ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    documented = {name for row in rows for name in re.findall(r"`([a-z_]+)`", row.split("|")[2])}
    assert set(LIMIT_OPTIONS) <= documented
    assert documented <= fields
    for row in rows:  # every row names its error (status code or error code)
        assert re.search(r"\d{3}|`[a-z_]+`", row.split("|")[4]), row


def test_limits_come_from_options_and_environment() -> None:
    config = parse_config(["--rate-limit-per-s", "2.5", "--rate-limit-burst", "7"],
                          {"TRANSIENT_MAX_STREAMS": "3"})
    assert (config.rate_limit_per_s, config.rate_limit_burst, config.max_streams) == (2.5, 7, 3)
