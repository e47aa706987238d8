"""Typed settings: YAML file + environment overrides, validated with errors that name the key."""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import os
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml

from ..errors import ConfigError
from ..redis_url import parse_redis_url
from .model import (
    AgentAccount,
    AgentSettings,
    ApiSettings,
    ApiToken,
    BotSettings,
    CannedReply,
    HistorySettings,
    HoursSettings,
    IdentitySettings,
    LayerBackend,
    LayerSettings,
    LimitSettings,
    LoggingSettings,
    MonitoringSettings,
    RedisSettings,
    SecuritySettings,
    ServerSettings,
    Settings,
    UISettings,
)
from .rules import check_together, check_workers

__all__ = [
    "ENV_OVERRIDES",
    "AgentAccount",
    "AgentSettings",
    "ApiSettings",
    "ApiToken",
    "BotSettings",
    "CannedReply",
    "HistorySettings",
    "HoursSettings",
    "IdentitySettings",
    "LayerBackend",
    "LayerSettings",
    "LimitSettings",
    "LoggingSettings",
    "MonitoringSettings",
    "RedisSettings",
    "SecuritySettings",
    "ServerSettings",
    "Settings",
    "UISettings",
    "check_workers",
    "load_settings",
    "settings_from_dict",
]


# Environment variables that override the file, and the dotted key each one sets.
ENV_OVERRIDES: dict[str, str] = {
    "CHATBOT_HOST": "server.host",
    "CHATBOT_PORT": "server.port",
    "CHATBOT_WORKERS": "server.workers",
    "CHATBOT_LAYER_BACKEND": "layer.backend",
    "CHATBOT_REDIS_URL": "layer.redis.url",
    "CHATBOT_REDIS_PREFIX": "layer.redis.prefix",
    "CHATBOT_BOT": "bot.name",
    "CHATBOT_LOG_LEVEL": "logging.level",
    "CHATBOT_LOG_FORMAT": "logging.format",
    "CHATBOT_SESSION_SECRET": "agents.session_secret",
    "CHATBOT_IDENTITY_SECRET": "identity.secret",
}


def _is_redis_url(value: str) -> bool:
    try:
        parse_redis_url(value)
    except ValueError:
        return False
    return True


# Value checks beyond types: dotted key -> (predicate, what a good value is).
_RULES: dict[str, tuple[typing.Callable[[Any], bool], str]] = {
    "server.port": (lambda v: 0 <= v <= 65535, "a port number 0..65535"),
    "server.shutdown_timeout": (lambda v: v >= 0, "a number of seconds >= 0"),
    "server.handshake_timeout": (lambda v: v > 0, "a number of seconds > 0"),
    "server.keepalive_timeout": (lambda v: v > 0, "a number of seconds > 0"),
    "server.max_unfinished_per_ip": (lambda v: v >= 1, "an integer >= 1"),
    "server.fd_reserve": (lambda v: v >= 16, "an integer >= 16"),
    "server.workers": (lambda v: 1 <= v <= 256, "an integer 1..256"),
    "monitoring.port": (lambda v: 0 <= v <= 65535, "a port number 0..65535 (0: the main port)"),
    "monitoring.allow": (lambda v: all(_is_network(n) for n in v), "a list of networks like 10.0.0.0/8"),
    "layer.capacity": (lambda v: v >= 1, "an integer >= 1"),
    "layer.expiry": (lambda v: v > 0, "a number of seconds > 0"),
    "layer.group_expiry": (lambda v: v > 0, "a number of seconds > 0"),
    "layer.redis.url": (
        _is_redis_url,
        "a redis://, rediss://, unix://, redis+sentinel://host:port[,host:port...]/service_name[/db] "
        "or redis+cluster://host:port[,host:port...] URL (docs/redis.md)",
    ),
    "layer.redis.prefix": (
        lambda v: bool(v) and len(v) < 64 and all(c.isascii() and (c.isalnum() or c in "-_.") for c in v),
        "a name of ASCII letters, digits, '-', '_' or '.'",
    ),
    "layer.redis.pool_size": (lambda v: v >= 2, "an integer >= 2"),
    "layer.redis.probe_interval": (lambda v: v >= 0.05, "a number of seconds >= 0.05"),
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
    "limits.replay_frames": (lambda v: 1 <= v <= 10_000, "an integer 1..10000"),
    "limits.replay_per_ip": (lambda v: v >= 1, "an integer >= 1"),
    "history.quota_per_ip": (lambda v: v >= 1024, "bytes >= 1024"),
    "agents.max_queued_per_ip": (lambda v: v >= 1, "an integer >= 1"),
    "agents.queue_grace": (lambda v: v > 0, "a number of seconds > 0"),
    "agents.rating_comment_length": (lambda v: 1 <= v <= 2000, "an integer 1..2000"),
    "agents.rating_days": (lambda v: 1 <= v <= 366, "an integer 1..366"),
    "agents.unanswered_days": (lambda v: 1 <= v <= 366, "an integer 1..366"),
    "agents.unanswered_below": (lambda v: 0 <= v <= 1, "a number 0..1"),
    "agents.unanswered_per_day": (lambda v: 1 <= v <= 1_000_000, "an integer 1..1000000"),
    "agents.left_messages_per_ip": (lambda v: v >= 1, "an integer >= 1"),
    "agents.left_messages_max": (lambda v: 1 <= v <= 100_000, "an integer 1..100000"),
    "agents.capacity": (lambda v: 1 <= v <= 1000, "an integer 1..1000"),
    "agents.assign_timeout": (lambda v: v >= 0, "a number of seconds >= 0 (0: never reassign)"),
    "agents.presence_ttl": (lambda v: v >= 0.2, "a number of seconds >= 0.2"),
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


def _is_network(value: str) -> bool:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


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
    check_together(settings, source=origins.get("agents.session_secret", source))
    check_workers(settings, settings.server.workers, source=origins.get("server.workers", source))
    return dataclasses.replace(settings, base_dir=base_dir)


def settings_from_dict(data: Mapping[str, Any], *, source: str = "<dict>") -> Settings:
    """Build settings from a mapping shaped like config.yaml (for embedding and tests)."""
    settings: Settings = _build(Settings, dict(data), prefix="", source=source)
    check_together(settings, source=source)
    check_workers(settings, settings.server.workers, source=source)
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
_NUMERIC_ENV = frozenset({"CHATBOT_PORT", "CHATBOT_WORKERS"})


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
        if isinstance(value, datetime.date):  # YAML reads 2026-10-01 as a date (agents.hours.holidays)
            return value.isoformat()
        if not isinstance(value, str):
            raise ConfigError(f"must be a string, got {_kind(value)} {value!r}", key=key, source=source)
        return value
    raise ConfigError(f"unsupported setting type {hint!r}", key=key, source=source)  # pragma: no cover


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", type(None): "nothing"}.get(type(value), type(value).__name__)
