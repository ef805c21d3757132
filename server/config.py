"""Server configuration: one typed object, filled from command-line options and ``TRANSIENT_*`` variables.

Every field of :class:`Config` is an option: ``max_streams`` is ``--max-streams`` on the command line and
``TRANSIENT_MAX_STREAMS`` in the environment. The command line wins over the environment, which wins over
the default.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.pool import heap
from server.stream import dispatch_rule

ENV_PREFIX = "TRANSIENT_"
DEFAULT_DATA_DIR = Path("data")


def _opt(default: Any, help: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, **extra})


@dataclass(frozen=True)
class Config:
    """Everything the server reads at start-up. Units are in the names."""

    # Network
    host: str = _opt("127.0.0.1", "address to listen on")
    port: int = _opt(8080, "TCP port to listen on (0 picks a free one)")
    # Storage
    data_dir: Path = _opt(DEFAULT_DATA_DIR, "directory for uploads, job database and other state")  # noqa: RUF009
    # Detection pool
    workers: int = _opt(
        0, "processes in the detection pool; 0: one per core this process may use (its CPU affinity, "
        "capped by its cgroup CPU quota)")
    sched_policy: str = _opt(
        "batch", "Linux scheduling policy of the event loop and the pool's workers: batch (SCHED_BATCH: a "
        "woken process waits for the running one to block or use up its time slice instead of preempting "
        "it, so the loop and a worker sharing a core take turns in whole batches) or normal (SCHED_OTHER)")
    # Live streams
    max_streams: int = _opt(512, "live streams accepted at once; more are refused with close 1013")
    max_streams_per_client: int = _opt(64, "live streams one client address may hold at once; also its "
                                           "publisher sockets (started or not) and its upload sockets")
    max_websockets: int = _opt(0, "WebSockets open at once in all (HTTP 503 server_full beyond); 0: the "
                                  "open-file limit less 128")
    max_message_bytes: int = _opt(1 << 20, "largest WebSocket message accepted, in bytes (close 1009)")
    idle_timeout_s: float = _opt(30.0, "close a stream that sends nothing for this long (close 1008)")
    heartbeat_s: float = _opt(15.0, "WebSocket ping interval in seconds; 0 disables")
    max_buffer_s: float = _opt(5.0, "seconds of audio a stream may have waiting before the oldest is dropped")
    max_stream_buffer_bytes: int = _opt(
        8 << 20, "bytes of audio one stream may have waiting (after downmix to mono) before the oldest is "
        "dropped, when fewer than max_buffer_s")
    max_buffer_bytes: int = _opt(
        1 << 30, "bytes all live streams' audio buffers may reserve together; a stream that would pass it is "
        "refused with close 1013 buffer_limit")
    max_subscribers_per_stream: int = _opt(64, "subscribers one stream accepts")
    subscriber_queue: int = _opt(256, "events queued for one subscriber before overflow is reported")
    status_interval_s: float = _opt(0.5, "seconds between status messages while audio flows")
    dispatch_interval_ms: float = _opt(
        dispatch_rule.MIN_INTERVAL_MS, "a pool lane calls its worker at most this often, in ms, so that "
        "streams whose audio arrives within it share one call; the least interval, for a lane with few "
        "streams (0: a lone stream's audio goes at once)")
    dispatch_per_stream_ms: float = _opt(
        dispatch_rule.PER_STREAM_MS, "the dispatch interval grows by this much, in ms, for each live stream "
        "the lane serves (fewer, larger calls under load; 0: a fixed interval)")
    max_dispatch_interval_ms: float = _opt(
        dispatch_rule.MAX_INTERVAL_MS, "the dispatch interval never grows past this, in ms (it bounds the "
        "wait it adds to latency)")
    heap_trim_interval_s: float = _opt(
        heap.TRIM_EVERY_S, "the server process and each pool worker give the heap memory they have freed "
        "back to the system (glibc malloc_trim) at most this often, in seconds; 0: never")
    # Files
    max_upload_bytes: int = _opt(2 << 30, "largest accepted upload, in bytes (HTTP 413)")
    max_queued_jobs: int = _opt(1000, "file jobs waiting at once; more are refused with HTTP 503")
    retention_s: float = _opt(7 * 24 * 3600.0, "how long finished jobs and their results are kept")
    min_free_disk_bytes: int = _opt(
        32 << 20, "bytes kept free on the data directory's disk: below this uploads are refused (HTTP 507) "
        "and /readyz answers 503")
    body_timeout_s: float = _opt(
        30.0, "an HTTP request body that sends nothing for this long, or is slower on average than "
        "min_body_bytes_per_s after this long, is refused with HTTP 408; 0 disables")
    min_body_bytes_per_s: int = _opt(
        4096, "slowest average rate, in bytes per second, of an HTTP request body older than body_timeout_s")
    # WebRTC
    ice_servers: str = _opt("", "comma-separated STUN/TURN URLs, e.g. stun:stun.example.org:3478")
    ice_username: str = _opt("", "username for the TURN servers")
    ice_credential: str = _opt("", "credential for the TURN servers")
    webrtc_connect_timeout_s: float = _opt(
        20.0, "close a WebRTC peer connection not connected (ICE + DTLS) this long after its offer")
    webrtc_jitter_buffer: str = _opt(
        "immediate", "WebRTC receive jitter buffer: immediate (each packet analysed on arrival) or aiortc "
        "(aiortc's own: holds 80 ms, 300 ms after a loss)")
    # Access
    tokens: str = _opt("", "tokens as NAME:TOKEN:RIGHTS;... (RIGHTS from publish,subscribe,analyse)")
    allowed_origins: str = _opt("", "comma-separated Origin values WebSockets accept; empty: same host only")
    rate_limit_per_s: float = _opt(100.0, "HTTP API requests and WebSocket connections per second one client "
                                          "address may make (HTTP 429); 0 disables")
    rate_limit_burst: int = _opt(1000, "requests a client may make at once before rate_limit_per_s applies")
    # OSC
    osc_targets: str = _opt("", "named OSC targets as NAME=HOST:PORT[/bundle[+DELAY_MS]],... (streams opt in "
                                "by name)")
    # Ableton Link
    link: bool = _opt(False, "join an Ableton Link session on the local network (UDP multicast); a stream "
                             "with the option link publishes its tempo and beat phase to it")
    # Scale-out
    redis: str = _opt("", "Redis URL; empty runs embedded with no outside service")
    no_worker: bool = _opt(False, "with --redis: serve only, run no file-analysis worker here")
    redis_prefix: str = _opt("transient", "with --redis: prefix of every Redis key and channel")
    redis_stream_ttl_s: float = _opt(
        10.0, "with --redis: a crashed instance's live streams leave every listing after this long")
    redis_claim_idle_s: float = _opt(
        30.0, "with --redis: a file job whose worker has been silent this long is taken over by another")
    redis_max_deliveries: int = _opt(
        3, "with --redis: a file job handed to workers more often than this fails (worker_lost)")
    # Logging
    log_level: str = _opt("INFO", "logging level")

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


def _option_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _convert(f: dataclasses.Field[Any], raw: str) -> Any:
    kind: type[Any] = type(f.default)
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"{_env_name(f.name)}: expected a boolean, got {raw!r}")
    if kind is Path:
        return Path(raw)
    return kind(raw)


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """Add one option per :class:`Config` field, documenting its environment variable."""
    for f in dataclasses.fields(Config):
        help_text = f"{f.metadata['help']} [env {_env_name(f.name)}; default {f.default}]"
        if type(f.default) is bool:
            parser.add_argument(_option_name(f.name), dest=f.name, action="store_true", default=None,
                                help=help_text)
        else:
            parser.add_argument(_option_name(f.name), dest=f.name, default=None, metavar=f.name.upper(),
                                help=help_text)


def config_from(namespace: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Config:
    """Build a :class:`Config` from parsed options, then the environment, then the defaults."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Config):
        given = getattr(namespace, f.name, None)
        if given is not None and not isinstance(given, str):
            values[f.name] = given
        elif given is not None:
            values[f.name] = _convert(f, given)
        elif _env_name(f.name) in env:
            values[f.name] = _convert(f, env[_env_name(f.name)])
    return Config(**values)


def parse_config(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Config:
    """Parse server options alone (used by tests and by the ``serve`` command)."""
    parser = argparse.ArgumentParser(prog="run.py")
    add_config_options(parser)
    return config_from(parser.parse_args(list(argv)), environ)
