"""Browser-test support: find Debian's chromium, launch it offline, run a restartable live server."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from chatbot_server import Bot, ChatConsumer, Settings, WebsocketConsumer, setup
from chatbot_server.store import ConversationStore, MemoryConversationStore

CHROMIUM = Path(os.environ.get("CHATBOT_CHROMIUM", "/usr/bin/chromium"))

# Keep chromium from calling home: no component updates, sync, QUIC probes or first-run pages.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def require_chromium() -> Path:
    """The chromium binary; in CI its absence fails the test run, locally it skips the browser tests."""
    if CHROMIUM.exists():
        return CHROMIUM
    message = f"browser tests need chromium at {CHROMIUM} (apt-get install -y chromium chromium-driver)"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def playwright_expect() -> Any:
    """Playwright's `expect`, for a browser test module; the module is skipped without playwright,
    except in CI, which must run the browser tests rather than skip them."""
    try:
        from playwright import async_api
    except ImportError:  # pragma: no cover - depends on the machine
        if os.environ.get("CI"):
            raise
        pytest.skip("browser tests need the playwright package (pip install playwright)", allow_module_level=True)
    return async_api.expect


async def launch_browser(playwright: Any) -> Any:
    """A headless chromium from the system package (never a downloaded one)."""
    return await playwright.chromium.launch(executable_path=str(require_chromium()), args=CHROMIUM_ARGS, headless=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LiveServer:
    """The chatbot app on a fixed 127.0.0.1 port that can be stopped and started again.

    The conversation store outlives restarts (like Redis would), so a reconnecting page can resume.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        bot: Bot | None = None,
        store: ConversationStore | None = None,
        port: int | None = None,
        consumer: type[WebsocketConsumer] = ChatConsumer,
    ) -> None:
        self.settings = settings
        self.bot = bot
        self.consumer = consumer
        self.store = store if store is not None else MemoryConversationStore()
        self.port = port if port is not None else free_port()
        self._runner: web.AppRunner | None = None
        #: The running application (tests set what it lets them, e.g. the business-hours clock).
        self.app: web.Application | None = None

    @property
    def url(self) -> str:
        """The chat page's address."""
        return f"http://127.0.0.1:{self.port}/"

    @property
    def running(self) -> bool:
        """Whether the server is listening."""
        return self._runner is not None

    async def start(self) -> None:
        """Build a fresh app around the same bot and store and listen on the same port."""
        if self._runner is not None:
            raise RuntimeError("the server is already running")
        app = web.Application()
        setup(app, self.settings, bot=self.bot, store=self.store, consumer=self.consumer)
        runner = web.AppRunner(app, shutdown_timeout=2.0, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.app = app

    async def stop(self) -> None:
        """Close every socket (1001, as on a real shutdown) and stop listening."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()


@contextlib.asynccontextmanager
async def live_server(
    settings: Settings,
    *,
    bot: Bot | None = None,
    store: ConversationStore | None = None,
    consumer: type[WebsocketConsumer] = ChatConsumer,
) -> AsyncIterator[LiveServer]:
    """Run a LiveServer for the length of a fixture; the caller's bot and store are started here too."""
    server = LiveServer(settings, bot=bot, store=store, consumer=consumer)
    if bot is not None:
        await bot.start()
    await server.store.start()
    try:
        await server.start()
        yield server
    finally:
        await server.stop()
        await server.store.close()
        if bot is not None:
            await bot.close()


def is_local(url: str, port: int) -> bool:
    """Whether a request the page made stays on the test server (or is an inline data/blob URL)."""
    if url.startswith(("data:", "blob:", "about:")):
        return True
    return url.startswith((f"http://127.0.0.1:{port}/", f"ws://127.0.0.1:{port}/"))


def screenshot_path(nodeid: str) -> Path:
    """Where a failing test's screenshot goes: test-artifacts/<test name>.png."""
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in nodeid.split("::")[-1])
    return ARTIFACTS / f"{name}.png"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Any]:
    """One headless chromium for a whole test module (import this fixture into the module)."""
    from playwright.async_api import async_playwright

    require_chromium()
    async with async_playwright() as playwright:
        launched = await launch_browser(playwright)
        try:
            yield launched
        finally:
            await launched.close()


async def save_screenshots(folder: Path) -> list[Path]:
    """Screenshots of a real conversation with the shipped FAQ bot, desktop (1280×800) and phone (375×667)."""
    from playwright.async_api import async_playwright, expect

    from .helpers import make_settings

    questions = ("在国外ATM一天能取多少钱", "今天天气怎么样")
    folder.mkdir(parents=True, exist_ok=True)
    saved = []
    async with live_server(make_settings(bot={"name": "faq"})) as server, async_playwright() as playwright:
        browser = await launch_browser(playwright)
        try:
            for name, viewport in (("desktop", (1280, 800)), ("phone", (375, 667))):
                context = await browser.new_context(
                    viewport={"width": viewport[0], "height": viewport[1]}, locale="zh-CN", device_scale_factor=1
                )
                page = await context.new_page()
                await page.goto(server.url)
                await expect(page.locator("body")).to_have_attribute("data-connection", "connected")
                await page.locator("#quick .chip").nth(1).click()
                for question in questions:
                    await page.locator("#input").fill(question)
                    await page.locator("#input").press("Enter")
                await expect(page.locator("#messages .msg-bot")).to_have_count(1 + len(questions))
                await page.locator("#input").fill("信用卡怎么提额")
                saved.append(folder / f"{name}.png")
                await page.screenshot(path=str(saved[-1]))
                await context.close()
        finally:
            await browser.close()
    return saved


if __name__ == "__main__":
    import asyncio
    import sys

    for path in asyncio.run(save_screenshots(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots"))):
        print(path)
