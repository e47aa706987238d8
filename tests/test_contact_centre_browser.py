"""Browser: a contact-centre shift (#16) in a real chromium — two agents, four customers on phones.

One story, in order: a customer outside business hours leaves a message; within hours
conversations are auto-assigned up to each agent's capacity while the rest wait; a silent agent
loses a conversation to the queue and is set away; an ended chat asks for a rating; an agent
transfers a conversation; canned replies and the typing indicator; the supervisor's page of the
questions the bot could not answer. The real FAQ bot answers; the business-hours clock is set,
not waited for.

With CHATBOT_SCREENSHOTS=<folder> it saves the screenshots docs/agents.md shows.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from chatbot_server.agents.passwords import hash_password
from chatbot_server.keys import AVAILABILITY_KEY

from .agent_support import NAMES, PASSWORDS, SECRET
from .browser_support import browser, live_server, playwright_expect  # noqa: F401 - the browser fixture is used by name
from .helpers import make_settings

expect = playwright_expect()

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]

SH = ZoneInfo("Asia/Shanghai")
HOURS = {
    "timezone": "Asia/Shanghai",
    **{d: ["09:00-12:00", "13:00-18:00"] for d in ("mon", "tue", "wed", "thu", "fri")},
}
EVENING = dt.datetime(2026, 12, 7, 19, 30, tzinfo=SH)  # a Monday, after hours
MORNING = dt.datetime(2026, 12, 8, 10, 0, tzinfo=SH)
CARD = "6222021234567890128"
SHOTS = os.environ.get("CHATBOT_SCREENSHOTS")


def settings() -> Any:
    accounts = [
        {
            "username": u,
            "name": NAMES[u],
            "password_hash": hash_password(p, iterations=1000),
            "capacity": 1,
            "role": "supervisor" if u == "li" else "agent",
        }
        for u, p in PASSWORDS.items()
    ]
    agents = {
        "accounts": accounts,
        "session_secret": SECRET,
        "routing": "auto",
        "assign_timeout": 3.0,
        "hours": HOURS,
    }
    return make_settings(bot={"name": "faq"}, agents=agents)


async def phone(browser: Any, errors: list[str], url: str) -> Any:
    context = await browser.new_context(
        viewport={"width": 375, "height": 667}, locale="zh-CN", is_mobile=True, has_touch=True
    )
    context.set_default_timeout(8000)
    page = await context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(url)
    await expect(page.locator("body")).to_have_attribute("data-connection", "connected")
    return page


async def console(browser: Any, errors: list[str], url: str, username: str) -> Any:
    context = await browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
    context.set_default_timeout(8000)
    page = await context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(url + "agent")
    await page.locator("#username").fill(username)
    await page.locator("#password").fill(PASSWORDS[username])
    await page.locator("#password").press("Enter")
    await expect(page.locator("#status")).to_contain_text(f"{NAMES[username]} 在线")
    await expect(page.locator("#agent-status")).to_have_value("online")
    return page


async def ask(page: Any, text: str) -> None:
    replies = await page.locator("#messages .msg-bot").count()
    await page.locator("#input").fill(text)
    await page.locator("#input").press("Enter")
    await expect(page.locator("#messages .msg-bot")).to_have_count(replies + 1)


async def shot(page: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(SHOTS) / f"{name}.png"))


async def test_a_shift(browser: Any) -> None:
    errors: list[str] = []
    async with live_server(settings()) as server:
        assert server.app is not None
        availability = server.app[AVAILABILITY_KEY]
        availability.clock = lambda: EVENING
        li = await console(browser, errors, server.url, "li")

        # 1. After hours: no queue, the hours and the next opening, and a message left (masked).
        a = await phone(browser, errors, server.url)
        await a.locator("#handoff").click()
        await expect(a.locator("#messages .msg-system .bubble").last).to_contain_text("下次服务时间:12月8日 周二 9:00")
        await expect(a.locator("#leave-message-form")).to_be_visible()
        await a.locator("#leave-contact").fill("13800138000")
        await a.locator("#leave-text").fill(f"我的卡 {CARD} 被冻结了,请明天上午回电。")
        await shot(a, "customer-phone-leave-message")
        await a.locator("#leave-message-form button[type=submit]").click()
        await expect(a.locator("#messages .msg-system .bubble").last).to_contain_text("您的留言已收到")
        await expect(li.locator("#left-messages li")).to_have_count(1)
        await expect(li.locator("#left-messages li .preview")).to_contain_text("请明天上午回电")
        assert CARD not in await li.locator("#left-messages").inner_text()
        assert await li.locator("#queue li").count() == 0

        # 2. Morning. Two customers ask what the bot cannot answer first (the supervisor's page).
        availability.clock = lambda: MORNING
        b = await phone(browser, errors, server.url)
        await ask(b, "你们食堂中午几点开饭")
        await b.locator("#handoff").click()
        await expect(li.locator("#conversations li")).to_have_count(1)  # auto-assigned: li had room
        await expect(b.locator("#messages .msg-system .bubble").last).to_contain_text("客服小李")
        await li.locator("#reply-input").fill("您好,我是客服小李,请问有什么可以帮您?")
        await li.locator("#reply-input").press("Enter")  # answered in time: kept
        await expect(b.locator("#messages .msg-agent .bubble")).to_have_count(1)

        c = await phone(browser, errors, server.url)
        await ask(c, "你们食堂中午几点开饭呀")
        await ask(c, "我的信用卡被盗刷了怎么办")
        await c.locator("#handoff").click()
        await expect(c.locator("#queue-status")).to_contain_text("您是下一位")  # li is full, nobody else
        await expect(li.locator("#queue li")).to_have_count(1)

        # 3. A second agent signs in: the waiting conversation is theirs at once; the next waits.
        wang = await console(browser, errors, server.url, "wang")
        await expect(wang.locator("#conversations li")).to_have_count(1)
        await expect(wang.locator("#notice")).to_contain_text("已为您分配新会话")
        d = await phone(browser, errors, server.url)
        await d.locator("#handoff").click()
        await expect(d.locator("#queue-status")).to_contain_text("您是下一位")  # both agents are full
        await expect(d.locator("#cancel-handoff")).to_be_visible()
        await shot(d, "customer-phone-queued")

        # 4. Wang does not answer within assign_timeout: the conversation goes back to the head of
        # the queue, wang is set away.
        await expect(wang.locator("#notice")).to_contain_text("已转给其他客服", timeout=15000)
        await expect(wang.locator("#agent-status")).to_have_value("away")
        await expect(wang.locator("#conversations li")).to_have_count(0)
        await expect(li.locator("#queue li")).to_have_count(2)
        await expect(li.locator("#queue li .preview").first).to_contain_text("信用卡被盗刷")  # c, first again
        await expect(d.locator("#queue-status")).to_contain_text("您前面还有 1 位用户")

        # 5. Li ends b's chat: b is asked for a rating; li's free slot goes to c, the head.
        await li.locator("#end").click()
        await expect(b.locator("#rating-card")).to_be_visible()
        await b.locator("#rating-stars [data-score='5']").click()
        await b.locator("#rating-comment").fill("客服很耐心,谢谢!")
        await shot(b, "customer-phone-rating")
        await b.locator("#rating-submit").click()
        await expect(b.locator("#rating-card")).to_be_hidden()
        await expect(b.locator("#messages .msg-system .bubble").last).to_contain_text("感谢您的评价")
        await expect(li.locator("#transcript .role-user .text").last).to_have_text("我的信用卡被盗刷了怎么办")

        # 6. The bot's suggestion, a canned reply (/hello, with the agent's name) and the typing
        # indicator on c's phone, then the line itself.
        await expect(li.locator("#suggestion")).to_be_visible()
        await li.locator("#reply-input").press_sequentially("/he")
        await expect(li.locator("#canned-list li")).to_have_count(1)
        await li.locator("#reply-input").press("Enter")
        hello = "您好,我是客服小李,很高兴为您服务。请问有什么可以帮您?"
        await expect(li.locator("#reply-input")).to_have_value(hello)
        await li.locator("#reply-input").press_sequentially("请您先致电发卡行冻结卡片。")
        await expect(c.locator("#typing")).to_be_visible()
        await shot(li, "console")
        await li.locator("#reply-input").press("Enter")
        await expect(c.locator("#messages .msg-agent .bubble").last).to_have_text(hello + "请您先致电发卡行冻结卡片。")
        await expect(c.locator("#typing")).to_be_hidden()

        # 7. Wang is back: d is assigned to wang, who answers and transfers d to li once li is free.
        await wang.locator("#agent-status").select_option("online")
        await expect(wang.locator("#conversations li")).to_have_count(1)
        await wang.locator("#reply-input").fill("您好,我是客服小王。")
        await wang.locator("#reply-input").press("Enter")
        await expect(d.locator("#messages .msg-agent .bubble")).to_have_text(["您好,我是客服小王。"])
        await li.locator("#end").click()  # c skips the rating
        await c.locator("#rating-skip").click()
        await expect(c.locator("#rating-card")).to_be_hidden()
        await expect(wang.locator("#transfer-to option[value=li]")).to_be_enabled()
        await wang.locator("#transfer-to").select_option("li")
        await wang.locator("#transfer").click()
        await expect(wang.locator("#conversations li")).to_have_count(0)
        await expect(li.locator("#conversations li")).to_have_count(1)
        await expect(d.locator("#messages .msg-system .bubble").last).to_contain_text("客服小李")
        await li.locator("#reply-input").fill("您好,我接着为您处理。")
        await li.locator("#reply-input").press("Enter")
        await expect(d.locator("#messages .msg-agent .bubble").last).to_have_text("您好,我接着为您处理。")

        # 8. The message left last night is dealt with, on every console.
        await li.locator("#left-messages .close-message").click()
        await expect(li.locator("#left-messages li")).to_have_count(0)
        await expect(wang.locator("#left-messages li")).to_have_count(0)

        # 9. The supervisor's page: the two wordings of the canteen question, grouped.
        await li.goto(server.url + "agent/unanswered")
        row = li.locator("#unanswered-table tbody tr").filter(has_text="食堂")
        await expect(row).to_have_count(1)
        await expect(row).to_contain_text("2")
        await shot(li, "unanswered")
        denied = await wang.request.get(server.url + "agent/unanswered")
        assert denied.status == 403
    assert errors == []
