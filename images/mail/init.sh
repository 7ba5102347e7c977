#!/bin/bash
# mail start-up, with no playbook: the SMTP sink on :25 (MAIL_PORT); messages
# in /var/mail/inbox/new, one log line each in /var/log/mail/smtp.log.
set -u
. /usr/local/lib/rangectl/init-lib.sh
mkdir -p /var/mail/inbox/new /var/mail/inbox/cur /var/mail/inbox/tmp /var/log/mail
rc_service smtpd python3 /opt/rangectl-mail/smtpd.py
rc_wait_forever
