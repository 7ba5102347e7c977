#!/bin/bash
# agent start-up: rangectl's agent on an engine (rangectl/backend/agent_server.py), supervised
# like a node's service (restarted 1 s after it exits). Its code is not in the image: rangectl
# puts its own package under /opt/rangectl-agent before it starts the container.
set -u
. /usr/local/lib/rangectl/init-lib.sh
if [ ! -d /opt/rangectl-agent/rangectl ]; then
    rc_log "no rangectl code in /opt/rangectl-agent: this container is started by rangectl only"
    exit 1
fi
rc_service agent python3 -m rangectl.backend.agent_server serve
rc_wait_forever
