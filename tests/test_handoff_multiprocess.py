"""User on one real server process, agent on another, one private Redis: handoff end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .agent_support import PASSWORDS, agent_section
from .redis_server import free_port, unique_prefix
from .test_redis_multiprocess import Server

pytestmark = pytest.mark.timeout(60)


class AgentServer(Server):
    """A `python -m chatbot_server` process with agent accounts and a shared session secret."""

    def __init__(self, tmp: Path, name: str, redis_url: str, prefix: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "server": {"host": "127.0.0.1", "port": self.port, "shutdown_timeout": 1},
            "layer": {"backend": "redis", "redis": {"url": redis_url, "prefix": prefix, "required": True}},
            "bot": {"name": "echo"},
            "agents": agent_section(),
            "logging": {"level": "WARNING"},
        }
        path = tmp / f"{name}.yaml"
        path.write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")  # JSON is YAML
        self.log = tmp / f"{name}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "chatbot_server", "--config", str(path)], stdout=out, stderr=subprocess.STDOUT
            )

    async def sign_in(self, session: aiohttp.ClientSession, username: str = "li") -> aiohttp.ClientResponse:
        """POST the sign-in form here (the answer: 303 with the session cookie)."""
        return await session.post(
            f"{self.url}/agent/login",
            data={"username": username, "password": PASSWORDS[username]},
            headers={"Origin": self.url},
            allow_redirects=False,
        )


@pytest.fixture
def servers(tmp_path: Path, redis_server: str) -> Iterator[tuple[AgentServer, AgentServer]]:
    prefix = unique_prefix()
    one = AgentServer(tmp_path, "one", redis_server, prefix)
    two = AgentServer(tmp_path, "two", redis_server, prefix)
    try:
        yield one, two
    finally:
        one.stop()
        two.stop()


async def until(ws: aiohttp.ClientWebSocketResponse, test: Any) -> dict[str, Any]:
    while True:
        data: dict[str, Any] = await ws.receive_json(timeout=5)
        if test(data):
            return data


async def test_user_on_one_process_agent_on_another(servers: tuple[AgentServer, AgentServer]) -> None:
    one, two = servers
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        await one.wait_ready(session)
        await two.wait_ready(session)
        # Signed in on process one; the cookie works on process two (shared secret).
        login = await one.sign_in(session)
        assert login.status == 303
        cookie = login.cookies["chatbot_agent"].value
        user = await session.ws_connect(f"{one.url}/ws")
        conversation = (await user.receive_json(timeout=5))["conversation"]
        await user.send_json({"type": "handoff"})
        assert (await until(user, lambda f: f["type"] == "system"))["queue_position"] == 1

        agent = await session.ws_connect(
            f"{two.url}/agent/ws", headers={"Cookie": f"chatbot_agent={cookie}", "Origin": two.url}
        )
        await until(agent, lambda f: f["type"] == "queue" and f["items"])
        await agent.send_json({"type": "claim", "conversation": conversation})
        await until(agent, lambda f: f["type"] == "claimed")
        assert (await until(user, lambda f: f["type"] == "system"))["event"] == "agent_joined"
        await agent.send_json({"type": "reply", "conversation": conversation, "text": "您好,我是小李"})
        said = await until(user, lambda f: f["type"] == "agent")
        assert (said["msg"], said["agent"]) == ("您好,我是小李", "客服小李")
        await user.send_json({"type": "message", "text": "卡被吞了", "id": "u1"})
        seen = await until(agent, lambda f: f["type"] == "frame" and f["frame"]["type"] == "user")
        assert seen["frame"]["msg"] == "卡被吞了"
        await agent.send_json({"type": "end", "conversation": conversation})
        assert (await until(user, lambda f: f["type"] == "system"))["event"] == "agent_left"
        await user.send_json({"type": "message", "text": "谢谢", "id": "u2"})
        reply = await until(user, lambda f: f["type"] == "reply")
        # The bot never answered while the agent held the conversation: this is its first answer.
        assert (reply["reply_to"], reply["msg"]) == ("u2", "我正在思考你的问题{谢谢}")
        await agent.close()
        await user.close()
