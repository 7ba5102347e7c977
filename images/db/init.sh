#!/bin/bash
# db start-up, with no playbook: PostgreSQL in the foreground on :5432, log at
# /var/log/postgresql/postgresql.log. Config: /etc/postgresql/rangectl
# (a link to the cluster's folder); data: /var/lib/postgresql/<version>/main.
set -u
. /usr/local/lib/rangectl/init-lib.sh
install -d -o postgres -g postgres -m 2775 /var/run/postgresql /var/log/postgresql
touch /var/log/postgresql/postgresql.log && chown postgres:postgres /var/log/postgresql/postgresql.log
v=$(ls /usr/lib/postgresql | sort -V | tail -n1)
data=/var/lib/postgresql/$v/main
# SIGINT is PostgreSQL's fast shutdown (SIGTERM waits for clients to leave).
STOP_SIGNAL=INT rc_service postgres bash -c \
    "exec setpriv --reuid=postgres --regid=postgres --init-groups \
     /usr/lib/postgresql/$v/bin/postgres -D $data -c config_file=/etc/postgresql/$v/main/postgresql.conf \
     >>/var/log/postgresql/postgresql.log 2>&1"
rc_wait_forever
