"""The HTTP API (docs/api.md) on the real app: auth, limits, every endpoint, and across two
processes sharing a real Redis."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient

from chatbot_server import setup
from chatbot_server.api.guard import Buckets
from chatbot_server.api.tokens import hash_token, main, new_token
from chatbot_server.identity import Customer
from chatbot_server.keys import CUSTOMERS_KEY, QUEUE_KEY, STORE_KEY

from .agent_support import agent_section
from .helpers import make_settings, receive_json, receive_until, until
from .redis_server import RedisProcess, unique_prefix

TOKEN = new_token()
OTHER_TOKEN = new_token()
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CARD = "6222 0212 3456 7890 128"  # passes Luhn (tests/test_masking.py)
MASKED = "**** **** **** ***0 128"

Maker = Callable[..., Awaitable[TestClient]]


def api_section(**extra: Any) -> dict[str, Any]:
    tokens = [
        {"name": "backend", "token_hash": hash_token(TOKEN)},
        {"name": "reports", "token_hash": hash_token(OTHER_TOKEN)},
    ]
    return {"tokens": tokens, **extra}


@pytest.fixture
def api_client(aiohttp_client: Any) -> Maker:
    """A chatbot app with the API (and whatever other sections a test adds)."""

    async def make(*, api: dict[str, Any] | None = None, **sections: Any) -> TestClient:
        app = web.Application()
        setup(app, make_settings(api=api if api is not None else api_section(), **sections))
        return await aiohttp_client(app)

    return make


async def call(
    client: TestClient, method: str, path: str, *, auth: dict[str, str] | None = None, **kwargs: Any
) -> tuple[int, Any, aiohttp.ClientResponse]:
    """Status, JSON body and response of one API request (with the test token unless `auth`)."""
    headers = {**(AUTH if auth is None else auth), **kwargs.pop("headers", {})}
    async with client.request(method, f"/api/v1{path}", headers=headers, **kwargs) as response:
        assert response.content_type == "application/json", await response.text()
        return response.status, await response.json(), response


def error(body: Any) -> tuple[str, str]:
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return body["error"]["code"], body["error"]["message"]


async def open_chat(client: TestClient) -> tuple[aiohttp.ClientWebSocketResponse, str]:
    ws = await client.ws_connect("/ws")
    greeting = await receive_json(ws)
    return ws, greeting["conversation"]


async def receive_event(ws: aiohttp.ClientWebSocketResponse, event: str) -> dict[str, Any]:
    """Skip frames until a system frame with this event arrives."""
    while True:
        data = await receive_until(ws, "system")
        if data.get("event") == event:
            return data


# ------------------------------------------------------------------ auth and limits
async def test_without_tokens_the_api_is_not_routed(aiohttp_client: Any) -> None:
    app = web.Application()
    setup(app, make_settings())
    client = await aiohttp_client(app)
    response = await client.post("/api/v1/messages", json={"conversation": "x", "text": "hi"}, headers=AUTH)
    assert response.status == 404


async def test_a_missing_token_is_401_with_www_authenticate(api_client: Maker) -> None:
    client = await api_client()
    status, body, response = await call(client, "GET", "/conversations/abc/transcript", auth={})
    assert status == 401 and error(body)[0] == "unauthorized"
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="chatbot_server"'


@pytest.mark.parametrize(
    "header",
    [
        f"Bearer {new_token()}",
        f"Bearer {TOKEN}x",
        f"Basic {TOKEN}",
        TOKEN,
        "Bearer",
        f"Bearer {TOKEN} extra",
        "Bearer " + "x" * 300,
    ],
)
async def test_a_wrong_or_malformed_token_is_401(api_client: Maker, header: str) -> None:
    client = await api_client()
    status, body, response = await call(client, "GET", "/conversations/abc/transcript", auth={"Authorization": header})
    assert status == 401 and error(body)[0] == "unauthorized"
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="chatbot_server", error="invalid_token"'


async def test_the_scheme_is_case_insensitive(api_client: Maker) -> None:
    client = await api_client()
    status, body, _ = await call(
        client, "GET", "/conversations/abc/transcript", auth={"Authorization": f"bearer {TOKEN}"}
    )
    assert status == 404 and error(body)[0] == "not_found"


async def test_each_token_is_rate_limited_on_its_own(api_client: Maker) -> None:
    client = await api_client(api=api_section(rate_per_minute=3))
    for _ in range(3):
        assert (await call(client, "GET", "/conversations/abc/transcript"))[0] == 404
    status, body, response = await call(client, "GET", "/conversations/abc/transcript")
    assert status == 429 and error(body)[0] == "rate_limited"
    assert response.headers["Retry-After"] == "20"  # 3 a minute: one every 20 s
    other = {"Authorization": f"Bearer {OTHER_TOKEN}"}
    assert (await call(client, "GET", "/conversations/abc/transcript", auth=other))[0] == 404


async def test_requests_without_a_valid_token_are_limited_per_address(api_client: Maker) -> None:
    client = await api_client(api=api_section(rate_per_minute=3))
    guess = {"Authorization": f"Bearer {new_token()}"}
    for _ in range(3):
        assert (await call(client, "GET", "/conversations/abc/transcript", auth=guess))[0] == 401
    status, body, response = await call(client, "GET", "/conversations/abc/transcript", auth=guess)
    assert status == 429 and error(body)[0] == "rate_limited" and response.headers["Retry-After"] == "20"
    # The guesses cost the address nothing it needs: a valid token from it still works.
    assert (await call(client, "GET", "/conversations/abc/transcript"))[0] == 404


def test_the_table_of_addresses_is_bounded() -> None:
    buckets = Buckets(60, limit=100)
    for n in range(1000):
        assert buckets.take(f"198.51.100.{n}")
    assert len(buckets) == 100
    assert buckets.take("198.51.100.999")  # the newest are kept: this one still has 59 tokens


async def test_the_log_names_the_token_never_shows_it(api_client: Maker, caplog: pytest.LogCaptureFixture) -> None:
    client = await api_client()
    caplog.set_level(logging.INFO, logger="chatbot_server.api")
    await call(client, "GET", "/conversations/abc/transcript")
    await call(client, "GET", "/conversations/abc/transcript", auth={"Authorization": f"Bearer {OTHER_TOKEN}x"})
    lines = [r.getMessage() for r in caplog.records if r.name == "chatbot_server.api"]
    assert any("token=backend endpoint=conversation_transcript status=404" in line for line in lines), lines
    assert any("auth=unknown" in line and "status=401" in line for line in lines), lines
    assert not any(TOKEN in line or OTHER_TOKEN in line or "abc" in line for line in lines), lines


async def test_unknown_paths_and_methods_answer_json(api_client: Maker) -> None:
    client = await api_client()
    status, body, _ = await call(client, "GET", "/nothing")
    assert status == 404 and error(body)[0] == "not_found"
    status, body, response = await call(client, "GET", "/messages")
    assert status == 405 and error(body)[0] == "method_not_allowed"
    assert response.headers["Allow"] == "POST"


async def test_metrics_count_requests_by_endpoint_and_status(api_client: Maker) -> None:
    client = await api_client()
    await call(client, "GET", "/conversations/abc/transcript")
    await call(client, "POST", "/broadcast", json={"text": "通知"})
    metrics = await (await client.get("/metrics")).text()
    assert 'chatbot_api_requests_total{endpoint="conversation_transcript",status="404"} 1.0' in metrics
    assert 'chatbot_api_requests_total{endpoint="broadcast",status="202"} 1.0' in metrics


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("kwargs", "status", "code", "field"),
    [
        ({"data": b'{"text": "x"', "headers": {"Content-Type": "application/json"}}, 400, "bad_json", ""),
        ({"data": b'{"text": "x"}', "headers": {"Content-Type": "text/plain"}}, 415, "unsupported_media_type", ""),
        (
            {"data": b"text=x", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
            415,
            "unsupported_media_type",
            "",
        ),
        ({"json": ["not", "an", "object"]}, 400, "bad_request", ""),
        ({"json": {"conversation": "abc"}}, 400, "bad_request", "text"),
        ({"json": {"conversation": "abc", "text": "   "}}, 400, "bad_request", "text"),
        ({"json": {"conversation": "abc", "text": 5}}, 400, "bad_request", "text"),
        ({"json": {"conversation": "abc", "text": "长" * 2001}}, 400, "bad_request", "text"),
        ({"json": {"conversation": "abc", "text": "hi", "txt": "typo"}}, 400, "bad_request", "txt"),
        ({"json": {"text": "hi"}}, 400, "bad_request", "customer"),
        ({"json": {"conversation": "abc", "customer": "c1", "text": "hi"}}, 400, "bad_request", "customer"),
        ({"json": {"conversation": "x" * 129, "text": "hi"}}, 400, "bad_request", "conversation"),
        ({"json": {"customer": 7, "text": "hi"}}, 400, "bad_request", "customer"),
        ({"json": {"conversation": "abc", "text": "hi", "sender": "名" * 33}}, 400, "bad_request", "sender"),
        ({"json": {"conversation": "abc", "text": "x" * 40_000}}, 413, "too_large", ""),
    ],
)
async def test_bad_message_bodies_are_refused(
    api_client: Maker, kwargs: dict[str, Any], status: int, code: str, field: str
) -> None:
    client = await api_client()
    got, body, _ = await call(client, "POST", "/messages", **kwargs)
    assert (got, error(body)[0]) == (status, code)
    if field:
        assert error(body)[1].startswith(f"{field}: "), body


async def test_a_2000_character_text_is_accepted(api_client: Maker) -> None:
    client = await api_client()
    ws, conversation = await open_chat(client)
    status, _, _ = await call(client, "POST", "/messages", json={"conversation": conversation, "text": "长" * 2000})
    assert status == 202
    assert (await receive_until(ws, "reply"))["msg"] == "长" * 2000
    await ws.close()


@pytest.mark.parametrize("path", ["/conversations/nope/transcript", "/customers/nobody/transcript"])
async def test_unknown_conversations_and_customers_are_404(api_client: Maker, path: str) -> None:
    client = await api_client(agents=agent_section())
    assert error((await call(client, "GET", path))[1])[0] == "not_found"
    assert error((await call(client, "POST", path.replace("transcript", "handoff")))[1])[0] == "not_found"
    target = {"conversation": "nope"} if "conversations" in path else {"customer": "nobody"}
    status, body, _ = await call(client, "POST", "/messages", json={**target, "text": "hi"})
    assert status == 404 and error(body)[0] == "not_found"


# ------------------------------------------------------------------ messages
async def test_a_message_reaches_the_open_chat_socket_masked(api_client: Maker) -> None:
    client = await api_client()
    ws, conversation = await open_chat(client)
    text = f"您的卡 {CARD} 已寄出"
    status, body, _ = await call(client, "POST", "/messages", json={"conversation": conversation, "text": text})
    assert status == 202
    assert body == {"conversation": conversation, "id": body["id"], "delivered": True, "live": True}
    shown = await receive_until(ws, "reply")
    assert shown["msg"] == f"您的卡 {MASKED} 已寄出" and CARD not in str(shown)
    assert (shown["source"], shown["talk"], shown["id"], shown["seq"]) == ("api", True, body["id"], 2)
    # With a sender: an agent frame, whose name the page shows.
    await call(client, "POST", "/messages", json={"conversation": conversation, "text": "您好", "sender": "信用卡中心"})
    named = await receive_until(ws, "agent")
    assert (named["msg"], named["agent"], named["source"]) == ("您好", "信用卡中心", "api")
    stored = await client.app[STORE_KEY].transcript(conversation)
    assert [f["msg"] for f in stored[1:]] == [f"您的卡 {MASKED} 已寄出", "您好"]
    await ws.close()


async def test_a_message_to_a_customer_who_left_is_stored_for_the_next_visit(api_client: Maker) -> None:
    client = await api_client()
    ws, conversation = await open_chat(client)
    await client.app[CUSTOMERS_KEY].bind(Customer("c-1001", "张三"), conversation)
    await ws.close()
    store = client.app[STORE_KEY]
    await until(lambda: not store.owns(conversation), "the closed socket to let go of its conversation")
    status, body, _ = await call(client, "POST", "/messages", json={"customer": "c-1001", "text": "您的账单已出"})
    assert status == 202 and body["live"] is False and body["conversation"] == conversation
    async with client.ws_connect(f"/ws?conversation={conversation}&last_seq=1") as again:
        assert (await receive_json(again))["msg"] == "您的账单已出"


# ------------------------------------------------------------------ transcripts
async def test_transcripts_by_conversation_and_by_customer_are_masked(api_client: Maker) -> None:
    client = await api_client()
    ws, conversation = await open_chat(client)
    await ws.send_json({"type": "message", "text": "查询余额", "id": "m1"})
    await receive_until(ws, "reply")
    await ws.close()
    store = client.app[STORE_KEY]
    await until(lambda: not store.owns(conversation), "the closed socket to let go of its conversation")
    # A frame stored unmasked (an older version, another writer): masked on the way out anyway.
    await store.append_if_unowned(conversation, {"type": "user", "msg": f"卡号 {CARD}", "talk": True, "ts": 1})
    await client.app[CUSTOMERS_KEY].bind(Customer("c-7", "李四"), conversation)
    status, body, _ = await call(client, "GET", f"/conversations/{conversation}/transcript")
    assert status == 200
    assert body["conversation"] == conversation and body["customer"] == {"id": "c-7", "name": "李四"}
    assert [(f["type"], f["seq"]) for f in body["frames"]] == [("greeting", 1), ("user", 2), ("reply", 3), ("user", 4)]
    assert body["frames"][-1]["msg"] == f"卡号 {MASKED}"
    by_customer = await call(client, "GET", "/customers/c-7/transcript")
    assert by_customer[0] == 200 and by_customer[1] == body
    # A customer id with a slash, percent-encoded in the path.
    await client.app[CUSTOMERS_KEY].bind(Customer("bank/c-7", "李四"), conversation)
    slashed = await call(client, "GET", "/customers/bank%2Fc-7/transcript")
    assert slashed[0] == 200 and slashed[1]["customer"] == {"id": "bank/c-7", "name": "李四"}


async def test_an_anonymous_conversation_has_no_customer(api_client: Maker) -> None:
    client = await api_client()
    ws, conversation = await open_chat(client)
    status, body, _ = await call(client, "GET", f"/conversations/{conversation}/transcript")
    assert status == 200 and body["customer"] is None and body["frames"][0]["type"] == "greeting"
    await ws.close()


# ------------------------------------------------------------------ broadcast
async def test_a_broadcast_reaches_every_chat_socket(api_client: Maker) -> None:
    client = await api_client()
    first, _ = await open_chat(client)
    second, _ = await open_chat(client)
    status, body, _ = await call(client, "POST", "/broadcast", json={"text": "系统将于今晚 22:00 维护"})
    assert (status, body) == (202, {"group": "users", "sent": True})
    for ws in (first, second):
        notice = await receive_until(ws, "system")
        assert (notice["event"], notice["msg"]) == ("broadcast", "系统将于今晚 22:00 维护")
        await ws.close()


async def test_a_broadcast_to_one_conversation_group(api_client: Maker) -> None:
    client = await api_client()
    ws, conversation = await open_chat(client)
    status, _, _ = await call(client, "POST", "/broadcast", json={"text": "仅您可见", "group": f"conv.{conversation}"})
    assert status == 202 and (await receive_until(ws, "system"))["msg"] == "仅您可见"
    await ws.close()


@pytest.mark.parametrize("group", ["agents", "agents.sessions", "watch.abc", "has space", "", 7, "x" * 100])
async def test_a_broadcast_to_a_bad_group_is_refused(api_client: Maker, group: object) -> None:
    client = await api_client()
    status, body, _ = await call(client, "POST", "/broadcast", json={"text": "hi", "group": group})
    assert status == 400 and error(body)[1].startswith("group: ")


# ------------------------------------------------------------------ handoff
async def test_handoff_without_agents_is_503(api_client: Maker) -> None:
    client = await api_client()
    ws, conversation = await open_chat(client)
    status, body, _ = await call(client, "POST", f"/conversations/{conversation}/handoff")
    assert status == 503 and error(body)[0] == "handoff_unavailable"
    await ws.close()


async def test_handoff_of_a_connected_customer_queues_them(api_client: Maker) -> None:
    client = await api_client(agents=agent_section())
    ws, conversation = await open_chat(client)
    await client.app[CUSTOMERS_KEY].bind(Customer("c-9", "王五"), conversation)
    status, body, _ = await call(client, "POST", "/customers/c-9/handoff")
    assert (status, body) == (202, {"conversation": conversation, "status": "requested"})
    assert (await receive_event(ws, "queued"))["queue_position"] == 1
    assert await client.app[QUEUE_KEY].position(conversation) == 1
    # Asked again while waiting: nothing is sent to the customer, the answer says where they are.
    status, body, _ = await call(client, "POST", f"/conversations/{conversation}/handoff", json={})
    assert (status, body) == (200, {"conversation": conversation, "status": "queued", "queue_position": 1})
    # Once an agent has it: nothing to hand off.
    assert await client.app[QUEUE_KEY].claim(conversation, "li")
    status, body, _ = await call(client, "POST", f"/conversations/{conversation}/handoff")
    assert status == 409 and error(body)[0] == "with_agent"
    await ws.close()


async def test_handoff_of_a_customer_who_is_not_connected_is_409(api_client: Maker) -> None:
    client = await api_client(agents=agent_section())
    ws, conversation = await open_chat(client)
    await ws.close()
    store = client.app[STORE_KEY]
    await until(lambda: not store.owns(conversation), "the closed socket to let go of its conversation")
    status, body, _ = await call(client, "POST", f"/conversations/{conversation}/handoff")
    assert status == 409 and error(body)[0] == "not_connected"
    assert await client.app[QUEUE_KEY].position(conversation) is None


async def test_handoff_takes_no_fields(api_client: Maker) -> None:
    client = await api_client(agents=agent_section())
    status, body, _ = await call(client, "POST", "/conversations/abc/handoff", json={"reason": "x"})
    assert status == 400 and error(body)[1].startswith("reason: ")


# ------------------------------------------------------------------ Redis: two processes, outage
async def redis_client(aiohttp_client: Any, url: str, prefix: str) -> TestClient:
    app = web.Application()
    redis = {"url": url, "prefix": prefix, "connect_timeout": 1.0}
    setup(app, make_settings(layer={"backend": "redis", "redis": redis}, agents=agent_section(), api=api_section()))
    return await aiohttp_client(app)


async def test_message_transcript_and_handoff_across_two_processes(aiohttp_client: Any, redis_server: str) -> None:
    prefix = unique_prefix()
    one = await redis_client(aiohttp_client, redis_server, prefix)  # the customer's socket
    two = await redis_client(aiohttp_client, redis_server, prefix)  # the API calls
    ws, conversation = await open_chat(one)
    await one.app[CUSTOMERS_KEY].bind(Customer("c-42", "赵六"), conversation)
    status, body, _ = await call(two, "POST", "/messages", json={"customer": "c-42", "text": f"卡 {CARD} 已激活"})
    assert status == 202 and body["live"] is True
    assert (await receive_until(ws, "reply"))["msg"] == f"卡 {MASKED} 已激活"

    # The customer leaves: no handoff, and a message waits in the store for their return.
    await ws.close()

    async def let_go() -> bool:
        return not await two.app[STORE_KEY].has_owner(conversation)

    await until(let_go, "process one to let go of the conversation (its owner key deleted)")
    status, body, _ = await call(two, "POST", "/customers/c-42/handoff")
    assert status == 409 and error(body)[0] == "not_connected"
    status, body, _ = await call(two, "POST", "/messages", json={"conversation": conversation, "text": "稍后联系您"})
    assert status == 202 and body["live"] is False

    # Back on process one: the message is replayed, and a handoff asked on process two queues them.
    async with one.ws_connect(f"/ws?conversation={conversation}&last_seq=2") as again:
        assert (await receive_json(again))["msg"] == "稍后联系您"
        await receive_event(again, "resumed")
        status, body, _ = await call(two, "POST", "/customers/c-42/handoff")
        assert (status, body) == (202, {"conversation": conversation, "status": "requested"})
        assert (await receive_event(again, "queued"))["queue_position"] == 1
        assert await two.app[QUEUE_KEY].position(conversation) == 1

        await one.app[STORE_KEY].flush()
        status, body, _ = await call(two, "GET", "/customers/c-42/transcript")
        assert status == 200 and body["customer"] == {"id": "c-42", "name": "赵六"}
        assert [f["type"] for f in body["frames"]] == ["greeting", "reply", "reply", "system"]
        assert [f["msg"] for f in body["frames"][1:3]] == [f"卡 {MASKED} 已激活", "稍后联系您"]


async def test_a_store_outage_is_503_store_unavailable(aiohttp_client: Any, redis_process: RedisProcess) -> None:
    client = await redis_client(aiohttp_client, redis_process.url, unique_prefix())
    redis_process.kill()
    status, body, _ = await call(client, "GET", "/conversations/abc/transcript")
    assert status == 503 and error(body)[0] == "store_unavailable"
    status, body, _ = await call(client, "POST", "/conversations/abc/handoff")
    assert status == 503 and error(body)[0] == "handoff_unavailable"


# ------------------------------------------------------------------ mounting, the tokens CLI
async def test_the_api_follows_the_chatbots_prefix(aiohttp_client: Any) -> None:
    app = web.Application()
    setup(app, make_settings(api=api_section()), prefix="/support")
    client = await aiohttp_client(app)
    response = await client.get("/support/api/v1/conversations/abc/transcript", headers=AUTH)
    assert response.status == 404 and error(await response.json())[0] == "not_found"
    assert (await client.get("/api/v1/conversations/abc/transcript", headers=AUTH)).status == 404


def test_the_tokens_cli_prints_a_token_and_its_config_entry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--name", "crm"]) == 0
    lines = capsys.readouterr().out.splitlines()
    token = lines[1]
    assert token.startswith("cbs_") and len(token) == 47
    entry = yaml.safe_load("\n".join(lines[3:]))
    assert entry == {"api": {"tokens": [{"name": "crm", "token_hash": hash_token(token)}]}}
    assert make_settings(**entry).api.tokens[0].token_hash == hash_token(token)
    assert main(["--name", "two words"]) == 1


async def test_a_token_made_by_the_cli_opens_the_api(aiohttp_client: Any) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chatbot_server.api.tokens", "--name", "crm", stdout=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(30):
        out, _ = await proc.communicate()
    assert proc.returncode == 0
    lines = out.decode().splitlines()
    app = web.Application()
    setup(app, make_settings(**yaml.safe_load("\n".join(lines[3:]))))
    client = await aiohttp_client(app)
    headers = {"Authorization": f"Bearer {lines[1]}"}
    status, _, _ = await call(client, "POST", "/broadcast", auth=headers, json={"text": "hi"})
    assert status == 202
