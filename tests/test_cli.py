"""The command line, run as a real subprocess: --help, --check-config, errors without tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    for var in ("CHATBOT_CONFIG", "CHATBOT_PORT", "CHATBOT_HOST", "CHATBOT_BOT"):
        if env is None or var not in env:
            full_env.pop(var, None)
    return subprocess.run(
        [sys.executable, "-m", "chatbot_server", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=full_env,
        cwd=ROOT,
    )


def test_help_explains_every_option() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for word in ("--config", "--host", "--port", "--workers", "--check-config", "--log-format", "CHATBOT_WORKERS"):
        assert word in result.stdout


def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    config = tmp_path / "good.yaml"
    config.write_text("server: {port: 9100}\nbot: {name: echo}\n", encoding="utf-8")
    result = run_cli("--config", str(config), "--check-config")
    assert result.returncode == 0, result.stderr
    assert "config OK" in result.stdout and "9100" in result.stdout


def test_check_config_flags_override_the_file(tmp_path: Path) -> None:
    config = tmp_path / "good.yaml"
    config.write_text("server: {port: 9100}\nbot: {name: echo}\n", encoding="utf-8")
    result = run_cli("--config", str(config), "--port", "9200", "--host", "0.0.0.0", "--check-config")
    assert result.returncode == 0, result.stderr
    assert "0.0.0.0:9200" in result.stdout


def test_bad_config_exits_2_naming_key_and_file_without_traceback(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("layer:\n  capacity: lots\n", encoding="utf-8")
    for extra in ((), ("--check-config",)):
        result = run_cli("--config", str(config), *extra)
        assert result.returncode == 2
        assert "layer.capacity" in result.stderr and str(config) in result.stderr
        assert "Traceback" not in result.stderr


def test_unknown_bot_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "bot.yaml"
    config.write_text("bot: {name: 'nosuch.module:Bot'}\n", encoding="utf-8")
    result = run_cli("--config", str(config), "--check-config")
    assert result.returncode == 2
    assert "bot.name" in result.stderr and str(config) in result.stderr and "Traceback" not in result.stderr


def test_bad_bot_options_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "bot.yaml"
    config.write_text("bot: {name: echo, options: {colour: blue}}\n", encoding="utf-8")
    result = run_cli("--config", str(config), "--check-config")
    assert result.returncode == 2
    assert "bot.options" in result.stderr and "colour" in result.stderr


def test_config_from_environment_variable(tmp_path: Path) -> None:
    config = tmp_path / "env.yaml"
    config.write_text("server: {port: 9300}\nbot: {name: echo}\n", encoding="utf-8")
    result = run_cli("--check-config", env={"CHATBOT_CONFIG": str(config), "CHATBOT_PORT": "9301"})
    assert result.returncode == 0, result.stderr
    assert "9301" in result.stdout


def test_taken_port_exits_1_without_traceback(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = tmp_path / "c.yaml"
        config.write_text("bot: {name: echo}\n", encoding="utf-8")
        result = run_cli("--config", str(config), "--port", str(port))
    assert result.returncode == 1
    assert "cannot listen" in result.stderr and "Traceback" not in result.stderr


def test_start_up_warnings_are_json_lines_on_stdout(tmp_path: Path) -> None:
    # #14: logging was configured after the app was built, so its warnings (here: no session
    # secret) went to stderr as plain text, whatever logging.format said.
    import json

    from tests.redis_server import free_port

    config = tmp_path / "c.yaml"
    account = "{username: li, name: 客服小李, password_hash: 'pbkdf2_sha256$1$c2FsdA$aGFzaA'}"
    config.write_text(f"bot: {{name: echo}}\nagents: {{accounts: [{account}]}}\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CHATBOT_SESSION_SECRET", None)
    cmd = [
        sys.executable,
        "-m",
        "chatbot_server",
        "-c",
        str(config),
        "--port",
        str(free_port()),
        "--log-format",
        "json",
    ]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        assert server.stdout is not None
        records = []
        for line in server.stdout:  # until the "listening" line, not a timer
            records.append(json.loads(line))
            if "listening" in records[-1]["msg"]:
                break
    finally:
        server.terminate()
        _, err = server.communicate(timeout=30)
    warnings = [r for r in records if r["level"] == "WARNING"]
    assert any("session_secret" in r["msg"] for r in warnings), records
    assert "session_secret" not in err and "Traceback" not in err
    assert server.returncode == 0  # SIGTERM is a clean stop
