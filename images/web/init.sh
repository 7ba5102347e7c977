#!/bin/bash
# web start-up, with no playbook: the portal on :80 (WEB_PORT), access log at
# /var/log/web/access.log, logins at /var/log/web/auth.log, uploads at
# /var/log/web/uploads.log, content root /srv/www.
set -u
. /usr/local/lib/rangectl/init-lib.sh
mkdir -p /var/log/web /srv/www/uploads
[ -s /var/lib/web/portal.db ] || python3 /opt/rangectl-web/seed.py /var/lib/web/portal.db
rc_service portal python3 /opt/rangectl-web/portal.py
rc_wait_forever
