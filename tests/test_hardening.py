"""Limits and abuse: rate limit, per-IP limit, proxies, slow readers, privacy masking, metrics, logs."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import socket
from typing import Any

import aiohttp
import pytest
from aiohttp import WSCloseCode, web
from aiohttp.test_utils import TestClient, make_mocked_request

from chatbot_server import Bot, Reply, Turn, setup
from chatbot_server.keys import CONNECTIONS_KEY, LAYER_KEY
from chatbot_server.ops.logs import JsonFormatter

from .helpers import make_settings, receive_close, receive_json

CARD = "6212345678901232"


async def make_client(aiohttp_client: Any, **sections: Any) -> TestClient:
    app = web.Application()
    setup(app, make_settings(**sections))
    return await aiohttp_client(app)


async def test_rate_limit_gives_error_frames_then_1008(aiohttp_client: Any) -> None:
    client = await make_client(aiohttp_client, limits={"rate_per_second": 0.01, "rate_burst": 2, "abuse_strikes": 3})
    async with client.ws_connect("/ws") as ws:
        await receive_json(ws)
        for n in range(2):
            await ws.send_json({"text": f"q{n}"})
            assert (await receive_json(ws))["type"] == "reply"
        for _ in range(3):
            await ws.send_json({"text": "too fast"})
            error = await receive_json(ws)
            assert error["code"] == "rate_limited"
        await receive_close(ws)
        assert ws.close_code == WSCloseCode.POLICY_VIOLATION


async def test_per_ip_connection_limit(aiohttp_client: Any) -> None:
    # The test client is on loopback, which is never limited: it speaks through a trusted proxy.
    client = await make_client(
        aiohttp_client, server={"trusted_proxies": ["127.0.0.1"]}, limits={"max_connections_per_ip": 2}
    )
    headers = {"X-Forwarded-For": "198.51.100.7"}
    async with client.ws_connect("/ws", headers=headers) as a, client.ws_connect("/ws", headers=headers) as b:
        await receive_json(a)
        await receive_json(b)
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect("/ws", headers=headers)
        assert refused.value.status == 429
        async with client.ws_connect("/ws", headers={"X-Forwarded-For": "198.51.100.8"}) as other:
            assert (await receive_json(other))["type"] == "greeting"  # other addresses are fine
        async with client.ws_connect("/ws") as direct:
            assert (await receive_json(direct))["type"] == "greeting"  # loopback itself is not limited
    async with asyncio.timeout(5):
        await client.app[CONNECTIONS_KEY].wait_until(0)
    async with client.ws_connect("/ws", headers=headers) as c:  # released on close
        assert (await receive_json(c))["type"] == "greeting"


async def test_forwarded_for_counts_only_behind_trusted_proxies(aiohttp_client: Any) -> None:
    trusted = await make_client(
        aiohttp_client, server={"trusted_proxies": ["127.0.0.1"]}, limits={"max_connections_per_ip": 1}
    )
    async with (
        trusted.ws_connect("/ws", headers={"X-Forwarded-For": "203.0.113.1"}) as a,
        trusted.ws_connect("/ws", headers={"X-Forwarded-For": "203.0.113.2"}) as b,
    ):
        await receive_json(a)
        await receive_json(b)  # two clients behind the proxy, one socket each
    # From an untrusted peer the header is ignored: the per-IP count is the peer's own address.
    from chatbot_server.sockets.ratelimit import client_ip

    class Peer:
        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return ("198.51.100.9", 40000) if name == "peername" else default

    request = make_mocked_request("GET", "/ws", headers={"X-Forwarded-For": "203.0.113.1"}, transport=Peer())
    assert client_ip(request, ["10.0.0.1"]) == "198.51.100.9"  # spoofed header from an untrusted peer
    assert client_ip(request, ["198.51.100.9"]) == "203.0.113.1"  # the same header via a trusted proxy


async def test_forwarded_host_counts_only_from_trusted_proxies(aiohttp_client: Any) -> None:
    headers = {"Origin": "https://bank.example", "X-Forwarded-Host": "bank.example"}
    untrusted = await make_client(aiohttp_client)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await untrusted.ws_connect("/ws", headers=headers)
    assert refused.value.status == 403
    trusted = await make_client(aiohttp_client, server={"trusted_proxies": ["127.0.0.1"]})
    async with trusted.ws_connect("/ws", headers=headers) as ws:
        assert (await receive_json(ws))["type"] == "greeting"


async def test_a_client_that_stops_reading_is_dropped_with_4001(aiohttp_client: Any) -> None:
    # No heartbeat: the test's good client only answers pings while it awaits a frame.
    client = await make_client(aiohttp_client, limits={"send_timeout": 0.5, "heartbeat": 0})
    registry = client.app[CONNECTIONS_KEY]
    # A raw socket that completes the handshake and then never reads again.
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect((client.host, client.port))
    key = base64.b64encode(os.urandom(16)).decode()
    raw.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: {client.host}:{client.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    async with asyncio.timeout(5):
        await registry_has(registry, 1)
    async with client.ws_connect("/ws") as good:
        await receive_json(good)
        big = "通知" * 4000
        layer = client.app[LAYER_KEY]
        async with asyncio.timeout(20):
            while registry.stats.errors["slow_reader"] == 0:
                await layer.group_send("users", {"type": "chat.broadcast", "text": big})
                # The well-behaved client reads its copy, so only the raw socket falls behind.
                assert (await receive_json(good))["event"] == "broadcast"
        await registry.wait_until(1)
        await good.send_json({"text": "我还在"})
        assert (await receive_json(good))["msg"] == "我正在思考你的问题{我还在}"
    # The dropped socket got the 4001 close frame (if its buffer had room) and then a reset.
    raw.settimeout(5)
    received = b""
    try:
        while chunk := raw.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    finally:
        raw.close()
    assert received.startswith(b"HTTP/1.1 101")


async def registry_has(registry: Any, count: int) -> None:
    await registry.wait_until(count)


async def test_card_numbers_are_masked_and_warned_once(aiohttp_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client = await make_client(aiohttp_client)
    async with client.ws_connect("/ws") as ws:
        await receive_json(ws)
        await ws.send_json({"type": "message", "text": f"卡号{CARD}丢了", "id": "c1"})
        echo = await receive_json(ws)
        warning = await receive_json(ws)
        reply = await receive_json(ws)
        await ws.send_json({"type": "message", "text": f"还是{CARD}", "id": "c2"})
        second = [await receive_json(ws) for _ in range(2)]
    assert echo["msg"] == "卡号************1232丢了"
    assert warning["type"] == "system" and warning["event"] == "masked"
    assert CARD not in reply["msg"] and "1232" in reply["msg"]
    assert [f["type"] for f in second] == ["user", "reply"]  # warned once only
    assert CARD not in caplog.text


async def test_message_text_never_reaches_the_logs(aiohttp_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="chatbot_server")
    client = await make_client(aiohttp_client)
    async with client.ws_connect("/ws") as ws:
        await receive_json(ws)
        await ws.send_json({"text": "我的秘密问题ZXQ"})
        await receive_json(ws)
    assert "ZXQ" not in caplog.text
    assert "ws.message" in caplog.text  # the event itself is logged (DEBUG), with its size


def test_json_log_lines_parse() -> None:
    record = logging.LogRecord(
        "chatbot_server.chat.consumer", logging.INFO, __file__, 1, "ws.connect conn=%s", ("abc",), None
    )
    line = JsonFormatter().format(record)
    data = json.loads(line)
    assert data["msg"] == "ws.connect conn=abc" and data["level"] == "INFO" and data["ts"].endswith("Z")


async def test_metrics_in_prometheus_format(aiohttp_client: Any) -> None:
    client = await make_client(aiohttp_client)
    async with client.ws_connect("/ws") as ws:
        await receive_json(ws)
        await ws.send_json({"text": "hi"})
        await receive_json(ws)
        await ws.send_str("not json")
        await receive_json(ws)
        response = await client.get("/metrics")
        text = await response.text()
    assert response.status == 200 and response.content_type == "text/plain"
    assert "chatbot_open_sockets 1.0" in text
    assert "chatbot_messages_in_total 2.0" in text
    assert 'chatbot_errors_total{code="bad_json"} 1.0' in text
    assert "chatbot_bot_answer_seconds_count 1.0" in text
    assert 'chatbot_layer_messages_total{backend="memory",op="delivered"}' in text


async def next_non_text(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5) -> aiohttp.WSMessage:
    """The next control message (ping, pong, close) a client with autoping=False receives."""
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            if msg.type is not aiohttp.WSMsgType.TEXT:
                return msg


async def test_heartbeat_drops_a_peer_that_does_not_answer_pings(aiohttp_client: Any) -> None:
    client = await make_client(aiohttp_client, limits={"heartbeat": 0.2, "idle_timeout": 0})
    registry = client.app[CONNECTIONS_KEY]
    async with client.ws_connect("/ws", autoping=False) as ws:
        assert (await next_non_text(ws)).type is aiohttp.WSMsgType.PING  # quiet for 0.2 s: pinged
        end = await next_non_text(ws)  # never answered: the server resets the connection
        assert end.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE)
    async with asyncio.timeout(5):
        await registry_has(registry, 0)
    assert registry.stats.errors["no_pong"] == 1


async def test_heartbeat_keeps_a_peer_that_answers_and_answers_its_pings(aiohttp_client: Any) -> None:
    client = await make_client(aiohttp_client, limits={"heartbeat": 0.2, "idle_timeout": 0})
    async with client.ws_connect("/ws", autoping=False) as ws:
        for _ in range(3):  # three pings answered: 0.6 s, three times the pong deadline
            ping = await next_non_text(ws)
            assert ping.type is aiohttp.WSMsgType.PING
            await ws.pong(ping.data)
        await ws.ping(b"are you there")
        pong = await next_non_text(ws)
        assert pong.type is aiohttp.WSMsgType.PONG and pong.data == b"are you there"
        await ws.send_json({"text": "still here"})
        assert (await receive_json(ws))["type"] == "reply"
    assert client.app[CONNECTIONS_KEY].stats.errors["no_pong"] == 0


async def test_idle_sockets_are_closed_even_when_they_answer_pings(aiohttp_client: Any) -> None:
    client = await make_client(aiohttp_client, limits={"idle_timeout": 0.4, "heartbeat": 0.1})
    async with client.ws_connect("/ws") as ws:  # the client answers every ping while it waits
        await receive_json(ws)
        notice = await receive_json(ws)
        assert notice["type"] == "system" and notice["event"] == "closing"
        await receive_close(ws)
        assert ws.close_code == 4000


async def test_activity_keeps_a_socket_open(aiohttp_client: Any) -> None:
    client = await make_client(aiohttp_client, limits={"idle_timeout": 0.6})
    async with client.ws_connect("/ws") as ws:
        await receive_json(ws)
        for n in range(4):  # 4 × 0.25 s > idle_timeout, but never idle that long
            await asyncio.sleep(0.25)  # the passing of time is what is tested
            await ws.send_json({"text": f"still here {n}"})
            assert (await receive_json(ws))["type"] == "reply"


class _SlowBot(Bot):
    """Takes longer than the heartbeat's pong deadline (a model server, say)."""

    async def answer(self, turn: Turn) -> Reply:
        await asyncio.sleep(0.6)  # the slowness under test, not a synchronisation
        return Reply(text="想好了", intent="slow")


async def test_heartbeat_does_not_drop_a_client_while_its_answer_is_being_made(aiohttp_client: Any) -> None:
    # The client answers pings while it waits, but the server cannot read the pongs while the
    # handler runs: a busy socket is neither pinged nor dropped (regression: it was reset at 0.3 s).
    app = web.Application()
    setup(app, make_settings(limits={"heartbeat": 0.2, "idle_timeout": 0}, bot={"timeout": 5}), bot=_SlowBot())
    client = await aiohttp_client(app)
    async with client.ws_connect("/ws") as ws:
        await receive_json(ws)
        await ws.send_json({"text": "慢慢想"})
        assert (await receive_json(ws))["msg"] == "想好了"
    assert client.app[CONNECTIONS_KEY].stats.errors["no_pong"] == 0


def test_token_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    from chatbot_server.sockets.ratelimit import TokenBucket

    start = 1000.0
    bucket = TokenBucket(rate=2.0, burst=3, now=start)
    assert [bucket.take(start) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(start + 0.5) is True  # one token back after 1/rate seconds
    assert bucket.take(start + 0.5) is False
    assert [bucket.take(start + 100) for _ in range(4)] == [True, True, True, False]  # capped at burst


def test_reply_confidence_has_at_most_four_decimals() -> None:
    from chatbot_server.bots import Reply
    from chatbot_server.chat.consumer import reply_frame

    assert [reply_frame(Reply("x", "i", c))["confidence"] for c in (1, 0, 1 / 3, 0.12345, 0.5)] == [
        1.0,
        0.0,
        0.3333,
        0.1235,
        0.5,
    ]


@pytest.mark.parametrize("last_seq", ["²", "①", "9" * 5000, "-1", "1e3", "", str(2**53)])
async def test_a_bad_last_seq_is_an_error_frame_and_a_full_replay_not_a_crash(
    aiohttp_client: Any, caplog: pytest.LogCaptureFixture, last_seq: str
) -> None:
    # "²" and "①" pass str.isdigit() and then fail int(); 5,000 digits exceed int()'s limit: each
    # was a 1011 close and a traceback per request.
    client = await make_client(aiohttp_client)
    async with client.ws_connect("/ws") as first:
        conversation = (await receive_json(first))["conversation"]
    async with client.ws_connect("/ws", params={"conversation": conversation, "last_seq": last_seq}) as ws:
        error = await receive_json(ws)
        assert (error["type"], error["code"]) == ("error", "bad_frame")
        assert (await receive_json(ws))["type"] == "greeting"  # replayed from the start: nothing lost
        assert (await receive_json(ws))["event"] == "resumed"
        await ws.send_json({"text": "还在吗"})
        assert (await receive_json(ws))["type"] == "reply"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert client.app[CONNECTIONS_KEY].stats.errors["bad_frame"] == 1
