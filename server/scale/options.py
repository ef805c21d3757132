"""The scale-out options, checked once, and the configuration every process sharing the storage must use."""

from __future__ import annotations

from server.config import Config


def check_scale_options(config: Config) -> None:
    """Refuse scale-out options that cannot work, naming the option."""
    if config.redis_stream_ttl_s <= 0:
        raise ValueError(f"--redis-stream-ttl-s must be > 0, got {config.redis_stream_ttl_s}")
    if config.redis_claim_idle_s <= 0:
        raise ValueError(f"--redis-claim-idle-s must be > 0, got {config.redis_claim_idle_s}")
    if config.redis_max_deliveries < 1:
        raise ValueError(f"--redis-max-deliveries must be at least 1, got {config.redis_max_deliveries}")
    if not config.redis_prefix or any(c.isspace() for c in config.redis_prefix):
        raise ValueError(f"--redis-prefix must be a non-empty word, got {config.redis_prefix!r}")


def shared_config(config: Config) -> Config:
    """``config`` with an absolute data directory: job records carry upload paths other processes open."""
    return config.replace(data_dir=config.data_dir.resolve())
