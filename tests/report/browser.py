"""Open a page in headless Chromium over the DevTools protocol and say what it saw.

Chromium is Debian's `chromium` (installed by `make system-deps`); the protocol is spoken over
aiohttp's WebSocket client, so nothing beyond the project's own dependencies is needed.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-port=0", "--window-size=1200,900"]

CHECK_PAGE = """(() => {
  const imgs = Array.from(document.images);
  return {
    title: document.title,
    sections: Array.from(document.querySelectorAll('section[id]')).map(s => s.id),
    images: imgs.map(i => ({id: i.id, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight,
                            shown: i.getBoundingClientRect().width})),
    scripts: document.scripts.length,
    height: document.body.scrollHeight,
  };
})()"""


def chromium_path() -> str | None:
    return CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")


async def _inspect(url: str, port: int) -> dict[str, Any]:
    counter = itertools.count(1)
    errors: list[str] = []
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
            targets = await response.json()
        page = next(t for t in targets if t["type"] == "page")
        async with session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            pending: dict[int, asyncio.Future] = {}
            loaded = asyncio.get_running_loop().create_future()

            async def reader():
                async for message in ws:
                    data = json.loads(message.data)
                    if "id" in data and data["id"] in pending:
                        pending.pop(data["id"]).set_result(data)
                    method = data.get("method", "")
                    params = data.get("params", {})
                    if method == "Runtime.exceptionThrown":
                        errors.append("exception: " + json.dumps(params["exceptionDetails"])[:500])
                    elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                        errors.append("console: " + json.dumps(params.get("args"))[:500])
                    elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                        errors.append("log: " + params["entry"].get("text", "")[:500])
                    elif method == "Network.loadingFailed":
                        errors.append("network: " + json.dumps(params)[:500])
                    elif method == "Page.loadEventFired" and not loaded.done():
                        loaded.set_result(True)

            async def call(method: str, **params: Any) -> dict[str, Any]:
                ident = next(counter)
                pending[ident] = asyncio.get_running_loop().create_future()
                await ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
                reply = await asyncio.wait_for(pending[ident], 60)
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

            task = asyncio.create_task(reader())
            for domain in ("Page", "Runtime", "Log", "Network"):
                await call(f"{domain}.enable")
            await call("Page.navigate", url=url)
            await asyncio.wait_for(loaded, 60)
            state = await call("Runtime.evaluate", expression=CHECK_PAGE, returnByValue=True)
            shot = await call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
            task.cancel()
    return {"page": state["result"]["value"], "errors": errors, "screenshot": base64.b64decode(shot["data"])}


def inspect_page(path: Path) -> dict[str, Any]:
    """Load PATH (file://) in a fresh headless Chromium; the page's state, errors, a screenshot."""
    # Chromium's helper processes can still write to the profile as it is removed: their whole
    # process group is stopped first, and a file that appears during cleanup is not an error
    with tempfile.TemporaryDirectory(prefix="report-chromium-", ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen([chromium_path(), *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            active = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + 60
            while not (active.exists() and active.read_text().strip()):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("chromium did not start its DevTools endpoint")
                time.sleep(0.1)
            port = int(active.read_text().split()[0])
            return asyncio.run(_inspect(path.resolve().as_uri(), port))
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
