"""write_soon() writes the frames just appended at once, not after history.write_interval: called
right after the append, before the write-behind task woke (an agent's answer, consumer.py; found
while soaking streamed replies under process kills, #18)."""

from __future__ import annotations

import redis.asyncio as aioredis

from chatbot_server.store.redis import RedisConversationStore, conversation_keys

from .helpers import until
from .redis_server import unique_prefix


async def test_write_soon_right_after_an_append_does_not_wait_for_the_interval(redis_server: str) -> None:
    prefix = unique_prefix()
    store = RedisConversationStore(url=redis_server, prefix=prefix, process_id="p1", write_interval=30.0)
    client = aioredis.Redis.from_url(redis_server)
    await store.start()
    try:
        conversation = await store.create()
        store.append(conversation, {"type": "greeting", "msg": "您好"})
        await store.flush()  # a new conversation's first write goes out at once anyway
        frames_key = conversation_keys(prefix, conversation)[0]
        assert await client.llen(frames_key) == 1
        store.append(conversation, {"type": "agent", "msg": "您好,我是客服小王。"})
        store.write_soon()

        async def written() -> bool:
            return bool(await client.llen(frames_key) == 2)

        await until(written, "the frame written soon", deadline=2.0)
    finally:
        await store.close()
        await client.aclose()
