"""The id mapping of a route in Redis: the runtime's implementation of `tasks.ledger.IdMap`."""

from __future__ import annotations

from redis.asyncio import Redis

from worker import keys
from worker.redisio import done, text

# Keys per round trip of a bulk read: large enough that 20 000 ids take a handful, small enough that no
# single command holds Redis up.
_CHUNK = 2000


class RedisIdMap:
    def __init__(self, redis: Redis, route: str) -> None:
        self.redis = redis
        self.route = route

    async def get(self, kind: str, source_id: str) -> str | None:
        value = await done(self.redis.get(keys.mapping(self.route, kind, source_id)))
        if value is None:
            return None
        return text(value)

    async def put(self, kind: str, source_id: str, target_id: str) -> None:
        await done(self.redis.set(keys.mapping(self.route, kind, source_id), target_id))

    async def forget(self, kind: str, source_id: str) -> None:
        await done(self.redis.delete(keys.mapping(self.route, kind, source_id)))

    async def add(self, kind: str, source_id: str, member: str) -> None:
        await done(self.redis.sadd(keys.mapping(self.route, kind, source_id), member))

    async def members(self, kind: str, source_id: str) -> set[str]:
        found = await done(self.redis.smembers(keys.mapping(self.route, kind, source_id)))
        return {text(member) for member in found}

    async def get_many(self, kind: str, source_ids: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for start in range(0, len(source_ids), _CHUNK):
            chunk = source_ids[start : start + _CHUNK]
            values = await done(self.redis.mget([keys.mapping(self.route, kind, i) for i in chunk]))
            found.update({i: text(v) for i, v in zip(chunk, values, strict=True) if v is not None})
        return found

    async def members_many(self, kind: str, source_ids: list[str]) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for start in range(0, len(source_ids), _CHUNK):
            chunk = source_ids[start : start + _CHUNK]
            async with self.redis.pipeline(transaction=False) as pipe:
                for source_id in chunk:
                    pipe.smembers(keys.mapping(self.route, kind, source_id))
                sets = await pipe.execute()
            found.update({i: {text(m) for m in s} for i, s in zip(chunk, sets, strict=True) if s})
        return found
