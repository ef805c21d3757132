"""The job record: one uploaded file's analysis, its state, and how it ended."""

from __future__ import annotations

import dataclasses
import enum
import json
from dataclasses import dataclass
from typing import Any


class JobStatus(enum.StrEnum):
    PENDING = "pending"  # stored (or still uploading over WebSocket), waiting for analysis
    PROCESSING = "processing"
    SUCCESS = "success"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.SUCCESS, JobStatus.FAILED)


class ErrorCode(enum.StrEnum):
    """Why a job failed (``error.code`` of a failed task); see docs/protocol.md."""

    NOT_AUDIO = "not_audio"  # no decoder recognises the file
    UNSUPPORTED_CODEC = "unsupported_codec"  # a container we read, holding audio we cannot decode
    UNSUPPORTED_FORMAT = "unsupported_format"  # decodable, but rate or channels outside the detector's range
    TRUNCATED = "truncated"  # the file ends before its header says, or breaks off part-way
    CORRUPT = "corrupt"  # a decoder rejected the data part-way
    EMPTY = "empty"  # no audio samples at all
    TOO_LARGE = "too_large"
    BAD_SETTINGS = "bad_settings"
    UPLOAD_INCOMPLETE = "upload_incomplete"  # a WebSocket upload ended before its declared size
    UPLOAD_GONE = "upload_gone"  # after a restart the stored upload was missing
    DECODER_CRASHED = "decoder_crashed"  # the file crashed a pool worker repeatedly
    STORAGE_UNAVAILABLE = "storage_unavailable"  # the shared store was unreachable when the upload completed
    INSUFFICIENT_STORAGE = "insufficient_storage"  # the disk ran out of room for the job's work files
    INTERNAL = "internal"  # a server fault, logged with a traceback


@dataclass(frozen=True, slots=True)
class JobError:
    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True, slots=True)
class Job:
    """One task, as the store keeps it.

    ``result_json`` is the result object already serialised (JSON text), so that a large result is
    passed through to HTTP clients without being parsed again. Times are Unix seconds.
    """

    task_id: str
    status: JobStatus
    filename: str
    upload_path: str
    settings: dict[str, Any]
    created_s: float
    updated_s: float
    progress: float = 0.0
    result_json: str | None = None
    error: JobError | None = None
    attempts: int = 0

    def replace(self, **changes: Any) -> Job:
        return dataclasses.replace(self, **changes)

    def result(self) -> dict[str, Any] | None:
        return None if self.result_json is None else dict(json.loads(self.result_json))

    def status_dict(self, *, with_result: bool = True) -> dict[str, Any]:
        """The task as ``GET /api/v3/analysis/{task_id}`` shows it (the result parsed, if asked)."""
        body: dict[str, Any] = {"task_id": self.task_id, "status": self.status.value,
                                "progress": round(self.progress, 4)}
        if self.status is JobStatus.SUCCESS and with_result:
            body["result"] = self.result()
        if self.status is JobStatus.FAILED and self.error is not None:
            body["error"] = self.error.to_dict()
        return body

    def status_json(self) -> str:
        """:meth:`status_dict` as JSON text, splicing in the stored result text unparsed."""
        head = json.dumps(self.status_dict(with_result=False), separators=(",", ":"))
        if self.status is JobStatus.SUCCESS and self.result_json is not None:
            return head[:-1] + ',"result":' + self.result_json + "}"
        return head
