"""The directory of live streams in Redis: who runs what, with TTLs, and who watches it.

Each stream's listing entry is a JSON string with a TTL (``stream_ttl_s``) that the instance running the
stream refreshes; a sorted set indexes the live ids by expiry, so a crashed instance's streams drop out of
every listing once their TTL passes. Each stream also has a sorted set of its subscribers on every instance
(member ``instance:serial``, scored by expiry), which gives the global subscriber count and enforces
``max_subscribers_per_stream`` across instances. Every expiry uses the Redis server's clock (``TIME`` in
the scripts), so instances' clocks need not agree. The scripts name keys they compute from the prefix, so
this works on a single Redis (with replicas), not on Redis Cluster.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from redis.asyncio.client import Pipeline

from server.scale.client import Redis
from server.scale.keys import Keys
from server.scale.outbox import queue_script

NOW_MS = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000) "

# KEYS: streams, entry, subscribers. ARGV: stream id, ttl ms, entry JSON ('' for a stream running elsewhere),
# then this instance's subscriber members. Returns 1 for a local stream; for another's, its entry or nil.
REFRESH = NOW_MS + """
local ttl = tonumber(ARGV[2])
local entry = 1
if ARGV[3] ~= '' then
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ttl)
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
else
  entry = redis.call('GET', KEYS[2])
end
if entry and #ARGV > 3 then
  for i = 4, #ARGV do redis.call('ZADD', KEYS[3], now + ttl, ARGV[i]) end
  redis.call('PEXPIRE', KEYS[3], ttl * 3)
end
return entry
"""

# KEYS: streams, entry, subscribers. ARGV: stream id, events channel, final event JSON.
END = """
redis.call('PUBLISH', ARGV[2], ARGV[3])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2], KEYS[3])
return 1
"""

# KEYS: entry, subscribers. ARGV: member, ttl ms, limit, '1' if the stream must be listed.
# Returns -1 (no such stream), -2 (subscriber limit reached) or the subscriber count.
JOIN = NOW_MS + """
if ARGV[4] == '1' and redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then return -2 end
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[2], ttl * 3)
return redis.call('ZCARD', KEYS[2])
"""

# KEYS: streams. ARGV: the prefix of entry keys. Returns entry, subscriber count, entry, count, ...
LIST = NOW_MS + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local entry = redis.call('GET', ARGV[1] .. id)
  if entry then
    out[#out + 1] = entry
    out[#out + 1] = redis.call('ZCOUNT', ARGV[1] .. id .. ':subs', now, '+inf')
  end
end
return out
"""

# KEYS: entry, subscribers. Returns {entry, subscriber count} or nil.
DESCRIBE = NOW_MS + """
local entry = redis.call('GET', KEYS[1])
if not entry then return nil end
return {entry, redis.call('ZCOUNT', KEYS[2], now, '+inf')}
"""

UNKNOWN = -1
FULL = -2


def _entry(raw: bytes | str, subscribers: int | bytes) -> dict[str, Any]:
    entry: dict[str, Any] = json.loads(raw)
    entry["subscribers"] = int(subscribers)
    return entry


class StreamDirectory:
    def __init__(self, client: Redis, keys: Keys, ttl_s: float) -> None:
        self.client = client
        self.keys = keys
        self.ttl_ms = max(1, round(ttl_s * 1000))
        self._refresh = client.register_script(REFRESH)
        self._end = client.register_script(END)
        self._join = client.register_script(JOIN)
        self._list = client.register_script(LIST)
        self._describe = client.register_script(DESCRIBE)

    def _stream_keys(self, stream_id: str) -> list[str]:
        keys = self.keys
        return [keys.streams, keys.stream(stream_id), keys.subscribers(stream_id)]

    # --- queued on a pipeline (the hub's outbox) -------------------------------------------------------

    def queue_refresh(self, pipe: Pipeline, stream_id: str, entry: dict[str, Any],
                      members: Iterable[str]) -> None:
        """List (or keep listing) a stream running here, with this instance's subscribers of it."""
        queue_script(pipe, self._refresh, self._stream_keys(stream_id),
                     [stream_id, self.ttl_ms, json.dumps(entry, separators=(",", ":")), *members])

    def queue_end(self, pipe: Pipeline, stream_id: str, event: dict[str, Any]) -> None:
        """Publish the stream's final event and withdraw it, atomically."""
        queue_script(pipe, self._end, self._stream_keys(stream_id),
                     [stream_id, self.keys.events(stream_id), json.dumps(event, separators=(",", ":"))])

    def queue_leave(self, pipe: Pipeline, stream_id: str, member: str) -> None:
        pipe.zrem(self.keys.subscribers(stream_id), member)

    # --- awaited ---------------------------------------------------------------------------------------

    async def touch_remote(self, watched: Sequence[tuple[str, Sequence[str]]]) -> list[dict[str, Any] | None]:
        """For streams running elsewhere: renew our subscribers' entries; each stream's entry or ``None``."""
        pipe = self.client.pipeline(transaction=False)
        for stream_id, members in watched:
            queue_script(pipe, self._refresh, self._stream_keys(stream_id),
                         [stream_id, self.ttl_ms, "", *members])
        results = await pipe.execute()
        return [json.loads(raw) if isinstance(raw, (bytes, str)) else None for raw in results]

    async def join(self, stream_id: str, member: str, limit: int, *, listed: bool) -> int:
        """Count ``member`` among the stream's subscribers: :data:`UNKNOWN`, :data:`FULL` or the count."""
        keys = self.keys
        return int(await self._join(keys=[keys.stream(stream_id), keys.subscribers(stream_id)],
                                    args=[member, self.ttl_ms, limit, "1" if listed else "0"]))

    async def list(self) -> list[dict[str, Any]]:
        """Every listed stream's entry with its subscriber count (all instances)."""
        flat = await self._list(keys=[self.keys.streams], args=[self.keys.stream("")])
        return [_entry(flat[i], flat[i + 1]) for i in range(0, len(flat) - 1, 2)]

    async def describe(self, stream_id: str) -> dict[str, Any] | None:
        keys = self.keys
        found = await self._describe(keys=[keys.stream(stream_id), keys.subscribers(stream_id)])
        return None if found is None else _entry(found[0], found[1])
