"""Typed application keys shared by every part of the server."""

from __future__ import annotations

from aiohttp import web

from server.config import Config
from server.events.hub import EventHub
from server.jobs.service import JobService
from server.pool import DetectionPool
from server.stream.service import StreamService
from server.transport.audio_decode import DecodeScratch
from server.webrtc.service import WebRtcService

CONFIG = web.AppKey("config", Config)
POOL = web.AppKey("pool", DetectionPool)
HUB = web.AppKey("hub", EventHub)
STREAMS = web.AppKey("streams", StreamService)
JOBS = web.AppKey("jobs", JobService)
WEBRTC = web.AppKey("webrtc", WebRtcService)
DECODE_SCRATCH = web.AppKey("decode_scratch", DecodeScratch)  # the live audio check's, for every stream
