"""The built wheel carries templates, static files and the knowledge base, and runs from a fresh venv."""

from __future__ import annotations

import os
import site
import socket
import subprocess
import sys
import urllib.request
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(180)
def test_wheel_installs_into_a_fresh_venv_and_serves(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=170,
    )
    (wheel,) = wheels.glob("chatbot_server-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for data in ("knowledge_base.yaml", "pinyin.txt"):  # the FAQ bot reads both at start
        assert f"chatbot_server/bots/faq/data/{data}" in names

    # A fresh venv outside the source tree; the dependencies come from this interpreter's
    # site-packages so the test needs no network, the package itself only from the wheel.
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    if sys.prefix != sys.base_prefix:
        # Run from a virtualenv (as the README says): a venv made from here has the base
        # interpreter's site-packages, not ours. Add ours as plain paths (their .pth files, and so
        # an editable install of this checkout, are not run), after the new venv's own.
        purelib = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        Path(purelib, "outer_venv.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATBOT_", "PYTHONPATH"))}
    located = subprocess.run(
        [str(python), "-c", "import chatbot_server; print(chatbot_server.__file__)"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=clean_env,
    ).stdout.strip()
    assert located.startswith(str(env_dir)), located

    port = free_port()
    # No config: the embedded defaults (memory layer, FAQ bot with its packaged knowledge base).
    server = subprocess.Popen(
        [str(python), "-m", "chatbot_server", "--port", str(port)],
        cwd=tmp_path,
        env=clean_env,
        stdout=subprocess.PIPE,  # logs go to stdout (ops/logs.py), as supervisors expect
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert server.stdout is not None
        seen = []
        for line in server.stdout:  # wait for the "listening" log line, not for a timer
            seen.append(line)
            if "listening" in line:
                break
        else:
            pytest.fail(f"server exited with {server.wait()} before listening:\n{''.join(seen)}")
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base}/", timeout=10) as page:
            html = page.read().decode()
        assert "聊天记录" in html and "chat.js" in html
        with urllib.request.urlopen(f"{base}/static/chat.js", timeout=10) as script:
            assert b"WebSocket" in script.read()
        with urllib.request.urlopen(f"{base}/healthz", timeout=10) as health:
            assert b'"ok"' in health.read()
    finally:
        server.terminate()
        server.communicate(timeout=20)
