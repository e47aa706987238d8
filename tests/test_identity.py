"""Verified customers (#17): host-signed identity tokens, resume by identity, required mode, agents' view."""

from __future__ import annotations

import base64
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from chatbot_server import setup
from chatbot_server.errors import ConfigError
from chatbot_server.identity import IdentityError, sign_identity, verify_identity
from chatbot_server.keys import CUSTOMERS_KEY
from chatbot_server.sockets.codes import CLOSE_IDENTITY

from .agent_support import AgentSocket, HandoffBot, agent_section, apps_of
from .helpers import make_settings, receive_close, receive_json, receive_until

pytestmark = pytest.mark.timeout(30)

SECRET = "s" * 40
DAY = 86400.0


# ------------------------------------------------------------------ the token
def test_a_signed_token_names_its_customer() -> None:
    token = sign_identity(SECRET, "cust-1", name="张三", ttl=600)
    customer = verify_identity(token, SECRET, max_ttl=DAY)
    assert (customer.id, customer.name) == ("cust-1", "张三")


def _resign(payload: dict[str, Any], secret: str = SECRET) -> str:
    """A token with any payload, signed properly: what a host bug could send."""
    import hashlib
    import hmac

    body = base64.urlsafe_b64encode(orjson.dumps(payload)).rstrip(b"=").decode()
    sig = hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest()
    return f"{body}.{base64.urlsafe_b64encode(sig).rstrip(b'=').decode()}"


def _tampered(token: str) -> str:
    body, sig = token.split(".")
    claims = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["sub"] = "someone-else"
    forged = base64.urlsafe_b64encode(orjson.dumps(claims)).rstrip(b"=").decode()
    return f"{forged}.{sig}"


@pytest.mark.parametrize(
    ("token", "code"),
    [
        (lambda: sign_identity("another secret of forty characters......", "cust-1"), "identity_bad_signature"),
        (lambda: _tampered(sign_identity(SECRET, "cust-1")), "identity_bad_signature"),
        (lambda: sign_identity(SECRET, "cust-1", ttl=-120), "identity_expired"),
        (lambda: sign_identity(SECRET, "cust-1", ttl=2 * DAY), "identity_malformed"),  # beyond max_token_ttl
        (lambda: "no-dot-at-all", "identity_malformed"),
        (lambda: "a.b.c", "identity_malformed"),
        (lambda: "x" * 2000 + ".y", "identity_malformed"),
        (lambda: "payload.!!!not-base64!!!", "identity_malformed"),
        (lambda: "支付.签名", "identity_malformed"),
        (lambda: "支付.YWJj", "identity_bad_signature"),  # a non-ASCII payload is never signed
        (lambda: _resign({"name": "x", "exp": time.time() + 60}), "identity_malformed"),  # no sub
        (lambda: _resign({"sub": "", "exp": time.time() + 60}), "identity_malformed"),
        (lambda: _resign({"sub": "x" * 129, "exp": time.time() + 60}), "identity_malformed"),
        (lambda: _resign({"sub": "c", "name": 5, "exp": time.time() + 60}), "identity_malformed"),
        (lambda: _resign({"sub": "c", "exp": True}), "identity_malformed"),
        (lambda: _resign({"sub": "c"}), "identity_malformed"),  # no expiry: tokens must expire
        (lambda: _resign(["c"]), "identity_malformed"),  # type: ignore[arg-type]
    ],
)
def test_bad_tokens_are_refused_with_the_reason(token: Callable[[], str], code: str) -> None:
    with pytest.raises(IdentityError) as caught:
        verify_identity(token(), SECRET, max_ttl=DAY)
    assert caught.value.code == code


def test_clock_skew_of_a_few_seconds_is_forgiven() -> None:
    token = sign_identity(SECRET, "cust-1", ttl=-10)  # the host's clock is 10 s ahead of ours
    assert verify_identity(token, SECRET, max_ttl=DAY).id == "cust-1"


def test_identity_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"identity\.secret"):
        make_settings(identity={"secret": "short"})
    with pytest.raises(ConfigError, match=r"identity\.required"):
        make_settings(identity={"required": True})
    assert make_settings(identity={"secret": SECRET, "required": True}).identity.required


# ------------------------------------------------------------------ the socket
Apps = Callable[..., Awaitable[tuple[TestClient, TestClient]]]


@pytest.fixture(params=["memory", "redis"])
def apps(request: pytest.FixtureRequest, aiohttp_client: Any) -> Apps:
    """Two servers of one deployment (memory: one server twice) with identity verification."""

    async def make(*, required: bool = False, agents: bool = False) -> tuple[TestClient, TestClient]:
        sections: dict[str, Any] = {
            "bot": {"name": "echo"},
            "identity": {"secret": SECRET, "required": required},
            "history": {"takeover_timeout": 0.5},
        }
        bot = HandoffBot() if agents else None
        if agents:
            sections["agents"] = agent_section()
        return await apps_of(request, aiohttp_client, sections, bot=bot)

    return make


def token_for(customer: str, name: str = "") -> str:
    return sign_identity(SECRET, customer, name=name)


async def chat_once(ws: aiohttp.ClientWebSocketResponse, text: str, mid: str) -> list[dict[str, Any]]:
    """Send one message; its echo and the bot's answer."""
    await ws.send_json({"type": "message", "text": text, "id": mid})
    return [await receive_until(ws, "user"), await receive_until(ws, "reply")]


async def test_a_verified_customer_resumes_their_conversation_on_another_device(apps: Apps) -> None:
    one, two = await apps()
    phone = await one.ws_connect(f"/ws?identity={token_for('cust-1', '张三')}")
    greeting = await receive_json(phone)
    conversation = greeting["conversation"]
    said = await chat_once(phone, "我的卡丢了", "m1")
    await phone.close()

    # Another browser: no conversation id of its own, only the customer's token.
    laptop = await two.ws_connect(f"/ws?identity={token_for('cust-1', '张三')}")
    replay = [await receive_json(laptop) for _ in range(3)]
    resumed = await receive_json(laptop)
    assert resumed["event"] == "resumed" and resumed["conversation"] == conversation
    assert [f["msg"] for f in replay] == [greeting["msg"], "我的卡丢了", said[1]["msg"]]
    await laptop.close()


async def test_a_conversation_id_alone_does_not_open_a_customers_history(apps: Apps) -> None:
    one, two = await apps()
    ws = await one.ws_connect(f"/ws?identity={token_for('cust-1')}")
    conversation = (await receive_json(ws))["conversation"]
    await chat_once(ws, "我的余额是多少", "m1")
    await ws.close()

    for client, query in ((two, ""), (one, f"&identity={token_for('cust-2')}")):
        intruder = await client.ws_connect(f"/ws?conversation={conversation}&last_seq=0{query}")
        refused = await receive_json(intruder)
        assert (refused["type"], refused["code"]) == ("error", "conversation_refused")
        greeting = await receive_json(intruder)
        assert greeting["type"] == "greeting" and greeting["conversation"] != conversation
        # A resume frame on the open socket is refused the same way.
        await intruder.send_json({"type": "resume", "conversation": conversation, "last_seq": 0})
        assert (await receive_json(intruder))["code"] == "conversation_refused"
        await intruder.send_json({"type": "message", "text": "hi", "id": "x"})
        assert (await receive_until(intruder, "user"))["seq"] == 2  # still in its own conversation
        await intruder.close()


async def test_a_visitor_who_signs_in_mid_chat_keeps_the_conversation(apps: Apps) -> None:
    one, two = await apps()
    ws = await one.ws_connect("/ws")
    conversation = (await receive_json(ws))["conversation"]
    await chat_once(ws, "信用卡怎么提额", "m1")
    await ws.close()

    # The host page signed them in: the page reconnects with the token and its conversation.
    ws = await two.ws_connect(f"/ws?conversation={conversation}&last_seq=3&identity={token_for('cust-9')}")
    assert (await receive_json(ws))["event"] == "resumed"
    await ws.close()
    # ... and from now on it is theirs, on any device.
    ws = await one.ws_connect(f"/ws?identity={token_for('cust-9')}")
    replay = [await receive_json(ws) for _ in range(3)]
    assert replay[1]["msg"] == "信用卡怎么提额"
    assert (await receive_json(ws))["conversation"] == conversation
    await ws.close()


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("", "identity_required"),
        ("?identity=", "identity_required"),
        (f"?identity={sign_identity('another secret of forty characters......', 'cust-1')}", "identity_bad_signature"),
        (f"?identity={sign_identity(SECRET, 'cust-1', ttl=-300)}", "identity_expired"),
        ("?identity=garbage", "identity_malformed"),
    ],
)
async def test_required_identity_refuses_before_anything_is_created(apps: Apps, query: str, code: str) -> None:
    one, _ = await apps(required=True)
    ws = await one.ws_connect(f"/ws{query}")
    refused = await receive_json(ws)  # the first frame: no greeting, no conversation
    assert (refused["type"], refused["code"]) == ("error", code)
    assert "请" in refused["msg"]  # a polite sentence for the page
    closed = await receive_close(ws)
    assert closed.data == CLOSE_IDENTITY


async def test_required_identity_refuses_reading_history_by_conversation_id(apps: Apps) -> None:
    one, two = await apps(required=True)
    ws = await one.ws_connect(f"/ws?identity={token_for('cust-1')}")
    conversation = (await receive_json(ws))["conversation"]
    await chat_once(ws, "转账没到账", "m1")
    await ws.close()
    ws = await two.ws_connect(f"/ws?conversation={conversation}&last_seq=0")
    assert (await receive_json(ws))["code"] == "identity_required"
    assert (await receive_close(ws)).data == CLOSE_IDENTITY


async def test_card_numbers_used_as_customer_ids_are_masked(apps: Apps) -> None:
    one, _ = await apps()
    ws = await one.ws_connect(f"/ws?identity={token_for('6222021234567890128', '张三')}")
    conversation = (await receive_json(ws))["conversation"]
    customer = await one.app[CUSTOMERS_KEY].customer_of(conversation)
    assert customer is not None and "6222021234567890128" not in customer.id and customer.name == "张三"
    await ws.close()


async def test_without_a_secret_tokens_are_ignored_and_nothing_is_looked_up(aiohttp_client: Any) -> None:
    app = web.Application()
    setup(app, make_settings(bot={"name": "echo"}))
    client = await aiohttp_client(app)
    ws = await client.ws_connect(f"/ws?identity={token_for('cust-1')}")
    greeting = await receive_json(ws)
    assert greeting["type"] == "greeting"
    assert await client.app[CUSTOMERS_KEY].customer_of(greeting["conversation"]) is None
    await ws.close()


async def test_agents_see_the_verified_id_and_name(apps: Apps) -> None:
    one, two = await apps(agents=True)
    ws = await one.ws_connect(f"/ws?identity={token_for('cust-7', '李四')}")
    conversation = (await receive_json(ws))["conversation"]
    await ws.send_json({"type": "message", "text": "我要转人工", "id": "m1"})
    await receive_until(ws, "system")  # queued
    li = await AgentSocket.open(two, "li")
    try:
        await li.send(type="claim", conversation=conversation)
        # Two copies, in either order: the store's and the holding process's; each names the customer.
        for _ in range(2):
            transcript = await li.next("transcript")
            assert transcript["customer"] == {"id": "cust-7", "name": "李四"}
    finally:
        await li.close()
        await ws.close()


async def test_an_anonymous_conversation_shows_no_customer_to_agents(apps: Apps) -> None:
    one, two = await apps(agents=True)
    ws = await one.ws_connect("/ws")
    conversation = (await receive_json(ws))["conversation"]
    await ws.send_json({"type": "message", "text": "我要转人工", "id": "m1"})
    await receive_until(ws, "system")
    li = await AgentSocket.open(two, "li")
    try:
        await li.send(type="claim", conversation=conversation)
        assert "customer" not in await li.next("transcript")
    finally:
        await li.close()
        await ws.close()
