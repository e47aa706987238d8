"""Typed settings: YAML file + environment overrides, validated with errors that name the key."""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError

LayerBackend = str  # "memory", "redis" or an import path "pkg.mod:Class"


@dataclass(frozen=True)
class ServerSettings:
    """Where the standalone server listens and how it stops."""

    host: str = "127.0.0.1"
    port: int = 8080
    shutdown_timeout: float = 5.0
    # Proxies whose X-Forwarded-For header is believed (exact IP addresses).
    trusted_proxies: tuple[str, ...] = ()


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
    timeout: float = 5.0
    history_turns: int = 6
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class UISettings:
    """Texts and branding of the chat page (Simplified Chinese by default)."""

    title: str = "银联智能客服"
    greeting: str = "你好,很高兴为你服务。"
    subtitle: str = "7×24 小时在线 · 银行卡业务咨询"
    placeholder: str = "请输入您的问题,按 Enter 发送"
    send_label: str = "发送"
    history_label: str = "聊天记录"
    thinking_text: str = "正在思考…"
    connecting_text: str = "正在连接…"
    connected_text: str = "已连接"
    disconnected_text: str = "连接已断开,正在重连…"
    error_text: str = "抱歉,系统暂时无法回答,请稍后再试。"
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


@dataclass(frozen=True)
class SecuritySettings:
    """Who may open a chat socket."""

    # Extra origins allowed to open the websocket; the page's own origin is always allowed.
    allowed_origins: tuple[str, ...] = ()


@dataclass(frozen=True)
class HistorySettings:
    """Where conversations are kept so a reconnecting page (on any process) can resume."""

    backend: str = "auto"  # auto (same as layer.backend) | memory | redis (uses layer.redis url/prefix)
    ttl: float = 86400.0
    max_frames: int = 500
    takeover_timeout: float = 3.0
    write_interval: float = 0.05  # redis: seconds frames gather before one pipeline writes them


@dataclass(frozen=True)
class AgentAccount:
    """One human agent who may sign in to the console at /agent."""

    username: str = ""
    name: str = ""
    password_hash: str = ""


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
    history: HistorySettings = field(default_factory=HistorySettings)
    agents: AgentSettings = field(default_factory=AgentSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    # Directory that relative paths in the config resolve against (the config file's folder).
    base_dir: Path = field(default_factory=Path.cwd, compare=False)


# Environment variables that override the file, and the dotted key each one sets.
ENV_OVERRIDES: dict[str, str] = {
    "CHATBOT_HOST": "server.host",
    "CHATBOT_PORT": "server.port",
    "CHATBOT_LAYER_BACKEND": "layer.backend",
    "CHATBOT_REDIS_URL": "layer.redis.url",
    "CHATBOT_REDIS_PREFIX": "layer.redis.prefix",
    "CHATBOT_BOT": "bot.name",
    "CHATBOT_LOG_LEVEL": "logging.level",
    "CHATBOT_LOG_FORMAT": "logging.format",
    "CHATBOT_SESSION_SECRET": "agents.session_secret",
}

# Value checks beyond types: dotted key -> (predicate, what a good value is).
_RULES: dict[str, tuple[typing.Callable[[Any], bool], str]] = {
    "server.port": (lambda v: 0 <= v <= 65535, "a port number 0..65535"),
    "server.shutdown_timeout": (lambda v: v >= 0, "a number of seconds >= 0"),
    "layer.capacity": (lambda v: v >= 1, "an integer >= 1"),
    "layer.expiry": (lambda v: v > 0, "a number of seconds > 0"),
    "layer.group_expiry": (lambda v: v > 0, "a number of seconds > 0"),
    "layer.redis.url": (
        lambda v: v.startswith(("redis://", "rediss://", "unix://")),
        "a redis://, rediss:// or unix:// URL",
    ),
    "layer.redis.prefix": (
        lambda v: bool(v) and len(v) < 64 and all(c.isascii() and (c.isalnum() or c in "-_.") for c in v),
        "a name of ASCII letters, digits, '-', '_' or '.'",
    ),
    "layer.redis.pool_size": (lambda v: v >= 2, "an integer >= 2"),
    "bot.timeout": (lambda v: v > 0, "a number of seconds > 0"),
    "bot.history_turns": (lambda v: 0 <= v <= 100, "an integer 0..100"),
    "limits.max_text_length": (lambda v: 1 <= v <= 100_000, "an integer 1..100000"),
    "limits.max_msg_size": (lambda v: 256 <= v <= 4 * 1024 * 1024, "bytes, 256..4194304"),
    "limits.heartbeat": (lambda v: v >= 0, "seconds >= 0 (0 turns it off)"),
    "limits.idle_timeout": (lambda v: v >= 0, "seconds >= 0 (0 turns it off)"),
    "limits.max_connections": (lambda v: v >= 1, "an integer >= 1"),
    "limits.max_connections_per_ip": (lambda v: v >= 1, "an integer >= 1"),
    "limits.rate_per_second": (lambda v: v > 0, "messages per second > 0"),
    "limits.rate_burst": (lambda v: v >= 1, "an integer >= 1"),
    "limits.abuse_strikes": (lambda v: v >= 1, "an integer >= 1"),
    "limits.send_timeout": (lambda v: v > 0, "seconds > 0"),
    "history.backend": (lambda v: v in ("auto", "memory", "redis"), "auto, memory or redis"),
    "history.ttl": (lambda v: v > 0, "a number of seconds > 0"),
    "history.max_frames": (lambda v: 1 <= v <= 100_000, "an integer 1..100000"),
    "history.takeover_timeout": (lambda v: v > 0, "a number of seconds > 0"),
    "history.write_interval": (lambda v: 0 <= v <= 5, "seconds, 0..5"),
    "agents.session_ttl": (lambda v: v > 0, "a number of seconds > 0"),
    "agents.fallback_handoff": (lambda v: v >= 0, "an integer >= 0 (0 turns it off)"),
    "agents.login_failures": (lambda v: v >= 1, "an integer >= 1"),
    "agents.login_window": (lambda v: v > 0, "a number of seconds > 0"),
    "ui.primary_color": (
        lambda v: len(v) in (4, 7) and v.startswith("#") and all(c in "0123456789abcdefABCDEF" for c in v[1:]),
        "a colour like #c8102e",
    ),
}


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read settings: defaults, then the YAML file, then environment, then `overrides` (CLI flags).

    `overrides` maps dotted keys ("server.port") to values. Raises ConfigError naming the key.
    """
    data: dict[str, Any] = {}
    source = ""
    base_dir = Path.cwd()
    if path is not None:
        file = Path(path)
        source = str(file)
        base_dir = file.resolve().parent
        data = _read_yaml(file)
    env = os.environ if env is None else env
    origins: dict[str, str] = {}  # dotted key -> where a value not from the file came from
    for var, key in ENV_OVERRIDES.items():
        if var in env:
            origins[key] = f"environment variable {var}"
            _set_dotted(data, key, _parse_env_value(var, env[var]), source=origins[key])
    for key, value in (overrides or {}).items():
        origins[key] = "command line"
        _set_dotted(data, key, value, source=origins[key])
    try:
        settings: Settings = _build(Settings, data, prefix="", source=source)
    except ConfigError as exc:
        if exc.key in origins:
            message = str(exc).split(f"{exc.key}: ", 1)[-1]
            raise ConfigError(message, key=exc.key, source=origins[exc.key]) from None
        raise
    return dataclasses.replace(settings, base_dir=base_dir)


def settings_from_dict(data: Mapping[str, Any], *, source: str = "<dict>") -> Settings:
    """Build settings from a mapping shaped like config.yaml (for embedding and tests)."""
    settings: Settings = _build(Settings, dict(data), prefix="", source=source)
    return settings


def _read_yaml(file: Path) -> dict[str, Any]:
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror or exc}", source=str(file)) from exc
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"invalid YAML{where}: {problem}", source=str(file)) from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError("the top level must be a mapping of sections", source=str(file))
    return loaded


# Environment variables whose value is a number, not text (the rest are taken as plain strings, so
# CHATBOT_REDIS_PREFIX=2024 stays the string "2024").
_NUMERIC_ENV = frozenset({"CHATBOT_PORT"})


def _parse_env_value(var: str, raw: str) -> Any:
    if var not in _NUMERIC_ENV:
        return raw
    try:
        return int(raw)
    except ValueError:
        return raw


def _set_dotted(data: dict[str, Any], key: str, value: Any, *, source: str) -> None:
    node = data
    *parents, last = key.split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError("must be a mapping", key=key.rsplit(".", 1)[0], source=source)
        node = child
    node[last] = value


def _build(cls: type[Any], data: Any, *, prefix: str, source: str) -> Any:
    section = prefix.rstrip(".") or "the top level"
    if not isinstance(data, dict):
        raise ConfigError(f"must be a mapping, got {_kind(data)}", key=section, source=source)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name != "base_dir"}
    for name in data:
        if name not in fields:
            known = ", ".join(fields)
            raise ConfigError(f"unknown key (known keys: {known})", key=f"{prefix}{name}", source=source)
    values = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        values[name] = _convert(hints[name], value, key=key, source=source)
        rule = _RULES.get(key)
        if rule is not None and not rule[0](values[name]):
            raise ConfigError(f"must be {rule[1]}, got {value!r}", key=key, source=source)
    return cls(**values)


# What YAML 1.1 (PyYAML) reads as a string although it is a float: an exponent without a dot in
# the mantissa (1e9) or without a sign (1.5e3). Only what PyYAML would read as a float otherwise.
_EXPONENT_WITHOUT_DOT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+", re.ASCII)


def _convert(hint: Any, value: Any, *, key: str, source: str) -> Any:
    origin = typing.get_origin(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, {} if value is None else value, prefix=f"{key}.", source=source)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if isinstance(value, str) and value.upper() in allowed and key.startswith("logging.level"):
            return value.upper()
        if value not in allowed:
            raise ConfigError(f"must be one of {', '.join(map(str, allowed))}, got {value!r}", key=key, source=source)
        return value
    if origin is tuple:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise ConfigError(f"must be a list, got {_kind(value)}", key=key, source=source)
        (item_type, _) = typing.get_args(hint)
        return tuple(_convert(item_type, item, key=f"{key}[{i}]", source=source) for i, item in enumerate(value))
    if origin in (Mapping, dict) or hint is Mapping:
        if value is None:
            return types.MappingProxyType({})
        if not isinstance(value, dict):
            raise ConfigError(f"must be a mapping, got {_kind(value)}", key=key, source=source)
        return types.MappingProxyType(dict(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"must be true or false, got {value!r}", key=key, source=source)
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"must be an integer, got {value!r}", key=key, source=source)
        return value
    if hint is float:
        if isinstance(value, str) and _EXPONENT_WITHOUT_DOT.fullmatch(value.strip()):
            return float(value)  # 1e9: a number to anyone, a string to YAML 1.1 (PyYAML)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"must be a number, got {value!r}", key=key, source=source)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"must be a string, got {_kind(value)} {value!r}", key=key, source=source)
        return value
    raise ConfigError(f"unsupported setting type {hint!r}", key=key, source=source)  # pragma: no cover


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", type(None): "nothing"}.get(type(value), type(value).__name__)
