"""The chat page in a real browser (Debian's chromium driven by Playwright) against a live server."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio

from chatbot_server import Bot, ChatConsumer, Delta, Reply, Turn
from chatbot_server.bots import BotEvent
from chatbot_server.protocol import UserMessage, frame
from chatbot_server.store import MemoryConversationStore

from .browser_support import (  # noqa: F401 - the browser fixture is used by name
    ARTIFACTS,
    LiveServer,
    browser,
    is_local,
    launch_browser,
    live_server,
    playwright_expect,
    require_chromium,
    screenshot_path,
)
from .helpers import make_settings

expect = playwright_expect()

pytestmark = pytest.mark.asyncio(loop_scope="module")

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 667}
ECHO = "我正在思考你的问题{{{}}}"
SAVED_STATE = "() => JSON.parse(sessionStorage.getItem('chatbot_server.conversation'))"
SAVED_CONVERSATION = "() => JSON.parse(sessionStorage.getItem('chatbot_server.conversation')).conversation"
UI = make_settings().ui


# ------------------------------------------------------------------ test bots and consumers
class GateBot(Bot):
    """Answers only when the test opens the gate, so the thinking indicator can be seen."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()

    async def answer(self, turn: Turn) -> Reply:
        await self.gate.wait()
        return Reply(text=f"答复:{turn.text}", intent="echo")


class PiecesBot(Bot):
    """Writes its answer piece by piece as the test hands the pieces over (None ends it)."""

    uses_history = False

    def __init__(self) -> None:
        self.pieces: asyncio.Queue[str | None] = asyncio.Queue()

    async def respond(self, turn: Turn) -> AsyncIterator[BotEvent]:
        text = ""
        while (piece := await self.pieces.get()) is not None:
            text += piece
            yield Delta(piece)
        yield Reply(text=text, intent="stream")


SUGGESTIONS = ("信用卡怎么提额?", "临时额度怎么申请?", "额度调整需要多久?")


class UnsureBot(Bot):
    """Unsure about "额度", so it offers suggested questions; answers anything else directly."""

    async def answer(self, turn: Turn) -> Reply:
        if turn.text == "额度":
            return Reply(text="您是想问下面哪个问题?", intent="out_of_scope", confidence=0.3, suggestions=SUGGESTIONS)
        return Reply(text=f"关于「{turn.text}」的答案", intent="faq", confidence=0.9)


class StaffConsumer(ChatConsumer):
    """After answering "#staff" it sends a system notice and an agent line: every bubble kind on screen."""

    async def handle_message(self, message: UserMessage) -> None:
        await super().handle_message(message)
        if message.text == "#staff":
            await self.emit(frame("system", "已为您转接人工客服", talk=False, event="handoff"))
            await self.emit(frame("agent", "您好,我是客服小王。", talk=True, agent="客服小王"))


# ------------------------------------------------------------------ page helpers
@dataclass
class PageLog:
    """What the page did besides drawing: console errors, uncaught errors, requests, dialogs."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)


class ChatPage:
    """One browser tab on the chat page, with the few actions the tests need."""

    def __init__(self, page: Any, server: LiveServer, log: PageLog) -> None:
        self.page = page
        self.server = server
        self.log = log
        self.input = page.locator("#input")
        self.send_button = page.locator("#send")
        self.status = page.locator("#status")
        self.thinking = page.locator("#thinking")
        self.quick = page.locator("#quick")

    def bubbles(self, kind: str) -> Any:
        """The bubbles of one kind (user, bot, greeting, agent, system, error), oldest first."""
        return self.page.locator(f"#messages .msg-{kind} .bubble")

    async def open(self) -> None:
        """Load the page and wait until it is connected and greeted."""
        await self.page.goto(self.server.url)
        await self.connected()
        await expect(self.bubbles("greeting")).to_have_count(1)

    async def connected(self, timeout: float = 5000) -> None:
        """Wait until the page says it is connected."""
        await expect(self.page.locator("body")).to_have_attribute("data-connection", "connected", timeout=timeout)

    async def ask(self, text: str) -> None:
        """Type a question and send it with Enter, as a user would."""
        await self.input.fill(text)
        await self.input.press("Enter")

    async def conversation(self) -> list[tuple[str, str]]:
        """(kind, text) of every user, bot, greeting and agent bubble on screen."""
        items = await self.page.locator("#messages > li").evaluate_all(
            "els => els.map(li => [li.className, li.querySelector('.bubble').textContent])"
        )
        kinds = ("user", "bot", "greeting", "agent")
        out = []
        for classes, text in items:
            kind = next((k for k in kinds if f"msg-{k}" in classes.split()), None)
            if kind is not None:
                out.append((kind, text))
        return out


OpenChat = Callable[..., Awaitable[ChatPage]]


@pytest_asyncio.fixture(loop_scope="module")
async def open_chat(browser: Any, request: pytest.FixtureRequest) -> AsyncIterator[OpenChat]:
    """Open the chat page of a server in a fresh browser context; screenshots every tab on failure."""
    contexts: list[Any] = []
    # The call phase is reported before fixtures are torn down, so a failing test has raised the count.
    failures_before = request.session.testsfailed

    async def open_page(
        server: LiveServer, *, viewport: dict[str, int] = DESKTOP, load: bool = True, touch: bool = False
    ) -> ChatPage:
        context = await browser.new_context(
            viewport=viewport, locale="zh-CN", timezone_id="Asia/Shanghai", has_touch=touch, is_mobile=touch
        )
        context.set_default_timeout(5000)
        contexts.append(context)
        page = await context.new_page()
        log = PageLog()
        page.on("console", lambda m: log.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: log.page_errors.append(str(exc)))
        page.on("request", lambda r: log.requests.append(r.url))
        page.on("websocket", lambda ws: log.requests.append(ws.url))

        async def on_dialog(dialog: Any) -> None:
            log.dialogs.append(dialog.message)
            await dialog.dismiss()

        page.on("dialog", on_dialog)
        chat = ChatPage(page, server, log)
        if load:
            await chat.open()
        return chat

    try:
        yield open_page
    finally:
        if request.session.testsfailed > failures_before:
            ARTIFACTS.mkdir(exist_ok=True)
            for n, context in enumerate(contexts):
                for m, page in enumerate(context.pages):
                    path = screenshot_path(request.node.nodeid)
                    if n or m:
                        path = path.with_name(f"{path.stem}-{n}-{m}.png")
                    await page.screenshot(path=str(path), full_page=True)
        for context in contexts:
            await context.close()


@pytest_asyncio.fixture(loop_scope="module")
async def echo_server() -> AsyncIterator[LiveServer]:
    """The default app with the echo bot."""
    async with live_server(make_settings()) as server:
        yield server


# ------------------------------------------------------------------ tests
async def test_page_loads_offline_without_errors(open_chat: OpenChat, echo_server: LiveServer) -> None:
    chat = await open_chat(echo_server)
    await chat.ask("你好")
    await expect(chat.bubbles("bot")).to_have_text([ECHO.format("你好")])

    assert chat.log.console_errors == [] and chat.log.page_errors == []
    assert chat.log.requests, "the page made no requests at all?"
    leaving = [url for url in chat.log.requests if not is_local(url, echo_server.port)]
    assert leaving == []
    # The page is accessible as a live log with a status line.
    await expect(chat.page.locator("#messages")).to_have_attribute("role", "log")
    await expect(chat.page.locator("#messages")).to_have_attribute("aria-live", "polite")
    await expect(chat.status).to_have_attribute("role", "status")
    await expect(chat.page).to_have_title(UI.title)


async def test_greeting_and_quick_questions_on_first_open(open_chat: OpenChat, echo_server: LiveServer) -> None:
    chat = await open_chat(echo_server)
    await expect(chat.bubbles("greeting")).to_have_text([UI.greeting])
    await expect(chat.status).to_have_text(UI.connected_text)
    await expect(chat.quick.locator(".chip")).to_have_text(list(UI.quick_questions))

    await chat.quick.locator(".chip").first.click()
    await expect(chat.bubbles("user")).to_have_text([UI.quick_questions[0]])
    await expect(chat.bubbles("bot")).to_have_text([ECHO.format(UI.quick_questions[0])])
    await expect(chat.quick).to_be_hidden()


async def test_enter_sends_the_question_and_shows_the_answer(open_chat: OpenChat, echo_server: LiveServer) -> None:
    chat = await open_chat(echo_server)
    await chat.ask("  新卡怎么激活?  ")
    await expect(chat.bubbles("user")).to_have_text(["新卡怎么激活?"])
    await expect(chat.bubbles("bot")).to_have_text([ECHO.format("新卡怎么激活?")])
    await expect(chat.input).to_have_value("")
    await expect(chat.input).to_be_focused()
    # Confirmed by the server: no longer pending, and every bubble carries its time as HH:MM.
    await expect(chat.page.locator(".msg-user.pending")).to_have_count(0)
    times = await chat.page.locator("#messages .meta").all_text_contents()
    assert len(times) == 3 and all(re.fullmatch(r"\d\d:\d\d", t) for t in times), times

    # Shift+Enter starts a new line instead of sending.
    await chat.input.fill("第一行")
    await chat.input.press("Shift+Enter")
    await chat.input.press_sequentially("第二行")
    await expect(chat.input).to_have_value("第一行\n第二行")
    await expect(chat.bubbles("user")).to_have_count(1)
    await chat.input.press("Enter")
    await expect(chat.bubbles("user")).to_have_text(["新卡怎么激活?", "第一行\n第二行"])


async def test_thinking_indicator_shows_until_the_answer(open_chat: OpenChat) -> None:
    bot = GateBot()
    async with live_server(make_settings(), bot=bot) as server:
        chat = await open_chat(server)
        await expect(chat.thinking).to_be_hidden()
        await chat.ask("境外取现有什么限额?")
        await expect(chat.thinking).to_be_visible()
        await expect(chat.thinking).to_contain_text(UI.thinking_text)
        await expect(chat.page.locator(".msg-user:not(.pending)")).to_have_count(1)  # confirmed, not answered
        await expect(chat.bubbles("bot")).to_have_count(0)

        bot.gate.set()
        await expect(chat.bubbles("bot")).to_have_text(["答复:境外取现有什么限额?"])
        await expect(chat.thinking).to_be_hidden()


async def test_an_answer_goes_above_a_question_still_being_sent(open_chat: OpenChat) -> None:
    """The page shows frames in the server's order, as a reload replays them: an answer that arrives
    while a later question is unconfirmed goes above it (it was drawn below: a reload reordered it)."""
    bot = GateBot()
    async with live_server(make_settings(), bot=bot) as server:
        chat = await open_chat(server)
        await chat.ask("第一个问题")
        await expect(chat.page.locator(".msg-user:not(.pending)")).to_have_count(1)
        await chat.ask("第二个问题")  # the server answers one turn at a time: this one waits
        await expect(chat.page.locator(".msg-user.pending")).to_have_count(1)
        bot.gate.set()
        await expect(chat.bubbles("bot")).to_have_count(2)
        await expect(chat.page.locator(".msg-user.pending")).to_have_count(0)
        shown = await chat.conversation()
        assert [kind for kind, _ in shown] == ["greeting", "user", "bot", "user", "bot"]

        await chat.page.reload()
        await chat.connected()
        await expect(chat.bubbles("bot")).to_have_count(2)
        assert await chat.conversation() == shown


async def test_a_streamed_answer_grows_and_survives_a_reload_mid_stream(open_chat: OpenChat) -> None:
    bot = PiecesBot()
    async with live_server(make_settings(bot={"timeout": 10}), bot=bot) as server:
        chat = await open_chat(server)
        await chat.ask("境外取现限额是多少?")
        writing = chat.page.locator("#messages .msg-bot.writing .bubble")
        bot.pieces.put_nowait("银联卡境外取现,")
        await expect(writing).to_have_text("银联卡境外取现,")
        await expect(chat.thinking).to_be_hidden()  # the text itself shows the answer is coming
        bot.pieces.put_nowait("每卡每日累计")
        await expect(writing).to_have_text("银联卡境外取现,每卡每日累计")
        await expect(chat.page.locator("#stop")).to_be_visible()

        await chat.page.reload()  # mid-answer: the page catches up, then goes on
        await chat.connected()
        await expect(writing).to_have_text("银联卡境外取现,每卡每日累计")
        bot.pieces.put_nowait("等值人民币1万元。😀")
        bot.pieces.put_nowait(None)
        await expect(chat.bubbles("bot")).to_have_text(["银联卡境外取现,每卡每日累计等值人民币1万元。😀"])
        await expect(chat.page.locator("#messages .writing")).to_have_count(0)
        await expect(chat.page.locator("#stop")).to_be_hidden()
        shown = await chat.conversation()
        await chat.page.reload()
        await chat.connected()
        await expect(chat.bubbles("bot")).to_have_count(1)
        assert await chat.conversation() == shown


async def test_the_user_stops_a_streamed_answer(open_chat: OpenChat) -> None:
    bot = PiecesBot()
    async with live_server(make_settings(bot={"timeout": 10}), bot=bot) as server:
        chat = await open_chat(server)
        await chat.ask("分期手续费怎么算?")
        bot.pieces.put_nowait("分期手续费按")
        await expect(chat.page.locator("#messages .msg-bot.writing .bubble")).to_have_text("分期手续费按")
        await chat.page.locator("#stop").click()
        await expect(chat.bubbles("bot")).to_have_text(["分期手续费按"])
        await expect(chat.page.locator("#messages .msg-bot .meta")).to_contain_text("已停止生成")
        await expect(chat.page.locator("#stop")).to_be_hidden()


async def test_markup_in_messages_is_shown_as_text(open_chat: OpenChat, echo_server: LiveServer) -> None:
    attack = "<img src=x onerror=alert(1)>"
    chat = await open_chat(echo_server)
    await chat.ask(attack)
    await expect(chat.bubbles("user")).to_have_text([attack])
    await expect(chat.bubbles("bot")).to_have_text([ECHO.format(attack)])
    await expect(chat.page.locator("#messages img")).to_have_count(0)
    # Markup would have asked for /x; nothing but the page, its assets and the socket was fetched.
    assert not [url for url in chat.log.requests if url.rstrip("/").endswith("/x")]
    assert chat.log.dialogs == [] and chat.log.page_errors == []


async def test_restart_shows_disconnect_reconnects_and_keeps_the_conversation(open_chat: OpenChat) -> None:
    store = MemoryConversationStore()
    async with live_server(make_settings(), store=store) as server:
        chat = await open_chat(server)
        await chat.ask("银行卡丢了怎么挂失?")
        await expect(chat.bubbles("bot")).to_have_count(1)
        before = await chat.conversation()

        await server.stop()
        await expect(chat.page.locator("body")).to_have_attribute("data-connection", "disconnected")
        await expect(chat.status).to_have_text(UI.disconnected_text)
        # A question asked while offline waits and is sent once the line is back.
        await chat.ask("断线时问的问题")
        await expect(chat.page.locator(".msg-user.pending .bubble")).to_have_text(["断线时问的问题"])
        await expect(chat.page.locator(".msg-user.pending .meta")).to_have_text("发送中…")
        await expect(chat.thinking).to_be_hidden()

        await server.start()
        await chat.connected(timeout=10_000)  # the page retries with backoff (0.5 s, 1 s, 2 s, ...)
        await expect(chat.page.locator(".msg-user.pending")).to_have_count(0)
        await expect(chat.bubbles("bot")).to_have_count(2)
        expected = [*before, ("user", "断线时问的问题"), ("bot", ECHO.format("断线时问的问题"))]
        assert await chat.conversation() == expected

        # Still one conversation, still usable, and a reload shows all of it exactly once.
        await chat.ask("挂失后怎么补卡?")
        await expect(chat.bubbles("bot")).to_have_count(3)
        expected += [("user", "挂失后怎么补卡?"), ("bot", ECHO.format("挂失后怎么补卡?"))]
        assert await chat.conversation() == expected

        await chat.page.reload()
        await chat.connected()
        await expect(chat.bubbles("bot")).to_have_count(3)
        assert await chat.conversation() == expected
        await expect(chat.quick).to_be_hidden()
        conversation = await chat.page.evaluate(SAVED_CONVERSATION)
    kinds = {"reply": "bot"}
    transcript = [(kinds.get(f["type"], f["type"]), f["msg"]) for f in await store.transcript(conversation)]
    assert transcript == [("greeting", UI.greeting), *expected[1:]]


async def test_reload_replays_the_conversation_once(open_chat: OpenChat, echo_server: LiveServer) -> None:
    chat = await open_chat(echo_server)
    for question in ("第一个问题", "第二个问题"):
        await chat.ask(question)
    await expect(chat.bubbles("bot")).to_have_count(2)
    before = await chat.conversation()
    saved = await chat.page.evaluate(SAVED_STATE)
    assert saved["lastSeq"] == 5 and saved["conversation"]

    await chat.page.reload()
    await chat.connected()
    await expect(chat.bubbles("bot")).to_have_count(2)
    assert await chat.conversation() == before
    await chat.ask("第三个问题")
    await expect(chat.bubbles("bot")).to_have_count(3)
    resumed = await chat.page.evaluate(SAVED_STATE)
    assert resumed == {"conversation": saved["conversation"], "lastSeq": 7}


async def test_phone_viewport_has_no_horizontal_scroll(open_chat: OpenChat, echo_server: LiveServer) -> None:
    chat = await open_chat(echo_server, viewport=PHONE)
    await chat.ask("x" * 300)
    await chat.ask("这是一条很长的中文消息," * 12)
    await expect(chat.bubbles("bot")).to_have_count(2)
    widths = await chat.page.evaluate(
        "() => [document.documentElement.scrollWidth, document.body.scrollWidth, window.innerWidth]"
    )
    assert max(widths[:2]) <= widths[2] == PHONE["width"], widths
    for element in (chat.input, chat.send_button):
        await expect(element).to_be_in_viewport(ratio=1)
    box = await chat.input.bounding_box()
    assert box is not None and box["y"] + box["height"] <= PHONE["height"]
    # A tall draft grows the box but keeps it, and the send button, on screen.
    await chat.input.fill("\n".join(["一行"] * 12))
    await chat.input.dispatch_event("input")
    await expect(chat.send_button).to_be_in_viewport(ratio=1)
    await expect(chat.input).to_be_in_viewport()


async def test_the_enter_hint_shows_only_with_a_fine_pointer(open_chat: OpenChat, echo_server: LiveServer) -> None:
    """A phone has no Enter key (#16): the placeholder names none, the hint is for mouse and keyboard."""
    desktop = await open_chat(echo_server)
    phone = await open_chat(echo_server, viewport=PHONE, touch=True)
    for chat in (desktop, phone):
        await expect(chat.input).to_have_attribute("placeholder", "请输入您的问题")
    await expect(desktop.page.locator(".enter-hint")).to_be_visible()
    await expect(phone.page.locator(".enter-hint")).to_be_hidden()


async def test_suggestion_chips_send_their_question(open_chat: OpenChat) -> None:
    async with live_server(make_settings(), bot=UnsureBot()) as server:
        chat = await open_chat(server)
        await chat.ask("额度")
        chips = chat.page.locator(".msg-bot .suggestions .chip")
        await expect(chips).to_have_text(list(SUGGESTIONS))
        await chips.nth(1).click()
        await expect(chat.bubbles("user")).to_have_text(["额度", SUGGESTIONS[1]])
        await expect(chat.bubbles("bot").last).to_have_text(f"关于「{SUGGESTIONS[1]}」的答案")


async def test_keyboard_only_use(open_chat: OpenChat, echo_server: LiveServer) -> None:
    chat = await open_chat(echo_server)
    page = chat.page
    order = []
    for _ in range(len(UI.quick_questions) + 2):
        await page.keyboard.press("Tab")
        order.append(await page.evaluate("() => document.activeElement.id || document.activeElement.className"))
    assert order == ["chip"] * len(UI.quick_questions) + ["input", "send"]
    assert await focus_ring(page) >= 2, "the send button shows no focus ring"

    await page.keyboard.press("Shift+Tab")
    await expect(chat.input).to_be_focused()
    assert await focus_ring(page) >= 1, "the input shows no focus ring"
    await page.keyboard.type("用键盘发送")
    await page.keyboard.press("Enter")
    await expect(chat.bubbles("user")).to_have_text(["用键盘发送"])

    # Send with the button: type, Tab to it, press Space.
    await page.keyboard.type("用按钮发送")
    await page.keyboard.press("Tab")
    await expect(chat.send_button).to_be_focused()
    await page.keyboard.press("Space")
    await expect(chat.bubbles("user")).to_have_text(["用键盘发送", "用按钮发送"])
    await expect(chat.bubbles("bot")).to_have_count(2)


async def focus_ring(page: Any) -> float:
    """Width in px of the focused element's visible outline (0 if it has none)."""
    width: float = await page.evaluate(
        """() => {
            const style = getComputedStyle(document.activeElement);
            return style.outlineStyle === "none" ? 0 : parseFloat(style.outlineWidth);
        }"""
    )
    return width


async def test_every_kind_of_bubble_looks_different(open_chat: OpenChat) -> None:
    async with live_server(make_settings(), consumer=StaffConsumer) as server:
        chat = await open_chat(server)
        await chat.ask("#staff")
        await expect(chat.bubbles("agent")).to_have_text(["您好,我是客服小王。"])
        await expect(chat.bubbles("system")).to_have_text(["已为您转接人工客服"])
        await expect(chat.page.locator(".msg-agent .who")).to_have_text("客服小王")
        looks = {}
        for kind in ("user", "bot", "agent", "system"):
            looks[kind] = await chat.bubbles(kind).first.evaluate(
                "el => { const s = getComputedStyle(el); return [s.backgroundColor, s.color, "
                "el.closest('.msg').getBoundingClientRect().x > 400]; }"
            )
        assert len({tuple(v[:2]) for v in looks.values()}) == 4, looks
        assert looks["user"][2] and not looks["bot"][2]  # user on the right, bot on the left
        # Screen readers hear who spoke; system lines carry no timestamp.
        assert await chat.page.locator(".msg-user .who").first.text_content() == "我"
        await expect(chat.page.locator(".msg-system .meta")).to_have_count(0)


async def test_branding_comes_from_config(open_chat: OpenChat) -> None:
    settings = make_settings(
        ui={
            "title": "示例银行在线客服",
            "greeting": "您好,欢迎来到示例银行。",
            "primary_color": "#004b8d",
            "logo": "/static/logo.svg",
            "quick_questions": ["网点几点营业?"],
        }
    )
    async with live_server(settings) as server:
        chat = await open_chat(server)
        await expect(chat.page).to_have_title("示例银行在线客服")
        await expect(chat.page.locator("h1")).to_have_text("示例银行在线客服")
        await expect(chat.bubbles("greeting")).to_have_text(["您好,欢迎来到示例银行。"])
        await expect(chat.quick.locator(".chip")).to_have_text(["网点几点营业?"])
        await expect(chat.page.locator(".chat-header")).to_have_css("background-color", "rgb(0, 75, 141)")
        logo = chat.page.locator("img.chat-logo")
        await expect(logo).to_have_attribute("src", "/static/logo.svg")
        assert await logo.evaluate("img => img.complete && img.naturalWidth > 0")
        await expect(chat.page.locator(".msg-greeting img.avatar")).to_have_count(1)  # the bot wears the logo


async def test_text_has_enough_contrast(open_chat: OpenChat) -> None:
    async with live_server(make_settings(), bot=UnsureBot(), consumer=StaffConsumer) as server:
        chat = await open_chat(server)
        await chat.ask("额度")
        await chat.ask("#staff")
        await expect(chat.bubbles("agent")).to_have_count(1)
        await chat.page.locator(".chip").first.hover()
        pairs = await chat.page.evaluate(CONTRAST_PAIRS)
        await chat.server.stop()
        await expect(chat.page.locator("body")).to_have_attribute("data-connection", "disconnected")
        pairs += await chat.page.evaluate(CONTRAST_PAIRS)
    low = [(sel, fg, bg, round(contrast(fg, bg), 2)) for sel, fg, bg in pairs if contrast(fg, bg) < 4.5]
    assert len(pairs) > 15 and low == []


# For each text element: its colour and the colour it is drawn on (translucent layers blended).
CONTRAST_PAIRS = """() => {
    const sels = ["h1", ".chat-subtitle", "#status", ".msg-user .bubble", ".msg-bot .bubble",
        ".msg-greeting .bubble", ".msg-agent .bubble", ".msg-agent .who", ".msg-system .bubble", ".meta",
        ".chip", ".suggestions-label", ".privacy-note", ".send", "#input"];
    // "rgb(r, g, b)", "rgba(r, g, b, a)" or, from color-mix(), "color(srgb r g b / a)" with 0..1 channels.
    const parse = c => {
        const v = (c.match(/[\\d.]+/g) || []).map(Number);
        return c.startsWith("color(") ? v.map((x, i) => (i < 3 ? x * 255 : x)) : v;
    };
    const blend = (top, under) => {
        const a = top.length > 3 ? top[3] : 1;
        return [0, 1, 2].map(i => top[i] * a + under[i] * (1 - a));
    };
    const backdrop = el => {
        const layers = [];
        for (let e = el; e; e = e.parentElement) {
            const c = parse(getComputedStyle(e).backgroundColor);
            if (c.length > 3 && c[3] === 0) continue;
            layers.push(c);
            if (c.length === 3 || c[3] === 1) break;
        }
        return layers.reduceRight((under, top) => blend(top, under), [255, 255, 255]);
    };
    const out = [];
    for (const sel of sels) {
        for (const el of document.querySelectorAll(sel)) {
            if (!el.offsetParent && el.tagName !== "BODY") continue;
            const s = getComputedStyle(el);
            const fg = blend(parse(s.color), backdrop(el));
            out.push([sel, fg, backdrop(el)]);
        }
    }
    return out;
}"""


def contrast(fg: list[float], bg: list[float]) -> float:
    """WCAG 2 contrast ratio of two sRGB colours given as 0..255 channels."""

    def luminance(rgb: list[float]) -> float:
        lin = [(c / 255) / 12.92 if c / 255 <= 0.03928 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in rgb]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    light, dark = sorted((luminance(fg), luminance(bg)), reverse=True)
    return (light + 0.05) / (dark + 0.05)
