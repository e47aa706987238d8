"""The supervisors' page of the bot's unanswered questions, and its CSV export (docs/agents.md).

GET /agent/unanswered?days=1|7|30 and GET /agent/unanswered.csv?days=…: supervisors only (403
for agents), the sign-in page without a session. The questions were masked before they were kept.
"""

from __future__ import annotations

import logging

from aiohttp import web

from ..errors import StoreUnavailableError
from ..keys import SETTINGS_KEY, UNANSWERED_KEY
from .directory import Agent
from .unanswered import MAX_SHOWN, Group, group_questions, groups_csv
from .views import current_agent, render_page

log = logging.getLogger("chatbot_server.agents")

PERIODS = (1, 7, 30)
DEFAULT_DAYS = 7


def _supervisor(request: web.Request) -> Agent:
    agent = current_agent(request)
    if agent is None:
        raise web.HTTPFound(str(request.app.router["chatbot_agent_login"].url_for()))
    if not agent.supervisor:
        raise web.HTTPForbidden(text="supervisors only")
    return agent


def _days(request: web.Request) -> int:
    raw = request.query.get("days", "")
    days = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 3 else DEFAULT_DAYS
    return days if days in PERIODS else DEFAULT_DAYS


async def _groups(request: web.Request, days: int) -> list[Group]:
    store = request.config_dict[UNANSWERED_KEY]
    kept = request.config_dict[SETTINGS_KEY].agents.unanswered_days
    try:
        items = await store.recent(min(days, kept))
    except StoreUnavailableError as exc:
        log.warning("agent.unanswered_unavailable error=%s", exc)
        raise web.HTTPServiceUnavailable(text="暂时无法读取未解决问题,请稍后再试。") from exc
    return group_questions(items)


async def unanswered_page(request: web.Request) -> web.StreamResponse:
    """The groups of the period, most asked first."""
    agent = _supervisor(request)
    days = _days(request)
    groups = await _groups(request, days)
    csv_url = request.app.router["chatbot_agent_unanswered_csv"].url_for().with_query(days=str(days))
    context = {
        "agent": agent,
        "days": days,
        "periods": PERIODS,
        "groups": groups[:MAX_SHOWN],
        "total": sum(g.count for g in groups),
        "csv_url": str(csv_url),
        "console_url": str(request.app.router["chatbot_agent_console"].url_for()),
    }
    return render_page(request, "agent_unanswered.html", context)


async def unanswered_csv(request: web.Request) -> web.StreamResponse:
    """Every group of the period as CSV (UTF-8 with BOM)."""
    _supervisor(request)
    days = _days(request)
    body = groups_csv(await _groups(request, days))
    return web.Response(
        body=body,
        content_type="text/csv",
        charset="utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="unanswered-{days}d.csv"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )
