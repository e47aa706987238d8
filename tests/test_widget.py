"""The server's side of the embeddable widget (docs/widget.md): where the chat page may be framed,
when it talks to the page that frames it, and the widget's own script and stylesheet."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from chatbot_server import setup
from chatbot_server.ops.views import frame_ancestors, normal_origin
from chatbot_server.resources import static_dir

from .helpers import make_settings

ClientMaker = Callable[..., Awaitable[TestClient]]
BANK = "https://www.bank.example"


@pytest.fixture
def chat_client(aiohttp_client: Any) -> ClientMaker:
    async def make(prefix: str = "", **sections: Any) -> TestClient:
        app = web.Application()
        setup(app, make_settings(**sections), prefix=prefix)
        return await aiohttp_client(app)

    return make


def directive(response: Any, name: str) -> str:
    """One directive of the response's Content-Security-Policy, without its name."""
    policy = response.headers["Content-Security-Policy"]
    found = [d.strip() for d in policy.split(";") if d.strip().split(" ")[0] == name]
    assert len(found) == 1, policy
    return found[0].removeprefix(name).strip()


def client_config(html: str) -> dict[str, Any]:
    """The page's JSON config (what chat.js reads)."""
    match = re.search(r'<script type="application/json" id="chat-config">(.*?)</script>', html, re.S)
    assert match is not None
    config: dict[str, Any] = json.loads(match.group(1))
    return config


# ------------------------------------------------------------------ frame-ancestors
async def test_the_chat_page_may_be_framed_only_by_itself_by_default(chat_client: ClientMaker) -> None:
    response = await (await chat_client()).get("/")
    assert directive(response, "frame-ancestors") == "'self'"


async def test_frame_ancestors_come_from_security_allowed_origins(chat_client: ClientMaker) -> None:
    client = await chat_client(security={"allowed_origins": [BANK, "https://M.Bank.Example/", "http://localhost:8080"]})
    response = await client.get("/")
    assert directive(response, "frame-ancestors") == f"'self' {BANK} https://m.bank.example http://localhost:8080"
    # The rest of the policy is as strict as before.
    assert directive(response, "script-src") == "'self'" and directive(response, "base-uri") == "'none'"


def test_an_entry_that_is_not_an_origin_never_reaches_the_header() -> None:
    entries = [
        BANK,
        f"{BANK}; script-src *",
        "javascript:alert(1)",
        "https://a.example/path",
        "https://*.example",
        BANK,
    ]
    assert frame_ancestors(entries) == f"'self' {BANK}"
    assert frame_ancestors(["*"]) == "'self' *"  # as for the websocket: any origin (not advised)
    assert normal_origin(" HTTPS://[::1]:8443/ ") == "https://[::1]:8443"
    assert normal_origin("https://bank.example:443@evil.example") is None


# ------------------------------------------------------------------ embed mode
@pytest.mark.parametrize(
    ("query", "embedded"),
    [
        (f"embed=1&parent={quote(BANK, safe='')}", True),
        (f"embed=1&parent={quote(BANK.upper() + '/', safe='')}", True),  # the same origin, spelled otherwise
        ("embed=1&parent=https%3A%2F%2Fevil.example", False),  # not allowed
        (f"embed=1&parent={quote(BANK + '/page', safe='')}", False),  # not an origin
        ("embed=1&parent=null", False),  # a file: or sandboxed page
        ("embed=1", False),
        (f"parent={quote(BANK, safe='')}", False),  # not asked for
        (f"embed=0&parent={quote(BANK, safe='')}", False),
    ],
)
async def test_embed_mode_only_for_an_allowed_parent(chat_client: ClientMaker, query: str, embedded: bool) -> None:
    client = await chat_client(security={"allowed_origins": [BANK]})
    html = await (await client.get(f"/?{query}")).text()
    config = client_config(html)
    if embedded:
        assert config["embed"] == {"parentOrigin": BANK}
        assert 'class="embedded"' in html and 'id="embed-close"' in html
    else:
        assert "embed" not in config
        assert 'class="embedded"' not in html and "embed-close" not in html


async def test_a_page_of_the_chat_servers_own_origin_may_embed_it(chat_client: ClientMaker) -> None:
    client = await chat_client()
    own = f"http://{client.host}:{client.port}"
    config = client_config(await (await client.get(f"/?embed=1&parent={quote(own, safe='')}")).text())
    assert config["embed"] == {"parentOrigin": own}
    other_port = f"http://{client.host}:{client.port + 1}"
    config = client_config(await (await client.get(f"/?embed=1&parent={quote(other_port, safe='')}")).text())
    assert "embed" not in config


async def test_a_wildcard_allows_any_parent(chat_client: ClientMaker) -> None:
    client = await chat_client(security={"allowed_origins": ["*"]})
    response = await client.get("/?embed=1&parent=https%3A%2F%2Fanyone.example")
    assert client_config(await response.text())["embed"] == {"parentOrigin": "https://anyone.example"}
    assert directive(response, "frame-ancestors") == "'self' *"


# ------------------------------------------------------------------ the widget's files
@pytest.mark.parametrize("prefix", ["", "/support"])
async def test_widget_script_and_stylesheet_are_served(chat_client: ClientMaker, prefix: str) -> None:
    client = await chat_client(prefix=prefix)
    for name, content_type in (("widget.js", "application/javascript"), ("widget.css", "text/css")):
        response = await client.get(f"{prefix}/{name}")
        assert response.status == 200
        assert response.content_type == content_type and response.charset == "utf-8"
        assert response.headers["Cache-Control"] == "public, max-age=300"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Cross-Origin-Resource-Policy"] == "cross-origin"
        assert await response.read() == (static_dir() / name).read_bytes()
    assert (await client.get(f"{prefix}/widget.html")).status == 404


def test_the_widget_uses_no_eval_markup_inline_style_or_wildcard_messages() -> None:
    """What a strict host CSP or Trusted Types would block (the browser test runs under both), and
    messages to any origin ("*"), which no browser test would notice."""
    for name in ("widget.js", "chat.js"):
        source = re.sub(r"//[^\n]*", "", (static_dir() / name).read_text(encoding="utf-8"))  # code, not comments
        for banned in ("eval(", "new Function", "innerHTML", "insertAdjacentHTML", "document.write", '"*"', "'*'"):
            assert banned not in source, f"{name} uses {banned}"
        assert not re.search(r"setAttribute\(\s*[\"']style", source), name
        assert source.count(".postMessage(") == 1, name  # one place posts, with the one allowed origin
