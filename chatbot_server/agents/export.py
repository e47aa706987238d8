"""Transcript export: GET /agent/conversations/{conversation}/transcript.txt (or .json).

For the agent holding the conversation (may_export: the one permission check, to be widened for
supervisors), with a console session like every /agent route. Every line is masked again with
mask_sensitive (stored frames are masked already: cheap insurance) and sent as an attachment.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any, Final, TypedDict

from aiohttp import web

from ..errors import LayerUnavailableError, StoreUnavailableError
from ..jsonutil import dumps
from ..keys import CONNECTIONS_KEY, CUSTOMERS_KEY, DIRECTORY_KEY, QUEUE_KEY, STORE_KEY
from ..masking import mask_sensitive
from ..protocol import MAX_CONVERSATION_ID_LENGTH
from ..store.handoff import DEADLINE
from .directory import Agent
from .sessions import COOKIE_NAME

log = logging.getLogger("chatbot_server.agents")

# Who says a stored frame's line, as the console names them (agent lines carry the agent's name).
SPEAKERS: Final = {"user": "用户", "greeting": "智能客服", "reply": "智能客服", "agent": "客服", "system": "系统"}
_UNAVAILABLE = (StoreUnavailableError, LayerUnavailableError, TimeoutError)


class TranscriptLine(TypedDict):
    """One line of an exported transcript."""

    ts: int
    time: str
    speaker: str
    text: str


def may_export(agent: Agent, holder: str | None) -> bool:
    """Whether `agent` may export a conversation held by `holder` (a username, None if nobody holds it)."""
    return holder is not None and holder == agent.username


def transcript_lines(frames: list[dict[str, Any]]) -> list[TranscriptLine]:
    """The frames people read (not errors nor notices without text), masked, oldest first."""
    lines: list[TranscriptLine] = []
    for f in frames:
        speaker, text, ts = SPEAKERS.get(str(f.get("type"))), f.get("msg"), f.get("ts")
        if speaker is None or not isinstance(text, str) or not text or not isinstance(ts, int):
            continue
        if f.get("type") == "agent" and isinstance(f.get("agent"), str):
            speaker = f"客服 {f['agent']}"
        when = datetime.fromtimestamp(ts / 1000).astimezone().strftime("%Y-%m-%d %H:%M:%S %z")
        lines.append({"ts": ts, "time": when, "speaker": mask_sensitive(speaker), "text": mask_sensitive(text)})
    return lines


async def export_transcript(request: web.Request) -> web.StreamResponse:
    """The transcript as text (…/transcript.txt) or JSON (…/transcript.json)."""
    agent = request.config_dict[DIRECTORY_KEY].from_cookie(request.cookies.get(COOKIE_NAME))
    if agent is None:
        raise web.HTTPUnauthorized(text="请先登录客服工作台。")
    conversation, kind = request.match_info["conversation"], request.match_info["kind"]
    if not 0 < len(conversation) <= MAX_CONVERSATION_ID_LENGTH:
        raise web.HTTPNotFound()
    try:
        async with asyncio.timeout(DEADLINE):
            holder = await request.config_dict[QUEUE_KEY].agent_of(conversation)
            if not may_export(agent, holder):
                raise web.HTTPForbidden(text="这个会话不由您接待。")
            frames: list[dict[str, Any]] = [
                dict(f) for f in await request.config_dict[STORE_KEY].transcript(conversation)
            ]
            customer = await request.config_dict[CUSTOMERS_KEY].customer_of(conversation)
    except _UNAVAILABLE as exc:
        log.info("agent.export_unavailable conversation=%s error=%s", conversation[:8], exc)
        request.config_dict[CONNECTIONS_KEY].stats.error("store_unavailable")
        raise web.HTTPServiceUnavailable(text="会话记录暂时无法读取,请稍后再试。") from None
    lines = transcript_lines(frames)
    named = {"id": mask_sensitive(customer.id), "name": mask_sensitive(customer.name)} if customer else None
    log.info("agent.export agent=%s conversation=%s lines=%d", agent.username, conversation[:8], len(lines))
    if kind == "json":
        payload: dict[str, Any] = {"conversation": conversation, "lines": lines}
        if named is not None:
            payload["customer"] = named
        body, content_type = dumps(payload), "application/json"
    else:
        who = [f"客户 {named['name'] or '未提供姓名'}(客户号 {named['id']})"] if named else []
        head = [f"会话 {conversation}", *who, ""]
        body = "\n".join(head + [f"[{x['time']}] {x['speaker']}:{x['text']}" for x in lines]) + "\n"
        content_type = "text/plain"
    response = web.Response(text=body, content_type=content_type, charset="utf-8")
    name = "".join(c for c in conversation[:8] if c.isascii() and c.isalnum())  # nothing to quote
    response.headers["Content-Disposition"] = f'attachment; filename="transcript-{name}.{kind}"'
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
