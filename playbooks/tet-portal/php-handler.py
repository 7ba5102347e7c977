#!/usr/bin/env python3
"""tet-portal: stands in for the PHP handler the district portal's old CMS had.

The range's web image serves files as they are and runs no PHP. Real portals
on shared hosting do run an uploaded ``.php`` file, which is what makes an
unrestricted upload a web shell. This helper gives the drill that behaviour:
it follows the portal's access log and, for every request of
``/uploads/NAME.php?cmd=...`` whose file exists and looks like a command
shell (system/passthru/shell_exec/exec), runs ``cmd`` with /bin/sh inside the
portal container, as PHP would have. Nothing else is executed.

Started by playbooks/tet-portal/portal.yml; pid in /run/tet-php-handler.pid.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import urllib.parse
from pathlib import Path

LOG = Path(os.environ.get("WEB_LOG_DIR", "/var/log/web")) / "access.log"
ROOT = Path(os.environ.get("WEB_ROOT", "/srv/www"))
REQ = re.compile(r'"(?:GET|POST) (/uploads/[^ ?"]+\.php)\?([^ "]*) HTTP/[0-9.]+"')
SHELL = re.compile(rb"system\s*\(|passthru\s*\(|shell_exec\s*\(|exec\s*\(|popen\s*\(")


def handle(line: str) -> None:
    m = REQ.search(line)
    if not m:
        return
    rel = urllib.parse.unquote(m.group(1)).lstrip("/")
    if ".." in Path(rel).parts:
        return
    f = ROOT / rel
    try:
        if not f.is_file() or not SHELL.search(f.read_bytes()[:65536]):
            return
    except OSError:
        return
    for cmd in urllib.parse.parse_qs(m.group(2)).get("cmd", []):
        try:
            subprocess.run(["/bin/sh", "-c", cmd], cwd=str(f.parent), timeout=10,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError):
            pass


def main() -> None:
    while not LOG.exists():
        time.sleep(0.5)
    fh = LOG.open("r", encoding="utf-8", errors="replace")
    fh.seek(0, os.SEEK_END)
    pos = fh.tell()
    buf = ""
    while True:
        chunk = fh.read()
        if chunk:
            buf += chunk
            *lines, buf = buf.split("\n")
            for line in lines:
                handle(line)
            pos = fh.tell()
            continue
        time.sleep(0.2)
        try:
            if LOG.stat().st_size < pos:  # truncated or replaced: start over from its beginning
                fh.close()
                fh = LOG.open("r", encoding="utf-8", errors="replace")
                pos, buf = 0, ""
        except OSError:
            pass


if __name__ == "__main__":
    main()
