"""Browser end to end: a user clicks 转人工, an agent signs in, claims and replies, the user sees it."""

from __future__ import annotations

from typing import Any

import pytest

from .agent_support import PASSWORDS, HandoffBot, agent_section
from .browser_support import browser, live_server, playwright_expect  # noqa: F401 - the browser fixture is used by name
from .helpers import make_settings

expect = playwright_expect()

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]


async def new_page(browser: Any, errors: list[str]) -> Any:
    context = await browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
    context.set_default_timeout(5000)
    page = await context.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return page


async def test_user_hands_off_and_an_agent_answers(browser: Any) -> None:
    errors: list[str] = []
    bot = HandoffBot()
    async with live_server(make_settings(agents=agent_section()), bot=bot) as server:
        user = await new_page(browser, errors)
        await user.goto(server.url)
        await expect(user.locator("body")).to_have_attribute("data-connection", "connected")
        await user.locator("#input").fill("我的卡被吞了")
        await user.locator("#input").press("Enter")
        await expect(user.locator("#messages .msg-bot .bubble")).to_have_text(["答:我的卡被吞了"])
        await user.locator("#handoff").click()
        await expect(user.locator("#queue-status")).to_contain_text("您是下一位")
        await expect(user.locator("#handoff")).to_be_disabled()

        agent = await new_page(browser, errors)
        await agent.goto(server.url + "agent")
        assert agent.url.endswith("/agent/login")
        await agent.locator("#username").fill("li")
        await agent.locator("#password").fill(PASSWORDS["li"])
        await agent.locator("#password").press("Enter")
        await expect(agent.locator("#status")).to_contain_text("客服小李 在线")
        await expect(agent.locator("#queue li")).to_have_count(1)
        await expect(agent.locator("#queue li .preview")).to_contain_text("我的卡被吞了")
        await agent.locator("#queue li .claim").click()
        await expect(agent.locator("#queue li")).to_have_count(0)
        # The whole transcript, the bot's part included.
        await expect(agent.locator("#transcript .text")).to_contain_text(
            ["您好,很高兴为您服务。", "我的卡被吞了", "答:我的卡被吞了"]
        )
        await expect(user.locator("#queue-status")).to_be_hidden()
        await expect(user.locator("#messages .msg-system .bubble").last).to_contain_text("客服小李")

        await agent.locator("#reply-input").fill("您好,我是客服小李,<b>请问</b>卡在哪个网点被吞的?")
        await agent.locator("#reply-input").press("Enter")
        bubble = user.locator("#messages .msg-agent")
        await expect(bubble.locator(".bubble")).to_have_text(["您好,我是客服小李,<b>请问</b>卡在哪个网点被吞的?"])
        await expect(bubble.locator(".who")).to_have_text(["客服小李"])
        assert await user.locator("#messages .msg-agent b").count() == 0  # text, never markup

        answered = list(bot.answered)
        await user.locator("#input").fill("人民路支行")
        await user.locator("#input").press("Enter")
        await expect(agent.locator("#transcript .role-user .text").last).to_have_text("人民路支行")
        await expect(user.locator("#thinking")).to_be_hidden()
        assert bot.answered == answered  # the bot stayed silent

        await agent.locator("#end").click()
        await expect(user.locator("#messages .msg-system .bubble").nth(-2)).to_contain_text("人工服务已结束")
        await expect(user.locator("#rating-card")).to_be_visible()  # agents.ask_rating: tests/test_rating.py
        await expect(user.locator("#handoff")).to_be_enabled()
        await expect(agent.locator("#conversations li")).to_have_count(0)
    assert errors == []


async def test_console_controls_follow_the_open_conversation(browser: Any) -> None:
    """The reply box and 转回机器人 / 结束对话 show only with a conversation open: chat.css's
    `display: flex` once outranked their `hidden` attribute (issue #16). The queue previews the
    question asked before the typed 转人工, and the user is told the agent's name once."""
    errors: list[str] = []
    async with live_server(make_settings(agents=agent_section()), bot=HandoffBot()) as server:
        agent = await new_page(browser, errors)
        await agent.goto(server.url + "agent")
        await agent.locator("#username").fill("li")
        await agent.locator("#password").fill(PASSWORDS["li"])
        await agent.locator("#password").press("Enter")
        await expect(agent.locator("#status")).to_contain_text("客服小李 在线")
        controls = [agent.locator(s) for s in ("#actions", "#handback", "#end", "#reply-form", "#reply-input")]
        for control in [*controls, agent.locator("#transcript")]:
            await expect(control).to_be_hidden()
        await expect(agent.locator("#empty")).to_be_visible()

        user = await new_page(browser, errors)
        await user.goto(server.url)
        await expect(user.locator("body")).to_have_attribute("data-connection", "connected")
        await user.locator("#input").fill("我的卡被吞了")
        await user.locator("#input").press("Enter")
        await expect(user.locator("#messages .msg-bot .bubble")).to_have_text(["答:我的卡被吞了"])
        await user.locator("#input").fill("转人工")  # typed, not the button: the bot's handoff intent
        await user.locator("#input").press("Enter")
        await expect(user.locator("#queue-status")).to_be_visible()

        await expect(agent.locator("#queue li .preview")).to_have_text(["#1 我的卡被吞了"])
        for control in controls:
            await expect(control).to_be_hidden()  # the queue changed; still nothing open
        await agent.locator("#queue li .claim").click()
        for control in [*controls, agent.locator("#transcript")]:
            await expect(control).to_be_visible()
        await expect(agent.locator("#empty")).to_be_hidden()
        await expect(agent.locator("#reply-input")).to_be_focused()
        await expect(user.locator("#messages .msg-system .bubble").last).to_have_text(
            "人工客服已接入,客服小李正在为您服务。"
        )

        await agent.locator("#end").click()
        await expect(agent.locator("#conversations li")).to_have_count(0)
        for control in [*controls, agent.locator("#transcript")]:
            await expect(control).to_be_hidden()
        await expect(agent.locator("#empty")).to_be_visible()
    assert errors == []
