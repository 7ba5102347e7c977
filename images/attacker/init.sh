#!/bin/bash
# attacker start-up: nothing to serve; traffic is sent with `rangectl traffic`
# or docker exec. Waits for SIGTERM.
set -u
. /usr/local/lib/rangectl/init-lib.sh
rc_wait_forever
