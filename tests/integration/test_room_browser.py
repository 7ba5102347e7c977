"""The room's scoreboard in a real browser: headless Chromium loads it from a live `serve`-style
server on loopback, renders every team, and reloads it by itself."""

from __future__ import annotations

import re
import socket
import subprocess
import threading
import time

import uvicorn

from rangectl.access.api import create_app
from rangectl.access.ratelimit import RateLimit
from rangectl.access.service import Settings, TeamService
from tests.integration.test_report_browser import _browser
from tests.unit.test_access_api import make_range


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_room_page_renders_and_refreshes_itself_in_chromium(tmp_path):
    base = _browser()
    st = make_range(tmp_path)
    svc = TeamService(st, Settings(rate=RateLimit(per_minute=0), board_cache_seconds=0.0))
    hits: list[float] = []
    app = create_app(svc)

    async def counting(scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/api/v1/room":
            hits.append(time.monotonic())
        await app(scope, receive, send)

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(counting, host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    try:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}/api/v1/room"
        dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=120)
        assert dom.returncode == 0, dom.stderr[-1000:]
        rows = re.findall(r"<tr[^>]*><td class=\"n\">(\d+)</td><td>Team (\d+)</td>", dom.stdout)
        assert sorted(int(team) for _rank, team in rows) == [1, 2]
        # left open on the page (as on a projector), the browser reloads it by itself every 5 s
        before = len(hits)
        browser = subprocess.Popen([*base, "--remote-debugging-port=0", url],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while len(hits) - before < 3 and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            browser.kill()
            browser.wait(10)
        assert len(hits) - before >= 3, f"the page was loaded {len(hits) - before} time(s); it should reload itself"
        loads = hits[before:before + 3]
        assert all(3.5 < b - a < 8 for a, b in zip(loads, loads[1:], strict=False)), loads  # every ~5 s
        shot = tmp_path / "room.png"
        r = subprocess.run([*base, f"--screenshot={shot}", "--window-size=1280,720", url],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    finally:
        server.should_exit = True
        th.join(timeout=10)
