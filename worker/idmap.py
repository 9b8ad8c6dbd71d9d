"""The id mapping of a route in Redis: the runtime's implementation of `tasks.ledger.IdMap`."""

from __future__ import annotations

from redis.asyncio import Redis

from worker import keys
from worker.redisio import done, text


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
