"""The server's small, flat error hierarchy. Messages carry the offending value."""

from __future__ import annotations


class TransientError(Exception):
    """Base of every error the server raises on purpose."""


class ConfigError(TransientError, ValueError):
    """A server option has a value the server cannot start with; the message names the option."""


class SettingsError(TransientError, ValueError):
    """A detector setting is unknown, of the wrong type, or out of range."""

    def __init__(self, name: str, value: object, reason: str) -> None:
        self.name = name
        self.value = value
        self.reason = reason
        super().__init__(f"setting {name!r}={value!r}: {reason}")


class AudioFormatError(TransientError, ValueError):
    """Audio that cannot be interpreted: bad shape, dtype, rate, NaN/Inf samples, odd byte counts."""


class PoolRestarted(TransientError):
    """A detection worker process died; the pool was rebuilt and per-task state must be re-initialised."""


class StorageUnavailable(TransientError):
    """The storage shared by instances (Redis) cannot be reached now; the request may be tried again later."""
