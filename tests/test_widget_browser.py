"""The embeddable widget in a real browser: a plain static bank page on one origin (python -m
http.server, no aiohttp) embeds the chat from the chat server on another (docs/widget.md).

Origins: the chat server http://127.0.0.1:P1, the bank's page http://localhost:P2 (listed in
security.allowed_origins), and a third one, http://127.0.0.1:P3, that is not. The bank's page runs
under a strict CSP of its own (no inline script or style, Trusted Types), as a bank's would.

Set CHATBOT_WIDGET_SCREENSHOTS=docs/screenshots to save the widget's screenshots (widget-*.png).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from chatbot_server import Bot, Reply, Turn
from chatbot_server.identity import sign_identity

from .browser_support import (  # noqa: F401 - the browser fixture is used by name
    ARTIFACTS,
    LiveServer,
    browser,
    free_port,
    live_server,
    playwright_expect,
    screenshot_path,
)
from .helpers import make_settings

expect = playwright_expect()

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(90)]

SECRET = "widget-test-secret-0123456789abcdef"
ECHO = "我正在思考你的问题{{{}}}"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 667}
UI = make_settings().ui

# The bank's page. Its test hooks (hooks.js) record what the widget tells it, and queue the calls
# a real page makes before widget.js has loaded: on("message"), and identify(token) (a real page
# has its back end write the token into the page; this one takes it from its own URL).
INDEX_HTML = """<!DOCTYPE html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'self'; script-src 'self' {chat}; style-src 'self' {chat}; frame-src {chat} {third}; img-src 'self'; require-trusted-types-for 'script'">
<title>示例银行 - 个人网银</title>
<link rel="stylesheet" href="bank.css">
<script src="hooks.js"></script>
<script src="{chat}/widget.js" async></script>
</head>
<body>
<header><h1>示例银行</h1><nav>首页 · 信用卡 · 储蓄 · 贷款 · 理财</nav></header>
<main><h2>信用卡账单</h2><p>本期应还金额 ¥3,280.00,最后还款日 6 月 25 日。</p><p>如有疑问,请点击右下角的在线客服。</p></main>
</body>
</html>
"""
HOOKS_JS = """
window.ChatbotWidget = window.ChatbotWidget || [];
window.widgetEvents = [];
ChatbotWidget.push(["on", "message", function (m) { widgetEvents.push(m); }]);
ChatbotWidget.push(["on", "identity_error", function (e) { widgetEvents.push({ identity_error: e.code }); }]);
var token = new URLSearchParams(location.search).get("token");
if (token) ChatbotWidget.push(["identify", token]);
"""
# Run in a window (the bank's page, the chat's frame) before another posts "done" to it: `done` then
# resolves with the sender's origin, and by then everything that sender posted to this window before
# has been handled by its listeners (messages from one window to another keep their order).
EXPECT_DONE = (
    "() => { window.done = new Promise(r => addEventListener('message', function on(e) {"
    " if (e.data === 'done') { removeEventListener('message', on); r(e.origin); } })); }"
)
BANK_CSS = """
body { margin: 0; font-family: "Noto Sans CJK SC", sans-serif; color: #222; background: #f6f7f9; }
header { background: #0b3d91; color: #fff; padding: 16px 32px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
main { padding: 24px 32px; max-width: 720px; }
/* What bank pages do to every button: the widget's own rules must win. */
button { background: yellow; padding: 40px; border: 5px dotted green; }
"""
# A page of the third origin, framed by the bank's page in the forgery test: it posts what only
# the widget and the chat page may post to each other, and records anything it is sent.
FORGER_HTML = """<!DOCTYPE html><html><head><meta charset="utf-8"><script src="forger.js"></script></head><body>forger</body></html>"""
FORGER_JS = """
window.received = [];
addEventListener("message", function (e) { received.push(e.data); });
window.forge = function (token) {
  var forged = [
    { type: "message", kind: "bot", text: "伪造的消息" },
    { type: "ready" },
    { type: "close" },
    { type: "identity_error", code: "identity_expired" },
  ];
  forged.forEach(function (m) { top.postMessage(m, "*"); });
  top.postMessage("done", "*");
  for (var i = 0; i < top.frames.length; i++) {
    if (top.frames[i] === window) continue;
    top.frames[i].postMessage({ type: "identify", token: token }, "*");
    top.frames[i].postMessage({ type: "init", token: token }, "*");
    top.frames[i].postMessage({ type: "identify", token: null }, "*");
    top.frames[i].postMessage("done", "*");
  }
};
"""


# ------------------------------------------------------------------ the bank's static site
async def static_site(folder: Path, port: int) -> asyncio.subprocess.Process:
    """`python -m http.server` on 127.0.0.1:port serving `folder`, once it listens (it says so)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-u", "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(folder),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert process.stdout is not None
    async with asyncio.timeout(10):
        line = await process.stdout.readline()  # "Serving HTTP on 127.0.0.1 port P ...", after bind()
    assert b"Serving HTTP" in line, line
    return process


@dataclass
class Sites:
    """The chat server and the two static sites around it."""

    chat: LiveServer
    bank: str  # the allowed origin: http://localhost:P2
    third: str  # not allowed: http://127.0.0.1:P3
    folder: Path  # what the two static sites serve

    @property
    def chat_origin(self) -> str:
        return self.chat.url.rstrip("/")


class GateBot(Bot):
    """Echoes, but a question starting with "慢" waits until the test opens the gate."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()

    async def answer(self, turn: Turn) -> Reply:
        if turn.text.startswith("慢"):
            await self.gate.wait()
        return Reply(text=ECHO.format(turn.text), intent="echo")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sites(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sites]:
    bank_port, third_port = free_port(), free_port()
    bank, third = f"http://localhost:{bank_port}", f"http://127.0.0.1:{third_port}"
    settings = make_settings(security={"allowed_origins": [bank]}, identity={"secret": SECRET})
    async with live_server(settings, bot=GateBot()) as chat:
        folder = tmp_path_factory.mktemp("bank-site")
        chat_origin = chat.url.rstrip("/")
        files = {
            "index.html": INDEX_HTML.format(chat=chat_origin, third=third),
            "hooks.js": HOOKS_JS,
            "bank.css": BANK_CSS,
            "forger.html": FORGER_HTML,
            "forger.js": FORGER_JS,
            "favicon.ico": "",  # asked for by every page; a 404 would be a console error
        }
        for name, text in files.items():
            (folder / name).write_text(text, encoding="utf-8")
        processes = [await static_site(folder, bank_port), await static_site(folder, third_port)]
        try:
            yield Sites(chat, bank, third, folder)
        finally:
            for process in processes:
                process.terminate()
                await process.wait()


# ------------------------------------------------------------------ the bank's page in a tab
@dataclass
class BankPage:
    """One tab on a page with the widget; `frame` is the chat page inside the panel."""

    page: Any
    sites: Sites
    errors: list[str] = field(default_factory=list)
    sockets: list[str] = field(default_factory=list)  # every websocket the tab opened, by URL
    requests: list[str] = field(default_factory=list)

    @property
    def launcher(self) -> Any:
        return self.page.locator(".cbw-launcher")

    @property
    def badge(self) -> Any:
        return self.page.locator(".cbw-badge")

    @property
    def panel(self) -> Any:
        return self.page.locator(".cbw-panel")

    @property
    def frame(self) -> Any:
        return self.page.frame_locator(".cbw-frame")

    def bubbles(self, kind: str) -> Any:
        return self.frame.locator(f"#messages .msg-{kind} .bubble")

    async def ask(self, text: str) -> None:
        await self.frame.locator("#input").fill(text)
        await self.frame.locator("#input").press("Enter")

    async def events(self) -> list[dict[str, Any]]:
        """What the widget told the page's on("message") and on("identity_error") listeners."""
        events: list[dict[str, Any]] = await self.page.evaluate("() => widgetEvents")
        return events

    async def conversation(self) -> list[tuple[str, str]]:
        """(kind, text) of every user, bot and greeting bubble in the frame."""
        items = await self.frame.locator("#messages > li").evaluate_all(
            "els => els.map(li => [li.className, li.querySelector('.bubble').textContent])"
        )
        kinds = ("user", "bot", "greeting")
        return [(k, text) for classes, text in items for k in kinds if f"msg-{k}" in classes.split()]

    async def settled(self) -> None:
        """Wait until the bank's page has handled every message the chat page has posted to it."""
        await self.page.evaluate(EXPECT_DONE)
        await self.chat_frame().evaluate("origin => parent.postMessage('done', origin)", self.sites.bank)
        assert await self.page.evaluate("() => done") == self.sites.chat_origin

    def chat_frame(self) -> Any:
        """The chat page's Frame (for evaluate)."""
        frames = [f for f in self.page.frames if f.url.startswith(self.sites.chat.url + "?embed=1")]
        assert len(frames) == 1, [f.url for f in self.page.frames]
        return frames[0]


OpenBank = Callable[..., Awaitable[BankPage]]


@pytest_asyncio.fixture(loop_scope="module")
async def open_bank(browser: Any, sites: Sites, request: pytest.FixtureRequest) -> AsyncIterator[OpenBank]:
    """Open the bank's page (or the third origin's) in a fresh browser context."""
    contexts: list[Any] = []
    failures_before = request.session.testsfailed

    async def open_page(
        origin: str | None = None,
        *,
        token: str | None = None,
        viewport: dict[str, int] = DESKTOP,
        touch: bool = False,
        path: str = "index.html",
    ) -> BankPage:
        context = await browser.new_context(
            viewport=viewport, locale="zh-CN", timezone_id="Asia/Shanghai", has_touch=touch, is_mobile=touch
        )
        context.set_default_timeout(5000)
        contexts.append(context)
        page = await context.new_page()
        bank = BankPage(page, sites)
        page.on("console", lambda m: bank.errors.append(m.text) if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda exc: bank.errors.append(str(exc)))
        page.on("websocket", lambda ws: bank.sockets.append(ws.url))
        page.on("request", lambda r: bank.requests.append(r.url))
        await page.goto(f"{origin or sites.bank}/{path}" + (f"?token={token}" if token else ""))
        await expect(bank.launcher).to_be_visible()  # the widget's stylesheet is in
        return bank

    try:
        yield open_page
    finally:
        if request.session.testsfailed > failures_before:
            ARTIFACTS.mkdir(exist_ok=True)
            for n, context in enumerate(contexts):
                for page in context.pages:
                    path = screenshot_path(request.node.nodeid)
                    await page.screenshot(path=str(path.with_name(f"{path.stem}-{n}.png")))
        for context in contexts:
            await context.close()


def screenshots() -> Path | None:
    """Where to save the widget's screenshots ($CHATBOT_WIDGET_SCREENSHOTS), or None: not asked for."""
    folder = os.environ.get("CHATBOT_WIDGET_SCREENSHOTS")
    if not folder:
        return None
    Path(folder).mkdir(parents=True, exist_ok=True)
    return Path(folder)


def token_for(customer: str, *, secret: str = SECRET, name: str = "张三", now: float | None = None) -> str:
    return sign_identity(secret, customer, name=name, now=now)


# ------------------------------------------------------------------ tests
async def test_chat_in_the_widget_on_another_origin(open_bank: OpenBank, sites: Sites) -> None:
    bank = await open_bank()
    await expect(bank.panel).to_be_hidden()
    await expect(bank.badge).to_be_hidden()
    await expect(bank.page.locator(".cbw-frame")).to_have_count(0)  # nothing loads until it is opened
    await expect(bank.launcher).to_have_accessible_name("在线客服")
    # The bank's "button { ... }" rule does not reach the launcher.
    await expect(bank.launcher).to_have_css("background-color", "rgb(200, 16, 46)")

    await bank.launcher.click()
    await expect(bank.launcher).to_have_attribute("aria-expanded", "true")
    await expect(bank.bubbles("greeting")).to_have_text([UI.greeting])
    await expect(bank.frame.locator("body")).to_have_attribute("data-connection", "connected")
    await bank.ask("信用卡账单怎么查?")
    await expect(bank.bubbles("bot")).to_have_text([ECHO.format("信用卡账单怎么查?")])
    await expect(bank.frame.locator("#input")).to_be_focused()  # the panel took the focus when opened

    # The queued on("message") listener heard the bot's lines; the badge stayed hidden (open).
    await bank.settled()
    assert await bank.events() == [
        {"kind": "greeting", "text": UI.greeting},
        {"kind": "bot", "text": ECHO.format("信用卡账单怎么查?")},
    ]
    await expect(bank.badge).to_be_hidden()

    # 收起 in the chat's own header closes the panel; the conversation is kept, in the same frame.
    await bank.frame.locator("#embed-close").click()
    await expect(bank.panel).to_be_hidden()
    await expect(bank.launcher).to_be_focused()
    await bank.page.evaluate("() => ChatbotWidget.push(['open'])")  # push keeps working after load
    await expect(bank.panel).to_be_visible()
    assert await bank.conversation() == [
        ("greeting", UI.greeting),
        ("user", "信用卡账单怎么查?"),
        ("bot", ECHO.format("信用卡账单怎么查?")),
    ]
    await bank.frame.locator("#input").press("Escape")
    await expect(bank.panel).to_be_hidden()
    await bank.page.evaluate("() => ChatbotWidget.open()")
    await expect(bank.panel).to_be_visible()

    # One socket, anonymous, and nothing fetched from anywhere but the two origins; no CSP reports.
    assert len(bank.sockets) == 1 and "identity=" not in bank.sockets[0]
    assert [u for u in bank.requests if not u.startswith((sites.bank, sites.chat.url))] == []
    assert bank.errors == []


async def test_the_conversation_survives_a_reload(open_bank: OpenBank) -> None:
    bank = await open_bank()
    await bank.launcher.click()
    for question in ("第一个问题", "第二个问题"):
        await bank.ask(question)
    await expect(bank.bubbles("bot")).to_have_count(2)
    before = await bank.conversation()

    await bank.page.reload()
    await expect(bank.panel).to_be_visible()  # it was open: it opens again
    await expect(bank.bubbles("bot")).to_have_count(2)
    assert await bank.conversation() == before
    await bank.settled()
    assert await bank.events() == []  # the replay is not news
    await bank.ask("第三个问题")
    await expect(bank.bubbles("bot")).to_have_count(3)
    assert len(bank.sockets) == 2 and "conversation=" in bank.sockets[1]
    assert bank.errors == []


async def test_unread_badge_for_a_message_while_closed(open_bank: OpenBank, sites: Sites) -> None:
    bot = sites.chat.bot
    assert isinstance(bot, GateBot)
    bot.gate.clear()
    bank = await open_bank()
    await bank.launcher.click()
    await bank.ask("慢一点回答")
    await expect(bank.frame.locator(".msg-user:not(.pending)")).to_have_count(1)  # asked, not answered
    await bank.launcher.click()
    await expect(bank.panel).to_be_hidden()

    bot.gate.set()
    await expect(bank.badge).to_have_text("1")
    await expect(bank.launcher).to_have_accessible_name("在线客服,1 条未读消息")
    if folder := screenshots():
        await bank.page.screenshot(path=str(folder / "widget-desktop-unread.png"), animations="disabled")
    assert (await bank.events())[-1] == {"kind": "bot", "text": ECHO.format("慢一点回答")}

    await bank.launcher.click()
    await expect(bank.badge).to_be_hidden()
    await expect(bank.bubbles("bot")).to_have_text([ECHO.format("慢一点回答")])
    await expect(bank.launcher).to_have_accessible_name("在线客服")

    # Closed, then reloaded: the started chat is loaded again behind the launcher, and what it
    # replays was seen already, so no badge.
    await bank.launcher.click()
    await bank.page.reload()
    await expect(bank.panel).to_have_attribute("data-state", "ready")
    await expect(bank.panel).to_be_hidden()
    await expect(bank.bubbles("bot")).to_have_count(1)
    await bank.settled()
    await expect(bank.badge).to_be_hidden()
    assert await bank.events() == []


async def test_a_verified_customer_resumes_on_another_device(open_bank: OpenBank) -> None:
    phone = await open_bank(token=token_for("cust-1"))
    await phone.launcher.click()
    await expect(phone.bubbles("greeting")).to_have_count(1)
    await phone.ask("我的信用卡额度是多少?")
    await expect(phone.bubbles("bot")).to_have_count(1)
    shown = await phone.conversation()
    # The token pushed before the widget loaded went out on the first socket: none was anonymous.
    assert len(phone.sockets) == 1 and "identity=" in phone.sockets[0]
    # The host renews the token before it expires: same customer, so the socket goes on.
    await phone.chat_frame().evaluate(EXPECT_DONE)
    await phone.page.evaluate(
        "([t, origin]) => { ChatbotWidget.identify(t); document.querySelector('.cbw-frame').contentWindow.postMessage('done', origin); }",
        [token_for("cust-1", now=time.time() + 1), phone.sites.chat_origin],
    )
    assert await phone.chat_frame().evaluate("() => done") == phone.sites.bank  # identify was handled
    assert len(phone.sockets) == 1

    # Another browser (no storage shared), the same customer, a fresh token: their conversation.
    desk = await open_bank(token=token_for("cust-1"))
    await desk.launcher.click()
    await expect(desk.bubbles("bot")).to_have_count(1)
    assert await desk.conversation() == shown
    await desk.ask("怎么提高额度?")
    await expect(desk.bubbles("bot")).to_have_count(2)
    assert all("identity=" in url for url in desk.sockets)

    # Someone else, on yet another device, gets a conversation of their own.
    other = await open_bank(token=token_for("cust-2", name="李四"))
    await other.launcher.click()
    await expect(other.bubbles("greeting")).to_have_count(1)
    assert await other.conversation() == [("greeting", UI.greeting)]
    assert phone.errors == desk.errors == other.errors == []


async def test_a_customer_who_signs_in_mid_chat_sees_their_conversation(open_bank: OpenBank) -> None:
    """identify() after load: a new socket with the token; their conversation from another device
    replaces what the screen showed."""
    desk = await open_bank(token=token_for("cust-3"))
    await desk.launcher.click()
    await desk.ask("上次的问题")
    await expect(desk.bubbles("bot")).to_have_count(1)
    theirs = await desk.conversation()

    phone = await open_bank()  # anonymous at first
    await phone.launcher.click()
    await phone.ask("匿名时的问题")
    await expect(phone.bubbles("bot")).to_have_count(1)
    await phone.page.evaluate("t => ChatbotWidget.identify(t)", token_for("cust-3"))
    await expect(phone.bubbles("bot")).to_have_text([ECHO.format("上次的问题")])
    assert await phone.conversation() == theirs
    assert len(phone.sockets) == 2 and "identity=" in phone.sockets[1]
    await phone.settled()
    assert await phone.events() == [
        {"kind": "greeting", "text": UI.greeting},
        {"kind": "bot", "text": ECHO.format("匿名时的问题")},
    ]  # their replayed history is not news


@pytest.mark.parametrize(
    ("token", "code"),
    [
        (token_for("cust-1", secret="not-the-bank-secret-0123456789"), "identity_bad_signature"),
        (token_for("cust-1", now=time.time() - 3600), "identity_expired"),
    ],
    ids=["forged", "expired"],
)
async def test_a_forged_or_expired_token_is_refused(open_bank: OpenBank, token: str, code: str) -> None:
    bank = await open_bank(token=token)
    await bank.launcher.click()
    await expect(bank.frame.locator("body")).to_have_attribute("data-connection", "refused")
    await expect(bank.bubbles("error")).to_have_count(1)
    await expect(bank.bubbles("error")).not_to_have_text("")
    await expect(bank.bubbles("greeting")).to_have_count(0)  # no chat
    await expect(bank.frame.locator("#input")).to_be_disabled()
    await bank.settled()
    assert await bank.events() == [{"identity_error": code}]

    # Only a new token helps, and it is used at once: one more socket, not a retry loop.
    await bank.page.evaluate("t => ChatbotWidget.identify(t)", token_for(f"cust-4-{code}"))
    await expect(bank.bubbles("greeting")).to_have_count(1)
    await bank.ask("现在可以了吗?")
    await expect(bank.bubbles("bot")).to_have_text([ECHO.format("现在可以了吗?")])
    assert len(bank.sockets) == 2 and "identity=" in bank.sockets[1]


async def test_the_widget_is_refused_on_an_origin_not_allowed(open_bank: OpenBank, sites: Sites) -> None:
    stranger = await open_bank(sites.third)
    await stranger.launcher.click()
    # The browser refuses to show the chat page there (frame-ancestors): the frame loads without a
    # word from it, and the panel says so.
    await expect(stranger.panel).to_have_attribute("data-state", "failed")
    await expect(stranger.panel.locator(".cbw-failed")).to_have_text("抱歉,在线客服暂时无法打开,请稍后再试。")
    await expect(stranger.panel.locator(".cbw-close")).to_be_visible()
    await expect(stranger.page.locator(".cbw-frame")).to_have_count(1)
    assert not [u for u in stranger.requests if u.endswith(".js") and "/static/chat.js" in u]
    assert stranger.sockets == []
    assert any("frame-ancestors" in e for e in stranger.errors), stranger.errors
    await stranger.panel.locator(".cbw-close").click()
    await expect(stranger.panel).to_be_hidden()

    # Nor may a script of that origin open a chat socket (sockets/origin.py); one of the bank's may.
    # (From forger.html: a page without a CSP of its own that would stop the socket first.)
    opens = "url => new Promise(r => { const ws = new WebSocket(url); ws.onopen = () => r('open'); ws.onclose = () => r('refused'); })"
    socket_url = sites.chat.url.replace("http:", "ws:") + "ws"
    for origin, outcome in ((sites.third, "refused"), (sites.bank, "open")):
        await stranger.page.goto(f"{origin}/forger.html")
        assert await stranger.page.evaluate(opens, socket_url) == outcome, origin


async def test_forged_messages_are_ignored(open_bank: OpenBank, sites: Sites) -> None:
    bank = await open_bank(token=token_for("cust-5"))
    await bank.launcher.click()
    await bank.ask("你好")
    await expect(bank.bubbles("bot")).to_have_count(1)
    before = await bank.conversation()
    await bank.settled()
    events = await bank.events()

    # A frame of the third origin inside the bank's page (an ad, say) forges messages both ways.
    await bank.page.evaluate(
        "src => new Promise(r => { const f = document.createElement('iframe'); f.src = src; f.onload = r; document.body.appendChild(f); })",
        f"{sites.third}/forger.html",
    )
    forger = next(f for f in bank.page.frames if f.url.startswith(sites.third))
    chat = bank.chat_frame()
    for panel_open in (True, False):
        if not panel_open:
            await bank.launcher.click()
            await expect(bank.panel).to_be_hidden()
        await bank.page.evaluate(EXPECT_DONE)
        await chat.evaluate(EXPECT_DONE)
        await forger.evaluate("t => forge(t)", token_for("cust-6", secret="forged-secret-0123456789abcdef"))
        # Both windows have handled every forged message once the forger's "done" has arrived.
        assert await bank.page.evaluate("() => done") == sites.third
        assert await chat.evaluate("() => done") == sites.third
        await expect(bank.panel).to_be_visible() if panel_open else await expect(bank.panel).to_be_hidden()
        await expect(bank.badge).to_be_hidden()
        assert await bank.events() == events
    # The chat page neither switched identity nor reconnected, and the forger heard nothing.
    assert len(bank.sockets) == 1
    await bank.launcher.click()
    await expect(bank.frame.locator("body")).to_have_attribute("data-connection", "connected")
    assert await bank.conversation() == before
    await expect(bank.bubbles("error")).to_have_count(0)
    assert await forger.evaluate("() => received") == []


async def test_opening_the_panel_brings_an_idle_chat_back(open_bank: OpenBank, sites: Sites) -> None:
    """The server lets an idle socket go (4000); opening the panel connects again and carries on."""
    settings = make_settings(security={"allowed_origins": [sites.bank]}, limits={"idle_timeout": 1})
    async with live_server(settings) as sleepy:
        page = INDEX_HTML.format(chat=sleepy.url.rstrip("/"), third=sites.third)
        (sites.folder / "sleepy.html").write_text(page, encoding="utf-8")
        bank = await open_bank(path="sleepy.html")
        await bank.launcher.click()
        await bank.ask("你好")
        await expect(bank.bubbles("bot")).to_have_count(1)
        await bank.launcher.click()
        await expect(bank.frame.locator("body")).to_have_attribute("data-connection", "disconnected")
        await expect(bank.badge).to_be_hidden()  # "disconnected for inactivity" is not news
        await bank.launcher.click()
        await expect(bank.frame.locator("body")).to_have_attribute("data-connection", "connected")
        await bank.ask("我回来了")
        await expect(bank.bubbles("bot")).to_have_count(2)
        assert len(bank.sockets) == 2 and "conversation=" in bank.sockets[1]


@pytest.mark.parametrize("device", ["desktop", "phone"])
async def test_widget_layout_on_desktop_and_phone(open_bank: OpenBank, device: str) -> None:
    """A card in the corner on a desk, the whole screen on a phone; screenshots when asked for."""
    viewport = DESKTOP if device == "desktop" else PHONE
    bank = await open_bank(viewport=viewport, touch=device == "phone")
    folder = screenshots()
    launcher = await bank.launcher.bounding_box()
    assert launcher is not None
    assert viewport["width"] - 40 <= launcher["x"] + launcher["width"] <= viewport["width"] - 12
    assert viewport["height"] - 40 <= launcher["y"] + launcher["height"] <= viewport["height"] - 12
    if folder:
        await bank.page.screenshot(path=str(folder / f"widget-{device}-closed.png"), animations="disabled")

    await bank.launcher.click()
    await bank.ask("信用卡境外消费怎么还款?")
    await expect(bank.bubbles("bot")).to_have_count(1)
    panel = await bank.panel.bounding_box()
    assert panel is not None
    if device == "phone":
        assert panel == {"x": 0, "y": 0, "width": PHONE["width"], "height": PHONE["height"]}
        await expect(bank.launcher).to_be_hidden()  # the chat's own 收起 closes it
        await expect(bank.frame.locator("#embed-close")).to_be_in_viewport(ratio=1)
        await expect(bank.frame.locator("#send")).to_be_in_viewport(ratio=1)
    else:
        assert panel["width"] == 380 and panel["x"] + panel["width"] == DESKTOP["width"] - 20
        assert panel["y"] >= 20 and panel["y"] + panel["height"] < launcher["y"]
        await expect(bank.launcher).to_be_visible()
    if folder:
        await bank.page.screenshot(path=str(folder / f"widget-{device}-open.png"), animations="disabled")
