"""Browser: the console's tools (#16) in a real chromium: canned replies, the typing indicator on
the customer's page, the bot's suggestion and its 使用 button, the export link, the alerts toggle."""

from __future__ import annotations

from typing import Any

import pytest

from .agent_support import PASSWORDS, HandoffBot, agent_section
from .browser_support import browser, live_server, playwright_expect  # noqa: F401 - the browser fixture is used by name
from .helpers import make_settings
from .test_browser_agent import new_page

expect = playwright_expect()

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]


async def test_canned_reply_typing_suggestion_and_export(browser: Any) -> None:
    errors: list[str] = []
    async with live_server(make_settings(agents=agent_section(suggestions=True)), bot=HandoffBot()) as server:
        user = await new_page(browser, errors)
        await user.goto(server.url)
        await expect(user.locator("body")).to_have_attribute("data-connection", "connected")
        await user.locator("#handoff").click()
        await expect(user.locator("#queue-status")).to_contain_text("您是下一位")
        await user.locator("#input").fill("卡被吞了")
        await user.locator("#input").press("Enter")

        agent = await new_page(browser, errors)
        await agent.goto(server.url + "agent")
        await agent.locator("#username").fill("li")
        await agent.locator("#password").fill(PASSWORDS["li"])
        await agent.locator("#password").press("Enter")
        await expect(agent.locator("#notify-toggle")).to_have_text("开启提醒")
        await agent.locator("#notify-toggle").click()
        await expect(agent.locator("#notify-toggle")).to_have_attribute("aria-pressed", "true")
        await agent.locator("#queue li .claim").click()

        # The bot's suggestion for the customer's last line; 使用 puts it in the reply box.
        await expect(agent.locator("#suggestion-answer")).to_have_text("答:卡被吞了")
        await agent.locator("#use-suggestion").click()
        await expect(agent.locator("#reply-input")).to_have_value("答:卡被吞了")
        href = await agent.locator("#export-transcript").get_attribute("href")
        assert href is not None and href.startswith("/agent/conversations/") and href.endswith("/transcript.txt")

        # A canned reply: "/he" offers /hello; Enter inserts it expanded (no verified customer: no name).
        await agent.locator("#reply-input").fill("")
        await agent.locator("#reply-input").press_sequentially("/he")
        await expect(agent.locator("#canned-list li")).to_have_count(1)
        await agent.locator("#reply-input").press("Enter")
        await expect(agent.locator("#canned-list")).to_be_hidden()
        hello = "您好,我是客服小李,很高兴为您服务。请问有什么可以帮您?"
        await expect(agent.locator("#reply-input")).to_have_value(hello)
        await expect(user.locator("#typing")).to_be_hidden()  # "/he" is not typing a reply yet
        await agent.locator("#reply-input").press_sequentially("好")
        await expect(user.locator("#typing")).to_be_visible()
        await agent.locator("#reply-input").press("Enter")  # now it sends
        await expect(user.locator("#messages .msg-agent .bubble")).to_have_text([hello + "好"])
        await expect(user.locator("#typing")).to_be_hidden()  # the line arrived
    assert errors == []
