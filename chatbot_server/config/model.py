"""The settings' shape: one frozen dataclass per config.yaml section, defaults = the embedded config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

LayerBackend = str  # "memory", "redis" or an import path "pkg.mod:Class"


@dataclass(frozen=True)
class ServerSettings:
    """Where the standalone server listens and how it stops."""

    host: str = "127.0.0.1"
    port: int = 8080
    shutdown_timeout: float = 5.0
    # Proxies whose X-Forwarded-For / -Proto headers are believed (exact IP addresses).
    trusted_proxies: tuple[str, ...] = ()
    # Seconds a new connection has to send its first request head (slowloris); then it is closed.
    handshake_timeout: float = 10.0
    # Seconds an idle keep-alive HTTP connection is kept (aiohttp's keepalive_timeout, which also
    # ends a later request whose head trickles in).
    keepalive_timeout: float = 15.0
    # Connections per client address still sending their first request head; more are closed at once.
    max_unfinished_per_ip: int = 20
    # File descriptors kept free: with fewer left, new connections get 503 and are closed at once.
    fd_reserve: int = 256
    # Processes serving server.port together (SO_REUSEPORT) under one supervisor; 1: a single process.
    workers: int = 1


@dataclass(frozen=True)
class RedisSettings:
    """Connection to Redis for the redis layer."""

    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "chatbot"
    pool_size: int = 50
    connect_timeout: float = 5.0
    socket_timeout: float = 5.0
    required: bool = False
    heartbeat_interval: float = 5.0
    # Seconds between delivery probes: a message to this process's own inbox through Redis.
    probe_interval: float = 1.0


@dataclass(frozen=True)
class LayerSettings:
    """Which channel layer passes messages, and its limits."""

    backend: LayerBackend = "memory"
    capacity: int = 100
    expiry: float = 60.0
    group_expiry: float = 86400.0
    redis: RedisSettings = field(default_factory=RedisSettings)


@dataclass(frozen=True)
class BotSettings:
    """Which bot answers, with its own options."""

    name: str = "faq"
    # Seconds for a reply, or for the first piece of a streamed one ...
    timeout: float = 5.0
    # ... and for the whole of a streamed reply (docs/protocol.md "Streamed replies").
    reply_timeout: float = 60.0
    history_turns: int = 6
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class UISettings:
    """Texts and branding of the chat page (Simplified Chinese by default)."""

    title: str = "银联智能客服"
    greeting: str = "您好,很高兴为您服务。"
    subtitle: str = "7×24 小时在线 · 银行卡业务咨询"
    placeholder: str = "请输入您的问题"
    send_label: str = "发送"
    history_label: str = "聊天记录"
    thinking_text: str = "正在思考…"
    connecting_text: str = "正在连接…"
    connected_text: str = "已连接"
    disconnected_text: str = "连接已断开,正在重连…"
    error_text: str = "抱歉,系统暂时无法回答,请稍后再试。"
    # The hotline named by agents' canned replies ({hotline}).
    hotline: str = "95516"
    quick_questions: tuple[str, ...] = (
        "银行卡丢了怎么挂失?",
        "新卡怎么激活?",
        "信用卡怎么提额?",
        "境外取现有什么限额?",
    )
    logo: str = ""
    primary_color: str = "#c8102e"
    template_dir: str = ""


@dataclass(frozen=True)
class LimitSettings:
    """Safety limits for sockets and messages."""

    max_text_length: int = 500
    max_msg_size: int = 16384
    heartbeat: float = 30.0
    idle_timeout: float = 900.0
    max_connections: int = 20000
    max_connections_per_ip: int = 200
    rate_per_second: float = 5.0
    rate_burst: int = 10
    abuse_strikes: int = 20
    send_timeout: float = 10.0
    # Frames one resume (or one page of older history) sends; older ones are paged on request.
    replay_frames: int = 100
    # Frames per minute one client address may pull by resumes and pages; beyond: "rate_limited".
    replay_per_ip: int = 3000


@dataclass(frozen=True)
class SecuritySettings:
    """Who may open a chat socket."""

    # Extra origins allowed to open the websocket and to frame the chat page (its CSP
    # frame-ancestors: where widget.js may show it); the page's own origin is always allowed.
    allowed_origins: tuple[str, ...] = ()


@dataclass(frozen=True)
class IdentitySettings:
    """Customers the host site has signed in, vouched for by a token its back end signs (docs/widget.md)."""

    # The HMAC-SHA256 key shared with the host's back end ($CHATBOT_IDENTITY_SECRET); empty: no
    # verified customers, every visitor is anonymous.
    secret: str = ""
    # True: visitors without a valid token can neither chat nor read history.
    required: bool = False
    # Tokens whose expiry lies further ahead than this are refused (a host bug must not mint
    # tokens that never expire).
    max_token_ttl: float = 86400.0


@dataclass(frozen=True)
class ApiToken:
    """One client of the HTTP API (the host's back end)."""

    name: str = ""
    # "sha256:<hex>" of the token: python -m chatbot_server.api.tokens makes a token and its hash.
    token_hash: str = ""


@dataclass(frozen=True)
class ApiSettings:
    """The HTTP API for the host's back end under /api/v1 (docs/api.md)."""

    tokens: tuple[ApiToken, ...] = ()
    # Requests per minute per token; beyond: 429 rate_limited.
    rate_per_minute: int = 120


@dataclass(frozen=True)
class MonitoringSettings:
    """Who may read /metrics and /healthz, and where."""

    # Networks (CIDR) whose clients may read them (the address server.trusted_proxies resolve);
    # others get 403. Default: loopback and private networks, where monitoring lives.
    allow: tuple[str, ...] = (
        "127.0.0.0/8",
        "::1/128",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "fc00::/7",
    )
    # A separate listener for them (python -m chatbot_server only); port 0: served on the main port.
    # When set, the main port no longer serves them.
    host: str = "127.0.0.1"
    port: int = 0


@dataclass(frozen=True)
class HistorySettings:
    """Where conversations are kept so a reconnecting page (on any process) can resume."""

    backend: str = "auto"  # auto (same as layer.backend) | memory | redis (uses layer.redis url/prefix)
    ttl: float = 86400.0
    max_frames: int = 500
    takeover_timeout: float = 3.0
    write_interval: float = 0.05  # redis: seconds frames gather before one pipeline writes them
    # Bytes one client address may add to stored conversations per hour; beyond, its messages are
    # refused ("quota_exceeded") until the hour's budget refills.
    quota_per_ip: int = 2_000_000


@dataclass(frozen=True)
class AgentAccount:
    """One human agent who may sign in to the console at /agent."""

    username: str = ""
    name: str = ""
    password_hash: str = ""
    # supervisor: also reads the unanswered-questions page (/agent/unanswered).
    role: Literal["agent", "supervisor"] = "agent"
    # Concurrent chats this agent may hold; 0: agents.capacity.
    capacity: int = 0


@dataclass(frozen=True)
class CannedReply:
    """A reply the agent inserts by typing its shortcut; {name}, {agent} and {hotline} are filled in."""

    shortcut: str = ""
    title: str = ""
    text: str = ""


DEFAULT_CANNED: tuple[CannedReply, ...] = (
    CannedReply("/hello", "问候", "您好{name},我是{agent},很高兴为您服务。请问有什么可以帮您?"),
    CannedReply("/wait", "请稍候", "好的,请您稍候,我马上为您查询。"),
    CannedReply("/bye", "结束语", "感谢您的耐心。如还有问题,欢迎随时联系我们,或拨打客服热线 {hotline}。祝您生活愉快!"),
)


@dataclass(frozen=True)
class HoursSettings:
    """When agents work (chatbot_server/hours.py); no timezone: always open."""

    timezone: str = ""  # IANA name, e.g. Asia/Shanghai; empty turns business hours off
    # Opening ranges per weekday ("09:00-12:00"); a day left out is closed.
    mon: tuple[str, ...] = ()
    tue: tuple[str, ...] = ()
    wed: tuple[str, ...] = ()
    thu: tuple[str, ...] = ()
    fri: tuple[str, ...] = ()
    sat: tuple[str, ...] = ()
    sun: tuple[str, ...] = ()
    holidays: tuple[str, ...] = ()  # dates closed all day (2026-10-01)
    workdays: Mapping[str, Any] = field(default_factory=dict)  # 调休: date -> its ranges


@dataclass(frozen=True)
class AgentSettings:
    """Handoff to human agents and their console."""

    enabled: bool = True
    accounts: tuple[AgentAccount, ...] = ()
    session_secret: str = ""
    session_ttl: float = 43200.0
    fallback_handoff: int = 3
    login_failures: int = 5
    login_window: float = 300.0
    # Handoff requests waiting in the queue per client address; more are refused politely.
    max_queued_per_ip: int = 2
    # Seconds a queued request stays after its user has gone (no socket holds it); then it expires.
    queue_grace: float = 120.0
    # After an agent ends a chat (not a handback), ask the customer for a 1-5 rating (docs/agents.md).
    ask_rating: bool = True
    # Characters of the rating's optional comment; longer ones are refused.
    rating_comment_length: int = 200
    # Days ratings and unanswered questions are kept.
    rating_days: int = 30
    unanswered_days: int = 30
    # Bot answers below this confidence (0..1) count as unanswered, besides fallbacks; 0: fallbacks only.
    unanswered_below: float = 0.3
    # Unanswered questions kept per day at most (the oldest go first).
    unanswered_per_day: int = 5000
    # The console's canned replies (docs/agents.md, "Canned replies").
    canned: tuple[CannedReply, ...] = DEFAULT_CANNED
    # The bot's suggested answer in the console: "auto" for the built-in bots that answer offline
    # (faq, echo), true for every bot (an LLM bot: one more model call per customer line), false for none.
    suggestions: Literal["auto", True, False] = "auto"
    hours: HoursSettings = field(default_factory=HoursSettings)
    # Messages left outside hours: per client address per hour, and open ones in all.
    left_messages_per_ip: int = 3
    left_messages_max: int = 1000
    # Routing (agents/routing.py): concurrent chats per agent, "auto" (waiting conversations are
    # given to the least-busy online agent) or "manual" (agents claim), seconds an auto-assigned
    # conversation may wait for its agent's first reply before it goes to another (0: never), and
    # seconds an agent stays online after their last console socket's process stopped renewing it.
    capacity: int = 3
    routing: Literal["auto", "manual"] = "auto"
    assign_timeout: float = 60.0
    presence_ttl: float = 30.0
    # With no agent online (all signed out or away), 转人工 queues anyway (true) or, like outside
    # business hours, tells the customer and offers to leave a message (false).
    queue_when_offline: bool = False


@dataclass(frozen=True)
class LoggingSettings:
    """How log lines look."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


@dataclass(frozen=True)
class Settings:
    """Everything chatbot_server can be configured with; the defaults are the embedded config."""

    server: ServerSettings = field(default_factory=ServerSettings)
    layer: LayerSettings = field(default_factory=LayerSettings)
    bot: BotSettings = field(default_factory=BotSettings)
    ui: UISettings = field(default_factory=UISettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    monitoring: MonitoringSettings = field(default_factory=MonitoringSettings)
    history: HistorySettings = field(default_factory=HistorySettings)
    agents: AgentSettings = field(default_factory=AgentSettings)
    identity: IdentitySettings = field(default_factory=IdentitySettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    # Directory that relative paths in the config resolve against (the config file's folder).
    base_dir: Path = field(default_factory=Path.cwd, compare=False)
