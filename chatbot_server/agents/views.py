"""Agent console pages: sign-in, sign-out and the console itself (its socket is consumer.py)."""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
from aiohttp import web

from ..keys import DIRECTORY_KEY, LAYER_KEY, SETTINGS_KEY, TEMPLATES_KEY
from ..sockets.origin import origin_allowed
from ..sockets.ratelimit import client_ip, forwarded_proto
from ..version import __version__
from .canned import console_config
from .directory import Agent, AgentDirectory
from .sessions import COOKIE_NAME, SESSIONS_GROUP, session_ended

_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def _url(request: web.Request, name: str, **parts: str) -> str:
    return str(request.app.router[name].url_for(**parts))


def _render(request: web.Request, template: str, context: dict[str, Any], *, status: int = 200) -> web.Response:
    settings = request.config_dict[SETTINGS_KEY]
    router = request.app.router
    context = {
        "ui": settings.ui,
        "static": lambda path: f"{router['chatbot_static'].url_for(filename=path)}?v={__version__}",
        "login_url": _url(request, "chatbot_agent_login"),
        "logout_url": _url(request, "chatbot_agent_logout"),
        "unanswered_url": _url(request, "chatbot_agent_unanswered"),
        **context,
    }
    response = aiohttp_jinja2.render_template(template, request, context, app_key=TEMPLATES_KEY, status=status)
    response.headers["Content-Security-Policy"] = _CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    # Not "no-referrer": with it browsers send "Origin: null" on form posts, failing the Origin check.
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    return response


#: For the other console pages (unanswered_views.py): the same headers and base context.
render_page = _render


def current_agent(request: web.Request) -> Agent | None:
    """The agent signed in on this request (a valid session cookie), or None."""
    return request.config_dict[DIRECTORY_KEY].from_cookie(request.cookies.get(COOKIE_NAME))


def came_over_https(request: web.Request) -> bool:
    """TLS to us, or to a trusted proxy that says so (X-Forwarded-Proto from server.trusted_proxies)."""
    return forwarded_proto(request, request.config_dict[SETTINGS_KEY].server.trusted_proxies) == "https"


def _same_origin_post(request: web.Request) -> bool:
    # SameSite=Strict already keeps the cookie off cross-site posts; the Origin header must match too.
    settings = request.config_dict[SETTINGS_KEY]
    return "Origin" in request.headers and origin_allowed(
        request, settings.security.allowed_origins, settings.server.trusted_proxies
    )


async def console_page(request: web.Request) -> web.StreamResponse:
    """The console; without a session, a redirect to the sign-in page."""
    agent = current_agent(request)
    if agent is None:
        raise web.HTTPFound(_url(request, "chatbot_agent_login"))
    config = {
        "wsPath": _url(request, "chatbot_agent_ws"),
        "agent": {"username": agent.username, "name": agent.name},
        "maxTextLength": request.config_dict[SETTINGS_KEY].limits.max_text_length,
        # The console's tools (agent_tools.js): canned replies, the export link ("{id}" replaced).
        **console_config(request.config_dict[SETTINGS_KEY]),
        "exportPath": _url(request, "chatbot_agent_export", conversation="ID", kind="txt").replace("/ID/", "/{id}/"),
    }
    return _render(request, "agent.html", {"agent": agent, "client_config": config})


async def login_page(request: web.Request) -> web.StreamResponse:
    """The sign-in form."""
    if current_agent(request) is not None:
        raise web.HTTPFound(_url(request, "chatbot_agent_console"))
    return _render(request, "agent_login.html", {"error": ""})


async def login(request: web.Request) -> web.StreamResponse:
    """Check the password (rate limited per IP and per username) and set the session cookie."""
    if not _same_origin_post(request):
        raise web.HTTPForbidden(text="origin not allowed")
    directory: AgentDirectory = request.config_dict[DIRECTORY_KEY]
    form = await request.post()
    username = str(form.get("username", ""))[:64]
    password = str(form.get("password", ""))[:256]
    settings = request.config_dict[SETTINGS_KEY]
    keys = (f"ip:{client_ip(request, settings.server.trusted_proxies)}", f"user:{username}")
    if directory.limiter.blocked(*keys):
        return _render(request, "agent_login.html", {"error": "尝试次数过多,请稍后再试。"}, status=429)
    agent = await directory.check_password(username, password)
    if agent is None:
        directory.limiter.failed(*keys)
        return _render(request, "agent_login.html", {"error": "用户名或密码错误。"}, status=401)
    directory.limiter.succeeded(keys[1])
    response = web.HTTPSeeOther(_url(request, "chatbot_agent_console"))
    response.set_cookie(
        COOKIE_NAME,
        directory.signer.issue(agent.username),
        max_age=int(directory.signer.ttl),
        path=_url(request, "chatbot_agent_console"),
        httponly=True,
        samesite="Strict",
        secure=came_over_https(request),
    )
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    """End the session on every process (its console sockets close with 4003) and forget the cookie."""
    if not _same_origin_post(request):
        raise web.HTTPForbidden(text="origin not allowed")
    directory: AgentDirectory = request.config_dict[DIRECTORY_KEY]
    session = directory.session(request.cookies.get(COOKIE_NAME))
    if session is not None:
        # Here at once, even if the layer cannot reach the other processes right now ...
        directory.sessions.revoke(session.id, session.expires)
        # ... for processes that start later or miss the message (bounded wait, never raises) ...
        await directory.revocations.add(session.id, session.expires)
        # ... and on every process (this one included) through the group they all joined.
        await request.config_dict[LAYER_KEY].group_send(SESSIONS_GROUP, session_ended(session))
    response = web.HTTPSeeOther(_url(request, "chatbot_agent_login"))
    response.del_cookie(COOKIE_NAME, path=_url(request, "chatbot_agent_console"))
    raise response
