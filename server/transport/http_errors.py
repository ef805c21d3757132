"""HTTP errors as JSON: ``{"error": {"code": str, "message": str}}``, whatever raised them.

The middleware turns aiohttp's own HTTP errors (404 for an unknown path, 405...) into that shape, and any
unexpected exception into a JSON 500 whose traceback is logged. Handlers answer client mistakes
themselves with a 4xx (:func:`~server.protocol.errors.json_error`), so a 500 always means a server fault. The
shared storage being unreachable (:class:`~server.exceptions.StorageUnavailable`, with ``--redis``) is no
fault of the server either: 503 ``storage_unavailable`` with ``Retry-After``, logged only once per
outage (by the storage).
Neither is a client's fault (a malformed request, a client gone mid-body): one rate-limited warning
(:class:`~server.observability.logs.ClientFaultFilter`), and 400 ``bad_request`` when an answer can still go.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler

from server.exceptions import StorageUnavailable
from server.observability.logs import AIOHTTP_SERVER_LOGGER, install_client_fault_filter
from server.protocol.codec import clip
from server.protocol.errors import json_error

log = logging.getLogger(__name__)

KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")
STORAGE_RETRY_AFTER_S = "5"


def _code(reason: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", reason.lower()).strip("_") or "error"


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        headers = {name: exc.headers[name] for name in KEPT_HEADERS if name in exc.headers}
        message = exc.text if exc.text and exc.text != f"{exc.status}: {exc.reason}" else exc.reason
        return json_error(exc.status, _code(exc.reason), message, headers)
    except ConnectionError:
        raise  # the client went away; nothing to answer (aiohttp logs one rate-limited warning)
    except HttpProcessingError as exc:  # the body broke its framing (a bad chunk, cut short): client's fault
        logging.getLogger(AIOHTTP_SERVER_LOGGER).error("malformed body from %s", request.remote, exc_info=exc)
        return json_error(400, "bad_request", f"the request body is malformed: {clip(str(exc))}")
    except StorageUnavailable as exc:
        return json_error(503, "storage_unavailable", str(exc), {"Retry-After": STORAGE_RETRY_AFTER_S})
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return json_error(500, "internal", "the server failed to handle this request; the fault is logged")


async def _quiet_client_faults(app: web.Application) -> AsyncIterator[None]:
    """While the app runs, a client's fault is one rate-limited warning, not an error with a traceback."""
    remove = install_client_fault_filter()
    yield
    remove()


def setup(app: web.Application) -> None:
    app.middlewares.append(json_errors)
    app.cleanup_ctx.append(_quiet_client_faults)
