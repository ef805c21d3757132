"""Messages of ``GET /api/v3/upload``: typed parsing of the client's ``upload`` and ``end``, and builders
for what the server sends. See docs/protocol.md, "Whole-file analysis".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from server.protocol.codec import Control
from server.protocol.errors import CloseCode, ProtocolError

FILENAME_MAX_CHARS = 255
UPLOAD_FIELDS = frozenset({"type", "filename", "size", "settings"})
END_FIELDS = frozenset({"type"})

Message = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Upload:
    """The first message: what is coming. ``settings`` is the raw mapping (validated by the job service)."""

    filename: str
    size: int
    settings: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class End:
    """Every byte of the file has been sent."""


ClientMessage = Upload | End


def _fields(control: Control, allowed: frozenset[str]) -> None:
    unknown = sorted(str(key) for key in control.body if key not in allowed)
    if unknown:
        raise ProtocolError("bad_message", f"{control.type!r} message has unknown field(s) {unknown}",
                            CloseCode.INVALID_PAYLOAD)


def _upload(control: Control) -> Upload:
    _fields(control, UPLOAD_FIELDS)
    body = control.body
    size = body.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ProtocolError("bad_upload", f"'size' must be the file's length in bytes, got {size!r}",
                            CloseCode.INVALID_PAYLOAD)
    filename = body.get("filename", "")
    if not isinstance(filename, str) or len(filename) > FILENAME_MAX_CHARS:
        raise ProtocolError("bad_upload", f"'filename' must be a string of at most {FILENAME_MAX_CHARS} "
                            "characters", CloseCode.INVALID_PAYLOAD)
    settings = body.get("settings")
    if settings is not None and not isinstance(settings, Mapping):
        raise ProtocolError("bad_settings", f"'settings' must be an object, got {settings!r}",
                            CloseCode.POLICY)
    return Upload(filename, size, settings)


def parse_client_message(control: Control) -> ClientMessage:
    """The typed form of a client's control message. Raises a fatal :class:`ProtocolError` otherwise."""
    if control.type == "upload":
        return _upload(control)
    if control.type == "end":
        _fields(control, END_FIELDS)
        return End()
    raise ProtocolError("unknown_type", f"unknown message type {control.type!r}; expected upload or end",
                        CloseCode.POLICY)


def accepted(task_id: str, window_bytes: int, max_message_bytes: int) -> Message:
    return {"type": "accepted", "task_id": task_id, "window_bytes": window_bytes,
            "max_message_bytes": max_message_bytes}


def ack(received_bytes: int) -> Message:
    return {"type": "ack", "received": received_bytes}


def progress(task_id: str, value: float) -> Message:
    return {"type": "progress", "task_id": task_id, "progress": round(value, 4)}


def result(task_id: str, value: Mapping[str, Any]) -> Message:
    return {"type": "result", "task_id": task_id, "result": value}


def job_failed(task_id: str, code: str, message: str) -> Message:
    return {"type": "error", "task_id": task_id, "code": code, "message": message}
