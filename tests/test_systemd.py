"""The systemd recipe (examples/systemd/): a unit systemd itself accepts, with what a bank needs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "examples" / "systemd" / "chatbot-server.service"


def _keys(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def test_unit_reloads_stops_gracefully_and_keeps_secrets_out() -> None:
    keys = _keys(UNIT.read_text(encoding="utf-8"))
    assert keys["ExecStart"].endswith("-m chatbot_server --config /etc/chatbot-server/config.yaml")
    assert keys["ExecReload"] == "/bin/kill -HUP $MAINPID"  # SIGHUP reloads the knowledge base
    assert keys["KillSignal"] == "SIGTERM"  # sockets get 1001 and requests finish
    assert float(keys["TimeoutStopSec"]) > 5.0  # above server.shutdown_timeout's default
    assert int(keys["LimitNOFILE"]) >= 65536
    assert keys["Environment"] == "CHATBOT_LOG_FORMAT=json"
    assert keys["EnvironmentFile"].startswith("/etc/")
    assert "SECRET" not in keys["Environment"] and "redis://" not in UNIT.read_text(encoding="utf-8")
    for hardening in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "DynamicUser"):
        assert hardening in keys


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    # verify checks that ExecStart's binary exists: point it at this interpreter.
    text = UNIT.read_text(encoding="utf-8").replace("/opt/chatbot-server/venv/bin/python", sys.executable)
    env = tmp_path / "chatbot-server.env"
    env.write_text("CHATBOT_SESSION_SECRET=x\n", encoding="utf-8")
    text = text.replace("/etc/chatbot-server/chatbot-server.env", str(env))
    unit = tmp_path / "chatbot-server.service"
    unit.write_text(text, encoding="utf-8")
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
    )
    # Lines about other units of this machine (no systemd running in a container) are not ours.
    ours = [line for line in (done.stdout + done.stderr).splitlines() if unit.name in line]
    assert done.returncode == 0 and not ours, done.stdout + done.stderr
