"""Availability probes that read the page: a defaced home page is down until restored, a wrong
status is down, and content keys need an http probe. Served by a real HTTP server on loopback."""

from __future__ import annotations

import copy
import http.server
import json
import threading

import pytest

from rangectl.backend.nodeexec import run_here
from rangectl.drill import checks
from rangectl.plan import plan
from rangectl.scenario.model import Scenario
from tests.unit.test_scoring import SCENARIO

HOME = "<html><body><h1>Cong thong tin dien tu quan Song Hong</h1></body></html>"
DEFACED = "<html><body><h1>HACKED BY xX_crew</h1></body></html>"


class _Site:
    def __init__(self) -> None:
        self.page, self.status = HOME, 200
        site = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                body = site.page.encode()
                self.send_response(site.status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def site():
    s = _Site()
    yield s
    s.server.shutdown()
    s.server.server_close()


def _probe(monkeypatch, site, **av):
    sc = copy.deepcopy(SCENARIO)
    sc["nodes"]["portal"]["services"] = [{"name": "http", "port": site.port}]
    sc["availability"] = [{"node": "portal", "service": "http", "points": 5, **av}]
    scenario = Scenario.model_validate(sc)
    tp = plan(scenario, 1).team(1)
    monkeypatch.setattr(tp, "ip_of", lambda node: "127.0.0.1")
    # loopback stands in for the range: the probe job runs here, through JSON like on a node
    v = checks.Vantage(tp, lambda node, job: run_here(job), lambda *a: (0, ""))
    return checks.availability_probe(scenario, scenario.availability[0], v)


def test_a_defaced_page_is_down_until_the_home_page_is_back(monkeypatch, site):
    keys = {"contains": "quan Song Hong", "absent": "HACKED"}
    assert _probe(monkeypatch, site, **keys).passed
    site.page = DEFACED
    res = _probe(monkeypatch, site, **keys)
    assert not res.passed and "lacks 'quan Song Hong'" in res.detail
    site.page = HOME + "<!-- HACKED -->"
    res = _probe(monkeypatch, site, **keys)
    assert not res.passed and "shows 'HACKED'" in res.detail
    site.page = HOME
    assert _probe(monkeypatch, site, **keys).passed
    # without content keys the defaced page still counts as up: that is what the keys are for
    site.page = DEFACED
    assert _probe(monkeypatch, site).passed


def test_status_lists_what_counts_as_up(monkeypatch, site):
    site.status = 404
    assert _probe(monkeypatch, site).passed  # default: anything below 500
    res = _probe(monkeypatch, site, status=[200])
    assert not res.passed and "status 404, expected 200" in res.detail
    site.status = 200
    assert _probe(monkeypatch, site, status=[200, 301]).passed
    site.status = 503
    assert not _probe(monkeypatch, site).passed


def test_nothing_listening_is_down_whatever_the_keys(monkeypatch, site):
    site.server.shutdown()
    site.server.server_close()
    assert not _probe(monkeypatch, site, contains="x", timeout=1).passed


@pytest.mark.parametrize("key, value", [("contains", "x"), ("absent", "y"), ("status", [200])])
def test_content_keys_need_an_http_probe(tmp_path, key, value):
    from typer.testing import CliRunner

    from rangectl.cli import app
    from tests.unit.test_scoring import POLICY

    sc = copy.deepcopy(SCENARIO)
    sc["availability"] = [{"node": "portal", "service": "http", "probe": "tcp", "points": 5, key: value}]
    (tmp_path / "scoring").mkdir()
    (tmp_path / "scoring" / "test.yaml").write_text(json.dumps(POLICY))
    f = tmp_path / "s.yaml"
    f.write_text(json.dumps(sc, indent=1))
    out = CliRunner().invoke(app, ["validate", str(f)])
    assert out.exit_code == 1 and f"availability[0].{key}: '{key}' needs an http probe" in out.output
