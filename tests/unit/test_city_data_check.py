"""smart-city-telemetry's clean-data check (playbooks/smart-city-telemetry/city-data-check, run on the
broker): a feed that is only quiet because the rogue's own flood keeps it out is not clean."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import time

from tests.conftest import ROOT

SCRIPT = ROOT / "playbooks" / "smart-city-telemetry" / "city-data-check"
TOPIC = "city/flood/q3/level"


def run(tmp_path, readings: list[tuple[float, float]], *args: str) -> subprocess.CompletedProcess:
    """The check against a message log of (seconds ago, level_cm) readings on TOPIC."""
    log = tmp_path / "messages.log"
    lines = []
    for ago, level in readings:
        t = datetime.datetime.fromtimestamp(time.time() - ago, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S%z")
        lines.append(f"{t} {TOPIC} {json.dumps({'sensor': 'wl-q3', 'level_cm': level})}")
        lines.append(f"{t} city/air/q3/pm25 {json.dumps({'pm25': 999})}")  # another topic: not counted
    log.write_text("\n".join(lines) + "\n")
    script = tmp_path / "check.py"
    script.write_text(SCRIPT.read_text().replace("/var/log/mosquitto/messages.log", str(log)))
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=30)


QUIET = [(20, 180), (19, 50), (12, 190), (6, 40), (4, 41), (2, 42)]  # spoofed 12 s ago, 3 real since
CLEAN = [(40, 180), (14, 50), (12, 51), (10, 52), (6, 40), (4, 41), (2, 42)]


def test_a_quiet_window_after_spoofed_readings_is_not_clean(tmp_path):
    assert run(tmp_path, QUIET, "8", TOPIC, "3").returncode == 0  # what the window alone says
    p = run(tmp_path, QUIET, "8", TOPIC, "3", "5")
    assert p.returncode == 1 and "1 implausible among the last 5 messages" in p.stdout


def test_a_clean_live_feed_passes(tmp_path):
    p = run(tmp_path, CLEAN, "8", TOPIC, "3", "5")
    assert p.returncode == 0, p.stdout
    assert "3 plausible, 0 implausible; 0 implausible among the last 5 messages" in p.stdout


def test_a_spoofed_reading_in_the_window_or_too_few_real_ones_fail(tmp_path):
    assert run(tmp_path, [*CLEAN, (1, 200)], "8", TOPIC, "3", "5").returncode == 1
    assert run(tmp_path, [(30, 50), (3, 40), (1, 41)], "8", TOPIC, "3", "5").returncode == 1
    assert run(tmp_path, [(30, 50), (3, 40), (1, 41)], "8", TOPIC, "2", "5").returncode == 0
