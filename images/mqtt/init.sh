#!/bin/bash
# mqtt start-up, with no playbook: mosquitto on :1883 (anonymous allowed),
# broker log /var/log/mosquitto/mosquitto.log; unless MQTT_LOG_MESSAGES=0, a
# subscriber on '#' (client id rangectl-audit) writes every message to
# /var/log/mosquitto/messages.log as "time topic payload".
set -u
. /usr/local/lib/rangectl/init-lib.sh
install -d -o mosquitto -g mosquitto /run/mosquitto /var/lib/mosquitto /var/log/mosquitto
touch /var/log/mosquitto/mosquitto.log /var/log/mosquitto/messages.log
chown mosquitto:mosquitto /var/log/mosquitto/mosquitto.log
rc_service mosquitto /usr/sbin/mosquitto -c /etc/mosquitto/mosquitto.conf
if [ "${MQTT_LOG_MESSAGES:-1}" != 0 ]; then
    sleep 0.5
    rc_service mqtt-audit bash -c "exec mosquitto_sub -h 127.0.0.1 -i rangectl-audit -t '#' \
        -F '%I %t %p' >>/var/log/mosquitto/messages.log 2>/dev/null"
fi
rc_wait_forever
