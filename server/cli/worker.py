"""``python run.py worker --redis URL``: a file-analysis worker with no HTTP server (docs/deploy.md)."""

from __future__ import annotations

import argparse
import logging
import sys

import uvloop

from server.config import add_config_options, config_from
from server.scale.client import RedisUnavailable
from server.scale.worker import run_worker


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_options(parser)


def _ready(consumer: str) -> None:
    # One parsable line: tests and scripts wait for it.
    print(f"worker ready: {consumer}", flush=True)


def main(args: argparse.Namespace) -> int:
    config = config_from(args)
    if not config.redis:
        print(f"{args.parser.prog}: --redis URL (or TRANSIENT_REDIS) is required", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        uvloop.run(run_worker(config, _ready))
    except (RedisUnavailable, ValueError) as exc:
        print(f"{args.parser.prog}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0
