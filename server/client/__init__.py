"""An asyncio client for a Transient server (used by ``run.py listen``/``stream`` and by the tests).

>>> from server.client import TransientClient, ClientError
"""

from __future__ import annotations

from server.client.auth import TOKEN_ENV, default_token
from server.client.client import DEFAULT_SERVER, SERVER_ENV, TransientClient, default_server
from server.client.errors import ClientError
from server.client.pacing import Pacer
from server.client.publisher import Publisher
from server.client.subscriber import Subscription

__all__ = ["DEFAULT_SERVER", "SERVER_ENV", "TOKEN_ENV", "ClientError", "Pacer", "Publisher", "Subscription",
           "TransientClient", "default_server", "default_token"]
