"""README's nginx snippet: TLS, the forwarded headers the server believes, monitoring kept inside.

Read out of README.md, so the documentation cannot drift from what the server needs; when an
nginx binary is installed, `nginx -t` checks that the snippet is a valid configuration too.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

pytestmark = pytest.mark.timeout(60)


def nginx_snippet() -> str:
    """The ```nginx block of the 'Production with Redis' section."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Production with Redis", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```nginx\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 1, "expected one nginx block in README's 'Production with Redis'"
    return blocks[0]


def directives(snippet: str) -> list[str]:
    """Each directive on one line, comments dropped, whitespace collapsed."""
    lines = (re.sub(r"\s+", " ", line.split("#", 1)[0]).strip() for line in snippet.splitlines())
    return [line for line in lines if line]


def location(snippet: str, match: str) -> str:
    """The body of `location <match> { ... }` (no nested blocks in ours)."""
    found = re.search(r"location\s+" + re.escape(match) + r"\s*\{([^}]*)\}", snippet)
    assert found, f"no 'location {match}' block"
    return re.sub(r"\s+", " ", found.group(1))


def test_snippet_terminates_tls_and_forwards_what_the_server_believes() -> None:
    lines = directives(nginx_snippet())
    assert "listen 443 ssl;" in lines
    assert any(re.fullmatch(r"ssl_certificate \S+;", line) for line in lines)
    assert any(re.fullmatch(r"ssl_certificate_key \S+;", line) for line in lines)
    for header in (
        "proxy_set_header X-Forwarded-Proto $scheme;",  # the agent cookie's Secure flag
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",  # client_ip(), monitoring.allow
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Host $host;",
        "proxy_http_version 1.1;",
    ):
        assert header in lines, header
    assert any(line.startswith("proxy_set_header Connection ") for line in lines)


def test_headers_are_set_where_every_location_inherits_them() -> None:
    # nginx: a location with a proxy_set_header of its own inherits none from the server block.
    snippet = nginx_snippet()
    for body in re.findall(r"location[^{]*\{([^}]*)\}", snippet):
        assert "proxy_set_header" not in body


def test_metrics_and_healthz_are_not_public_through_the_proxy() -> None:
    snippet = nginx_snippet()
    assert location(snippet, "= /metrics").strip() == "deny all;"
    healthz = location(snippet, "= /healthz")
    assert re.search(r"allow \S+;", healthz) and "deny all;" in healthz
    assert healthz.index("allow") < healthz.index("deny all;")  # nginx takes the first rule that matches


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_snippet_passes_nginx_t(tmp_path: Path) -> None:
    crt, key = tmp_path / "server.crt", tmp_path / "server.key"
    openssl = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    subprocess.run(
        [*openssl, "-subj", "/CN=kefu.bank.example", "-keyout", str(key), "-out", str(crt)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    snippet = re.sub(r"(ssl_certificate\s+)\S+;", rf"\g<1>{crt};", nginx_snippet())
    snippet = re.sub(r"(ssl_certificate_key\s+)\S+;", rf"\g<1>{key};", snippet)
    temp = {name: tmp_path / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"pid {tmp_path / 'nginx.pid'};\nerror_log {tmp_path / 'error.log'};\nevents {{}}\nhttp {{\n"
        f"access_log off;\n"
        + "".join(f"{name}_temp_path {path};\n" for name, path in temp.items()).replace("body_", "client_body_")
        + snippet
        + "}\n",
        encoding="utf-8",
    )
    done = subprocess.run(
        ["nginx", "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
