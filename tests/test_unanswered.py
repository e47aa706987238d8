"""Unanswered questions for supervisors: recorded masked off the reply path (the real FAQ bot),
near-duplicates grouped with counts and closest intents, the page and its CSV for supervisors only.

On one process (memory) and on two app instances sharing a private Redis: the customer on the
first, the supervisor on the second.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from chatbot_server.agents.passwords import hash_password
from chatbot_server.agents.unanswered import group_questions
from chatbot_server.keys import NOTES_KEY
from chatbot_server.store.unanswered import Unanswered

from .agent_support import SECRET, apps_of, origin
from .helpers import receive_json, receive_until

pytestmark = pytest.mark.timeout(60)

CARD = "6222 0212 3456 7878"  # passes Luhn (tests/test_masking.py)
PASSWORDS = {"li": "li-password-1", "boss": "boss-password-3"}


def accounts() -> list[dict[str, Any]]:
    return [
        {"username": "li", "name": "客服小李", "password_hash": hash_password(PASSWORDS["li"], iterations=1000)},
        {
            "username": "boss",
            "name": "主管老张",
            "password_hash": hash_password(PASSWORDS["boss"], iterations=1000),
            "role": "supervisor",
        },
    ]


@pytest.fixture(params=["memory", "redis"])
async def apps(request: pytest.FixtureRequest, aiohttp_client: Any) -> tuple[TestClient, TestClient]:
    sections: dict[str, Any] = {
        "bot": {"name": "faq", "options": {"watch": False}},
        "agents": {"accounts": accounts(), "session_secret": SECRET, "unanswered_below": 0.6},
    }
    return await apps_of(request, aiohttp_client, sections)


async def cookie_of(client: TestClient, username: str) -> str:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        response = await session.post(
            client.make_url("/agent/login"),
            data={"username": username, "password": PASSWORDS[username]},
            headers={"Origin": origin(client)},
            allow_redirects=False,
        )
        assert response.status == 303
        return response.cookies["chatbot_agent"].value


async def get(client: TestClient, path: str, username: str | None) -> aiohttp.ClientResponse:
    headers = {} if username is None else {"Cookie": f"chatbot_agent={await cookie_of(client, username)}"}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        response = await session.get(client.make_url(path), headers=headers, allow_redirects=False)
        await response.read()
        return response


async def ask(client: TestClient, questions: list[str]) -> list[dict[str, Any]]:
    ws = await client.ws_connect("/ws")
    await receive_json(ws)
    replies = []
    for n, text in enumerate(questions):
        await ws.send_json({"type": "message", "text": text, "id": f"q{n}"})
        replies.append(await receive_until(ws, "reply"))
    await ws.close()
    await client.server.app[NOTES_KEY].settle()  # the writes run off the reply path
    return replies


async def test_supervisors_see_grouped_masked_questions_and_export_them(apps: tuple[TestClient, TestClient]) -> None:
    customer, console = apps
    replies = await ask(
        customer,
        [
            "我的卡在火星上能不能刷",
            "年费",  # answered with confidence 1.0: not recorded
            "我的卡在火星上能不能刷",
            "我的卡在火星上能不能刷呢",
            "卡在火星上能刷吗",
            f"卡号{CARD}在火星上能不能刷",
            "请问怎么养猫",  # the knowledge base's "out_of_scope"
        ],
    )
    assert replies[1]["intent"] == "annual_fee"

    page = await get(console, "/agent/unanswered?days=1", "boss")
    assert page.status == 200
    html = await page.text()
    assert 'id="unanswered-table"' in html and "共 6 个问题" in html
    assert "0212 3456" not in html and "**** **** **** 7878" in html
    assert "年费" not in html
    # The group of the four Mars questions: the most asked wording, its count, the closest intent.
    row = html.split("我的卡在火星上能不能刷</td>", 1)[1].split("</tr>", 1)[0]
    assert '<td class="count">4</td>' in row and "card_activation (0." in row

    exported = await get(console, "/agent/unanswered.csv?days=7", "boss")
    assert exported.status == 200 and exported.headers["Content-Type"].startswith("text/csv")
    body = await exported.read()
    assert body.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    assert rows[0] == ["问题", "次数", "最近一次", "最接近的意图"]
    assert rows[1][:2] == ["我的卡在火星上能不能刷", "4"] and rows[1][3].startswith("card_activation (")
    assert sorted(r[1] for r in rows[1:]) == ["1", "1", "4"]
    assert not any("0212 3456" in cell for r in rows for cell in r)


async def test_only_supervisors_get_the_page(apps: tuple[TestClient, TestClient]) -> None:
    _, console = apps
    for path in ("/agent/unanswered", "/agent/unanswered.csv"):
        anonymous = await get(console, path, None)
        assert (anonymous.status, anonymous.headers["Location"]) == (302, "/agent/login")
        assert (await get(console, path, "li")).status == 403
    li_console = await (await get(console, "/agent", "li")).text()
    boss_console = await (await get(console, "/agent", "boss")).text()
    assert "未解决问题" not in li_console and 'id="unanswered-link"' in boss_console


def test_grouping_is_deterministic_and_keeps_the_best_confidence() -> None:
    def q(text: str, ts: int, *candidates: tuple[str, float]) -> Unanswered:
        return Unanswered(text, ts, "out_of_scope", 0.1, True, candidates)

    items = [
        q("信用卡怎么分期还款", 3, ("installment", 0.4)),
        q("怎么养猫", 1),
        q("信用卡怎样分期还款", 2, ("installment", 0.5), ("repayment", 0.3)),
    ]
    groups = group_questions(items)
    assert group_questions(list(reversed(items))) == groups
    assert [(g.question, g.count, g.last_seen) for g in groups] == [("信用卡怎样分期还款", 2, 3), ("怎么养猫", 1, 1)]
    assert groups[0].intents == [("installment", 0.5), ("repayment", 0.3)]


async def test_a_failing_store_never_fails_the_reply() -> None:
    from chatbot_server.bots import Reply
    from chatbot_server.chat.unanswered import UnansweredNotes
    from chatbot_server.errors import StoreUnavailableError
    from chatbot_server.ops.metrics import ServerStats
    from chatbot_server.store.unanswered import MemoryUnansweredStore

    class Failing(MemoryUnansweredStore):
        async def add(self, item: Unanswered) -> None:
            raise StoreUnavailableError("down")

    stats = ServerStats()
    notes = UnansweredNotes(Failing(), below=0.3, stats=stats)
    notes.note("火星上能刷卡吗", Reply("抱歉", intent="out_of_scope", confidence=0.0, fallback=True))  # returns at once
    notes.note("年费", Reply("…", intent="annual_fee", confidence=0.9))  # not unanswered: nothing to write
    notes.note("转人工", Reply("好的", intent="human_agent", confidence=0.1, handoff=True))
    await notes.settle()
    assert stats.errors["unanswered_unavailable"] == 1
    kept = MemoryUnansweredStore()
    notes = UnansweredNotes(kept, below=0.3, stats=stats)
    notes.note(f"卡号 {CARD} 丢了", Reply("?", intent="x", confidence=0.2, candidates=(("card_lost_report", 0.2),)))
    await notes.settle()
    assert [(q.text, q.candidates) for q in await kept.recent(1)] == [
        ("卡号 **** **** **** 7878 丢了", (("card_lost_report", 0.2),))
    ]
