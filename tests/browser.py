"""A tiny Chrome DevTools Protocol client over a pipe, for rendering report.html in Chromium.

Chromium started with ``--remote-debugging-pipe`` reads JSON commands from file descriptor 3
and writes replies and events to descriptor 4, each message ended by a NUL byte: no websocket
library, no port. :func:`render` opens a page, waits for its load event, evaluates a script in
it, collects every console message, uncaught exception and browser log entry, and can take a
full-page screenshot.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")
TIMEOUT_SECONDS = 60.0
_LAUNCHER = (
    "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
    "os.close(int(sys.argv[1])); os.close(int(sys.argv[2])); os.execv(sys.argv[3], sys.argv[3:])"
)


def find_chromium() -> str | None:
    """Path of a Chromium or Chrome executable on PATH, or None."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path is not None:
            return path
    return None


@dataclass
class RenderedPage:
    """What :func:`render` saw: the script's value, the problems reported, the screenshot."""

    value: Any
    problems: list[str] = field(default_factory=list)
    screenshot: bytes | None = None


class _Pipe:
    def __init__(self, executable: str, profile: str) -> None:
        to_browser_read, self._write = os.pipe()
        self._read, from_browser_write = os.pipe()
        # The child must see them as descriptors 3 (commands) and 4 (replies): a small Python
        # launcher moves copies placed above 100 (which 3 and 4 cannot overwrite) into place.
        child_read = fcntl.fcntl(to_browser_read, fcntl.F_DUPFD, 100)
        child_write = fcntl.fcntl(from_browser_write, fcntl.F_DUPFD, 100)
        os.close(to_browser_read)
        os.close(from_browser_write)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _LAUNCHER,
                str(child_read),
                str(child_write),
                executable,
                "--headless=new",
                "--remote-debugging-pipe",
                "--no-sandbox",  # CI runs as root, where the sandbox cannot start
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            pass_fds=(child_read, child_write),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(child_read)
        os.close(child_write)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str) -> dict:
        for index, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(index)
        while True:
            event = self._receive()
            if event.get("method") == method:
                return event
            self.events.append(event)

    def _receive(self) -> dict:
        deadline = time.monotonic() + TIMEOUT_SECONDS
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([self._read], [], [], max(remaining, 0))
            if not ready:
                raise TimeoutError(f"Chromium sent nothing for {TIMEOUT_SECONDS:.0f} s")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed its DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._write)
        os.close(self._read)


def _problems(events: list[dict[str, Any]]) -> list[str]:
    """Console errors and warnings, uncaught exceptions and browser log errors, as text."""
    found = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning"):
            texts = [str(arg.get("value", arg.get("description"))) for arg in params["args"]]
            found.append(f"console.{params['type']}: {' '.join(texts)}")
        elif method == "Runtime.exceptionThrown":
            found.append(f"exception: {params['exceptionDetails'].get('text')}")
        elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
            entry = params["entry"]
            found.append(f"log {entry['level']}: {entry['text']} ({entry.get('url', '')})")
    return found


def render(
    executable: str,
    page: Path,
    script: str,
    *,
    screenshot_width: int | None = None,
    height: int = 900,
    first_screen: bool = False,
) -> RenderedPage:
    """Open ``page`` in headless Chromium, evaluate ``script`` after load, collect problems.

    Args:
        executable: the Chromium binary.
        page: an HTML file.
        script: a JavaScript expression whose JSON-serialisable value is returned.
        screenshot_width: take a full-page PNG screenshot at this viewport width (CSS px).
        height: the viewport's height (CSS px): what is seen without scrolling.
        first_screen: the screenshot holds the viewport only (what a reader sees first).
    """
    with tempfile.TemporaryDirectory(prefix="softclass-chromium-") as profile:
        pipe = _Pipe(executable, profile)
        try:
            target = pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
                "sessionId"
            ]
            for domain in ("Runtime", "Log", "Page"):
                pipe.call(f"{domain}.enable", session=session)
            width = screenshot_width or 1280
            pipe.call(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
                session=session,
            )
            pipe.call("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
            pipe.wait_for("Page.loadEventFired")
            evaluated = pipe.call(
                "Runtime.evaluate",
                {"expression": script, "returnByValue": True, "awaitPromise": True},
                session=session,
            )
            if "exceptionDetails" in evaluated:
                raise RuntimeError(f"the test script failed: {evaluated['exceptionDetails']}")
            shot = None
            if screenshot_width is not None:
                size = pipe.call("Page.getLayoutMetrics", session=session)["cssContentSize"]
                shown = height if first_screen else size["height"]
                clip = {"x": 0, "y": 0, "width": width, "height": shown, "scale": 1}
                shot = base64.b64decode(
                    pipe.call(
                        "Page.captureScreenshot",
                        {"format": "png", "clip": clip, "captureBeyondViewport": True},
                        session=session,
                    )["data"]
                )
            return RenderedPage(evaluated["result"].get("value"), _problems(pipe.events), shot)
        finally:
            pipe.close()
