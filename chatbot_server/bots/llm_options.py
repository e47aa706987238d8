"""The llm bot's `bot.options`: defaults and validation with ConfigErrors naming the key."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError

KEY_PREFIX = "bot.options."

DEFAULT_SYSTEM_PROMPT = (
    "您是银联银行卡的智能客服。请用简体中文、礼貌地回答用户的问题，称呼用户为“您”，回答简洁。\n"
    "只根据下面给出的知识库条目作答，不要编造条目中没有的信息（如费用、额度、时限、网址、电话）。"
    "如果这些条目不能回答用户的问题，请如实说明，并建议用户拨打银联客服热线 95516 或联系发卡行。\n"
    "不要向用户索要完整卡号、身份证号、密码、CVV 安全码或短信验证码；"
    "对话中的 * 号是已遮盖的卡号或证件号，不要请用户补全。"
)

# Fields the bot itself sets in the request body; extra_body may not override them.
RESERVED_BODY_KEYS = frozenset({"model", "messages", "stream", "max_tokens", "temperature"})
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class LlmOptions:
    """Validated options of the llm bot. Holds the key's variable name only, never the key."""

    base_url: str
    model: str
    api_key_env: str | None = None
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    max_tokens: int = 512
    temperature: float = 0.3
    top_k: int = 3
    connect_timeout: float = 3.0
    # Below the server's bot.timeout (5 s by default, the first piece's deadline, FAQ ranking
    # included): when the model is slow, the customer gets the FAQ answer, not the apology.
    first_token_timeout: float = 3.0
    stall_timeout: float = 10.0
    total_timeout: float = 30.0  # below bot.reply_timeout (60 s by default), for the same reason
    max_connections: int = 100
    extra_body: Mapping[str, Any] = field(default_factory=dict)
    faq: Mapping[str, Any] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        """The URL the bot posts to."""
        return self.base_url.rstrip("/") + "/chat/completions"


KNOWN = frozenset(LlmOptions.__dataclass_fields__)
# The defaults, read from the fields: a slotted dataclass keeps no class attributes for them.
_DEFAULTS: dict[str, Any] = {name: f.default for name, f in LlmOptions.__dataclass_fields__.items()}


def parse_options(options: Mapping[str, Any]) -> LlmOptions:
    """Validate `bot.options` for the llm bot (the `faq` mapping is validated by the FAQ bot)."""
    if not isinstance(options, Mapping):
        raise ConfigError(f"must be a mapping, got {type(options).__name__}", key="bot.options")
    for name in options:
        if name == "api_key":  # the one mistake that would put a secret in a config file
            raise ConfigError(
                "put the key in an environment variable and name that variable in api_key_env", key=KEY_PREFIX + name
            )
        if name not in KNOWN:
            raise ConfigError(f"unknown option (known: {', '.join(sorted(KNOWN))})", key=KEY_PREFIX + str(name))
    timeouts = {
        name: _number(name, _get(options, name), 0.0, high)
        for name, high in (
            ("connect_timeout", 60.0),
            ("first_token_timeout", 600.0),
            ("stall_timeout", 600.0),
            ("total_timeout", 600.0),
        )
    }
    if timeouts["first_token_timeout"] > timeouts["total_timeout"]:
        raise ConfigError("must not exceed total_timeout", key=KEY_PREFIX + "first_token_timeout")
    return LlmOptions(
        base_url=_base_url(options.get("base_url")),
        model=_text("model", options.get("model")),
        api_key_env=_env_name(options.get("api_key_env")),
        system_prompt=_text("system_prompt", _get(options, "system_prompt")),
        max_tokens=_integer("max_tokens", _get(options, "max_tokens"), 1, 32768),
        temperature=_number("temperature", _get(options, "temperature"), 0.0, 2.0, closed=True),
        top_k=_integer("top_k", _get(options, "top_k"), 1, 10),
        max_connections=_integer("max_connections", _get(options, "max_connections"), 1, 10000),
        extra_body=_extra_body(options.get("extra_body", {})),
        faq=_mapping("faq", options.get("faq", {})),
        **timeouts,
    )


def _get(options: Mapping[str, Any], name: str) -> Any:
    return options.get(name, _DEFAULTS[name])


def _base_url(value: Any) -> str:
    key = KEY_PREFIX + "base_url"
    if value is None:
        raise ConfigError("is required: the endpoint's base URL, e.g. http://127.0.0.1:8000/v1", key=key)
    if not isinstance(value, str):
        raise ConfigError(f"must be a URL, got {type(value).__name__}", key=key)
    url = value.strip()
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ConfigError("must be an http:// or https:// URL", key=key) from None
    if parts.scheme not in ("http", "https") or not host:
        raise ConfigError("must be an http:// or https:// URL with a host", key=key)
    if parts.path.rstrip("/").endswith("/chat/completions"):
        raise ConfigError("give the base URL without /chat/completions, e.g. http://127.0.0.1:8000/v1", key=key)
    if parts.query or parts.fragment:
        raise ConfigError("must have no query or fragment", key=key)
    return url


def _env_name(value: Any) -> str | None:
    if value is None:
        return None
    # The value is never echoed: someone may have pasted the key itself here.
    if not isinstance(value, str) or _ENV_NAME.fullmatch(value) is None:
        raise ConfigError(
            "must be the name of an environment variable (letters, digits, _) that holds the key, not the key",
            key=KEY_PREFIX + "api_key_env",
        )
    return value


def _text(name: str, value: Any) -> str:
    if value is None:
        raise ConfigError("is required", key=KEY_PREFIX + name)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError("must be a non-empty string", key=KEY_PREFIX + name)
    return value.strip()


def _number(name: str, value: Any, low: float, high: float, *, closed: bool = False) -> float:
    # bool is an int subclass: `temperature: true` is a typo, not 1.0.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"must be a number, got {value!r}", key=KEY_PREFIX + name)
    if (value < low if closed else value <= low) or value > high:
        span = f"{'[' if closed else '('}{low:g}, {high:g}]"
        raise ConfigError(f"must be in {span}, got {value!r}", key=KEY_PREFIX + name)
    return float(value)


def _integer(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"must be an integer, got {value!r}", key=KEY_PREFIX + name)
    if not low <= value <= high:
        raise ConfigError(f"must be in [{low}, {high}], got {value!r}", key=KEY_PREFIX + name)
    return value


def _mapping(name: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ConfigError(f"must be a mapping, got {type(value).__name__}", key=KEY_PREFIX + name)
    return dict(value)


def _extra_body(value: Any) -> Mapping[str, Any]:
    body = _mapping("extra_body", value)
    reserved = sorted(RESERVED_BODY_KEYS & set(body))
    if reserved:
        raise ConfigError(
            f"may not set {', '.join(reserved)}: the bot sets those (use the options of the same name)",
            key=KEY_PREFIX + "extra_body",
        )
    return body
