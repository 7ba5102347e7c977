"""The ``phishing`` generator: a lure e-mail with a link, delivered over SMTP to a mail node."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid
from typing import Any

from rangectl.scenario.traffic_params import PhishingParams
from rangectl.traffic.base import TrafficContext, TrafficResult
from rangectl.traffic.node_session import Session, run_session
from rangectl.traffic.pacing import Budget


def phishing_message(p: PhishingParams, to: list[str], n: int) -> EmailMessage:
    msg = EmailMessage()
    domain = p.sender.split("@", 1)[1]
    msg["From"] = formataddr((p.display_name, p.sender))
    msg["To"] = ", ".join(to)
    msg["Subject"] = p.subject if p.count == 1 else f"{p.subject} [{n + 1}]"
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=domain)
    msg["X-Mailer"] = "Microsoft Outlook 16.0"
    text = p.body.replace("{link}", p.link)
    msg.set_content(text)
    if p.html:
        esc = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        esc = esc.replace(p.link, f'<a href="{p.link}">Verify my account</a>')
        msg.add_alternative("<html><body><p>" + esc.replace("\n\n", "</p><p>").replace("\n", "<br>") + "</p></body></html>", subtype="html")
    return msg


def run_phishing(p: PhishingParams, ctx: TrafficContext) -> TrafficResult:
    def body(s: Session) -> str:
        budget = Budget(ctx, count=p.count, duration=p.duration, rate=p.rate)
        sent = []
        stopped = "count"
        while budget.wait_next():
            msg = phishing_message(p, p.to, len(sent))
            rec: dict[str, Any] = {"message_id": msg["Message-ID"], "subject": msg["Subject"]}
            try:
                with smtplib.SMTP(
                    str(s.dst), p.port, local_hostname=p.helo, timeout=min(p.timeout, max(budget.remaining(), 0.5)),
                    source_address=s.source_address,
                ) as smtp:  # fmt: skip
                    refused = smtp.sendmail(p.sender, p.to, msg.as_bytes())
                    rec["accepted"] = [r for r in p.to if r not in refused]
                    rec["refused"] = {r: f"{c} {m.decode(errors='replace')}" for r, (c, m) in refused.items()}
                s.app_bytes += len(msg.as_bytes())
            except (OSError, smtplib.SMTPException) as exc:
                rec["error"] = f"{type(exc).__name__}: {exc}"
            sent.append(rec)
        if len(sent) < p.count:
            stopped = budget.reason
        s.details.update(
            {
                "port": p.port,
                "sender": p.sender,
                "to": p.to,
                "link": p.link,
                "messages": sent,
                "messages_sent": len(sent),
                "delivered": sum(1 for m in sent if m.get("accepted")),
            }
        )
        return stopped

    return run_session("phishing", ctx, body)
