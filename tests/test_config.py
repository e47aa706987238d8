"""Configuration: defaults, the YAML file, environment and CLI precedence, and clear errors."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from chatbot_server import ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_config_yaml_equals_the_embedded_defaults() -> None:
    assert load_settings(ROOT / "config.yaml", env={}) == Settings()


def test_defaults_without_a_file() -> None:
    settings = load_settings(None, env={})
    assert (settings.server.host, settings.server.port) == ("127.0.0.1", 8080)
    assert settings.layer.backend == "memory"
    assert settings.ui.greeting == "您好,很高兴为您服务。"


def test_file_values_are_read(tmp_path: Path) -> None:
    path = write(tmp_path, "server: {port: 9001}\nlayer: {capacity: 7}\nbot: {name: echo, options: {a: 1}}\n")
    settings = load_settings(path, env={})
    assert settings.server.port == 9001 and settings.layer.capacity == 7
    assert dict(settings.bot.options) == {"a": 1}
    assert settings.base_dir == tmp_path


def test_precedence_file_then_env_then_flags(tmp_path: Path) -> None:
    path = write(tmp_path, "server: {host: 10.0.0.1, port: 9001}\n")
    env = {"CHATBOT_PORT": "9002", "CHATBOT_HOST": "0.0.0.0", "CHATBOT_REDIS_URL": "redis://r:6380/2"}
    settings = load_settings(path, env=env, overrides={"server.port": 9003})
    assert settings.server.port == 9003
    assert settings.server.host == "0.0.0.0"
    assert settings.layer.redis.url == "redis://r:6380/2"


def test_int_is_accepted_where_a_float_is_expected(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, "layer: {expiry: 5}\n"), env={}).layer.expiry == 5.0


def test_numbers_with_an_exponent_are_numbers(tmp_path: Path) -> None:
    # PyYAML (YAML 1.1) reads 1e9 and 1.5e3 as strings; 1.0e+9 as a float.
    text = "limits: {rate_per_second: 1e9, rate_burst: 20, send_timeout: 5E-1, idle_timeout: 1.5e3}\n"
    settings = load_settings(write(tmp_path, text), env={})
    assert settings.limits.rate_per_second == 1e9
    assert settings.limits.send_timeout == 0.5
    assert settings.limits.idle_timeout == 1500.0


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("serverr: {}\n", "serverr", "unknown key"),
        ("server: {prot: 1}\n", "server.prot", "unknown key"),
        ("server: {port: eighty}\n", "server.port", "must be an integer"),
        ("limits: {rate_per_second: 1e9x}\n", "limits.rate_per_second", "must be a number"),
        ("limits: {rate_per_second: １e９}\n", "limits.rate_per_second", "must be a number"),
        ("server: {port: 70000}\n", "server.port", "port number"),
        ("server: {port: true}\n", "server.port", "must be an integer"),
        ("layer: {capacity: 0}\n", "layer.capacity", ">= 1"),
        ("layer: {redis: {url: 'http://x'}}\n", "layer.redis.url", "redis://"),
        ("layer: {redis: {requird: true}}\n", "layer.redis.requird", "unknown key"),
        ("logging: {format: xml}\n", "logging.format", "one of text, json"),
        ("ui: {quick_questions: hello}\n", "ui.quick_questions", "must be a list"),
        ("ui: {quick_questions: [1]}\n", "ui.quick_questions[0]", "must be a string"),
        ("ui: {primary_color: red}\n", "ui.primary_color", "colour"),
        ("bot: {options: [1]}\n", "bot.options", "must be a mapping"),
        ("server: 5\n", "server", "must be a mapping"),
    ],
)
def test_bad_values_name_the_key_and_the_file(tmp_path: Path, text: str, key: str, words: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_settings(path, env={})
    message = str(error.value)
    assert str(path) in message
    assert f"{key}:" in message
    assert words in message
    assert error.value.key == key


def test_bad_env_value_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(write(tmp_path, "server: {port: 1}\n"), env={"CHATBOT_PORT": "lots"})
    assert str(error.value) == "environment variable CHATBOT_PORT: server.port: must be an integer, got 'lots'"


def test_invalid_yaml_gives_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  port: 1\n  host: [unclosed\n")
    with pytest.raises(ConfigError, match=r"invalid YAML at line \d+"):
        load_settings(path, env={})


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "nope.yaml", env={})


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="top level"):
        load_settings(write(tmp_path, "- a\n- b\n"), env={})


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, "# nothing\n"), env={}) == Settings()


def test_defaults_as_dict_round_trips() -> None:
    from chatbot_server.config import settings_from_dict

    assert settings_from_dict(defaults_as_dict()) == Settings()


def defaults_as_dict() -> dict[str, Any]:
    """The embedded defaults shaped like config.yaml."""
    raw = dataclasses.asdict(Settings())
    raw.pop("base_dir", None)
    return _plain(raw)  # type: ignore[no-any-return]


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


_AGENT = "agents: {accounts: [{username: li, name: 客服小李, password_hash: 'pbkdf2_sha256$1$c2FsdA$aGFzaA'}]}\n"


def test_shared_redis_with_agents_needs_a_session_secret(tmp_path: Path) -> None:
    # #14: with a random secret per process, a sign-in on :8081 was refused on :8082. Said at start.
    path = write(tmp_path, "layer: {backend: redis}\n" + _AGENT)
    with pytest.raises(ConfigError) as error:
        load_settings(path, env={})
    assert error.value.key == "agents.session_secret"
    assert "CHATBOT_SESSION_SECRET" in str(error.value)
    secret = "x" * 32
    assert load_settings(path, env={"CHATBOT_SESSION_SECRET": secret}).agents.session_secret == secret


def test_one_process_needs_no_session_secret_and_a_short_one_is_refused(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, _AGENT), env={}).agents.session_secret == ""
    with pytest.raises(ConfigError, match="at least 16"):
        load_settings(write(tmp_path, _AGENT), env={"CHATBOT_SESSION_SECRET": "short"})


def test_networks_of_the_monitoring_allow_list_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="networks"):
        load_settings(write(tmp_path, "monitoring: {allow: [intranet]}\n"), env={})
