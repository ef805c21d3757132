"""Typed application keys shared by every part of the server."""

from __future__ import annotations

from aiohttp import web

from server.config import Config
from server.pool import DetectionPool

CONFIG = web.AppKey("config", Config)
POOL = web.AppKey("pool", DetectionPool)
