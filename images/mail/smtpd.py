"""A small SMTP server (standard library, asyncio) that accepts every message and keeps it.

Messages go to a Maildir (MAIL_DIR, default /var/mail/inbox: new/ holds one file
per message) with Received and X-Envelope-* headers; one line per message and
per session event goes to MAIL_LOG (/var/log/mail/smtp.log). No relaying, no
authentication, no TLS: a sink for phishing and spam scenarios.
"""

from __future__ import annotations

import asyncio
import mailbox
import os
import re
import signal
import socket
import sys
import time
from email import message_from_bytes
from email.utils import formatdate

PORT = int(os.environ.get("MAIL_PORT", "25"))
BIND = os.environ.get("MAIL_BIND", "0.0.0.0")
MAIL_DIR = os.environ.get("MAIL_DIR", "/var/mail/inbox")
LOG = os.environ.get("MAIL_LOG", "/var/log/mail/smtp.log")
MAX_SIZE = int(os.environ.get("MAIL_MAX_SIZE", str(20 * 1024 * 1024)))
HOSTNAME = os.environ.get("MAIL_HOSTNAME") or socket.getfqdn()
ADDR = re.compile(r"^\s*(?:FROM|TO):\s*<([^>]*)>", re.I)


def log(line: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    with open(LOG, "a", encoding="utf-8") as fh:
        fh.write(f"{stamp} {line}\n")


class Session:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, box: mailbox.Maildir):
        self.r, self.w, self.box = reader, writer, box
        peer = writer.get_extra_info("peername") or ("?", 0)
        self.peer = peer[0]
        self.helo = ""
        self.reset()

    def reset(self) -> None:
        self.sender: str | None = None
        self.rcpts: list[str] = []

    async def say(self, text: str) -> None:
        self.w.write(text.encode() + b"\r\n")
        await self.w.drain()

    async def run(self) -> None:
        log(f"connect peer={self.peer}")
        await self.say(f"220 {HOSTNAME} ESMTP ready")
        while True:
            line = await asyncio.wait_for(self.r.readline(), timeout=300)
            if not line:
                break
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            verb, _, arg = text.partition(" ")
            verb = verb.upper()
            if verb in ("HELO", "EHLO"):
                self.helo = arg.strip()
                self.reset()
                if verb == "EHLO":
                    await self.say(f"250-{HOSTNAME} greets {self.helo or self.peer}")
                    await self.say(f"250-SIZE {MAX_SIZE}")
                    await self.say("250-8BITMIME")
                    await self.say("250 HELP")
                else:
                    await self.say(f"250 {HOSTNAME}")
            elif verb == "MAIL":
                m = ADDR.match(arg)
                if not m:
                    await self.say("501 Syntax: MAIL FROM:<address>")
                    continue
                self.reset()
                self.sender = m.group(1)
                await self.say("250 OK")
            elif verb == "RCPT":
                m = ADDR.match(arg)
                if self.sender is None:
                    await self.say("503 Error: need MAIL command")
                elif not m:
                    await self.say("501 Syntax: RCPT TO:<address>")
                else:
                    self.rcpts.append(m.group(1))
                    await self.say("250 OK")
            elif verb == "DATA":
                if not self.rcpts:
                    await self.say("503 Error: need RCPT command")
                    continue
                await self.say("354 End data with <CR><LF>.<CR><LF>")
                data = await self.read_data()
                if data is None:
                    await self.say(f"552 Message exceeds {MAX_SIZE} bytes")
                else:
                    key = self.store(data)
                    await self.say(f"250 OK: queued as {key}")
                self.reset()
            elif verb == "RSET":
                self.reset()
                await self.say("250 OK")
            elif verb == "NOOP":
                await self.say("250 OK")
            elif verb == "VRFY":
                await self.say("252 Cannot VRFY user, but will accept message")
            elif verb == "HELP":
                await self.say("214 HELO EHLO MAIL RCPT DATA RSET NOOP VRFY QUIT")
            elif verb == "QUIT":
                await self.say("221 Bye")
                break
            elif verb in ("STARTTLS", "AUTH"):
                await self.say("502 Command not implemented")
            else:
                await self.say("500 Error: command not recognized")
        log(f"disconnect peer={self.peer}")

    async def read_data(self) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        too_big = False
        while True:
            line = await asyncio.wait_for(self.r.readline(), timeout=300)
            if not line:
                raise ConnectionResetError
            if line in (b".\r\n", b".\n"):
                break
            if line.startswith(b"."):
                line = line[1:]
            size += len(line)
            if size > MAX_SIZE:
                too_big = True
            elif not too_big:
                chunks.append(line)
        return None if too_big else b"".join(chunks)

    def store(self, data: bytes) -> str:
        head = (
            f"Received: from {self.helo or 'unknown'} ([{self.peer}]) by {HOSTNAME} with SMTP; {formatdate(localtime=True)}\r\n"
            f"X-Envelope-From: <{self.sender}>\r\nX-Envelope-To: {', '.join(f'<{r}>' for r in self.rcpts)}\r\n"
        ).encode()
        msg = mailbox.MaildirMessage(head + data)
        key = self.box.add(msg)
        subject = (message_from_bytes(data).get("Subject") or "").replace("\n", " ")[:200]
        log(
            f"message id={key} peer={self.peer} helo={self.helo!r} from=<{self.sender}> "
            f"to={','.join(self.rcpts)} size={len(data)} subject={subject!r}"
        )
        return key


async def main() -> None:
    os.makedirs(os.path.dirname(LOG), exist_ok=True)
    box = mailbox.Maildir(MAIL_DIR, create=True)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        s = Session(reader, writer, box)
        try:
            await s.run()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, BIND, PORT, reuse_address=True, limit=1 << 16)
    print(f"smtpd listening on :{PORT}, storing into {MAIL_DIR}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
