"""Mounting the chatbot into an existing aiohttp site that has its own routes, middleware, templates."""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
import jinja2
import pytest
from aiohttp import web

import chatbot_server
from chatbot_server.keys import LAYER_KEY

from .helpers import make_settings, receive_json


@web.middleware
async def host_header_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    response = await handler(request)
    response.headers["X-Host-Site"] = "yes"
    return response


@aiohttp_jinja2.template("index.html")
async def host_index(request: web.Request) -> dict[str, str]:
    return {"name": "<b>host</b>"}


async def host_ping(request: web.Request) -> web.Response:
    return web.json_response({"pong": True})


def host_app() -> web.Application:
    app = web.Application(middlewares=[host_header_middleware])
    aiohttp_jinja2.setup(app, loader=jinja2.DictLoader({"index.html": "Host page for {{ name }}"}))
    app.router.add_get("/", host_index)
    app.router.add_get("/api/ping", host_ping)
    return app


async def test_mounted_under_a_prefix_alongside_the_host(aiohttp_client: Any) -> None:
    app = host_app()
    layer = chatbot_server.setup(app, make_settings(), prefix="/support")
    client = await aiohttp_client(app)

    host = await client.get("/")
    assert host.status == 200 and await host.text() == "Host page for &lt;b&gt;host&lt;/b&gt;"  # the host env
    assert host.headers["X-Host-Site"] == "yes"
    assert (await (await client.get("/api/ping")).json()) == {"pong": True}

    page = await client.get("/support/")
    html = await page.text()
    assert page.status == 200 and "聊天记录" in html
    assert page.headers["X-Host-Site"] == "yes"  # the host's middleware wraps the chatbot too
    assert '"/support/ws"' in html and "/support/static/chat.js" in html
    assert (await client.get("/support/static/chat.css")).status == 200
    assert (await client.get("/support/healthz")).status == 200

    async with client.ws_connect("/support/ws") as ws:
        assert (await receive_json(ws))["msg"] == "您好,很高兴为您服务。"
        await ws.send_json({"text": "在吗"})
        assert (await receive_json(ws))["msg"] == "我正在思考你的问题{在吗}"
        # The host can broadcast through the layer setup() returned.
        assert app[LAYER_KEY] is layer
        await layer.group_send("users", {"type": "chat.broadcast", "text": "来自主站的通知"})
        assert (await receive_json(ws))["msg"] == "来自主站的通知"


async def test_mounted_at_the_root_of_a_fresh_app(aiohttp_client: Any) -> None:
    app = web.Application()
    chatbot_server.setup(app, make_settings())
    client = await aiohttp_client(app)
    assert (await client.get("/")).status == 200
    async with client.ws_connect("/ws") as ws:
        assert (await receive_json(ws))["type"] == "greeting"


def test_bad_prefix_is_refused() -> None:
    with pytest.raises(ValueError, match="prefix"):
        chatbot_server.setup(web.Application(), make_settings(), prefix="support/")


async def test_template_override_folder(aiohttp_client: Any, tmp_path: Any) -> None:
    (tmp_path / "chat.html").write_text("<p>{{ ui.title }} custom</p>", encoding="utf-8")
    app = web.Application()
    chatbot_server.setup(app, make_settings(ui={"template_dir": str(tmp_path)}))
    client = await aiohttp_client(app)
    assert await (await client.get("/")).text() == "<p>银联智能客服 custom</p>"
