"""By-hand check of resume + human agents: two browsers, two server processes on a private Redis, reconnects on both sides.

    python examples/check_handoff_two_processes.py

Needs redis-server and Debian chromium (/usr/bin/chromium) with the playwright package (no browser download).
Prints one line per step; raises on the first step that does not behave.
"""

import asyncio
import json
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from playwright.async_api import async_playwright, expect

from chatbot_server.agents.passwords import hash_password


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


tmp = Path(tempfile.mkdtemp())
rport, p1, p2 = free_port(), free_port(), free_port()
redis = subprocess.Popen(
    ["redis-server", "--port", str(rport), "--save", "", "--appendonly", "no", "--dir", str(tmp)],
    stdout=subprocess.DEVNULL,
)
cfg = {
    "layer": {"backend": "redis", "redis": {"url": f"redis://127.0.0.1:{rport}/0", "prefix": "hand"}},
    "agents": {
        "accounts": [{"username": "li", "name": "客服小李", "password_hash": hash_password("li-password-1")}],
        "session_secret": "s3cret-shared-by-all-processes",
    },
    "logging": {"level": "WARNING"},
}
(tmp / "c.yaml").write_text(json.dumps(cfg, ensure_ascii=False))


def start(port):
    return subprocess.Popen(
        [sys.executable, "-m", "chatbot_server", "--config", str(tmp / "c.yaml"), "--port", str(port)],
        cwd=str(Path(__file__).resolve().parent.parent),
        stderr=open(tmp / f"{port}.log", "w"),
    )


procs = {p1: start(p1), p2: start(p2)}


async def wait_up(port):
    import aiohttp

    async with aiohttp.ClientSession() as s:
        for _ in range(100):
            try:
                async with s.get(f"http://127.0.0.1:{port}/healthz") as r:
                    if r.status == 200:
                        return
            except Exception:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit(f"{port} not up")


async def main():
    await wait_up(p1)
    await wait_up(p2)
    async with async_playwright() as pw:
        b = await pw.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        user = await (await b.new_context(locale="zh-CN")).new_page()
        agent = await (await b.new_context(locale="zh-CN")).new_page()
        await user.goto(f"http://127.0.0.1:{p1}/")
        await expect(user.locator("body")).to_have_attribute("data-connection", "connected")
        await user.fill("#input", "新卡怎么激活")
        await user.press("#input", "Enter")
        try:
            await expect(user.locator("#messages .msg-bot")).to_have_count(1, timeout=15000)
        except AssertionError:
            print("BUBBLES", await user.locator("#messages li").all_inner_texts())
            raise
        print(
            "1. user on process 1 asked the FAQ bot; answer:",
            (await user.locator("#messages .msg-bot .bubble").last.inner_text())[:40],
            "…",
        )
        await user.fill("#input", "我要转人工")
        await user.press("#input", "Enter")
        await expect(user.locator("#queue-status")).to_be_visible()
        print("2. user asked for a human:", await user.locator("#queue-status").inner_text())
        await agent.goto(f"http://127.0.0.1:{p2}/agent")
        await agent.fill("#username", "li")
        await agent.fill("#password", "li-password-1")
        await agent.press("#password", "Enter")
        await expect(agent.locator("#queue li")).to_have_count(1)
        await agent.locator("#queue li .claim").click()
        await expect(agent.locator("#transcript .text")).to_contain_text(["新卡怎么激活"])
        print(
            "3. agent signed in on process 2, claimed; transcript lines:",
            await agent.locator("#transcript .text").count(),
        )
        await agent.fill("#reply-input", "您好,我是客服小李,请问有什么可以帮您?")
        await agent.press("#reply-input", "Enter")
        await expect(user.locator("#messages .msg-agent")).to_have_count(1)
        print(
            "4. user sees the agent bubble:",
            (await user.locator("#messages .msg-agent").inner_text()).replace("\n", " | "),
        )
        # Reconnect on the user's side: process 1 is killed and restarted; the page reconnects by itself.
        procs[p1].send_signal(signal.SIGKILL)
        procs[p1].wait()
        await expect(user.locator("body")).to_have_attribute("data-connection", "disconnected", timeout=10000)
        procs[p1] = start(p1)
        await wait_up(p1)
        await expect(user.locator("body")).to_have_attribute("data-connection", "connected", timeout=20000)
        await user.fill("#input", "我的卡在柜台被吞了")
        await user.press("#input", "Enter")
        try:
            await expect(agent.locator("#transcript .text").last).to_contain_text("我的卡在柜台被吞了", timeout=10000)
        except AssertionError:
            for t in await user.locator("#messages li").all_inner_texts():
                print("USER|", t.replace("\n", " | ")[:80])
            for t in await agent.locator("#transcript .text").all_inner_texts():
                print("AGENT|", t.replace("\n", " | ")[:80])
            print((tmp / f"{p1}.log").read_text()[-3000:])
            raise
        print("5. process 1 was SIGKILLed and restarted; the page reconnected and the agent got the next line live")
        # Reconnect on the agent's side: reload the console.
        await agent.reload()
        await expect(agent.locator("#transcript .text").last).to_contain_text("我的卡在柜台被吞了", timeout=10000)
        await agent.fill("#reply-input", "已为您登记,请带身份证到网点领取。")
        await agent.press("#reply-input", "Enter")
        await expect(user.locator("#messages .msg-agent")).to_have_count(2)
        await user.reload()
        await expect(user.locator("#messages .msg-agent")).to_have_count(2)
        bubbles = await user.locator("#messages .bubble").all_inner_texts()
        print(
            "6. agent reloaded the console and replied; user reloaded the page; transcript intact,",
            len(bubbles),
            "bubbles, no duplicates:",
            len(bubbles) == len(set(bubbles)) or bubbles,
        )
        await b.close()


try:
    asyncio.run(main())
finally:
    for p in procs.values():
        p.terminate()
    redis.terminate()
